"""This machine's devices (GPUs, CPUs, memory) and whether a preset can train on them.

`this_machine()` reads the figures (torch for GPUs when it is installed, /proc for memory, the cgroup limit
when a container has one); `fit_problem()` is a pure function of those figures, so it is tested without the
hardware. Used by `provision --local` and by `train` before it loads any weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kairo.presets import Preset

GIB = 1024**3
# Training on CPU keeps weights in float32 (4 bytes a parameter) plus activations and the adapter's optimizer
# state; 4-bit weights take about half a byte. GiB per billion parameters, measured on the tiny and phi-3 models.
CPU_GIB_PER_BILLION = {"lora": 5.0, "qlora": 2.0}


@dataclass(frozen=True)
class LocalGpu:
    """One CUDA GPU of this machine."""

    name: str
    memory_gib: float
    bf16: bool


@dataclass(frozen=True)
class Machine:
    """The devices a local run trains on."""

    gpus: tuple[LocalGpu, ...]
    cpus: int
    memory_gib: float
    available_gib: float

    def describe(self) -> str:
        if self.gpus:
            n = len(self.gpus)
            listed = ", ".join(f"{g.name} ({g.memory_gib:.1f} GiB{', bf16' if g.bf16 else ''})" for g in self.gpus)
            return f"{n} CUDA GPU{'s' if n != 1 else ''}: {listed}"
        return (f"no CUDA GPU; {self.cpus} CPU{'s' if self.cpus != 1 else ''}, {self.memory_gib:.1f} GiB of RAM "
                f"({self.available_gib:.1f} GiB free)")


def cpu_memory_needed_gib(preset: Preset, method: str) -> float:
    """About how much RAM training `preset` with `method` on CPU takes."""
    return round(preset.parameters_billion * CPU_GIB_PER_BILLION[method], 1)


def fit_problem(machine: Machine, preset: Preset, method: str) -> str | None:
    """Why `preset` cannot train with `method` on `machine` (with the numbers), or None when it fits."""
    if preset.tuning is None:
        return f"'{preset.name}' cannot be tuned"
    if machine.gpus:
        need = preset.memory_needed_gib(method)
        per_gpu = preset.tuning.min_gpu_memory_gib
        total = sum(g.memory_gib for g in machine.gpus)
        if total >= need and max(g.memory_gib for g in machine.gpus) >= per_gpu:
            return None
        return (f"'{preset.name}' with {method} needs {need:g} GiB of GPU memory (at least {per_gpu:g} GiB on one "
                f"GPU); this machine has {machine.describe()} = {total:.1f} GiB in all")
    need = cpu_memory_needed_gib(preset, method)
    if machine.available_gib >= need:
        return None
    other = " (qlora needs less)" if method == "lora" else ""
    return (f"'{preset.name}' with {method} needs about {need:.1f} GiB of RAM to train on CPU; this machine has "
            f"{machine.available_gib:.1f} GiB free of {machine.memory_gib:.1f} GiB{other}")


def this_machine() -> Machine:
    """The GPUs torch sees (none without torch or CUDA), the CPUs this process may use, and the memory."""
    gpus: list[LocalGpu] = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append(LocalGpu(props.name, round(props.total_memory / GIB, 1), props.major >= 8))
    except ImportError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    total, available = _memory_bytes()
    return Machine(tuple(gpus), cpus, round(total / GIB, 1), round(available / GIB, 1))


def _memory_bytes() -> tuple[int, int]:
    info: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = info.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = info.get("MemAvailable", total)
    limit = _cgroup_limit()
    if limit is not None and limit < total:
        used = _cgroup_usage() or 0
        total, available = limit, min(available, max(limit - used, 0))
    return total, available


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def _cgroup_usage() -> int | None:
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        try:
            return int(Path(path).read_text().strip())
        except (OSError, ValueError):
            continue
    return None
