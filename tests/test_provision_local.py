"""provision --local: this machine's devices, and whether the preset fits on them."""

from __future__ import annotations

import socket

import pytest

from kairo.machine import LocalGpu, Machine, cpu_memory_needed_gib, fit_problem, this_machine
from kairo.presets import get_preset
from kairo.steps import provision
from tests.fixtures.outputs import step_outputs

LAPTOP = Machine(gpus=(), cpus=8, memory_gib=16, available_gib=12)


def run(tmp_path, *flags: str) -> tuple[int, dict[str, str]]:
    out = tmp_path / "outputs"
    code = provision.main(["--workspace", "demo", "--outputs", str(out), *flags])
    return code, step_outputs(out)


def test_the_tiny_preset_fits_here_and_the_outputs_say_local(tmp_path, capsys):
    code, outputs = run(tmp_path, "--preset", "tiny-llama-test", "--method", "qlora", "--local")
    assert code == 0
    assert outputs == {"nodes": socket.gethostname(), "node-pool": "", "provisioner": "local"}
    err = capsys.readouterr().err
    assert "provision: local:" in err and "fits on this machine" in err


def test_kairo_local_in_the_environment_means_local(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAIRO_LOCAL", "1")
    code, outputs = run(tmp_path, "--preset", "tiny-llama-test", "--method", "lora")
    assert code == 0 and outputs["provisioner"] == "local"


def test_the_report_names_this_machines_devices(capsys, tmp_path):
    machine = this_machine()
    run(tmp_path, "--preset", "tiny-llama-test", "--method", "lora", "--local")
    assert machine.describe() in capsys.readouterr().err
    assert machine.cpus >= 1 and machine.memory_gib > 0


def test_a_model_too_big_for_this_machines_ram_is_refused_with_numbers(tmp_path, capsys):
    preset = get_preset("qwen2.5-coder-32b-instruct")
    machine = this_machine()
    if machine.gpus or machine.available_gib >= cpu_memory_needed_gib(preset, "lora"):
        pytest.skip("this machine is big enough to train a 32B model")
    code, outputs = run(tmp_path, "--preset", preset.name, "--method", "lora", "--local")
    assert code == 2 and outputs == {}
    assert "GiB of RAM to train on CPU" in capsys.readouterr().err


def test_cpu_fit_compares_the_ram_estimate_with_free_memory():
    assert fit_problem(LAPTOP, get_preset("tiny-llama-test"), "lora") is None
    problem = fit_problem(LAPTOP, get_preset("phi-3-mini-4k-instruct"), "lora")
    assert "needs about 18.1 GiB of RAM" in problem and "12.0 GiB free of 16.0 GiB" in problem


def test_qlora_needs_less_ram_than_lora_on_cpu():
    preset = get_preset("phi-3-mini-4k-instruct")
    assert cpu_memory_needed_gib(preset, "qlora") < cpu_memory_needed_gib(preset, "lora")


def test_gpu_fit_needs_the_total_and_the_per_gpu_memory():
    preset = get_preset("phi-3-mini-4k-instruct")  # qlora: 10 GiB in all, at least 8 on one GPU
    one_t4 = Machine((LocalGpu("Tesla T4", 15.6, False),), 8, 32, 30)
    two_small = Machine((LocalGpu("GTX 1060", 6, False), LocalGpu("GTX 1060", 6, False)), 8, 32, 30)
    assert fit_problem(one_t4, preset, "qlora") is None
    problem = fit_problem(two_small, preset, "qlora")
    assert "needs 10 GiB of GPU memory (at least 8 GiB on one GPU)" in problem and "12.0 GiB in all" in problem


def test_a_gpu_machine_is_described_with_memory_and_bf16():
    machine = Machine((LocalGpu("NVIDIA H200", 139.8, True),), 16, 128, 120)
    assert machine.describe() == "1 CUDA GPU: NVIDIA H200 (139.8 GiB, bf16)"


def test_an_unknown_preset_is_refused_with_close_names(tmp_path, capsys):
    code, _ = run(tmp_path, "--preset", "tiny-llama", "--method", "lora", "--local")
    assert code == 2
    assert "did you mean 'tiny-llama-test'" in capsys.readouterr().err


# -- GPUs without torch (the provision image, in the gpu-check pod) -----------------------------------


FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *compute_cap*) if [ -n "$OLD_DRIVER" ]; then echo 'Field "compute_cap" is not a valid field to query.'; exit 2; fi
                 echo "NVIDIA H200, 143771, 9.0"; echo "Tesla T4, 15360, 7.5" ;;
  *) echo "NVIDIA H200, 143771"; echo "Tesla T4, 15360" ;;
esac
"""


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    program = tmp_path / "bin" / "nvidia-smi"
    program.parent.mkdir()
    program.write_text(FAKE_NVIDIA_SMI)
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
    return program


def test_nvidia_smi_reports_memory_and_bf16(nvidia_smi):
    from kairo.machine import nvidia_smi_gpus

    h200, t4 = nvidia_smi_gpus()
    assert (h200.name, round(h200.memory_gib, 1), h200.bf16) == ("NVIDIA H200", 140.4, True)
    assert (t4.name, t4.memory_gib, t4.bf16) == ("Tesla T4", 15.0, False)


def test_an_old_driver_without_compute_cap_still_reports_memory(nvidia_smi, monkeypatch):
    from kairo.machine import nvidia_smi_gpus

    monkeypatch.setenv("OLD_DRIVER", "1")
    assert [round(g.memory_gib, 1) for g in nvidia_smi_gpus()] == [140.4, 15.0]


def test_without_nvidia_smi_there_are_no_gpus_to_report(tmp_path, monkeypatch):
    from kairo.machine import nvidia_smi_gpus

    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_smi_gpus() == ()


def test_assigned_gpus_nothing_can_measure_are_not_refused():
    machine = Machine((), 8, 64, 60, unmeasured_gpus="GPU-3f2a")
    assert fit_problem(machine, get_preset("qwen2.5-coder-32b-instruct"), "lora") is None
    assert "NVIDIA_VISIBLE_DEVICES=GPU-3f2a" in machine.describe()
