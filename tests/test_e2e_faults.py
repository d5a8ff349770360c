"""Issue 14 end to end, through `kairo run --local`: node loss is retried and resumes, a user's mistake is not.

A `train` process killed by SIGKILL is what a preempted spot node or a deleted pod looks like to Argo (an
Error): train's retryStrategy retries it and the new attempt resumes from the last checkpoint on the work
volume. A config that only train can check (LoRA target modules the model lacks) exits 2 — bad input —
which the same retryStrategy never retries. Progress files are read as Argo reads ARGO_PROGRESS_FILE.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.fixtures.local_run import kairo, kairo_run, processes_with, training_config, write_workspace

pytestmark = pytest.mark.slow

STEPS = 150
ROWS = (EXAMPLES / "data" / "instructions.jsonl").read_bytes().splitlines(keepends=True)[:64]
PVC = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "fault-adapters"},
       "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
# Retry waits are capped locally (30 s in train's template); 1 s keeps the test short.
FAST_RETRY = {"KAIRO_LOCAL_MAX_BACKOFF": "1"}


def workspace(path: Path, url: str, **lora) -> Path:
    config = training_config("fault-tuning", max_steps=STEPS, save_strategy="steps", save_steps=10,
                             per_device_train_batch_size=4, lora=lora)
    return write_workspace(path, "faults", input={"urls": [url]},
                           output={"volumeSource": {"persistentVolumeClaim": {"claimName": "fault-adapters"}}},
                           config=config, before=[PVC])


class Preemption:
    """Polled while the run goes on: SIGKILLs `train` once a checkpoint is saved, and notes the progress seen."""

    def __init__(self) -> None:
        self.killed_after: int | None = None  # the newest complete checkpoint's step when train was killed
        self.seen: dict[str, set[str]] = {"download": set(), "train": set()}

    def __call__(self, run_dir: Path) -> None:
        for task, values in self.seen.items():
            try:
                values.add((run_dir / "tasks" / task / "progress").read_text().strip())
            except OSError:
                pass
        if self.killed_after is not None:
            return
        # trainer_state.json is written last: a checkpoint holding it is complete
        saved = [int(p.parent.name.rsplit("-", 1)[1])
                 for p in (run_dir / "volumes" / "work" / "checkpoints").glob("checkpoint-*/trainer_state.json")]
        if not saved:
            return
        for pid in processes_with("kairo-step train ", str(run_dir)):
            os.kill(pid, signal.SIGKILL)
            self.killed_after = max(saved)


@pytest.fixture(scope="module")
def preempted(tmp_path_factory, http_server):
    """A run whose train process is killed mid-training (≈45 s)."""
    tmp = tmp_path_factory.mktemp("preempted")
    url = http_server.scoped("faults").serve("capitals.jsonl", b"".join(ROWS))
    preemption = Preemption()
    run = kairo_run(workspace(tmp / "faults.yaml", url), tmp / "run", env=FAST_RETRY, while_running=preemption)
    return run, preemption


def test_train_killed_mid_run_is_retried_and_the_run_succeeds(preempted):
    run, preemption = preempted
    assert preemption.killed_after is not None, "train was never seen with a checkpoint"
    assert run.code == 0, run.explain()
    assert "[kairo] train: Retrying — attempt 1 error: pod deleted: process killed by SIGKILL" in run.stderr
    assert run.states["train"] == "Succeeded" and run.states["smoke"] == "Succeeded"


def test_the_retried_train_resumes_from_its_checkpoint_step(preempted):
    run, preemption = preempted
    log = run.log("train")
    attempts = log.split("$ kairo-step train")[1:]
    assert len(attempts) == 2
    resumed = re.search(r"resuming from checkpoint-(\d+) \(step (\d+) of (\d+)\)", attempts[1])
    assert resumed, attempts[1][-3000:]
    step = int(resumed.group(2))
    assert step >= preemption.killed_after > 0 and int(resumed.group(3)) == STEPS
    assert "resuming" not in attempts[0]
    metrics = json.loads((run.run_dir / "artifacts" / "train" / "metrics-json").read_text())  # the UI's artifact
    assert metrics["resumed_from_step"] == step and metrics["steps"] == STEPS


def test_progress_files_are_written_during_download_and_train(preempted):
    run, preemption = preempted
    size = len(b"".join(ROWS))
    assert (run.run_dir / "tasks" / "download" / "progress").read_text() == f"{size}/{size}"  # bytes
    assert (run.run_dir / "tasks" / "train" / "progress").read_text() == f"{STEPS}/{STEPS}"
    during = [tuple(map(int, v.split("/"))) for v in preemption.seen["train"] if re.fullmatch(r"\d+/\d+", v)]
    assert any(0 < done < total == STEPS for done, total in during), preemption.seen


def test_the_adapter_lands_on_the_output_volume(preempted):
    run, _ = preempted
    folders = list((run.run_dir / "volumes" / "pvc" / "fault-adapters").iterdir())
    assert len(folders) == 1 and (folders[0] / "adapter_model.safetensors").is_file()


# ── a mistake in the config: not retried ──


@pytest.fixture(scope="module")
def bad_config(tmp_path_factory, http_server):
    """LoRA target modules this model does not have (Falcon's layer), as a regular expression: validate checks
    layer names against the preset but leaves expressions to train, which matches them on the model (≈15 s)."""
    tmp = tmp_path_factory.mktemp("bad-config")
    url = http_server.scoped("bad-config").serve("capitals.jsonl", b"".join(ROWS))
    path = workspace(tmp / "faults.yaml", url, target_modules=r".*\.query_key_value")
    return path, kairo_run(path, tmp / "run", env=FAST_RETRY)


def test_a_config_only_train_can_check_passes_validation(bad_config, tmp_path):
    path, _ = bad_config
    cluster = tmp_path / "cluster.yaml"  # as `kairo run --local` does, let the dataset come from loopback
    cluster.write_text("network:\n  allow: [127.0.0.1]\n")
    checked = kairo("validate", str(path), "--cluster-config", str(cluster))
    assert checked.returncode == 0, checked.stderr


def test_train_failing_on_a_bad_config_is_not_retried(bad_config):
    _, run = bad_config
    assert run.states["train"] == "Failed"
    assert "[kairo] train: Retrying" not in run.stderr
    assert run.log("train").count("$ kairo-step train") == 1


def test_the_run_fails_naming_the_config_field(bad_config):
    _, run = bad_config
    assert run.code != 0
    assert "kairo: task 'train' failed: exit code 2" in run.stderr
    assert "LoraConfig.target_modules:" in run.stderr and "query_key_value" in run.stderr
    assert "matches no linear module" in run.stderr
    assert run.states["evaluate"] == run.states["push"] == "Omitted"
