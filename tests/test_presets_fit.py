"""The presets' train-pod requests fit the machines they run on: the 80 % cap is a safety net, not the rule."""

from __future__ import annotations

import pytest

from kairo.presets import Preset, all_instance_types, all_presets, get_instance_type, get_preset
from kairo.sizing import fits_on, memory_mebibytes, train_pod_size

TUNABLE = sorted(name for name, preset in all_presets().items() if preset.supports_tuning)


def smallest_azure_fits(preset: Preset, count: int = 3) -> list[str]:
    """The `count` smallest Azure instance types that hold the preset, for each method it tunes with."""
    assert preset.tuning is not None
    names: list[str] = []
    for method in preset.tuning.methods:
        fits = [t for t in all_instance_types().values() if t.cloud == "azure" and t.holds(preset, method)]
        fits.sort(key=lambda t: (t.total_gpu_memory_gib, t.gpu.count, t.vcpus, t.name))
        names += [t.name for t in fits[:count] if t.name not in names]
    return names


def test_every_tunable_preset_is_checked():
    assert len(TUNABLE) >= 14  # an empty catalogue cannot pass


@pytest.mark.parametrize("name", TUNABLE)
def test_the_requests_fit_each_of_the_three_smallest_azure_machines_the_preset_fits_on(name):
    preset = get_preset(name)
    machines = smallest_azure_fits(preset)
    assert machines, f"{name} fits on no Azure instance type"
    for machine in machines:
        instance_type = get_instance_type(machine)
        assert fits_on(preset, instance_type), (name, machine, preset.tuning.resources)
        # so the pod asks for exactly the preset's numbers there
        size = train_pod_size(preset, instance_type)
        assert (size.cpu, size.memory) == (preset.tuning.resources.cpu, preset.tuning.resources.memory), machine


def test_the_cap_still_holds_a_request_bigger_than_the_machine_to_80_percent():
    preset = get_preset("phi-3-mini-4k-instruct")
    greedy = preset.model_copy(update={"tuning": preset.tuning.model_copy(update={
        "resources": preset.tuning.resources.model_copy(update={"cpu": "64", "memory": "1Ti"})})})
    size = train_pod_size(greedy, get_instance_type("Standard_NC6s_v3"))  # 6 vCPUs, 112 GiB
    assert size.cpu == "4800m"
    assert memory_mebibytes(size.memory) == int(112 * 1024 * 0.8)
    assert size.gpus == 1


def test_without_a_known_instance_type_the_pod_gets_one_gpu_and_the_presets_numbers():
    preset = get_preset("phi-3-mini-4k-instruct")
    size = train_pod_size(preset, None)
    assert (size.gpus, size.cpu, size.memory) == (1, "3", "20Gi")
