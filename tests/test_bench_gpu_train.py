"""bench/gpu_train.py, the GPU run prepared on CPU: `--tiny` runs every part (both recipes, every check, every
lever that can run without CUDA) at toy sizes, so that the run on a lent H200 cannot fail on a typo, and writes
the JSON and log the GPU run will."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_parts  # noqa: E402 — bench/ is not a package


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, str, subprocess.CompletedProcess]:
    out, work = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("work")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--tiny", "--out", str(out), "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    (result,) = out.glob("*-cpu-phi-3-mini-tiny.json")
    return json.loads(result.read_text()), result.with_suffix(".log").read_text(), proc


@pytest.mark.slow
def test_tiny_trains_both_recipes_on_the_same_tokens(tiny_run):
    data = tiny_run[0]
    runs = data["configurations"]
    assert set(runs) == {"kairo-qlora", "kairo-lora", "kaito-qlora", "kaito-lora"}
    for name, run in runs.items():
        assert run["status"] == "ok", (name, run.get("error"))
        assert run["tokens_trained"] == data["data"]["train"]["tokens"], name
        assert run["tokens_per_second"] > 0 and run["mfu_4n"] is not None and run["eval_loss"] > 0
    assert runs["kairo-qlora"]["base_layers"] == ["Linear4bit"]
    assert runs["kaito-lora"]["steps"] == data["settings"]["examples"]  # Kaito's recipe: one example a step
    assert set(data["comparison"]) == {"qlora", "lora"}


@pytest.mark.slow
def test_tiny_runs_every_check(tiny_run):
    checks = tiny_run[0]["checks"]
    for name in ("precision", "resume", "peft", "serve"):
        assert checks[name]["status"] == "ok", (name, checks[name].get("error"))
    assert "loss scaler" in checks["precision"]["v100_fp16"]["precision"]
    assert 0 < checks["resume"]["resumed_from_step"] < checks["resume"]["steps"]
    assert not checks["resume"]["adapter_after_kill"]
    assert checks["serve"]["sixteen_concurrent"]["tokens_per_second"] > 0


@pytest.mark.slow
def test_tiny_accounts_for_every_lever(tiny_run):
    data, log, _ = tiny_run
    import gpu_train

    levers = data["levers"]
    for name in gpu_train.LEVERS:
        if name == "gc-fit":
            assert {n for n in levers if n.startswith(("gc-on-batch-", "gc-off-batch-"))}, levers.keys()
        else:
            assert name in levers or name in data["skipped"], name
    assert all(r["status"] == "ok" for r in levers.values()), {n: r.get("error") for n, r in levers.items()}
    assert levers["padding"]["pad_fraction"] > levers["base"]["pad_fraction"]
    assert "Triton" in data["skipped"]["liger"]
    assert "done in" in log and "levers:" in log


def test_the_phi_3_mini_shape_has_its_published_parameter_count():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = gpu_parts.SHAPES["phi-3-mini"]
    config = AutoConfig.for_model(shape["model_type"], **gpu_parts.shape_config("phi-3-mini"))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    counts = gpu_parts.parameter_counts(model)
    assert round(counts["parameters"] / 1e9, 2) == 3.82  # presets/models/phi-3-mini-4k-instruct.yaml
    assert type(model).__name__ == "Phi3ForCausalLM"


def test_lora_flops_count_four_n_per_token_plus_causal_attention():
    flops = gpu_parts.flops_per_token(matmul_parameters=1000, layers=2, attention_width=8, lengths=[4, 4])
    assert flops["attention"] == 6 * 2 * 8 * 4  # 6·L·d·l per token for examples of l tokens
    assert flops["lora_4n"] == 4000 + flops["attention"] and flops["full_6n"] == 6000 + flops["attention"]


def test_the_prepared_bitsandbytes_wheel_keeps_only_its_cuda_13_and_cpu_libraries(tmp_path, monkeypatch):
    import zipfile

    import gpu_prepare

    libraries = [f"bitsandbytes/libbitsandbytes_{v}.so" for v in ("cpu", "cuda118", "cuda128", "cuda130", "rocm64")]
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in [*libraries, "bitsandbytes/__init__.py"]:
            archive.writestr(name, b"x")
        archive.writestr("bitsandbytes-0.50.2.dist-info/METADATA",
                         "Name: bitsandbytes\nRequires-Dist: torch<3,>=2.4\nRequires-Dist: numpy>=1.17\n"
                         'Requires-Dist: pytest; extra == "test"\n')
        archive.writestr("bitsandbytes-0.50.2.dist-info/RECORD",
                         "".join(f"{n},sha256=x,1\n" for n in [*libraries, "bitsandbytes/__init__.py"]))
    monkeypatch.setattr(gpu_prepare, "WHEELS", tmp_path)
    gpu_prepare.slim_bitsandbytes()
    with zipfile.ZipFile(wheel) as archive:
        kept = {n for n in archive.namelist() if n.endswith(".so")}
        record = archive.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert kept == {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"}
    assert "cuda118" not in record and "cuda130" in record and "__init__.py" in record
    assert gpu_prepare.requirements(wheel) == {"torch", "numpy"}  # extras left out
