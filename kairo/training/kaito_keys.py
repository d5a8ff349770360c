"""Kaito's training_config keys read the way Kaito's trainer reads them, before kairo's typed sections see them.

Kaito flattens every value into a command line for `HfArgumentParser`, so `learning_rate: "2e-4"` (and YAML's
`2e-4`, which is text to a YAML 1.1 reader) is a number and `"true"` a boolean; its images run transformers 4.x,
whose TrainingArguments still had keys that transformers 5 renamed or dropped. This module turns such a file into
what transformers 5 means by it, and says what it moved or ignored. The keyword lists of the Hugging Face classes
come from kairo/schemas/hf_fields.json (regenerate: KAIRO_REGENERATE=1 pytest tests/test_generated_schemas.py).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from kairo.problems import Problem, show

# The sections whose keys are a Hugging Face class's keywords, and that class.
HF_SECTIONS = {"TrainingArguments": "TrainingArguments", "LoraConfig": "LoraConfig",
               "QuantizationConfig": "BitsAndBytesConfig"}

# TrainingArguments keys of transformers 4.x that transformers 5 renamed; 4.x let the old spelling win.
RENAMED_TRAINING_ARGUMENTS = {
    "evaluation_strategy": "eval_strategy",
    "per_gpu_train_batch_size": "per_device_train_batch_size",
    "per_gpu_eval_batch_size": "per_device_eval_batch_size",
    "warmup_ratio": "warmup_steps",  # transformers 5 reads a warmup_steps below 1 as the share of all steps
}
_GONE = "no longer a TrainingArguments setting in transformers 5"
_OUTPUT = "kairo pushes the adapter to tuning.output"
_PRECISION = "kairo chooses the precision from the GPU"
# TrainingArguments keys of transformers 4.x that kairo ignores, and why.
DROPPED_TRAINING_ARGUMENTS = {
    "overwrite_output_dir": "kairo owns the output folder",
    "logging_dir": "kairo owns the paths; metrics.json and loss.png record the run",
    "save_safetensors": "adapters are always saved as safetensors",
    "no_cuda": "kairo trains on the node's GPUs",
    "use_mps_device": "kairo trains on the node's GPUs",
    "group_by_length": "kairo packs examples into full rows",
    "fp16_backend": _PRECISION, "half_precision_backend": _PRECISION, "fp16_opt_level": _PRECISION,
    "push_to_hub_model_id": _OUTPUT, "push_to_hub_organization": _OUTPUT, "push_to_hub_token": _OUTPUT,
    **dict.fromkeys(("include_inputs_for_metrics", "include_tokens_per_second", "jit_mode_eval", "use_ipex",
                     "torchdynamo", "tpu_num_cores", "tpu_metrics_debug", "ray_scope", "mp_parameters", "past_index",
                     "split_batches", "dispatch_batches", "use_legacy_prediction_loop", "tp_size",
                     "fsdp_min_num_params", "fsdp_transformer_layer_cls_to_wrap", "adafactor"), _GONE),
}
# Chat templates inside Kaito's images (Kaito's templates mention them); kairo's images have none there.
KAITO_TEMPLATE_DIR = "/workspace/chat_templates/"

_TRUE, _FALSE = {"true", "yes", "t", "y", "1", "on"}, {"false", "no", "f", "n", "0", "off"}
_EXPECTED = {"bool": "expected true or false", "int": "expected a whole number", "float": "expected a number"}

Note = tuple[str, str]  # (path inside training_config, message): a warning


@cache
def hf_fields() -> dict[str, Any]:
    """Keywords of the Hugging Face classes the sections feed, and the bool/int/float type of the scalar ones."""
    return json.loads((Path(__file__).parent.parent / "schemas" / "hf_fields.json").read_text())


def as_kaito_reads_it(sections: dict[str, Any]) -> tuple[dict[str, Any], list[Note], list[Problem]]:
    """The sections as Kaito's trainer would take them: (sections, warnings, errors). The input is not changed."""
    sections = {k: dict(v) if isinstance(v, dict) else v for k, v in sections.items()}
    notes: list[Note] = []
    wrong: list[Problem] = []
    if isinstance(sections.get("TrainingArguments"), dict):
        kinds = hf_fields()["scalar_types"]["TrainingArguments"]
        _training_arguments(sections["TrainingArguments"], kinds, notes, wrong)
    for name, hf_class in HF_SECTIONS.items():
        section = sections.get(name)
        if isinstance(section, dict):
            _parse_text_values(name, section, hf_fields()["scalar_types"][hf_class], wrong)
    if isinstance(sections.get("ModelConfig"), dict):
        _model_config(sections["ModelConfig"], notes)
    if isinstance(sections.get("LoraConfig"), dict):
        _module_lists(sections["LoraConfig"])
    return sections, notes, wrong


