"""Kaito's tuning config (`training_config.yaml`), parsed once into typed sections.

The file is what Kaito users already have: a top-level `training_config:` with the sections
ModelConfig, TokenizerParams, QuantizationConfig, LoraConfig, TrainingArguments, DataCollator and
DatasetConfig. A ConfigMap manifest holding it under `data.training_config.yaml` is read too.
Unknown sections and unknown keys are errors naming them; keys of TrainingArguments, LoraConfig and
QuantizationConfig are checked against the Hugging Face classes they feed (kairo/schemas/hf_fields.json).

With no config, the method's default applies: Kaito's `lora-params-template` / `qlora-params-template`
(presets/training/*.yaml, the same files the chart installs as ConfigMaps).
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kairo.presets import HERE as PRESETS_DIR
from kairo.problems import InvalidInput, Problem, path_of, show

SECTIONS = (
    "ModelConfig",
    "TokenizerParams",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DataCollator",
    "DatasetConfig",
)
DEFAULT_TEMPLATES = {"lora": "lora-params-template", "qlora": "qlora-params-template"}
# Kaito resolves output_dir under /mnt; kairo maps that base onto the run's work directory.
KAITO_OUTPUT_BASE = "/mnt"
TEMPLATE_DIR = PRESETS_DIR / "training"


@cache
def hf_fields() -> dict[str, list[str]]:
    """Constructor keywords of the Hugging Face classes the sections feed."""
    return json.loads((Path(__file__).parent / "schemas" / "hf_fields.json").read_text())


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _OpenSection(BaseModel):
    """A section whose extra keys are checked against a Hugging Face class instead of listed here."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    _hf_class: str = ""

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSection(_Section):
    """Arguments for AutoModelForCausalLM.from_pretrained (Kaito's ModelConfig)."""

    pretrained_model_name_or_path: str | None = Field(None, description="Set by kairo: the fetched model folder")
    torch_dtype: Literal["bfloat16", "float16", "float32", "auto"] | None = Field(
        None, description="Weights dtype; bf16 falls back to fp16 on GPUs without bf16"
    )
    local_files_only: bool = Field(True, description="Never reach the hub while training")
    device_map: str | dict[str, Any] | None = Field("auto", description="Where layers go (spread over GPUs)")
    chat_template: str | None = Field(None, description="A Jinja chat template, inline or a file path")
    trust_remote_code: bool = Field(False, description="Only where the preset allows it")
    revision: str | None = Field(None, description="Set by kairo from the preset")
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None, description="Attention kernel; default sdpa"
    )
    cache_dir: str | None = None
    state_dict: None = None
    from_tf: bool = False
    force_download: bool = False
    resume_download: bool | None = None
    proxies: str | None = None
    output_loading_info: bool = False
    load_in_4bit: bool = Field(False, description="Kaito accepts it here too; QuantizationConfig is preferred")
    load_in_8bit: bool = False


class TokenizerSection(_Section):
    """How examples are tokenized."""

    max_length: int | None = Field(None, ge=8, description="Longest sequence in tokens (default: 2048 or the model's)")
    padding: bool | Literal["longest", "max_length", "do_not_pad"] = True
    truncation: bool | Literal["longest_first", "only_first", "only_second", "do_not_truncate"] = True
    add_special_tokens: bool = True
    padding_side: Literal["left", "right"] | None = None
    return_tensors: Literal["pt"] | None = None


class QuantizationSection(_OpenSection):
    """transformers.BitsAndBytesConfig (Kaito's QuantizationConfig)."""

    _hf_class = "BitsAndBytesConfig"
    quant_method: Literal["bitsandbytes"] = "bitsandbytes"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "fp4"
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = "float32"
    bnb_4bit_use_double_quant: bool = False

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit


