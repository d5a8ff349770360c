"""Kaito's tuning config (`training_config.yaml`), parsed once into typed sections.

The file is what Kaito users already have: a top-level `training_config:` with the sections
ModelConfig, TokenizerParams, QuantizationConfig, LoraConfig, TrainingArguments, DataCollator and
DatasetConfig. A ConfigMap manifest holding it under `data.training_config.yaml` is read too.
Unknown sections and unknown keys are errors naming them; keys of TrainingArguments, LoraConfig and
QuantizationConfig are checked against the Hugging Face classes they feed (kairo/schemas/hf_fields.json);
values are first read the way Kaito's trainer reads them (kairo.training.kaito_keys).

With no config, the method's default applies: Kaito's `lora-params-template` / `qlora-params-template`
(presets/training/*.yaml, the same files the chart installs as ConfigMaps).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kairo import yamlfile
from kairo.presets import HERE as PRESETS_DIR
from kairo.problems import InvalidInput, Problem, path_of, show
from kairo.training.kaito_keys import as_kaito_reads_it, hf_fields
from kairo.training.vllm import lora_findings

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _OpenSection(BaseModel):
    """A section whose extra keys are checked against a Hugging Face class instead of listed here."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    _hf_class: str = ""

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# Kaito resolves dtype names with getattr(torch, name): these spellings name the same dtypes.
DTYPE_ALIASES = {"half": "float16", "float": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16",
                 "torch.float32": "float32"}


def _dtype_name(value: Any) -> Any:
    return DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class ModelSection(_Section):
    """Arguments for AutoModelForCausalLM.from_pretrained (Kaito's ModelConfig)."""

    _dtype = field_validator("torch_dtype", mode="before")(_dtype_name)

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
    padding: bool | Literal["longest", "max_length", "do_not_pad"] | None = True
    truncation: bool | Literal["longest_first", "only_first", "only_second", "do_not_truncate"] | None = True
    add_special_tokens: bool = True
    padding_side: Literal["left", "right"] | None = None
    return_tensors: Literal["pt"] | None = None
    # The rest of the tokenizer call's keywords, as Kaito's earlier TokenizerParams listed them. kairo tokenizes
    # whole conversations and packs them, so they change nothing; they are accepted so such configs still load.
    stride: int = 0
    is_split_into_words: bool = False
    pad_to_multiple_of: int | None = None
    return_token_type_ids: bool | None = None
    return_attention_mask: bool | None = None
    return_overflowing_tokens: bool = False
    return_special_tokens_mask: bool = False
    return_offsets_mapping: bool = False
    return_length: bool = False
    verbose: bool = True


class QuantizationSection(_OpenSection):
    """transformers.BitsAndBytesConfig (Kaito's QuantizationConfig)."""

    _hf_class = "BitsAndBytesConfig"
    _dtype = field_validator("bnb_4bit_compute_dtype", mode="before")(_dtype_name)
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
    # DataCollatorForLanguageModeling's masking options: they only act with mlm, which causal LMs do not use.
    mask_replace_prob: float = Field(0.8, ge=0, le=1)
    random_replace_prob: float = Field(0.1, ge=0, le=1)
    whole_word_mask: bool = False
    seed: int | None = None
    tf_experimental_compile: bool = False


class DatasetSection(_Section):
    """Which data, how it is split and shuffled (Kaito's DatasetConfig)."""

    dataset_path: str | None = Field(None, description="File under the input's data folder (several files: all)")
    dataset_extension: Literal["json", "jsonl", "parquet", "csv", "tsv", "arrow"] | None = None
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
    notes: tuple[tuple[str, str], ...] = Field((), exclude=True,
                                               description="Warnings from reading the file: (path in it, message)")

    def problems(self, method: str, prefix: str = "training_config") -> list[Problem]:
        """Rules that need more than one field: method vs quantization, paths kairo owns, HF keys."""
        found = [Problem(f"{prefix}.{path}", message, "warning") for path, message in self.notes]
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
        for key, allowed in hf_fields()["choices"]["TrainingArguments"].items():
            value = ta.extras().get(key)
            if isinstance(value, str) and value not in allowed:  # transformers would stop the run on it
                found.append(Problem(f"{prefix}.TrainingArguments.{key}", f"{show(value)} — allowed: "
                                                                          f"{', '.join(allowed)}"))
        task = lora.extras().get("task_type")
        if task not in (None, "CAUSAL_LM"):
            found.append(Problem(f"{prefix}.LoraConfig.task_type",
                                 f"{show(task)} — kairo trains causal language models: CAUSAL_LM (or leave it out)"))
        if lora.target_modules is not None and len(lora.target_modules) == 0:
            found.append(Problem(f"{prefix}.LoraConfig.target_modules",
                                 "empty — list module names (e.g. q_proj, v_proj) or leave it out for the preset's"))
        for finding in lora_findings(lora):  # the adapter is served by vLLM under Kaito
            found.append(Problem(f"{prefix}.LoraConfig.{finding.field}", f"{show(finding.value)} — {finding.says}",
                                 "warning"))
        report_to = ta.extras().get("report_to")
        if report_to not in (None, [], "") and not all(str(r).lower() == "none" for r in _as_list(report_to)):
            found.append(Problem(f"{prefix}.TrainingArguments.report_to",
                                 f"{show(report_to)} is ignored — training pods reach no tracking service; kairo "
                                 "records metrics.json and loss.png (the Argo UI shows both)", "warning"))
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
                    f"{show(out)} names no folder under {KAITO_OUTPUT_BASE}/ — Kaito refuses it too; use a "
                    f"relative folder such as 'results', or '{KAITO_OUTPUT_BASE}/results' as Kaito's templates do",
                )
            )
        ta = self.TrainingArguments.extras()
        for key in ("resume_from_checkpoint", "deepspeed", "hub_model_id", "push_to_hub"):
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


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _plain_file_name(value: str) -> bool:
    return value not in ("", ".", "..") and "/" not in value and "\\" not in value


