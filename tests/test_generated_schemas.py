"""Files kairo generates from its dependencies stay current (regenerate with KAIRO_REGENERATE=1)."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import os
import typing
from pathlib import Path

import pytest

SCHEMAS = Path(__file__).resolve().parent.parent / "kairo" / "schemas"
REGENERATE = bool(os.environ.get("KAIRO_REGENERATE"))


def _volume_source_schema() -> dict:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.37.0-local-strict"
    definitions = json.loads((root / "_definitions.json").read_text())["$defs"]
    volume = json.loads((root / "volume-v1.json").read_text())
    needed: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, dict):
            node.pop("description", None)
            for key, value in list(node.items()):
                if key == "$ref":
                    name = value.split("/")[-1]
                    node[key] = f"#/$defs/{name}"
                    if name not in needed:
                        needed[name] = json.loads(json.dumps(definitions[name]))
                        walk(needed[name])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(volume)
    volume["properties"].pop("name")
    volume["required"] = [r for r in volume.get("required", []) if r != "name"]
    if not volume["required"]:
        volume.pop("required")
    volume["$defs"] = needed
    volume["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    volume["title"] = "Kubernetes core/v1 VolumeSource (from kubernetes-validate 1.37 strict, descriptions dropped)"
    return volume


def _scalar(annotation) -> str | None:
    """'bool', 'int' or 'float' when a field holds only that (or None): the types a string value is parsed to."""
    members = {a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)}
    if members == {int, float}:
        return "float"
    if len(members) == 1 and (only := members.pop()) in (bool, int, float):
        return only.__name__
    return None


def _hf_fields() -> dict:
    import peft
    import transformers

    bnb = {p: v.default for p, v in inspect.signature(transformers.BitsAndBytesConfig.__init__).parameters.items()
           if p not in ("self", "kwargs")}
    scalar_types = {"BitsAndBytesConfig": {p: type(d).__name__ for p, d in bnb.items()
                                           if type(d) in (bool, int, float)}}
    for name, cls in (("TrainingArguments", transformers.TrainingArguments), ("LoraConfig", peft.LoraConfig)):
        hints = typing.get_type_hints(cls)
        scalar_types[name] = {f.name: kind for f in dataclasses.fields(cls)
                              if f.init and (kind := _scalar(hints[f.name]))}
    hints = typing.get_type_hints(transformers.TrainingArguments)
    choices = {f.name: sorted(e.value for e in kinds[0]) for f in dataclasses.fields(transformers.TrainingArguments)
               if (kinds := [a for a in (typing.get_args(hints[f.name]) or (hints[f.name],))
                             if isinstance(a, type) and issubclass(a, enum.Enum)])}
    return {
        "choices": {"TrainingArguments": choices},
        "TrainingArguments": sorted(f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init),
        "LoraConfig": sorted(f.name for f in dataclasses.fields(peft.LoraConfig) if f.init),
        "BitsAndBytesConfig": sorted(bnb),
        "scalar_types": scalar_types,
    }


def test_volume_source_schema_is_current():
    fresh = _volume_source_schema()
    path = SCHEMAS / "volume-source.json"
    if REGENERATE:
        path.write_text(json.dumps(fresh, sort_keys=True))
    assert json.loads(path.read_text()) == fresh


def test_hugging_face_field_lists_are_current():
    fresh = _hf_fields()
    path = SCHEMAS / "hf_fields.json"
    committed = json.loads(path.read_text())
    if REGENERATE:
        committed.update(fresh)
        path.write_text(json.dumps(committed, indent=1))
    for key, names in fresh.items():
        assert committed[key] == names, f"{key} changed: regenerate with KAIRO_REGENERATE=1"


@pytest.mark.parametrize("key", ["output_dir", "num_train_epochs", "per_device_train_batch_size"])
def test_training_arguments_list_has_the_common_keys(key):
    assert key in json.loads((SCHEMAS / "hf_fields.json").read_text())["TrainingArguments"]