class LoraSection(_OpenSection):
    """peft.LoraConfig (Kaito's LoraConfig)."""

    _hf_class = "LoraConfig"
    r: int = Field(8, ge=1)
    lora_alpha: float = Field(8, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str | None = Field(None, description="Default: the preset's target modules")
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = None


class TrainingArgumentsSection(_OpenSection):
    """transformers.TrainingArguments; kairo owns the paths."""

    _hf_class = "TrainingArguments"
    output_dir: str | None = Field(None, description="Under /mnt (Kaito) or relative; kairo maps it to the work dir")
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    save_strategy: Literal["no", "steps", "epoch", "best"] = "no"
    save_steps: float = 500
    logging_steps: float = 10
    bf16: bool | None = None
    fp16: bool | None = None
    gradient_checkpointing: bool | None = None
    seed: int = 42


class DataCollatorSection(_Section):
    """Kaito's DataCollator (DataCollatorForLanguageModeling); mlm is meaningless for causal LMs."""

    mlm: bool = Field(False, description="Kaito's templates say true; causal LMs train with mlm off, as Kaito falls back")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    pad_to_multiple_of: int | None = Field(None, ge=1)
    return_tensors: Literal["pt"] = "pt"


class DatasetSection(_Section):
    """Which data, how it is split and shuffled (Kaito's DatasetConfig)."""

    dataset_path: str | None = Field(None, description="File under the input's data folder (several files: all)")
    dataset_extension: Literal["json", "jsonl", "parquet", "csv", "arrow"] | None = None
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    instruction_column: str | None = None
    context_column: str | None = None
    response_column: str = "text"
    messages_column: str | None = None
    train_test_split: float = Field(0.8, gt=0, le=1, description="Share of rows used for training; 1 = no eval split")


class TrainingConfig(_Section):
    """The whole `training_config:` mapping."""

    ModelConfig: ModelSection = Field(default_factory=ModelSection)
    TokenizerParams: TokenizerSection = Field(default_factory=TokenizerSection)
    QuantizationConfig: QuantizationSection = Field(default_factory=QuantizationSection)
    LoraConfig: LoraSection = Field(default_factory=LoraSection)
    TrainingArguments: TrainingArgumentsSection = Field(default_factory=TrainingArgumentsSection)
    DataCollator: DataCollatorSection = Field(default_factory=DataCollatorSection)
    DatasetConfig: DatasetSection = Field(default_factory=DatasetSection)
    given: frozenset[str] = Field(default_factory=frozenset, exclude=True, description="Sections the file had")

    def problems(self, method: str, prefix: str = "training_config") -> list[Problem]:
        """Rules that need more than one field: method vs quantization, paths kairo owns, HF keys."""
        found: list[Problem] = []
        q = self.QuantizationConfig
        qpath = f"{prefix}.QuantizationConfig"
        if q.load_in_4bit and q.load_in_8bit:
            found.append(Problem(qpath, "load_in_4bit and load_in_8bit are both true — choose one"))
        if method == "lora" and (q.quantized or self.ModelConfig.load_in_4bit or self.ModelConfig.load_in_8bit):
            bits = "load_in_4bit" if (q.load_in_4bit or self.ModelConfig.load_in_4bit) else "load_in_8bit"
            found.append(
                Problem(
                    f"{qpath}.{bits}",
                    f"tuning.method is 'lora' but {bits} is true — lora trains full-precision weights; "
                    "use method 'qlora' or set load_in_4bit/load_in_8bit to false",
                )
            )
        if method == "qlora" and not (q.quantized or self.ModelConfig.load_in_4bit or self.ModelConfig.load_in_8bit):
            found.append(
                Problem(
                    qpath,
                    "tuning.method is 'qlora' but the config quantizes nothing — set "
                    "QuantizationConfig.load_in_4bit: true (or load_in_8bit), or use method 'lora'",
                )
            )
        for name in ("QuantizationConfig", "LoraConfig", "TrainingArguments"):
            section = getattr(self, name)
            allowed = set(hf_fields()[section._hf_class]) | set(type(section).model_fields)
            for key in section.extras():
                if key not in allowed:
                    found.append(
                        Problem(f"{prefix}.{name}.{key}", f"unknown key for {section._hf_class} — see its documentation")
                    )
        found += self._path_problems(prefix)
        found += self._training_problems(prefix)
        return found

    def _training_problems(self, prefix: str) -> list[Problem]:
        """Settings that cannot work together, caught before a pod starts rather than deep in a run."""
        found: list[Problem] = []
        ta, lora = self.TrainingArguments, self.LoraConfig
        if ta.bf16 and ta.fp16:
            found.append(Problem(f"{prefix}.TrainingArguments.bf16", "bf16 and fp16 are both true — choose one"))
        task = lora.extras().get("task_type")
        if task not in (None, "CAUSAL_LM"):
            found.append(Problem(f"{prefix}.LoraConfig.task_type",
                                 f"{show(task)} — kairo trains causal language models: CAUSAL_LM (or leave it out)"))
        if lora.target_modules is not None and len(lora.target_modules) == 0:
            found.append(Problem(f"{prefix}.LoraConfig.target_modules",
                                 "empty — list module names (e.g. q_proj, v_proj) or leave it out for the preset's"))
        extras = ta.extras()
        if extras.get("report_to") not in (None, "none", [], ["none"]):
            found.append(Problem(f"{prefix}.TrainingArguments.report_to",
                                 f"{show(extras['report_to'])} — training pods reach no tracking service; kairo writes "
                                 "metrics.json and loss.png instead: remove report_to"))
        if ta.max_steps == 0:
            found.append(Problem(f"{prefix}.TrainingArguments.max_steps", "0 — use a positive number, or -1 for epochs"))
        template = self.ModelConfig.chat_template
        if template and "{{" not in template and "{%" not in template and not _plain_file_name(template):
            found.append(Problem(f"{prefix}.ModelConfig.chat_template",
                                 f"{show(template)} — give the Jinja template itself, or the name of a file beside "
                                 "training_config.yaml (in the same ConfigMap), with no folder"))
        return found

    def _path_problems(self, prefix: str) -> list[Problem]:
        found: list[Problem] = []
        out = self.TrainingArguments.output_dir
        if out is not None and output_subdir(out) is None:
            found.append(
                Problem(
                    f"{prefix}.TrainingArguments.output_dir",
                    f"{show(out)} points outside the work directory — kairo owns the paths; use a relative "
                    f"folder or one under {KAITO_OUTPUT_BASE}/ as Kaito does",
                )
            )
        ta = self.TrainingArguments.extras()
        for key in ("logging_dir", "resume_from_checkpoint", "deepspeed", "hub_model_id", "push_to_hub"):
            if ta.get(key) not in (None, False):
                found.append(
                    Problem(f"{prefix}.TrainingArguments.{key}", f"{show(ta[key])} — kairo sets {key} itself; remove it")
                )
        model_path = self.ModelConfig.pretrained_model_name_or_path
        if model_path is not None and model_path != "/workspace/tfs/weights":
            found.append(
                Problem(
                    f"{prefix}.ModelConfig.pretrained_model_name_or_path",
                    f"{show(model_path)} — kairo loads the preset's model; choose the model with tuning.preset.name",
                )
            )
        if self.ModelConfig.cache_dir is not None:
            found.append(Problem(f"{prefix}.ModelConfig.cache_dir", "kairo manages the model cache; remove cache_dir"))
        return found


def _plain_file_name(value: str) -> bool:
    return value not in ("", ".", "..") and "/" not in value and "\\" not in value


def output_subdir(value: str) -> str | None:
    """The relative folder a user's output_dir names, or None when it escapes the work directory."""
    path = posixpath.normpath(value)
    if path.startswith(KAITO_OUTPUT_BASE + "/"):
        path = path[len(KAITO_OUTPUT_BASE) + 1 :]
    elif path.startswith("/") or path == KAITO_OUTPUT_BASE:
        return None
    if path in ("", ".") or path == ".." or path.startswith("../"):
        return None
    return path


def parse_training_config(data: Any, source: str = "training_config.yaml") -> TrainingConfig:
    """Typed config from parsed YAML (a `training_config:` file or a ConfigMap manifest)."""
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        text = (data.get("data") or {}).get("training_config.yaml")
        if text is None:
            name = (data.get("metadata") or {}).get("name", "?")
            raise InvalidInput([Problem("data", f"ConfigMap '{name}' has no key training_config.yaml")], source)
        data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("training_config"), dict):
        raise InvalidInput([Problem("training_config", "expected a mapping under the key training_config")], source)
    body = data["training_config"]
    problems = [
        Problem(f"training_config.{key}", f"unrecognised section — allowed: {', '.join(SECTIONS)}")
        for key in body
        if key not in SECTIONS
    ]
    extra_top = [k for k in data if k != "training_config"]
    problems += [Problem(k, "unrecognised top-level key — only training_config is read") for k in extra_top]
    sections = {k: (v if v is not None else {}) for k, v in body.items() if k in SECTIONS}
    try:
        config = TrainingConfig.model_validate(sections)
    except ValidationError as err:
        problems += [
            Problem(path_of(("training_config", *e["loc"])), _message(e)) for e in err.errors(include_url=False)
        ]
        raise InvalidInput(problems, source) from err
    if problems:
        raise InvalidInput(problems, source)
    return config.model_copy(update={"given": frozenset(sections)})


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return f"{show(error.get('input'))} — {error['msg']}"


def load_training_config(path: str | Path) -> TrainingConfig:
    """Read and parse a training config file."""
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidInput([Problem("", f"not valid YAML: {err}")], str(path)) from err
    return parse_training_config(data, str(path))


def default_training_config(method: str) -> TrainingConfig:
    """Kaito's default for `method` (its lora-/qlora-params-template ConfigMap)."""
    return load_training_config(TEMPLATE_DIR / f"{DEFAULT_TEMPLATES[method]}.yaml")


def resolve_training_config(method: str, name: str | None, file: str | Path | None) -> TrainingConfig:
    """The config a run uses: a file given with --config, a default template by name, or the method's default."""
    if file is not None:
        return load_training_config(file)
    if name in DEFAULT_TEMPLATES.values():
        template = next(m for m, t in DEFAULT_TEMPLATES.items() if t == name)
        return default_training_config(template)
    return default_training_config(method)
