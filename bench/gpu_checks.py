"""bench/gpu_train.py's correctness checks on CUDA, each on the smaller model of the same widths (`--check-layers`)
unless it serves: the bf16 path, the fp16 + loss-scaler path forced as on a V100, a run killed after a checkpoint
and resumed against an uninterrupted one, the adapter loaded with PEFT, and `kairo serve` answering on the GPU.

Each check records `ok` (with what it compared) or why it failed; none raises.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import gpu_parts as parts
import serve as serve_bench  # bench/serve.py: its client helpers
from gpu_recipes import kairo_config, kairo_workdir, release_memory, run_kairo

Bench = Any  # gpu_train.Bench
HERE = Path(__file__).resolve().parent
V100 = ((7, 0), "Tesla V100-SXM2-16GB (simulated)")
DEVICE_MODULES = ("kairo.training.devices", "kairo.steps.train")


def run_all(bench: Bench) -> None:
    """Every check. The server and the run to be killed start first, in their own processes, and load while
    the in-process checks train (nothing is timed here); the time budget skips what no longer fits."""
    folder = "main"
    if not bench.tiny and bench.fits("check-model", 20):
        bench.results["checks"]["model"] = parts.prepare_model(bench, bench.args.check_layers, "check")
        folder = "check"
    server = Server(bench, folder) if bench.fits("serve", 60) else None
    killed = KilledRun(bench, folder) if bench.fits("resume", 45) else None
    try:
        checks = [("precision", lambda: precision(bench, folder), 30), ("peft", lambda: peft_load(bench, folder), 15)]
        if killed:
            checks.insert(1, ("resume", lambda: resume(bench, folder, killed), 0))
        if server:
            checks.append(("serve", lambda: server.measure(), 0))
        for name, check, needs in checks:
            if needs and not bench.fits(name, needs):
                continue
            started = time.monotonic()
            try:
                result = check()
            except BaseException as err:  # noqa: BLE001 — bench/serve.py's helpers end with SystemExit
                if isinstance(err, KeyboardInterrupt):
                    raise
                result = {"status": "failed", "error": traceback.format_exc(limit=6)}
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            bench.results["checks"][name] = result
            bench.say(f"check {name}: {result['status']}" + (f" — {result.get('error', '')[-400:]}"
                                                            if result["status"] != "ok" else f" {brief(result)}"))
            bench.save()
            release_memory()
    finally:
        for process in (server, killed):
            if process is not None:
                process.stop()


def brief(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list) and k != "status"})[:300]


def finite(values: list[float]) -> bool:
    return bool(values) and all(isinstance(v, float) and math.isfinite(v) for v in values)


def precision(bench: Bench, folder: str) -> dict[str, Any]:
    """The bf16 path as this GPU takes it, and the fp16 + GradScaler path a V100 takes, on the same steps."""
    steps = 3 if bench.tiny else 8
    config = kairo_config(bench, "lora", steps=steps)
    bf16 = run_kairo(bench, "precision-native", "lora", config, model_folder=folder, warmup=1)
    v100 = parts.replaced("capability", lambda device="auto": V100, DEVICE_MODULES)
    fp16 = run_kairo(bench, "precision-v100", "lora", config, model_folder=folder, patches=(v100,), warmup=1)
    native_ok = bf16["status"] == "ok" and finite(bf16["loss_per_step"])
    if bench.cuda:
        native_ok = native_ok and "bfloat16" in (bf16.get("precision") or "")
    fp16_ok = (fp16["status"] == "ok" and finite(fp16["loss_per_step"]) and "float16" in (fp16.get("precision") or "")
               and (fp16.get("scaler") == "GradScaler" or not bench.cuda))
    first = (bf16.get("loss_per_step") or [None])[0], (fp16.get("loss_per_step") or [None])[0]
    return {
        "status": "ok" if native_ok and fp16_ok else "failed",
        "native": {k: bf16.get(k) for k in ("status", "precision", "loss_per_step", "tokens_per_second", "error")},
        "v100_fp16": {k: fp16.get(k) for k in ("status", "precision", "scaler", "loss_per_step", "tokens_per_second",
                                               "error")},
        "first_step_loss_difference": abs(first[0] - first[1]) if None not in first else None,
        **({} if native_ok and fp16_ok else {"error": f"native: {bf16.get('error') or bf16.get('precision')}; "
                                                      f"fp16: {fp16.get('error') or fp16.get('precision')}"}),
    }


class KilledRun:
    """The train step in its own process (as a pod runs it), killed with SIGKILL — as a lost node is — as soon
    as its first checkpoint is complete. It starts at once and a thread watches for the checkpoint."""

    def __init__(self, bench: Bench, folder: str):
        self.total, self.at = (8, 3) if bench.tiny else (40, 5)
        self.config = kairo_config(bench, "lora", steps=self.total)
        self.flags = ("--checkpoint-every", str(self.at))
        self.work, argv = kairo_workdir(bench, "resume", self.config, folder)
        command = [sys.executable, str(HERE / "gpu_train.py"), "--child-train", "tiny" if bench.tiny else "full",
                   "--preset", bench.preset, "--method", "lora", *argv, *self.flags]
        self.saved = self.work / "checkpoints" / f"checkpoint-{self.at}" / "trainer_state.json"
        self.log = open(self.work / "killed-run.log", "wb")  # noqa: SIM115 — closed in stop()
        # cwd: not the repository root, whose kairo/ folder would shadow the installed kairo (kairo.steps…)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,  # noqa: S603 — ours
                                        cwd=bench.work)
        self.ended_first = False
        self.watcher = threading.Thread(target=self._watch, args=(time.monotonic() + (120 if bench.tiny else 180),),
                                        daemon=True)
        self.watcher.start()

    def _watch(self, deadline: float) -> None:
        while not self.saved.is_file() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.ended_first = self.process.poll() is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def wait(self) -> str | None:
        """Wait for the kill; why the run could not be killed after its checkpoint, or None."""
        self.watcher.join()
        if self.ended_first or not self.saved.is_file():
            tail = (self.work / "killed-run.log").read_text(errors="replace")[-1500:]
            return (f"the run to kill {'ended' if self.ended_first else 'saved nothing'} before "
                    f"checkpoint-{self.at} was seen: {tail}")
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()


def resume(bench: Bench, folder: str, killed: KilledRun) -> dict[str, Any]:
    """Resume the killed run from its last checkpoint and compare its losses, step by step, with an
    uninterrupted run of the same config (trained here while the other one ran)."""
    reference = run_kairo(bench, "resume-reference", "lora", killed.config, model_folder=folder, flags=killed.flags,
                          warmup=1)
    problem = killed.wait()
    if problem:
        return {"status": "failed", "error": problem}
    after_kill = sorted(int(p.name.split("-")[1]) for p in (killed.work / "checkpoints").glob("checkpoint-*"))
    adapter_after_kill = (killed.work / "adapter").exists()
    resumed = run_kairo(bench, "resume", "lora", killed.config, model_folder=folder, fresh=False,
                        flags=(*killed.flags, "--resume", "auto"), warmup=1)
    ours, theirs = resumed.get("loss_per_step") or [], reference.get("loss_per_step") or []
    relative = [abs(a - b) / max(abs(b), 1e-6) for a, b in zip(ours, theirs, strict=False)]
    start = resumed.get("resumed_from_step") or 0
    # The killed run's own steps (before `start`) show how much two processes differ at all; CUDA's atomic
    # adds make bf16 sums differ run to run, float32 on a CPU far less.
    tolerance = 5e-3 if bench.cuda else 1e-3
    same = (len(ours) == len(theirs) == killed.total and 0 < start < killed.total
            and max(relative, default=1.0) <= tolerance)
    return {
        "status": "ok" if resumed["status"] == "ok" and reference["status"] == "ok" and same else "failed",
        "checkpoint_every": killed.at, "steps": killed.total, "checkpoints_after_kill": after_kill,
        "adapter_after_kill": adapter_after_kill, "resumed_from_step": start,
        "max_relative_loss_difference_before_kill": max(relative[:start], default=None),
        "max_relative_loss_difference_after_resume": max(relative[start:], default=None),
        "tolerance": tolerance, "loss_reference": theirs, "loss_resumed": ours,
        **({} if same else {"error": f"resumed {resumed.get('status')} from step {start} "
                                     f"{resumed.get('error') or ''}; reference {reference.get('status')}; "
                                     f"{len(ours)} vs {len(theirs)} losses"}),
    }


def peft_load(bench: Bench, folder: str) -> dict[str, Any]:
    """The saved adapter (the precision check's) loads with PeftModel.from_pretrained and changes the output."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = bench.work / "runs" / "precision-native" / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():
        return {"status": "failed", "error": f"no adapter at {adapter} (the precision check did not save one)"}
    model_dir = bench.work / folder / "model" / bench.preset
    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bench.cuda else torch.float32,
                                                 device_map={"": 0} if bench.cuda else {"": "cpu"})
    ids = torch.tensor([bench.eval_examples_tokenized[0].input_ids[:64]], device=model.device)
    with torch.no_grad():
        base = model(input_ids=ids).logits.float()
        tuned = PeftModel.from_pretrained(model, str(adapter))
        adapted = tuned(input_ids=ids).logits.float()
    layers = sum(1 for m in tuned.modules() if hasattr(m, "lora_A"))
    difference = float((adapted - base).abs().max())
    ok = bool(torch.isfinite(adapted).all()) and layers > 0 and difference > 0
    config = json.loads((adapter / "adapter_config.json").read_text())
    return {"status": "ok" if ok else "failed", "lora_layers": layers, "max_logit_change": difference,
            "base_model_name_or_path": config.get("base_model_name_or_path"), "r": config.get("r"),
            "load_seconds": round(time.monotonic() - started, 2),
            **({} if ok else {"error": f"{layers} LoRA layers, logits changed by {difference}"})}


