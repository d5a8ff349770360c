"""Data-parallel on CPU, measured: the train step on 1 rank against 2 local ranks, and what share of a step talks.

1. **Scaling**: kairo's train step (tiny-llama-test, lora) on the same data and the same global batch, once as one
   process and once as two "nodes" of one process each — torchrun's c10d rendezvous on 127.0.0.1, gloo, what a
   JobSet of two pods runs. Tokens/s from each run's metrics.json; the ratio printed. Two ranks on one machine
   share its cores: the ratio says what the collectives and the second process cost here, not what two GPU
   nodes gain (each with a GPU of its own, the compute part halves).
2. **Communication share of a step**: two gloo ranks train the same LoRA model under DDP; steps timed with the
   gradient all-reduce and without it (`no_sync()`, same forward and backward), share = 1 − without / with, and
   the all-reduce of the step's gradients alone (the trained parameters, float32, in one piece) against the step. Each
   kind keeps its fastest step: the one least disturbed by the rest of the machine.

`python bench/distributed.py` (`make bench` runs it too). Numbers depend on the machine's load; each part keeps
the best of `--rounds`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import synthetic_conversations, train_work  # noqa: E402 — bench/ is not a package

CONFIG = """\
training_config:
  LoraConfig: {{r: 8, lora_alpha: 16, lora_dropout: 0.0}}
  TrainingArguments: {{max_steps: {steps}, learning_rate: 0.001, per_device_train_batch_size: {batch}}}
  DatasetConfig: {{train_test_split: 1}}
  TokenizerParams: {{max_length: {max_length}}}
"""


def train_run(work: Path, ranks: int, global_batch: int, steps: int, max_length: int) -> dict:
    """The train step as `ranks` single-process nodes (1: a plain process); its metrics.json."""
    import shutil

    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    shutil.rmtree(work / "adapter", ignore_errors=True)
    config = work / f"config-{ranks}.yaml"
    config.write_text(CONFIG.format(steps=steps, batch=global_batch // ranks, max_length=max_length))
    argv = ["-m", "kairo.steps.train", "--preset", "tiny-llama-test", "--method", "lora", "--config", str(config),
            "--workdir", str(work), "--outputs", str(work / "outputs"), "--device", "cpu", "--resume", "never",
            "--progress-every", "1000"]
    # One thread a rank in both runs: the ratio is then ranks' scaling, not threads' (and spinning OpenMP threads
    # on a busy machine made the one-process run up to 7× slower: measured here, 2 shared cores).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "10000"}
    if ranks == 1:
        procs = [subprocess.Popen([sys.executable, *argv], env=env, stderr=subprocess.DEVNULL)]  # noqa: S603
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--nnodes={ranks}",  # noqa: S603
                                   "--nproc-per-node=1", f"--node-rank={rank}", "--rdzv-backend=c10d",
                                   f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=bench-{port}", *argv[0:]],
                                  env=env, stderr=subprocess.DEVNULL) for rank in range(ranks)]
    codes = [p.wait(timeout=1800) for p in procs]
    if any(codes):
        raise SystemExit(f"the train step failed on {ranks} rank(s): exit codes {codes}")
    return json.loads((work / "outputs" / "metrics.json").read_text())


def _ddp_worker(rank: int, port: int, steps: int, model_dir: str, batch: int, length: int, out: str) -> None:
    """One rank of part 2: DDP over gloo; step times with and without the gradient all-reduce."""
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kairo.presets import get_preset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    targets = list(get_preset("tiny-llama-test").tuning.target_modules)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(rank))

    def step(sync: bool) -> float:
        dist.barrier()
        started = time.perf_counter()
        if sync:
            ddp(input_ids=ids, labels=ids).loss.backward()
        else:
            with ddp.no_sync():
                ddp(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for _ in range(2):  # warm-up, both kinds
        step(True), step(False)
    timed = {"sync": [], "local": []}
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = torch.zeros(trained)
    timed["all_reduce"] = []
    for _ in range(steps):  # alternate, so that load on the machine hits all alike
        timed["sync"].append(step(True))
        timed["local"].append(step(False))
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(flat)  # the step's gradients in one piece: what DDP's buckets send
        timed["all_reduce"].append(time.perf_counter() - started)
    if rank == 0:  # the fastest of each: the one least disturbed by whatever else this machine runs
        Path(out).write_text(json.dumps({k: min(v) for k, v in timed.items()} | {"bytes": trained * 4}))
    dist.barrier()  # then exit: destroy_process_group after the other rank left hung gloo here (torch 2.13)


def communication_share(model_dir: Path, steps: int, batch: int, length: int) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        mp.spawn(_ddp_worker, args=(port, steps, str(model_dir), batch, length, out.name), nprocs=2, join=True)
        found = json.loads(Path(out.name).read_text())
    found["share"] = 1 - found["local"] / found["sync"]
    found["all_reduce_share"] = found["all_reduce"] / found["sync"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=400, help="conversations in the dataset")
    parser.add_argument("--global-batch", type=int, default=4, help="packed rows per step, over all ranks")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of each train run")
    parser.add_argument("--max-length", type=int, default=256, help="longest packed row")
    parser.add_argument("--ddp-steps", type=int, default=30, help="timed steps of each kind in part 2")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each part; the best one counts")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    conversations = synthetic_conversations(args.examples)
    with tempfile.TemporaryDirectory() as tmp:
        work, model_dir = train_work(Path(tmp), conversations)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for ranks in (1, 2):
                runs[ranks].append(train_run(work, ranks, args.global_batch, args.steps, args.max_length))
        one, two = (max(runs[r], key=lambda m: m["tokens_per_second"]) for r in (1, 2))
        comm = min((communication_share(model_dir, args.ddp_steps, args.global_batch // 2, args.max_length)
                    for _ in range(args.rounds)), key=lambda c: c["sync"])
    ratio = two["tokens_per_second"] / one["tokens_per_second"]
    print(f"train step, {args.steps} steps of {args.global_batch} packed rows (≤ {args.max_length} tokens), "
          f"{os.cpu_count()} CPUs:")
    for ranks, m in ((1, one), (2, two)):
        print(f"  {ranks} rank{'s' if ranks > 1 else ' '}: {m['tokens_per_second']:8.0f} tokens/s  "
              f"({m['tokens_trained']} tokens in {m['train_seconds']:.1f} s, loss {m['train_loss']:.4f})")
    print(f"  scaling ratio 2 ranks / 1 rank: {ratio:.2f}×")
    print(f"DDP step on 2 gloo ranks ({args.global_batch // 2} rows × {args.max_length} tokens each): "
          f"{comm['sync'] * 1000:.1f} ms with the all-reduce, {comm['local'] * 1000:.1f} ms without: communication "
          f"{comm['share']:.0%} of a step; the gradients' all-reduce alone {comm['all_reduce'] * 1000:.2f} ms "
          f"({comm['all_reduce_share']:.1%} of a step, {comm['bytes'] / 1024:.0f} KiB a rank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
