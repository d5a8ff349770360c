"""The train step's view of its device: which precision to compute in.

`choose_precision` is a pure function of the GPU's compute capability (None on CPU), so the decision for a
V100 or a T4 is tested without one; `capability()` reads it from torch. Whether a preset fits in the
machine's memory is `kairo.machine.fit_problem`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kairo.problems import InvalidInput, Problem

BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bfloat16; V100 (7.0) and T4 (7.5) do not
FIELD = "training_config.TrainingArguments"


@dataclass(frozen=True)
class Precision:
    """The dtype weights compute in, and the mixed-precision switches for TrainingArguments."""

    compute_dtype: str  # "bfloat16" | "float16" | "float32"
    bf16: bool
    fp16: bool
    note: str


def choose_precision(
    capability: tuple[int, int] | None, *, preferred: str | None = None, bf16: bool | None = None,
    fp16: bool | None = None, gpu: str = "GPU",
) -> Precision:
    """The precision to train in: `capability` is the GPU's (None on CPU), `preferred` the config's dtype,
    `bf16`/`fp16` the user's TrainingArguments switches (None when not set).

    A bfloat16 preference (Kaito's default) falls back to float16 with a loss scaler on GPUs without bf16;
    a user who sets `bf16: true` there gets an error naming the field instead of a crash deep in CUDA.
    """
    if bf16 and fp16:
        raise InvalidInput([Problem(f"{FIELD}.bf16", "bf16 and fp16 are both true — choose one")])
    if capability is None:
        if fp16:
            raise InvalidInput([Problem(f"{FIELD}.fp16", "true, but this run is on a CPU — fp16 mixed precision "
                                                         "needs a CUDA GPU; remove fp16")])
        return Precision("float32", bool(bf16), False,
                         "CPU: computing in float32" + (" with bf16 autocast" if bf16 else ""))
    cap = f"{capability[0]}.{capability[1]}"
    if capability < BF16_CAPABILITY:
        if bf16:
            raise InvalidInput([Problem(f"{FIELD}.bf16", f"true, but this {gpu} (compute capability {cap}) has no "
                                                         "bfloat16 — remove bf16 or set fp16: true")])
        if preferred == "float32" and not fp16:
            return Precision("float32", False, False, f"{gpu} (compute capability {cap}): float32 as configured")
        scaled = fp16 is not False
        return Precision("float16", False, scaled,
                         f"this {gpu} (compute capability {cap}) has no bfloat16: computing in float16"
                         + (" with fp16 mixed precision and a loss scaler" if scaled else ""))
    if fp16 and not bf16:
        return Precision("float16", False, True, "float16 with a loss scaler, as configured (fp16: true)")
    if preferred == "float32":
        return Precision("float32", bool(bf16), False, "float32 as configured")
    if preferred == "float16":
        return Precision("float16", False, True, "float16 with a loss scaler, as configured (torch_dtype)")
    return Precision("bfloat16", bf16 is not False, False, f"{gpu} (compute capability {cap}): computing in bfloat16")


def capability(device: str = "auto") -> tuple[tuple[int, int] | None, str]:
    """The compute capability and name of the GPU this process trains on; (None, "CPU") on CPU."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return tuple(torch.cuda.get_device_capability(0)), torch.cuda.get_device_name(0)  # type: ignore[return-value]
    if device == "cuda":
        raise InvalidInput([Problem("--device", "cuda was asked for, but torch sees no CUDA GPU on this node")])
    return None, "CPU"
