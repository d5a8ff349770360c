"""bench/gpu_train.py's parts: the model shapes, the random model built from them, the data, the FLOP count
behind MFU, and the probe that times each training step. Nothing here trains; gpu_train.py runs the recipes.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

GIB = 1024**3

# Published config.json values, copied here so that no download is needed; the weights are random.
SHAPES: dict[str, dict[str, Any]] = {
    # huggingface.co/microsoft/Phi-3-mini-4k-instruct/blob/0a67737cc96d2554230f90338b163bc6380a2a85/config.json
    # (the revision presets/models/phi-3-mini-4k-instruct.yaml pins)
    "phi-3-mini": {
        "preset": "phi-3-mini-4k-instruct",
        "model_type": "phi3",
        "config": {
            "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "embd_pdrop": 0.0, "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02,
            "intermediate_size": 8192, "max_position_embeddings": 4096, "num_attention_heads": 32,
            "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
            "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 2047,
            "tie_word_embeddings": False, "vocab_size": 32064,
        },
    },
    # huggingface.co/meta-llama/Llama-3.1-8B-Instruct/blob/0e9e39f249a16976918f6564b8830bc894c89659/config.json
    # (Llama-3-8B's shape; its llama3 rope scaling is left out: it changes no tensor's size)
    "llama-3-8b": {
        "preset": "llama-3.1-8b-instruct",
        "model_type": "llama",
        "config": {
            "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
            "max_position_embeddings": 131072, "mlp_bias": False, "num_attention_heads": 32,
            "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
            "tie_word_embeddings": False, "vocab_size": 128256,
        },
    },
}
# --tiny: the same architectures at toy widths (every 4-bit output size a multiple of 32, as bitsandbytes'
# CPU kernel wants), the tiny tokenizer's vocabulary.
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 512}
TINY_KV_HEADS = {"phi3": 4, "llama": 2}


def shape_config(shape: str, tiny: bool = False, layers: int | None = None) -> dict[str, Any]:
    """The config.json values of `shape` (see SHAPES), shrunk for --tiny, with `layers` decoder layers if given."""
    spec = SHAPES[shape]
    values = dict(spec["config"])
    if tiny:
        values.update(TINY, num_key_value_heads=TINY_KV_HEADS[spec["model_type"]])
        if "original_max_position_embeddings" in values:
            values["original_max_position_embeddings"] = TINY["max_position_embeddings"]
    if layers:
        values["num_hidden_layers"] = layers
    return values


def build_model(out: Path, shape: str, *, tiny: bool, layers: int | None = None, seed: int = 0,
                tokenizer: Any = None) -> dict[str, Any]:
    """Write a random-weight model of `shape` (bf16 safetensors on CUDA, float32 on CPU) with kairo's tiny
    tokenizer (trained here; its ids are a subset of any vocabulary) to `out`; say what it is."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from kairo.training.tinymodel import build_tokenizer

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(seed)
    values = shape_config(shape, tiny, layers)
    if tiny:
        values["vocab_size"] = len(tokenizer)
    tokenizer.model_max_length = values["max_position_embeddings"]
    config = AutoConfig.for_model(SHAPES[shape]["model_type"], **values, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(seed)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    counts = parameter_counts(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return {"shape": shape, "tiny": tiny, "layers": values["num_hidden_layers"], "dir": str(out),
            "dtype": str(dtype).removeprefix("torch."), **counts, "seconds": round(time.monotonic() - started, 1),
            "config": {k: values[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "vocab_size")}}


def prepare_model(bench: Any, layers: int | None, folder: str) -> dict[str, Any]:
    """A random-weight model of the run's shape under work/FOLDER/model/PRESET (the train step's layout)."""
    from kairo.training.tinymodel import build_tokenizer

    if bench.tokenizer is None:
        bench.tokenizer = build_tokenizer()
    target = bench.work / folder / "model" / bench.preset
    info = build_model(target, bench.args.shape, tiny=bench.tiny, layers=layers, tokenizer=bench.tokenizer)
    bench.say(f"model {folder}: {info['parameters'] / 1e9:.3f}B parameters ({info['layers']} layers, "
              f"{info['dtype']}) written in {info['seconds']} s")
    return info


def parameter_counts(model: Any) -> dict[str, int]:
    """All parameters, and N: those of the matrix multiplies (every Linear, lm_head included; no embedding or norm)."""
    from torch import nn

    total = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {"parameters": total, "matmul_parameters": matmul, "layers_n": config.num_hidden_layers,
            "attention_width": config.num_attention_heads * head_dim}


MFU_CONVENTION = (
    "MFU = real tokens/s x FLOPs per token / peak. FLOPs per token: mfu_4n = 4*N + attention (LoRA: forward 2N "
    "and activation gradients 2N; the frozen base has no weight gradients; LoRA's own matrices left out), "
    "mfu_6n = 6*N + attention (the full-fine-tuning convention). N = parameters of every Linear, lm_head "
    "included, embeddings and norms not. Attention = 6*L*d*l per token for an example of l tokens (causal "
    "QK^T and AV, forward and backward), averaged over the training examples. Recomputation by gradient "
    "checkpointing and padding tokens are not counted.")


def flops_per_token(matmul_parameters: int, layers: int, attention_width: int, lengths: list[int]) -> dict[str, float]:
    """Training FLOPs per real token, both conventions, plus the causal attention term for these example lengths.

    Matrix multiplies: forward 2·N, the activations' gradients 2·N, the weights' gradients 2·N — LoRA skips
    the last for the frozen base (≈ 4·N; LoRA's own small matrices are left out); "6N" is the full-fine-tuning
    convention most papers quote. Attention (no weights): an example of l tokens costs 2·L·d·l² forward
    (QKᵀ and AV, causal half), three times that with the backward; spread over its l tokens. Recomputation
    under gradient checkpointing is not counted (MFU counts the model's work, not the hardware's).
    """
    tokens = sum(lengths)
    attention = 6 * layers * attention_width * sum(n * n for n in lengths) / tokens if tokens else 0.0
    return {"lora_4n": 4 * matmul_parameters + attention, "full_6n": 6 * matmul_parameters + attention,
            "attention": attention}


def mfu(tokens_per_second: float | None, flops: dict[str, float], peak_tflops: float) -> dict[str, float | None]:
    """Model FLOPs utilisation under both conventions of `flops_per_token`, against `peak_tflops`."""
    if not tokens_per_second:
        return {"mfu_4n": None, "mfu_6n": None}
    peak = peak_tflops * 1e12
    return {"mfu_4n": float(f"{tokens_per_second * flops['lora_4n'] / peak:.3g}"),
            "mfu_6n": float(f"{tokens_per_second * flops['full_6n'] / peak:.3g}")}


class StepClock:
    """A TrainerCallback (made by `step_clock`) timing every optimizer step, counting its tokens, and stopping
    training once `deadline` (time.monotonic) has passed.

    On CUDA a step is the time between two events recorded on the stream at the ends of consecutive steps
    (no synchronisation added: the host keeps queueing work as it would unprobed); on CPU the host clock.
    Peak memory is reset when training begins, so that every recipe's peak is its training's alone.
    """

    def __init__(self, tokens: Callable[[], tuple[int, int]], deadline: float):
        import torch

        self.tokens = tokens
        self.deadline = deadline
        self.cuda = torch.cuda.is_available()
        self.marks: list[Any] = []  # CUDA events, or host times, at the start and after each step
        self.counts: list[tuple[int, int]] = []  # (real tokens, tokens with padding) of each step
        self.steps: list[tuple[float, int, int]] = []  # (seconds, real tokens, tokens with padding), at the end
        self.cut = False
        self.memory: dict[str, float | None] = {"weights_gib": None, "peak_allocated_gib": None,
                                                "peak_reserved_gib": None}
        self.scaler: str | None = None
        self._last_tokens = (0, 0)

    def _mark(self) -> None:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.monotonic())

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.memory["weights_gib"] = round(torch.cuda.memory_allocated() / GIB, 2)
        self._last_tokens = self.tokens()
        self._mark()

    def on_step_end(self, args, state, control, **kwargs):
        self._mark()
        counted = self.tokens()
        self.counts.append((counted[0] - self._last_tokens[0], counted[1] - self._last_tokens[1]))
        self._last_tokens = counted
        if time.monotonic() > self.deadline and state.global_step < state.max_steps:
            self.cut = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            seconds = [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:], strict=False)]
            self.memory["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            self.memory["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
        else:
            seconds = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        self.steps = [(s, real, padded) for s, (real, padded) in zip(seconds, self.counts, strict=False)]
        self.marks = []

    def summary(self, warmup: int) -> dict[str, Any]:
        """Steady-state figures: the first `warmup` steps (compilation, allocator, autotuning) left out."""
        timed = self.steps[warmup:] if len(self.steps) > warmup else self.steps[-1:]
        seconds = sum(s for s, _, _ in timed)
        real = sum(r for _, r, _ in timed)
        return {
            "steps_timed": len(timed), "warmup_steps": len(self.steps) - len(timed),
            "step_seconds_median": round(statistics.median(s for s, _, _ in timed), 4) if timed else None,
            "first_step_seconds": round(self.steps[0][0], 3) if self.steps else None,
            "tokens_per_second": round(real / seconds, 1) if seconds > 0 else None,
            "tokens_per_step": round(real / len(timed), 1) if timed else None,
            "cut_at_deadline": self.cut, **self.memory,
        }


def step_clock(tokens: Callable[[], tuple[int, int]], deadline: float):
    """A StepClock that is also a transformers TrainerCallback (imported late: transformers is heavy)."""
    from transformers import TrainerCallback

    class Clock(StepClock, TrainerCallback):
        pass

    return Clock(tokens, deadline)


@contextlib.contextmanager
def replaced(name: str, value: Any, modules: tuple[str, ...]) -> Iterator[None]:
    """Set `name` to `value` in each of `modules` that has it, for the block (a probe or a simulated device).

    The recipe imports its parts inside `train()`, from their modules; a module that imported one at its top
    has its own reference, so every named module is patched.
    """
    import importlib

    saved = [(module, getattr(module, name)) for module in map(importlib.import_module, modules)
             if hasattr(module, name)]
    for module, _ in saved:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, original in saved:
            setattr(module, name, original)


def length_spread(lengths: list[int]) -> dict[str, float]:
    """Token lengths of the examples: count, mean, median, p90, max, and the share of all tokens in the top 10 %."""
    if not lengths:
        return {"examples": 0}
    ordered = sorted(lengths)
    top = ordered[int(len(ordered) * 0.9):]
    return {"examples": len(ordered), "tokens": sum(ordered), "mean": round(sum(ordered) / len(ordered), 1),
            "median": ordered[len(ordered) // 2], "p90": ordered[int(len(ordered) * 0.9) - 1 if len(ordered) > 1 else 0],
            "max": ordered[-1], "top_10pct_token_share": round(sum(top) / sum(ordered), 3)}


def write_json(path: Path, value: Any) -> None:
    """JSON with NaN and infinities written as null, replaced atomically (a killed run leaves the last whole file)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(value), indent=2) + "\n")
    tmp.replace(path)
