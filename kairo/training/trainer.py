"""The transformers Trainer as kairo runs it: counting the real tokens it trains on, reporting progress to
Argo and the terminal, saving a checkpoint and stopping when the pod is asked to stop (SIGTERM), and the
metrics.json / loss.png artifacts a run leaves.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from kairo.atomic import write_bytes, write_text
from kairo.progress import Progress


class KairoTrainer(Trainer):
    """transformers.Trainer that counts the non-pad tokens of the batches it trains on (kairo.training.packing)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tokens_trained = 0  # real tokens
        self.batch_tokens = 0  # real tokens and padding

    @property
    def pad_fraction(self) -> float:
        return 1 - self.tokens_trained / self.batch_tokens if self.batch_tokens else 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        tokens = inputs.pop("num_tokens", 0)
        if model.training:
            self.tokens_trained += int(tokens)
            self.batch_tokens += int(inputs["input_ids"].numel())
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


class TrainingLog(TrainerCallback):
    """Progress (`step/total` and the loss) at least every `every` steps and at each epoch's end; checkpoints
    every `checkpoint_steps` steps, or when `checkpoint_minutes` have passed since the last one.

    Time-based checkpoints bound what a preempted pod loses whatever the step speed, and cost a short run
    nothing; the config's own `save_strategy: steps` / `epoch` is honoured by the Trainer besides.
    """

    def __init__(self, every: int = 10, checkpoint_steps: int = 0, checkpoint_minutes: float = 10.0, stream=None):
        self.every = max(1, every)
        self.checkpoint_steps = checkpoint_steps
        self.checkpoint_seconds = checkpoint_minutes * 60
        self.stream = stream if stream is not None else sys.stderr
        self.progress: Progress | None = None
        self.last_loss: float | None = None
        self.stop_requested = False
        self.started_at_step = 0
        self.last_save = time.monotonic()

    def request_stop(self, *_: Any) -> None:
        """Called from a SIGTERM handler: save a checkpoint after the current step, then stop."""
        self.stop_requested = True

    def on_train_begin(self, args, state, control, **kwargs):
        self.started_at_step = state.global_step
        if state.is_world_process_zero:
            self.progress = Progress(state.max_steps, "train", stream=self.stream)
            self.progress.update(state.global_step, force=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.stop_requested
        due = time.monotonic() - self.last_save >= self.checkpoint_seconds and state.global_step < state.max_steps
        if args.world_size > 1:  # every rank must save (and stop) at the same step, or the others wait forever
            stop, due = agreed(stop, due)
        if stop:
            self.stop_requested = True
            control.should_save = True
            control.should_training_stop = True
        elif self.checkpoint_steps and state.global_step % self.checkpoint_steps == 0:
            control.should_save = True
        elif due:
            control.should_save = True
        if self.progress is not None:
            note = f"loss {self.last_loss:.4f}" if self.last_loss is not None else ""
            self.progress.update(state.global_step, note, force=state.global_step % self.every == 0)

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            note = f"epoch {state.epoch:.3g} done" + (f", loss {self.last_loss:.4f}" if self.last_loss else "")
            self.progress.update(state.global_step, note, force=True)


def agreed(*flags: bool) -> tuple[bool, ...]:
    """Each flag true on every rank when it is true on any (a SIGTERM or a clock seen by one rank only)."""
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return flags
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([int(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in values.tolist())


def step_losses(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, training loss) for every logged step, from Trainer's log history (kept across resumes)."""
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def write_metrics(folder: Path, metrics: dict[str, Any]) -> Path:
    """metrics.json: the run's figures and its loss per step (NaN written as null)."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return write_text(folder / "metrics.json", json.dumps(clean(metrics), indent=2) + "\n")


def plot_loss(folder: Path, losses: list[tuple[int, float]], eval_loss: float | None, title: str) -> Path:
    """loss.png: training loss per step, and the held-out loss as a line when there is one."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if losses:
        ax.plot([s for s, _ in losses], [v for _, v in losses], label="training loss", linewidth=1.2)
    if eval_loss is not None and math.isfinite(eval_loss):
        ax.axhline(eval_loss, color="tab:orange", linestyle="--", label=f"eval loss {eval_loss:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return write_bytes(folder / "loss.png", buffer.getvalue())


@contextlib.contextmanager
def on_sigterm(handler):
    """Call `handler` on SIGTERM while the block runs (signals reach only the main thread's handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def peak_memory_bytes() -> int:
    """The most memory training held: CUDA's allocator peak on GPU, the process's peak RSS on CPU."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
