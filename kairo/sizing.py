"""How big the train pod is: every GPU of the instance type, CPU and memory from the preset, held under the machine.

One rule for both doors: `kairo render` fills the numbers into a Workflow (kairo.pipelines.plan), and the
generic template's `workspace` step computes them at run time (a Workspace resource, or `-p gpus=auto`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kairo.presets import InstanceType, Preset

# A pod asking for all of a node's CPUs or memory never schedules: the kubelet, the system and the
# daemonsets keep some. The presets ask for less than this on the machines they fit (tests/test_presets_fit.py);
# the cap is the safety net for an instance type bigger in GPUs than in CPUs.
MACHINE_SHARE = 0.8

_CPU = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_MEMORY_MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2,
               "K": 1000 / 1024**2, "M": 1000**2 / 1024**2, "G": 1000**3 / 1024**2, "T": 1000**4 / 1024**2,
               None: 1 / 1024**2}  # no suffix: bytes


@dataclass(frozen=True)
class PodSize:
    """What the train pod (and gpu-check and evaluate, shaped like it) requests."""

    gpus: int
    cpu: str
    memory: str


def train_pod_size(preset: Preset, instance_type: InstanceType | None) -> PodSize:
    """All GPUs of `instance_type` (1 when unknown), the preset's CPU and memory capped to what the machine can give."""
    assert preset.tuning is not None, f"preset {preset.name} cannot be tuned"
    cpu, memory = preset.tuning.resources.cpu, preset.tuning.resources.memory
    if instance_type is None:
        return PodSize(1, cpu, memory)
    cpu_milli = min(cpu_millicores(cpu), int(instance_type.vcpus * 1000 * MACHINE_SHARE))
    memory_mib = min(memory_mebibytes(memory), int(instance_type.memory_gib * 1024 * MACHINE_SHARE))
    return PodSize(instance_type.gpu.count, cpu_text(cpu_milli), memory_text(memory_mib))


def fits_on(preset: Preset, instance_type: InstanceType) -> bool:
    """True when the preset's CPU and memory requests are within the machine's schedulable share (no cap needed)."""
    assert preset.tuning is not None
    resources = preset.tuning.resources
    return (cpu_millicores(resources.cpu) <= instance_type.vcpus * 1000 * MACHINE_SHARE
            and memory_mebibytes(resources.memory) <= instance_type.memory_gib * 1024 * MACHINE_SHARE)


def cpu_millicores(quantity: str) -> int:
    """A Kubernetes CPU quantity ('4', '0.5', '500m') in millicores; ValueError for anything else."""
    text = str(quantity).strip()
    if not _CPU.match(text):
        raise ValueError(f"'{quantity}' is not a CPU quantity — a number of CPUs ('4', '0.5') or millicores ('500m')")
    return int(text[:-1]) if text.endswith("m") else int(round(float(text) * 1000))


def memory_mebibytes(quantity: str) -> int:
    """A Kubernetes memory quantity ('32Gi', '512Mi', '8G') in MiB; ValueError for anything else."""
    match = _MEMORY.match(str(quantity).strip())
    if not match:
        raise ValueError(f"'{quantity}' is not a memory quantity — e.g. '32Gi' or '512Mi'")
    return int(float(match.group(1)) * _MEMORY_MIB[match.group(3)])


def cpu_text(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def memory_text(mebibytes: int) -> str:
    return f"{mebibytes // 1024}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"


# -- how the model is laid over the GPUs -------------------------------------------------------------------


@dataclass(frozen=True)
class GpuLayout:
    """How training uses `gpus` GPUs of `gpu_memory_gib` each: `whole` (every GPU holds the model: one process, or
    data-parallel with one per GPU), `sharded` (FSDP: the model's weights spread over the GPUs), or `none` (no fit)."""

    kind: str
    gpus: int
    reason: str

    @property
    def sharded(self) -> bool:
        return self.kind == "sharded"

    def describe(self) -> str:
        if self.kind == "sharded":
            return f"sharded across {self.gpus} GPUs (FSDP): {self.reason}"
        if self.kind == "whole" and self.gpus > 1:
            return f"data-parallel on {self.gpus} GPUs, each holding the whole model: {self.reason}"
        return self.reason


def gpu_layout(preset: Preset, method: str, gpu_memory_gib: float, gpus: int) -> GpuLayout:
    """The one rule, for `kairo validate` and the train step: whole model per GPU, sharded over them, or no fit.

    `gpu_memory_gib` in the preset is what training needs in all (weights, LoRA, optimizer, activations);
    `min_gpu_memory_gib` the least any one GPU must have even when sharded (activations and a layer's
    gathered weights stay whole on each). A model that one GPU holds is never sharded: FSDP's gathers cost
    time for nothing.
    """
    assert preset.tuning is not None, f"preset {preset.name} cannot be tuned"
    need, floor = preset.memory_needed_gib(method), preset.tuning.min_gpu_memory_gib
    if gpu_memory_gib >= need:
        return GpuLayout("whole", gpus, f"{preset.name} with {method} needs {need:g} GiB; one GPU has "
                                        f"{gpu_memory_gib:g} GiB")
    total = gpu_memory_gib * gpus
    if gpus > 1 and total >= need and gpu_memory_gib >= floor:
        return GpuLayout("sharded", gpus, f"{preset.name} with {method} needs {need:g} GiB, more than one GPU's "
                                          f"{gpu_memory_gib:g} GiB but within the {gpus} GPUs' {total:g} GiB")
    if total < need:
        why = f"needs {need:g} GiB of GPU memory; {gpus}× {gpu_memory_gib:g} GiB = {total:g} GiB"
    else:
        why = f"needs at least {floor:g} GiB on each GPU even when sharded; these have {gpu_memory_gib:g} GiB"
    return GpuLayout("none", gpus, f"{preset.name} with {method} {why}")