class Server:
    """`kairo serve` with the base model and kairo-lora's adapter on this device, started at once (it loads
    while the other checks train); `measure()` asks one request, then 16 at once, twice."""

    def __init__(self, bench: Bench, folder: str):
        self.bench = bench
        self.adapter = bench.work / "runs" / "kairo-lora" / "adapter"
        model_folder = "main"
        if not (self.adapter / "adapter_config.json").is_file():  # no recipes ran: the checks' own adapter
            self.adapter, model_folder = bench.work / "runs" / "precision-native" / "adapter", folder
        model_dir = bench.work / model_folder / "model" / bench.preset
        self.tokens = 16 if bench.tiny else 64
        self.port = serve_bench._free_port()
        command = [sys.executable, "-m", "kairo.cli", "serve", "--preset", bench.preset, "--model-dir",
                   str(model_dir), "--adapter", f"bench={self.adapter}", "--port", str(self.port), "--device",
                   "cuda" if bench.cuda else "cpu", "--max-batch-size", "16", "--max-tokens-cap", str(self.tokens),
                   "--cache-dir", str(bench.work / "cache")]
        self.command = command
        self.log_path = bench.work / "serve.log"
        self.process: subprocess.Popen | None = None
        if (self.adapter / "adapter_config.json").is_file():
            self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 — closed in stop()
        self.started = time.monotonic()
        env = {**os.environ, "KAIRO_API_KEY": ""}
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT,  # noqa: S603
                                        env=env, cwd=self.bench.work)  # cwd: as KilledRun's says

    def measure(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}"
        if self.process is None:  # its adapter is the precision check's, saved since
            if not (self.adapter / "adapter_config.json").is_file():
                raise RuntimeError(f"no adapter to serve at {self.adapter}")
            self.start()
        serve_bench._wait_ready(url, self.process, self.log_path, timeout=150)
        ready = time.monotonic() - self.started
        tokens = self.tokens
        bodies = [{"model": "bench", "messages": [{"role": "user", "content": q}], "max_tokens": tokens,
                   "min_tokens": tokens, "temperature": 0} for q in (serve_bench.QUESTIONS * 2)[:16]]
        one = serve_bench._run(url, bodies[:1], 1)
        warm = serve_bench._run(url, bodies, 16)
        calls, rows = serve_bench._batches(url)
        many = serve_bench._run(url, bodies, 16)
        calls_after, rows_after = serve_bench._batches(url)
        return {
            "status": "ok", "adapter": str(self.adapter.relative_to(self.bench.work)),
            "ready_seconds": round(ready, 1), "new_tokens_per_request": tokens,
            "one_request": {"seconds": round(one.seconds, 3), "tokens_per_second": round(tokens / one.seconds, 1)},
            "sixteen_concurrent": {
                "seconds": round(many.seconds, 3), "tokens_per_second": round(16 * tokens / many.seconds, 1),
                "p50_seconds": round(many.p50, 3), "p95_seconds": round(many.p95, 3),
                "first_round_tokens_per_second": round(16 * tokens / warm.seconds, 1),
                "mean_batch": round((rows_after - rows) / max(calls_after - calls, 1), 1)},
        }

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
