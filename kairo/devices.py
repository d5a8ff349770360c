"""What the training device can do: which precision to compute in, and whether the model fits in its memory.

The decisions are pure functions of the device's figures (compute capability, memory), so they are tested
without the device; `probe()` reads the figures from torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kairo.presets import Preset
from kairo.problems import InvalidInput, Problem

BF16_CAPABILITY = (8, 0)  # Ampere and newer compute in bfloat16; V100 (7.0) and T4 (7.5) do not
GIB = 1024**3


@dataclass(frozen=True)
class Device:
    """The figures the decisions need: kind, GPU compute capability, memory per GPU (or RAM on CPU)."""

    kind: str  # "cuda" or "cpu"
    count: int = 1
    capability: tuple[int, int] | None = None
    memory_gib: tuple[float, ...] = ()
    name: str = ""

    @property
    def has_bf16(self) -> bool:
        return self.kind == "cuda" and self.capability is not None and self.capability >= BF16_CAPABILITY

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"CPU with {sum(self.memory_gib):.1f} GiB of memory"
        cap = f"compute capability {self.capability[0]}.{self.capability[1]}" if self.capability else ""
        return f"{self.count}× {self.name or 'GPU'} ({cap}, {min(self.memory_gib):.1f} GiB each)"


@dataclass(frozen=True)
class Precision:
    """The dtype weights compute in, and the mixed-precision switches for TrainingArguments."""

    compute_dtype: str  # "bfloat16" | "float16" | "float32"
    bf16: bool
    fp16: bool
    note: str


def choose_precision(device: Device, *, preferred: str | None, bf16: bool | None, fp16: bool | None) -> Precision:
    """The precision to train in on `device`; `preferred` is the config's dtype, bf16/fp16 the user's switches.

    A bfloat16 preference (Kaito's default) falls back to float16 with a loss scaler on GPUs without bf16;
    a user who sets `bf16: true` there gets an error instead of a crash deep in CUDA.
    """
    field = "training_config.TrainingArguments"
    if bf16 and fp16:
        raise InvalidInput([Problem(f"{field}.bf16", "bf16 and fp16 are both true — choose one")])
    if device.kind == "cpu":
        if fp16:
            raise InvalidInput([Problem(f"{field}.fp16", "true, but this run is on a CPU — fp16 mixed precision "
                                                         "needs a CUDA GPU; remove fp16")])
        mixed = " with bf16 autocast" if bf16 else ""
        return Precision("float32", bool(bf16), False, f"CPU: computing in float32{mixed}")
    cap = f"{device.capability[0]}.{device.capability[1]}" if device.capability else "unknown"
    if not device.has_bf16:
        if bf16:
            raise InvalidInput([Problem(f"{field}.bf16", f"true, but this GPU ({device.name or 'GPU'}, compute "
                                                         f"capability {cap}) has no bfloat16 — remove bf16 or set "
                                                         "fp16: true")])
        if preferred == "float32" and not fp16:
            return Precision("float32", False, False, f"GPU without bfloat16 (capability {cap}): float32 as configured")
        return Precision("float16", False, fp16 is not False,
                         f"this GPU (compute capability {cap}) has no bfloat16: computing in float16"
                         + (" with fp16 mixed precision and a loss scaler" if fp16 is not False else ""))
    if fp16 and not bf16:
        return Precision("float16", False, True, "float16 as configured (fp16: true)")
    if preferred == "float32":
        return Precision("float32", bool(bf16), False, "float32 as configured")
    if preferred == "float16":
        return Precision("float16", False, True, "float16 as configured (torch_dtype)")
    return Precision("bfloat16", bf16 is not False, False, f"GPU with bfloat16 (capability {cap}): computing in bfloat16")


def check_fits(preset: Preset, method: str, device: Device) -> None:
    """Refuse, with the numbers, a preset whose training needs more memory than `device` has."""
    need = preset.memory_needed_gib(method)
    assert preset.tuning is not None
    total = sum(device.memory_gib)
    smallest = min(device.memory_gib) if device.memory_gib else 0.0
    if device.kind == "cpu":
        if total >= need:
            return
        why = (f"'{preset.name}' with {method} needs about {need:g} GiB of memory; this {device.describe()} — "
               "use a machine with more memory, a GPU, or method qlora")
    else:
        if total >= need and smallest >= preset.tuning.min_gpu_memory_gib:
            return
        if total < need:
            why = (f"'{preset.name}' with {method} needs {need:g} GiB of GPU memory; this node has "
                   f"{device.describe()} = {total:.1f} GiB")
        else:
            why = (f"'{preset.name}' with {method} needs at least {preset.tuning.min_gpu_memory_gib:g} GiB on "
                   f"each GPU; this node has {device.describe()}")
        why += " — choose a bigger resource.instanceType (kairo instance-types) or method qlora"
    raise InvalidInput([Problem("tuning.preset.name", why)])


def probe(kind: str = "auto") -> Device:
    """The device this process will train on (`auto`: CUDA when there is one)."""
    import torch

    if kind in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(count)]
        return Device("cuda", count, torch.cuda.get_device_capability(0),
                      tuple(p.total_memory / GIB for p in props), props[0].name)
    if kind == "cuda":
        raise InvalidInput([Problem("--device", "cuda was asked for, but torch sees no CUDA GPU on this node")])
    return Device("cpu", 1, None, (memory_gib(),), "cpu")


def memory_gib() -> float:
    """This machine's memory, or the container's limit when that is lower (pods have limits)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / GIB
