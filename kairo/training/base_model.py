"""The base model a preset names: its tokenizer, its module names (read without loading weights), and its
weights loaded in full precision (lora) or 4-/8-bit (qlora). Shared by train and evaluate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kairo.presets import Preset
from kairo.problems import InvalidInput, Problem, show
from kairo.training.chat import resolve_chat_template
from kairo.training.config import TrainingConfig
from kairo.training.devices import Precision

LORA = "training_config.LoraConfig"


def load_tokenizer(model_dir: Path, preset: Preset, config: TrainingConfig,
                   config_dir: Path | None = None) -> tuple[Any, str]:
    """The model's tokenizer with a chat template (see kairo.training.chat), a pad token, and where the template came from."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        model_dir, local_files_only=True, trust_remote_code=preset.trust_remote_code
    )
    source = resolve_chat_template(tokenizer, preset, config.ModelConfig.chat_template, config_dir)
    if tokenizer.pad_token is None:  # padding is masked out of attention and loss: any token will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, source


def module_names(model_dir: Path, trust_remote_code: bool = False) -> dict[str, bool]:
    """Every module name of the model, True for linear layers — from its config alone, on the meta device."""
    from accelerate import init_empty_weights
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name: isinstance(m, nn.Linear | Conv1D) for name, m in model.named_modules() if name}


def lora_targets(model_dir: Path, preset: Preset, config: TrainingConfig) -> list[str] | str:
    """The LoRA target modules (the config's, else the preset's), refused before loading when the model lacks them."""
    assert preset.tuning is not None
    lora = config.LoraConfig
    targets: list[str] | str = lora.target_modules if lora.target_modules else list(preset.tuning.target_modules)
    names = module_names(model_dir, preset.trust_remote_code)
    linear = sorted({n.rsplit(".", 1)[-1] for n, is_linear in names.items() if is_linear})
    have = f"the linear modules of this model are: {', '.join(linear)}"

    def matches(key: str, linear_only: bool) -> bool:
        return any((n == key or n.endswith("." + key)) and (is_linear or not linear_only)
                   for n, is_linear in names.items())

    problems = []
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, n) for n, lin in names.items() if lin):
            problems.append(Problem(f"{LORA}.target_modules", f"{show(targets)} matches no linear module — {have}"))
    else:
        for i, key in enumerate(targets):
            if not matches(key, linear_only=True):
                what = "is not a linear module" if matches(key, linear_only=False) else "is not in this model"
                problems.append(Problem(f"{LORA}.target_modules[{i}]", f"{show(key)} {what} — {have}"))
    for i, key in enumerate(lora.modules_to_save or []):
        if not matches(key, linear_only=False):
            problems.append(Problem(f"{LORA}.modules_to_save[{i}]", f"{show(key)} is not in this model — {have}"))
    if problems:
        raise InvalidInput(problems)
    return targets


def quantization(config: TrainingConfig, precision: Precision, sharded: bool = False) -> Any | None:
    """transformers.BitsAndBytesConfig for a quantized base model (qlora), or None (lora).

    Sharded (FSDP), the 4-bit weights are stored in the compute dtype (`bnb_4bit_quant_storage`), so FSDP can
    flatten and shard them with the rest; packed uint8 would not shard."""
    import torch
    from transformers import BitsAndBytesConfig

    q, m = config.QuantizationConfig, config.ModelConfig
    if not (q.quantized or m.load_in_4bit or m.load_in_8bit):
        return None
    return BitsAndBytesConfig(
        load_in_4bit=q.load_in_4bit or m.load_in_4bit,
        load_in_8bit=q.load_in_8bit or m.load_in_8bit,
        bnb_4bit_quant_type=q.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=getattr(torch, precision.compute_dtype),
        **({"bnb_4bit_quant_storage": getattr(torch, precision.compute_dtype)}
           if sharded and "bnb_4bit_quant_storage" not in q.extras() else {}),
        **q.extras(),
    )


def load_base_model(model_dir: Path, preset: Preset, config: TrainingConfig, precision: Precision,
                    device_map: Any, sharded: bool = False) -> Any:
    """The base model's weights: quantized when the config says so, in the compute dtype otherwise."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=getattr(torch, precision.compute_dtype),
        quantization_config=quantization(config, precision, sharded),
        device_map=device_map,
        attn_implementation=config.ModelConfig.attn_implementation or "sdpa",
        local_files_only=True,
        trust_remote_code=preset.trust_remote_code,
        use_safetensors=True,
    )
    # Packed examples stay apart only without a KV cache (kairo.training.packing); training never needs one.
    model.config.use_cache = False
    if device_map == {"": "cpu"}:
        _no_packed_cpu_weights(model)
    return model


def _no_packed_cpu_weights(model: Any) -> None:
    """Keep bitsandbytes' 4-bit layers off their CPU inference layout.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weights the first time it runs in eval
    mode without gradients (the held-out loss, evaluate), and asserts that every output size is a multiple
    of 32 (a 176-wide MLP failed there). The plain 4-bit path computes the same result, for any shape.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
