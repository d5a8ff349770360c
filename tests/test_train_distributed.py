"""The train step on two "nodes" of one process each, as a JobSet runs it: torchrun's c10d rendezvous on 127.0.0.1,
torch.distributed over gloo on the CPU — real collectives, real processes, the same program as one process runs.

Two agents make two nodes (`--nnodes=2 --nproc-per-node=1`): each is what one JobSet pod runs. The adapter they
train equals, to float tolerance, the one a single process trains with the same global batch (2 ranks × 2 rows
against 1 × 4 rows, the sampler sequential), and a set that loses a rank mid-run resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kairo.local.policy import descendants, kill_all
from tests.fixtures.adapter import capital_rows, make_workdir

STEPS = 6
CONFIG = """\
training_config:
  LoraConfig: {{r: 8, lora_alpha: 16, lora_dropout: 0.0}}
  TrainingArguments: {{max_steps: {steps}, learning_rate: 0.002, per_device_train_batch_size: {batch}, seed: 7}}
  DatasetConfig: {{shuffle_dataset: false, train_test_split: 1}}
  TokenizerParams: {{max_length: 24}}  # one example a row: 28 rows, whole global batches of 4
"""
TIMEOUT = 420  # two shared cores: loading the model twice and six gloo steps take ~40 s when idle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_argv(work: Path, batch: int, steps: int = STEPS, every: int = 0) -> list[str]:
    config = work / f"config-{batch}.yaml"
    config.write_text(CONFIG.format(steps=steps, batch=batch))
    return ["--preset", "tiny-llama-test", "--method", "lora", "--config", str(config), "--workdir", str(work),
            "--outputs", str(work / "outputs"), "--device", "cpu", *(["--checkpoint-every", str(every)] if every else [])]


def start_node(work: Path, rank: int, port: int, argv: list[str]) -> subprocess.Popen:
    """One JobSet pod's command: torchrun joining a two-node rendezvous whose store pod 0 hosts on 127.0.0.1."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=test-{port}",
               "--max-restarts=0", "-m", "kairo.steps.train", *argv]
    log = open(work / f"node-{rank}.log", "ab")  # noqa: SIM115 — closed with the process
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARGO_PROGRESS_FILE": str(work / "progress")}
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def run_set(work: Path, argv: list[str]) -> list[subprocess.Popen]:
    port = free_port()
    return [start_node(work, rank, port, argv) for rank in (0, 1)]


def wait_all(nodes: list[subprocess.Popen], work: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    for node in nodes:
        try:
            node.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(nodes)
            pytest.fail(f"the set did not finish in {TIMEOUT} s:\n{logs(work)}")
    assert [n.returncode for n in nodes] == [0, 0], logs(work)


def stop(nodes: list[subprocess.Popen]) -> None:
    """End each node as the kubelet ends a pod: every process in it (torchrun's workers have sessions of their own)."""
    for node in nodes:
        kill_all([node.pid, *descendants(node.pid)])
        node.wait()


def logs(work: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(work.glob("node-*.log")))


def adapter_weights(work: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(work / "adapter" / "adapter_model.safetensors"))


@pytest.fixture
def rows() -> list[dict]:
    return capital_rows() * 2


def test_two_nodes_train_the_adapter_one_process_trains_with_the_same_global_batch(tmp_path, tiny_model_dir, rows):
    import torch

    from kairo.steps import train

    single = make_workdir(tmp_path / "single", tiny_model_dir, rows)
    assert train.main(step_argv(single, batch=4)) == 0

    pair = make_workdir(tmp_path / "pair", tiny_model_dir, rows)
    wait_all(run_set(pair, step_argv(pair, batch=2)), pair)

    one, two = adapter_weights(single), adapter_weights(pair)
    assert one.keys() == two.keys() and len(one) > 0
    start = {k: v for k, v in one.items() if "lora_B" in k}
    assert any(v.abs().max() > 1e-4 for v in start.values())  # lora_B starts at zero: it trained
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-3, atol=1e-5), (key, (one[key] - two[key]).abs().max())
    metrics = json.loads((pair / "outputs" / "metrics.json").read_text())
    assert metrics["steps"] == STEPS
    assert metrics["tokens_trained"] == json.loads((single / "outputs" / "metrics.json").read_text())["tokens_trained"]
    assert "done:" in (pair / "node-0.log").read_text() and "done:" not in (pair / "node-1.log").read_text()


def saved_steps(work: Path) -> list[int]:
    folders = (work / "checkpoints").glob("checkpoint-*")
    return sorted(int(p.name.split("-")[1]) for p in folders if (p / "trainer_state.json").is_file())


def test_a_set_that_loses_a_rank_mid_run_is_restarted_and_resumes_from_the_checkpoint(tmp_path, tiny_model_dir, rows):
    steps = 30
    work = make_workdir(tmp_path / "work", tiny_model_dir, rows * 2)
    argv = step_argv(work, batch=2, steps=steps, every=4)
    first = run_set(work, argv)
    deadline = time.monotonic() + TIMEOUT
    while not saved_steps(work) or saved_steps(work)[-1] < 8:
        if any(n.poll() is not None for n in first) or time.monotonic() > deadline:
            stop(first)
            pytest.fail(f"no checkpoint at step 8 while both ranks ran:\n{logs(work)}")
        time.sleep(0.1)
    stop(first[1:])  # node 1 lost, as a preempted pod
    stop(first)  # JobSet's restart recreates every pod of the set
    resume = saved_steps(work)[-1]
    assert 8 <= resume < steps and not (work / "adapter").exists()
    for log in work.glob("node-*.log"):
        log.rename(log.with_suffix(".first"))

    wait_all(run_set(work, argv), work)
    assert f"resuming from checkpoint-{resume} (step {resume} of {steps})" in (work / "node-0.log").read_text()
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resume and metrics["steps"] == steps
    assert (work / "adapter" / "adapter_model.safetensors").is_file()
