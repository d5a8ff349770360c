"""The shape of a Workspace: read it as Kubernetes and Kaito do, then let pydantic judge the structure.

What is structurally wrong is reported and pruned, so that the rules can still judge the rest.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ValidationError

from kairo.problems import Problem, path_of, show
from kairo.spec.model import Workspace

# Kaito's Go types leave these strings `omitempty`: an empty string there is the field left out.
_EMPTY_IS_UNSET = (
    ("resource", "instanceType"),
    ("tuning", "config"),
    ("tuning", "preset", "presetOptions", "image"),
    ("tuning", "preset", "presetOptions", "modelAccessSecret"),
    ("tuning", "preset", "presetOptions", "modelWeightsPVC"),
    ("tuning", "preset", "presetOptions", "modelWeightsSubPath"),
    ("tuning", "input", "name"),
    ("tuning", "input", "image"),
    ("tuning", "output", "image"),
    ("tuning", "output", "imagePushSecret"),
    ("inference", "config"),
    ("inference", "preset", "presetOptions", "image"),
    ("inference", "preset", "presetOptions", "modelAccessSecret"),
)


def as_kubernetes_reads_it(data: Any) -> Any:
    """Drop what the API server and Kaito read as "not given": null values, and '' in Kaito's omitempty strings.

    `imagePullSecrets:` with its entries commented out is null in YAML and an empty list to Kubernetes.
    """
    def without_nulls(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_nulls(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [without_nulls(v) for v in node]
        return node

    data = without_nulls(data)
    for path in _EMPTY_IS_UNSET:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) == "":
            del node[path[-1]]
    return data


def misplaced_volume_keys(data: dict[str, Any]) -> list[Problem]:
    problems = _adapter_volume_keys(data)
    tuning = data.get("tuning")
    if not isinstance(tuning, dict):
        return problems
    for side in ("input", "output"):
        section = tuning.get(side)
        if isinstance(section, dict) and "volume" in section:
            problems.append(
                Problem(
                    f"tuning.{side}.volume",
                    "unknown field — Kaito's field is 'volumeSource' (a Kubernetes VolumeSource, e.g. "
                    "volumeSource: {persistentVolumeClaim: {claimName: my-data}})",
                )
            )
            section.setdefault("volumeSource", section.pop("volume"))
    return problems


def _adapter_volume_keys(data: dict[str, Any]) -> list[Problem]:
    """Kaito's docs write an adapter's volume as `source.volume`; its field is `volumeSource`: read both, say so."""
    inference = data.get("inference")
    adapters = inference.get("adapters") if isinstance(inference, dict) else None
    problems = []
    for i, adapter in enumerate(adapters if isinstance(adapters, list) else []):
        source = adapter.get("source") if isinstance(adapter, dict) else None
        if not isinstance(source, dict) or "volume" not in source:
            continue
        path = f"inference.adapters[{i}].source"
        if "volumeSource" in source:
            problems.append(Problem(f"{path}.volume", "given beside volumeSource — they are the same field: keep "
                                                      "volumeSource"))
            source.pop("volume")
            continue
        problems.append(Problem(f"{path}.volume", "read as volumeSource: Kaito's docs write `volume:`, but its field "
                                                  "is `volumeSource` (api/v1beta1/workspace_types.go), and Kaito's "
                                                  "API server drops `volume` — rename it", "warning"))
        source["volumeSource"] = source.pop("volume")
    return problems


def parse_structure(data: dict[str, Any]) -> tuple[Workspace | None, list[Problem], set[str]]:
    """Validate the shape; prune what is wrong so the rules can still judge the rest."""
    problems: list[Problem] = []
    pruned: set[str] = set()
    for _ in range(5):
        try:
            return Workspace.model_validate(data), problems, pruned
        except ValidationError as err:
            for e in err.errors(include_url=False):
                loc = tuple(e["loc"])
                path = path_of(loc)
                if path in pruned:
                    continue
                problems.append(Problem(path, _structural_message(e)))
                pruned.add(path)
                _delete(data, loc)
    return None, problems, pruned


def _structural_message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and tuple(error["loc"]) == ("resource", "partition"):
        return ("GPU partitioning (MIG or accelerator slices) is not supported for tuning, as in Kaito — remove "
                "it; tuning uses all GPUs of the instance type")
    if kind == "extra_forbidden":
        model = _model_at(tuple(error["loc"])[:-1])
        allowed = f" — allowed here: {', '.join(model.model_fields)}" if model else ""
        return f"unknown field{allowed} (see the Workspace reference in the README)"
    expected = error["msg"].replace("Input should be", "should be")
    value = error.get("input")
    if kind == "literal_error":  # "'lora' or 'qlora'" → allowed: lora, qlora
        choices = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        return f"{show(value)} — allowed: {', '.join(choices)}"
    if kind == "string_type" and isinstance(value, bool | int | float):
        expected += " — put it in quotes: YAML reads a bare true, yes, on or 1.0 as a boolean or a number"
    return f"{show(value)} — {expected}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec model that a location points into (for listing the fields it allows)."""
    model: type[BaseModel] | None = Workspace
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        candidates = [c for c in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(c, type)]
        model = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if model is None:
            for c in candidates:  # list[Model]
                inner = [a for a in getattr(c, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
                model = inner[0] if inner else model
    return model


def _delete(data: Any, loc: tuple[Any, ...]) -> None:
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        del node[loc[-1]]
    except (KeyError, IndexError, TypeError):
        pass

