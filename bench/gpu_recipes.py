"""bench/gpu_train.py's two recipes, run on the bench's model and data: kairo's train step as a workflow runs it
(`kairo.steps.train.main` with a Kaito ConfigMap), and Kaito's (TRL's SFTTrainer). Each returns what it measured;
a crash is recorded, not raised, so that one configuration's failure does not end the run.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import shutil
import sys
import time
import traceback
from typing import Any

import gpu_parts as parts

TRAIN_MODULES = ("kairo.training.trainer", "kairo.steps.train")  # where the recipe may hold KairoTrainer
Bench = Any  # gpu_train.Bench: settings, folders, the time budget


# ── kairo's recipe, as the train step runs it ──

def kairo_config(bench: Bench, method: str, *, batch: int = 1, steps: int | None = None,
                 model: dict | None = None, training: dict | None = None) -> dict:
    """Kaito's ConfigMap for `method` (presets/training/), with the bench's learning rate, length and steps."""
    import yaml

    from kairo.training.config import DEFAULT_TEMPLATES, TEMPLATE_DIR

    config = yaml.safe_load((TEMPLATE_DIR / f"{DEFAULT_TEMPLATES[method]}.yaml").read_text())
    body = config["training_config"]
    ta = body["TrainingArguments"]
    ta.update(per_device_train_batch_size=batch, learning_rate=bench.args.lr, logging_steps=1, **(training or {}))
    if bench.tiny:  # the recipe checkpoints activations on CUDA unless told otherwise: run that path on CPU too
        ta.setdefault("gradient_checkpointing", True)
    if steps:
        ta["max_steps"] = steps
    else:
        ta["num_train_epochs"] = 1
    body.setdefault("TokenizerParams", {})["max_length"] = bench.max_length
    body["ModelConfig"].update(model or {})
    return config


def kairo_workdir(bench: Bench, name: str, config: dict, model_folder: str = "main", fresh: bool = True):
    """A train step's work dir (model/PRESET and data/ linked to the bench's) and the step's arguments."""
    work = bench.work / "runs" / name
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        (work / "model").mkdir(parents=True)
        (work / "model" / bench.preset).symlink_to(bench.work / model_folder / "model" / bench.preset)
        (work / "data").symlink_to(bench.work / "data")
        (work / "training_config.yaml").write_text(json.dumps(config))  # JSON is YAML
    argv = ["--config", str(work / "training_config.yaml"), "--workdir", str(work), "--outputs",
            str(work / "outputs"), "--device", "cuda" if bench.cuda else "cpu", "--progress-every", "1000",
            "--checkpoint-minutes", "1000", "--resume", "never"]
    return work, argv


