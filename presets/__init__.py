"""Model presets and the GPU instance-type catalogue, loaded from the YAML files beside this module.

A cluster can replace the presets with its own (the chart's presets ConfigMap mounted as a folder):
set `KAIRO_PRESETS_DIR` to a folder of `*.yaml` preset files.
"""

from __future__ import annotations

import difflib
import os
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

HERE = Path(__file__).parent
Method = Literal["lora", "qlora"]
METHODS: tuple[str, ...] = ("lora", "qlora")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HuggingFaceSource(_Strict):
    repo: str = Field(description="Hugging Face repo id, e.g. microsoft/Phi-3-mini-4k-instruct")
    revision: str = Field(description="A pinned commit, never a moving branch")


class OciSource(_Strict):
    ref: str = Field(description="An OCI reference holding the weights: an ORAS artifact, or a Kaito model image")


class BuiltinSource(_Strict):
    builder: Literal["tiny-llama"] = Field(description="Built offline by kairo, for tests and the demo")
    seed: int = 0


class PathSource(_Strict):
    path: str = Field(description="A folder on a mounted volume holding the weights")


class Source(_Strict):
    huggingface: HuggingFaceSource | None = None
    oci: OciSource | None = None
    builtin: BuiltinSource | None = None
    local: PathSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [k for k in ("huggingface", "oci", "builtin", "local") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a preset source needs exactly one of huggingface, oci, builtin, local; got {given}")
        return self

    def describe(self) -> str:
        if self.huggingface:
            return f"huggingface:{self.huggingface.repo}@{self.huggingface.revision[:12]}"
        if self.oci:
            return f"oci:{self.oci.ref}"
        if self.builtin:
            return f"builtin:{self.builtin.builder}(seed={self.builtin.seed})"
        assert self.local is not None
        return f"path:{self.local.path}"


class PodResources(_Strict):
    cpu: str = Field(description="CPU request of the train pod")
    memory: str = Field(description="Memory request of the train pod")


class TuningNeeds(_Strict):
    methods: tuple[Method, ...] = METHODS
    target_modules: tuple[str, ...] = Field(description="Default LoRA target modules")
    gpu_memory_gib: dict[Method, float] = Field(description="Total GPU memory one node needs, per method")
    min_gpu_memory_gib: float = Field(description="The least memory any single GPU must have")
    resources: PodResources


class Preset(_Strict):
    """A base model kairo knows how to fetch, tune and serve."""

    name: str
    family: str
    source: Source
    parameters_billion: float
    architecture: str
    context_length: int
    license: str
    trust_remote_code: bool = False
    gated: bool = Field(False, description="The hub repo needs an access token (presetOptions.modelAccessSecret)")
    kaito_preset: bool = Field(False, description="Kaito offers this preset for tuning under the same name")
    chat_template: str | None = Field(None, description="File under presets/chat_templates/ for models without one")
    tuning: TuningNeeds | None = Field(None, description="Absent when the preset cannot be tuned")

    @property
    def supports_tuning(self) -> bool:
        return self.tuning is not None

    @property
    def revision(self) -> str:
        if self.source.huggingface:
            return self.source.huggingface.revision
        if self.source.builtin:
            return f"seed-{self.source.builtin.seed}"
        return ""

    def memory_needed_gib(self, method: str) -> float:
        assert self.tuning is not None
        return self.tuning.gpu_memory_gib[method]  # type: ignore[index]

    @property
    def linear_modules(self) -> tuple[str, ...] | None:
        """The names of the model's linear layers (what LoRA's target_modules may name), when known offline."""
        return LINEAR_MODULES.get(self.architecture)


# The linear layers of each architecture a preset uses, by their last name (tests/test_presets.py checks them
# against transformers' own models), so that validate can judge LoraConfig.target_modules without the weights.
LINEAR_MODULES: dict[str, tuple[str, ...]] = {
    "FalconForCausalLM": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "lm_head"),
    "LlamaForCausalLM": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "MistralForCausalLM": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "Qwen2ForCausalLM": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "Phi3ForCausalLM": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"),
    "PhiForCausalLM": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"),
}


class Gpu(_Strict):
    model: str
    count: int
    memory_gib: float = Field(description="Memory per GPU")
    bf16: bool = Field(description="Native bfloat16 compute")


class InstanceType(_Strict):
    """A GPU machine size (an Azure VM SKU or an AWS instance type)."""

    name: str
    cloud: Literal["azure", "aws"]
    family: str
    gpu: Gpu
    vcpus: int
    memory_gib: float
    note: str | None = None

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu.count * self.gpu.memory_gib

    def holds(self, preset: Preset, method: str) -> bool:
        """True when this machine's GPUs hold `preset` trained with `method`."""
        if preset.tuning is None:
            return False
        return (
            self.total_gpu_memory_gib >= preset.memory_needed_gib(method)
            and self.gpu.memory_gib >= preset.tuning.min_gpu_memory_gib
        )


def _preset_dir() -> Path:
    return Path(os.environ.get("KAIRO_PRESETS_DIR") or HERE / "models")


@cache
def _load_presets(folder: str) -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        preset = Preset.model_validate(yaml.safe_load(path.read_text()))
        presets[preset.name] = preset
    return presets


def all_presets() -> dict[str, Preset]:
    """Every preset, by name."""
    return _load_presets(str(_preset_dir()))


def find_preset(name: str) -> Preset | None:
    """The preset called `name`, or the one whose Hugging Face repo `name` is (`microsoft/Phi-3-mini-4k-instruct`).

    Kaito users sometimes give the model card id; the hub treats repo ids case-insensitively, so do we.
    """
    presets = all_presets()
    if name in presets:
        return presets[name]
    if "/" not in name:
        return None
    return next((p for p in presets.values() if p.source.huggingface
                 and p.source.huggingface.repo.lower() == name.lower()), None)


def get_preset(name: str) -> Preset:
    """The preset called `name`; KeyError with close names when there is none."""
    presets = all_presets()
    if name not in presets:
        raise KeyError(unknown_name_message("preset", name, list(presets)))
    return presets[name]


@cache
def all_instance_types() -> dict[str, InstanceType]:
    """Every GPU instance type in the catalogue, by name."""
    data = yaml.safe_load((HERE / "instance_types.yaml").read_text())
    return {row["name"]: InstanceType.model_validate(row) for row in data["instance_types"]}


def get_instance_type(name: str) -> InstanceType:
    """The instance type called `name` (case-insensitive, as Azure treats VM sizes)."""
    types = all_instance_types()
    if name in types:
        return types[name]
    for known, value in types.items():
        if known.lower() == name.lower():
            return value
    raise KeyError(unknown_name_message("instance type", name, list(types)))


def fitting_instance_types(preset: Preset, method: str, limit: int = 5, cloud: str | None = None) -> list[InstanceType]:
    """The smallest instance types (of `cloud`, when given) that hold `preset` with `method`, cheapest-looking first."""
    fits = [t for t in all_instance_types().values() if t.holds(preset, method) and cloud in (None, t.cloud)]
    fits.sort(key=lambda t: (t.total_gpu_memory_gib, t.gpu.count, t.vcpus, t.name))
    return fits[:limit]


def close_names(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Names in `choices` that look like `name` (for "did you mean")."""
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    close = close_names(name, choices)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(sorted(choices))}"
    return f"unknown {kind} '{name}' — {hint}"


def chat_template_path(preset: Preset) -> Path | None:
    """The preset's own chat template file, when the model ships none."""
    if preset.chat_template is None:
        return None
    return HERE / "chat_templates" / preset.chat_template