def output_subdir(value: str) -> str | None:
    """The folder under the output base that a user's output_dir names, or None when it names no folder there.

    Kaito's rule: the value is joined onto /mnt (an absolute path too) and must stay below it; its own templates
    write `/mnt/results`, which stays `results`.
    """
    base = KAITO_OUTPUT_BASE + "/"
    joined = posixpath.normpath(base + value.lstrip("/")) if value else KAITO_OUTPUT_BASE
    if not joined.startswith(base):
        return None
    path = posixpath.normpath(value)
    return path[len(base):] if path.startswith(base) else joined[len(base):]


def parse_training_config(data: Any, source: str = "training_config.yaml") -> TrainingConfig:
    """Typed config from parsed YAML (a `training_config:` file or a ConfigMap manifest)."""
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        text = (data.get("data") or {}).get("training_config.yaml")
        if text is None:
            name = (data.get("metadata") or {}).get("name", "?")
            raise InvalidInput([Problem("data", f"ConfigMap '{name}' has no key training_config.yaml")], source)
        try:
            data = yamlfile.load(str(text))
        except yamlfile.YAMLRefused as err:
            name = (data.get("metadata") or {}).get("name", "?")
            raise InvalidInput([Problem("data.training_config.yaml", f"ConfigMap '{name}': {err}")], source) from err
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
    sections, notes, wrong = as_kaito_reads_it(sections)
    problems += wrong
    try:
        config = TrainingConfig.model_validate(sections)
    except ValidationError as err:
        problems += [
            Problem(path_of(("training_config", *e["loc"])), _message(e)) for e in err.errors(include_url=False)
        ]
        raise InvalidInput(problems, source) from err
    if problems:
        raise InvalidInput(problems, source)
    return config.model_copy(update={"given": frozenset(sections), "notes": tuple(notes)})


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return f"{show(error.get('input'))} — {error['msg']}"


def load_training_config(path: str | Path, name: str | None = None) -> TrainingConfig:
    """Read and parse a training config file: `training_config:` itself, or a file holding its ConfigMap.

    A file of several documents (a Workspace with its ConfigMap, say) gives the ConfigMap holding
    training_config.yaml — the one called `name` when there are several.
    """
    return parse_training_config(_config_document(path, name), str(path))


def training_config_text(path: str | Path, name: str | None = None) -> str:
    """The training_config.yaml text a --config FILE holds, to ship as a ConfigMap (see load_training_config)."""
    doc = _config_document(path, name)
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        return str((doc.get("data") or {}).get("training_config.yaml", ""))
    text = yamlfile.read_text(path)
    return text if len(_documents(text, path)) <= 1 else yaml.safe_dump(doc, sort_keys=False)


def _documents(text: str, path: str | Path) -> list[Any]:
    try:
        return [d for d in yamlfile.load_all(text) if d is not None]
    except yamlfile.YAMLRefused as err:
        raise InvalidInput([Problem("", str(err))], str(path)) from err


def _config_document(path: str | Path, name: str | None) -> Any:
    try:
        text = yamlfile.read_text(path)
    except OSError as err:
        raise InvalidInput([Problem("", f"cannot read the training config: {err.strerror}")], str(path)) from err
    except yamlfile.YAMLRefused as err:
        raise InvalidInput([Problem("", str(err))], str(path)) from err
    docs = _documents(text, path)
    if len(docs) <= 1:
        return docs[0] if docs else None
    configs = [d for d in docs if isinstance(d, dict) and ("training_config" in d or (
        d.get("kind") == "ConfigMap" and "training_config.yaml" in (d.get("data") or {})))]
    named = [d for d in configs if name and (d.get("metadata") or {}).get("name") == name]
    if len(named) == 1 or len(configs) == 1:
        return (named or configs)[0]
    names = [str((d.get("metadata") or {}).get("name", "?")) for d in configs]
    why = (f"{len(configs)} ConfigMaps hold training_config.yaml ({', '.join(names)}) — name one with tuning.config"
           if configs else "none of its documents is a training_config or a ConfigMap holding training_config.yaml")
    raise InvalidInput([Problem("", why)], str(path))


def default_training_config(method: str) -> TrainingConfig:
    """Kaito's default for `method` (its lora-/qlora-params-template ConfigMap)."""
    return load_training_config(TEMPLATE_DIR / f"{DEFAULT_TEMPLATES[method]}.yaml")


def resolve_training_config(method: str, name: str | None, file: str | Path | None) -> TrainingConfig:
    """The config a run uses: a file given with --config, a default template by name, or the method's default."""
    if file is not None:
        return load_training_config(file, name)
    if name in DEFAULT_TEMPLATES.values():
        template = next(m for m, t in DEFAULT_TEMPLATES.items() if t == name)
        return default_training_config(template)
    return default_training_config(method)