def scalar(value: Any, kind: str) -> Any:
    """`value` as the bool, int or float Kaito's argument parser makes of it; unchanged when it is none of them."""
    if not isinstance(value, str) or kind not in _EXPECTED:
        return value
    text = value.strip()
    if kind == "bool":
        return True if text.lower() in _TRUE else False if text.lower() in _FALSE else value
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        return value


def _training_arguments(ta: dict[str, Any], kinds: dict[str, str], notes: list[Note], wrong: list[Problem]) -> None:
    if "adafactor" in ta and scalar(ta["adafactor"], "bool") is True:
        ta.pop("adafactor")
        ta.setdefault("optim", "adafactor")
        notes.append(("TrainingArguments.adafactor", f"transformers 5 spells it optim: {ta['optim']} — used so"))
    for old, new in RENAMED_TRAINING_ARGUMENTS.items():
        if old not in ta:
            continue
        value = scalar(ta.pop(old), kinds.get(new, ""))
        if old == "warmup_ratio":
            if scalar(ta.get(new, 0), "float") not in (0, 0.0):
                notes.append((f"TrainingArguments.{old}", f"ignored — {new} is given and wins, as in transformers 4"))
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                wrong.append(Problem(f"training_config.TrainingArguments.{old}",
                                     f"{show(value)} — a share of the training steps, at least 0 and below 1"))
                continue
        ta[new] = value
        notes.append((f"TrainingArguments.{old}", f"transformers 5 calls it {new} — used as {new}: {value!r}"))
    for old, why in DROPPED_TRAINING_ARGUMENTS.items():
        if old in ta:
            notes.append((f"TrainingArguments.{old}", f"{show(ta.pop(old))} is ignored — {why}"))


def _parse_text_values(name: str, section: dict[str, Any], kinds: dict[str, str], wrong: list[Problem]) -> None:
    for key, value in list(section.items()):
        if isinstance(value, str) and key in kinds:
            parsed = scalar(value, kinds[key])
            if isinstance(parsed, str):
                wrong.append(Problem(f"training_config.{name}.{key}", f"{show(value)} — {_EXPECTED[kinds[key]]}"))
                del section[key]  # said once here, not again by the typed section
            else:
                section[key] = parsed


def _module_lists(lora: dict[str, Any]) -> None:
    """`target_modules: "query_key_value"` is a list of one in Kaito (its parser takes one or more names); peft
    would read a lone string as a regex that must match a module's whole dotted name, and find none."""
    for key in ("target_modules", "modules_to_save"):
        value = lora.get(key)
        if isinstance(value, str) and value != "all-linear" and re.fullmatch(r"[\w.]+([,\s]+[\w.]+)*", value.strip()):
            lora[key] = re.split(r"[,\s]+", value.strip())


def _model_config(model: dict[str, Any], notes: list[Note]) -> None:
    template = model.get("chat_template")
    if isinstance(template, str) and template.startswith(KAITO_TEMPLATE_DIR):
        del model["chat_template"]
        notes.append(("ModelConfig.chat_template", f"{show(template)} is a file in Kaito's images and is ignored — "
                      "kairo uses the model's own chat template, else the preset's; give the Jinja itself, or a "
                      "file beside training_config.yaml, to choose one"))
    if scalar(model.get("trust_remote_code", False), "bool") is True:
        notes.append(("ModelConfig.trust_remote_code", "ignored — the preset decides, and no preset runs code from "
                                                        "the hub"))
    if model.get("revision") not in (None, "main"):
        notes.append(("ModelConfig.revision", f"{show(model['revision'])} is ignored — the preset pins the revision "
                                              "kairo fetches"))
