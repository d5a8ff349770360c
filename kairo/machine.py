"""This machine, for `kairo run --local` and the gpu-check pod: its CUDA GPUs (memory, bf16), its CPUs and
RAM — and whether a preset's training fits on it.

`this_machine()` looks: through torch when it is installed (what train will see), else through
`nvidia-smi` (the provision image has no torch; the NVIDIA runtime mounts nvidia-smi into GPU pods).
`fit_problem()` judges, purely. The train step's own view of its device (precision) is `kairo.training.devices`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kairo.presets import Preset

GIB = 1024**3
# CPU training keeps the base weights in fp32 (lora), or loads them at 16 bit before quantizing (qlora).
CPU_BYTES_PER_PARAMETER = {"lora": 4.0, "qlora": 2.0}
CPU_OVERHEAD = 1.2  # activations, LoRA weights and optimizer state, tokenizer, data
CPU_BASE_GIB = 1.0  # Python, torch and transformers themselves


@dataclass(frozen=True)
class LocalGpu:
    name: str
    memory_gib: float
    bf16: bool


@dataclass(frozen=True)
class Machine:
    """What this machine offers for training."""

    gpus: tuple[LocalGpu, ...]
    cpus: int
    memory_gib: float  # RAM this process may use (the cgroup limit when lower)
    available_gib: float  # RAM free now
    unmeasured_gpus: str = ""  # NVIDIA_VISIBLE_DEVICES when GPUs are assigned but nothing here can measure them

    def describe(self) -> str:
        if self.gpus:
            listed = ", ".join(f"{g.name} ({g.memory_gib:.1f} GiB{', bf16' if g.bf16 else ''})" for g in self.gpus)
            return f"{len(self.gpus)} CUDA GPU{'s' if len(self.gpus) != 1 else ''}: {listed}"
        if self.unmeasured_gpus:
            return (f"GPUs assigned (NVIDIA_VISIBLE_DEVICES={self.unmeasured_gpus}) that nothing here can measure "
                    f"(no CUDA torch, no nvidia-smi); {self.cpus} CPUs, {self.memory_gib:.1f} GiB RAM")
        return f"no CUDA GPU; {self.cpus} CPUs, {self.memory_gib:.1f} GiB RAM ({self.available_gib:.1f} GiB free)"


def cpu_memory_needed_gib(preset: Preset, method: str) -> float:
    """A rough RAM estimate for training `preset` with `method` on CPU."""
    weights = preset.parameters_billion * 1e9 * CPU_BYTES_PER_PARAMETER.get(method, 4.0) / GIB
    return weights * CPU_OVERHEAD + CPU_BASE_GIB


def fit_problem(machine: Machine, preset: Preset, method: str) -> str | None:
    """Why `preset` cannot be trained with `method` here (with the numbers), or None when it fits."""
    if preset.tuning is None:
        return f"preset {preset.name} cannot be tuned"
    if machine.unmeasured_gpus and not machine.gpus:
        return None  # GPUs we cannot measure: train will find out; refusing here would be a guess
    if machine.gpus:
        needed, per_gpu = preset.memory_needed_gib(method), preset.tuning.min_gpu_memory_gib
        total = sum(g.memory_gib for g in machine.gpus)
        largest = max(g.memory_gib for g in machine.gpus)
        if total < needed or largest < per_gpu:
            return (
                f"{preset.name} with {method} needs {needed:g} GiB of GPU memory (at least {per_gpu:g} GiB on one "
                f"GPU); this machine has {machine.describe()} — {total:.1f} GiB in all. Pick a smaller preset, "
                f"use qlora, or run on a cluster"
            )
        return None
    needed = cpu_memory_needed_gib(preset, method)
    if needed > machine.available_gib:
        return (
            f"{preset.name} with {method} needs about {needed:.1f} GiB of RAM to train on CPU; this machine has "
            f"{machine.available_gib:.1f} GiB free of {machine.memory_gib:.1f} GiB. Pick a smaller preset "
            f"(tiny-llama-test runs anywhere), free memory, or run on a cluster with GPUs"
        )
    return None


def this_machine() -> Machine:
    """Look at this machine: CUDA GPUs through torch (or nvidia-smi without torch), CPUs and RAM."""
    total, available = _memory_gib()
    if importlib.util.find_spec("torch") is not None:
        gpus = _torch_gpus()  # torch decides what train will use: a CPU-only torch trains on CPU
    else:
        gpus = nvidia_smi_gpus()
    assigned = os.environ.get("NVIDIA_VISIBLE_DEVICES", "")
    unmeasured = assigned if not gpus and assigned not in ("", "void", "none") else ""
    return Machine(gpus, os.cpu_count() or 1, total, available, unmeasured)


def _torch_gpus() -> tuple[LocalGpu, ...]:
    import torch  # only here, and only when installed

    if not torch.cuda.is_available():
        return ()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        bf16 = props.major >= 8  # Ampere and newer compute in bfloat16 natively
        gpus.append(LocalGpu(props.name, props.total_memory / GIB, bf16))
    return tuple(gpus)


NVIDIA_SMI_QUERY = "--query-gpu=name,memory.total,compute_cap"


def nvidia_smi_gpus() -> tuple[LocalGpu, ...]:
    """The GPUs nvidia-smi reports (none when it is not installed or fails)."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return ()
    for query in (NVIDIA_SMI_QUERY, "--query-gpu=name,memory.total"):  # drivers before 510 lack compute_cap
        try:
            done = subprocess.run(  # noqa: S603 — a fixed program and fixed flags
                [program, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ()
        if done.returncode == 0:
            return parse_nvidia_smi(done.stdout)
    return ()


def parse_nvidia_smi(text: str) -> tuple[LocalGpu, ...]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total[,compute_cap] --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2:
            continue
        try:
            memory_mib = float(fields[1])
            major = int(fields[2].split(".")[0]) if len(fields) > 2 else 0
        except ValueError:
            continue
        gpus.append(LocalGpu(fields[0], memory_mib / 1024, major >= 8))
    return tuple(gpus)


def _memory_gib() -> tuple[float, float]:
    """Total and available RAM, bounded by the cgroup's memory limit (containers)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = total
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    limit, used = _cgroup_memory()
    if limit is not None and limit < total:
        total = limit
        available = min(available, max(limit - (used or 0), 0))
    return total / GIB, min(available, total) / GIB


def _cgroup_memory() -> tuple[int | None, int | None]:
    """The cgroup's memory limit and current use (v2, then v1), when this process runs under one."""
    for limit_file, used_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if not limit.isdigit():
            return None, None  # "max": no limit
        try:
            used = int(Path(used_file).read_text().strip())
        except (OSError, ValueError):
            used = None
        return int(limit), used
    return None, None