def run_kairo(bench: Bench, name: str, method: str, config: dict, *, model_folder: str = "main",
              patches: tuple = (), flags: tuple[str, ...] = (), warmup: int = 2, fresh: bool = True) -> dict[str, Any]:
    """Run kairo's train step (`kairo.steps.train.main`) on `config` with a step clock attached; its metrics.

    `flags` come after the defaults (`--resume never`…) and so override them.
    """
    from kairo.steps import train
    from kairo.training.trainer import KairoTrainer

    work, argv = kairo_workdir(bench, name, config, model_folder, fresh)
    argv = ["--preset", bench.preset, "--method", method, *argv, *flags]
    clocks = []
    deadline = bench.deadline()

    class Probed(KairoTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clock = parts.step_clock(lambda: (self.tokens_trained, self.batch_tokens), deadline)
            scaler = getattr(self.accelerator, "scaler", None)
            clock.scaler = type(scaler).__name__ if scaler is not None else None
            clocks.append(clock)
            self.add_callback(clock)

    started = time.monotonic()
    with captured_stderr() as errors, contextlib.ExitStack() as stack:
        stack.enter_context(parts.replaced("KairoTrainer", Probed, TRAIN_MODULES))
        for patch in (*tiny_patches(bench), *patches):
            stack.enter_context(patch)
        try:
            code = train.main(argv)
        except Exception:  # a crash is a finding: record it and go on with the next configuration
            code, errors.crash = -1, traceback.format_exc(limit=6)
    result: dict[str, Any] = {"recipe": "kairo", "method": method, "exit_code": code,
                              "wall_seconds": round(time.monotonic() - started, 1), "workdir": str(work)}
    metrics_file = work / "outputs" / "metrics.json"
    if code == 0 and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        result.update({k: metrics.get(k) for k in ("steps", "tokens_trained", "pad_fraction", "train_seconds",
                                                   "train_loss", "eval_loss", "precision", "packed_rows",
                                                   "peak_memory_bytes", "base_layers",
                                                   "resumed_from_step")})
        result["tokens_per_second_whole_run"] = metrics.get("tokens_per_second")
        result["loss_per_step"] = [e["loss"] for e in metrics.get("loss_per_step", [])]
        result["status"] = "ok"
    else:
        result["status"] = "failed"
        result["error"] = errors.crash or errors.tail()
    if clocks:
        result.update(clocks[-1].summary(warmup), scaler=clocks[-1].scaler)
        result["tokens_per_step_list"] = [r for _, r, _ in clocks[-1].steps]
    clocks.clear()  # a clock reaches its trainer, and so the model: drop it before freeing memory
    release_memory()
    return result


def tiny_patches(bench: Bench) -> tuple:
    """--tiny trains a toy model under a real preset's name: the preset's memory estimate is not for it."""
    return (parts.replaced("fit_problem", lambda *a: None, ("kairo.machine", "kairo.steps.train")),) if bench.tiny else ()


class captured_stderr(contextlib.AbstractContextManager):  # noqa: N801 — used as a context manager
    """Copy what is written to stderr during the block (the step's log lines say why it failed)."""

    def __enter__(self):
        self.buffer = io.StringIO()
        self.crash = ""
        self.saved = sys.stderr
        saved, buffer = self.saved, self.buffer

        class Tee(io.TextIOBase):
            def write(self, text):
                buffer.write(text)
                return saved.write(text)

            def flush(self):
                saved.flush()

            def fileno(self):  # whatever hands stderr to a child process gets the real one
                return saved.fileno()

            def isatty(self):
                return saved.isatty()

        sys.stderr = Tee()
        return self

    def __exit__(self, *exc):
        sys.stderr = self.saved
        return False

    def tail(self, lines: int = 12) -> str:
        return "\n".join(self.buffer.getvalue().splitlines()[-lines:])


def release_memory() -> None:
    """Drop the last configuration's model before the next one loads (its exception frames included)."""
    import torch

    torch._dynamo.reset()  # compiled graphs hold the compiled model's weights
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ── Kaito's recipe: TRL's SFTTrainer, one example a step, loss on every token ──

def run_kaito(bench: Bench, name: str, method: str, warmup: int = 2) -> dict[str, Any]:
    """Kaito's tuning recipe on the same model and data: SFTTrainer, batch 1, no packing, r 8 / α 8."""
    started = time.monotonic()
    holder: dict[str, Any] = {}
    try:
        result = _kaito(bench, method, holder, warmup)
    except Exception:
        result = {"status": "failed", "error": traceback.format_exc(limit=6)}
    holder.clear()
    result.update(recipe="kaito", method=method, wall_seconds=round(time.monotonic() - started, 1))
    release_memory()
    return result


def _kaito(bench: Bench, method: str, holder: dict, warmup: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from kairo.presets import get_preset
    from kairo.training.packing import PackedDataset, held_out_loss

    model_dir = bench.work / "main" / "model" / bench.preset
    dtype = torch.bfloat16 if bench.cuda else torch.float32
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=dtype) if method == "qlora" else None
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quantization,
                                                 device_map={"": 0} if bench.cuda else {"": "cpu"})
    holder["model"] = model
    targets = list(get_preset(bench.preset).tuning.target_modules)
    counted = {"real": 0, "all": 0}

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                mask = inputs.get("attention_mask")
                counted["real"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
                counted["all"] += int(inputs["input_ids"].numel())
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    clock = parts.step_clock(lambda: (counted["real"], counted["all"]), bench.deadline())
    args = SFTConfig(
        output_dir=str(bench.work / "runs" / f"kaito-{method}"), per_device_train_batch_size=1, num_train_epochs=1,
        learning_rate=bench.args.lr, max_length=bench.max_length, packing=False, padding_free=False,
        assistant_only_loss=False, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        seed=42, bf16=bench.cuda, use_cpu=not bench.cuda,
        gradient_checkpointing=True,  # TRL's default
    )
    trainer = Counting(
        model=model, args=args, processing_class=tokenizer, callbacks=[clock],
        train_dataset=Dataset.from_list([{"messages": c} for c in bench.train_rows]),
        peft_config=LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM"),
    )
    holder["trainer"] = trainer
    train_started = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - train_started
    eval_data = PackedDataset(bench.eval_examples_tokenized, bench.max_length)
    eval_loss = held_out_loss(trainer.model, eval_data, 1)[0] if len(eval_data) else None
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return {"status": "ok", "steps": trainer.state.global_step, "tokens_trained": counted["real"],
            "pad_fraction": 1 - counted["real"] / counted["all"] if counted["all"] else 0.0,
            "train_seconds": round(train_seconds, 2),
            "tokens_per_second_whole_run": round(counted["real"] / train_seconds, 1) if train_seconds else None,
            "train_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1),
            "eval_loss": eval_loss, "loss_per_step": losses, "loss_on": "every token (prompt included)",
            **clock.summary(warmup), "tokens_per_step_list": [r for _, r, _ in clock.steps]}
