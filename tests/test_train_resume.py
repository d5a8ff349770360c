"""A train step killed mid-run (SIGKILL, as a lost node does) resumes from its last checkpoint when run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.adapter import capital_rows, make_workdir

CONFIG = """\
training_config:
  LoraConfig: {r: 8, lora_alpha: 16}
  TrainingArguments: {max_steps: 60, learning_rate: 0.001, per_device_train_batch_size: 2}
  TokenizerParams: {max_length: 512}
"""


def start(work: Path) -> subprocess.Popen:
    config = work / "training_config.yaml"
    config.write_text(CONFIG)
    return subprocess.Popen(
        [sys.executable, "-m", "kairo.steps.train", "--preset", "tiny-llama-test", "--method", "lora",
         "--config", str(config), "--workdir", str(work), "--outputs", str(work / "outputs"), "--device", "cpu",
         "--checkpoint-every", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "ARGO_PROGRESS_FILE": str(work / "progress")},
    )


def saved_steps(work: Path) -> list[int]:
    folders = (work / "checkpoints").glob("checkpoint-*")
    return sorted(int(p.name.split("-")[1]) for p in folders if (p / "trainer_state.json").is_file())


def test_a_killed_run_resumes_from_its_checkpoint_step(tmp_path, tiny_model_dir):
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows() * 20)
    first = start(work)
    deadline = time.monotonic() + 120
    while not saved_steps(work) or saved_steps(work)[-1] < 10:
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within two minutes"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resume_step = saved_steps(work)[-1]
    assert 10 <= resume_step < 60
    assert not (work / "adapter").exists()

    second = start(work)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out[-3000:]
    assert f"resuming from checkpoint-{resume_step} (step {resume_step} of 60)" in out
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resume_step and metrics["steps"] == 60
    assert [e["step"] for e in metrics["loss_per_step"]] == list(range(1, 61))  # history kept across the kill
    assert (work / "progress").read_text() == "60/60"
    assert (work / "adapter" / "adapter_model.safetensors").is_file()


def test_a_checkpoint_cut_short_while_saving_is_skipped(tmp_path, tiny_model_dir):
    from kairo.steps import train

    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows())
    config = work / "c.yaml"
    config.write_text(CONFIG.replace("max_steps: 60", "max_steps: 6"))
    argv = ["--preset", "tiny-llama-test", "--method", "lora", "--config", str(config), "--workdir", str(work),
            "--outputs", str(work / "outputs"), "--device", "cpu", "--checkpoint-every", "3"]
    assert train.main(argv) == 0
    broken = work / "checkpoints" / "checkpoint-6"
    (broken / "trainer_state.json").write_text('{"global_st')  # what a kill during the save leaves
    assert train.main(argv) == 0
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 3


def test_a_changed_dataset_starts_afresh_instead_of_resuming(tmp_path, tiny_model_dir, capsys):
    from kairo.steps import train

    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows())
    config = work / "c.yaml"
    config.write_text(CONFIG.replace("max_steps: 60", "max_steps: 3"))
    argv = ["--preset", "tiny-llama-test", "--method", "lora", "--config", str(config), "--workdir", str(work),
            "--outputs", str(work / "outputs"), "--device", "cpu", "--checkpoint-every", "3"]
    assert train.main(argv) == 0
    make_workdir(work, tiny_model_dir, capital_rows()[:5], digest="sha256:" + "cd" * 32)
    assert train.main(argv) == 0
    assert "starting afresh" in capsys.readouterr().err
    assert json.loads((work / "outputs" / "metrics.json").read_text())["resumed_from_step"] is None


def test_sigterm_saves_a_checkpoint_and_exits_75_for_a_retry(tmp_path, tiny_model_dir):
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows() * 20)
    run = start(work)
    progress = work / "progress"
    deadline = time.monotonic() + 120
    while not (progress.is_file() and progress.read_text().split("/")[0] not in ("", "0")):
        assert run.poll() is None, run.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no progress within two minutes"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)  # what Kubernetes sends a pod it deletes, before SIGKILL
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 75, out[-3000:]
    stopped = saved_steps(work)[-1]
    assert f"stopped by SIGTERM at step {stopped}" in out
    assert 0 < stopped < 60 and not (work / "adapter").exists()
