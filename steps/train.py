"""`kairo-step train`: fine-tune the preset's model on data/train.jsonl and save a PEFT adapter — kairo's recipe.

Read top to bottom: config → data (chat template, assistant-only labels, packing) → base model (4-bit for
qlora, full precision for lora) → LoRA → train (checkpoints, resume) → held-out loss → save the adapter.

Config: `--config` (Kaito's training_config, or its ConfigMap), else the method's Kaito template
(presets/training/). Differences from Kaito, on purpose: checkpoints are written every N steps to
`checkpoints/` even when the config says `save_strategy: "no"` (a retried pod resumes from them), the
examples are packed (several per row, each with its own positions, never attending to another), the
tokenized and packed splits are kept in `cache/tokenized/` on the work volume (a retried or resumed pod, and
evaluate, read them instead of tokenizing again: kairo.training.tokencache), and GPUs without bfloat16
train in float16 with a loss scaler.

Outputs: train-loss (mean of the last logged steps), eval-loss (empty without an eval split), steps;
artifacts metrics.json and loss.png. The adapter (PEFT files, tokenizer files, kairo.json) goes to
`adapter/` through a temp folder. Exit codes: 2 for the user's config or data (never retried), 75 when
stopped by SIGTERM after saving a checkpoint (a retry resumes), anything else a crash (retried: resumes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kairo import exitcodes, stepkit
from kairo.atomic import staged_dir, write_output, write_text
from kairo.machine import fit_problem, this_machine
from kairo.presets import METHODS, Preset
from kairo.problems import InvalidInput, Problem
from kairo.sizing import gpu_layout
from kairo.training.config import TrainingConfig, resolve_training_config

# TrainingArguments kairo sets itself (or reads from the config's own fields); the user's other keys pass through.
OWNED_ARGUMENTS = ("save_total_limit", "eval_strategy", "evaluation_strategy", "activation_checkpointing",
                   "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, help="model preset (kairo presets)")
    parser.add_argument("--method", required=True, choices=METHODS, help="lora, or qlora (4-bit base model)")
    parser.add_argument("--config", help="training_config.yaml or its ConfigMap (default: the method's Kaito template)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: CUDA when present")
    parser.add_argument("--resume", choices=["auto", "never"], default="auto",
                        help="auto: continue from the last checkpoint of the same run (default)")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                        help="save a checkpoint every N steps (default: by time, see --checkpoint-minutes)")
    parser.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                        help="save a checkpoint when M minutes have passed since the last (default 10)")
    parser.add_argument("--progress-every", type=int, default=10, metavar="N", help="report progress every N steps")
    stepkit.add_common_flags(parser, workdir=True, outputs=True,
                             cluster_config="accepted like every step's; train reads nothing from it",
                             local="accepted like every step's; train runs the same")
    return parser


log = stepkit.logger("train")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)  # a relaunch under torchrun passes them on as they came
    try:
        return stepkit.run_step("train", lambda parsed: train(parsed, given), args)
    except (MemoryError, RuntimeError) as err:  # a retry on the same machine would run out the same way
        if not isinstance(err, MemoryError) and type(err).__name__ != "OutOfMemoryError":
            raise
        first = str(err).splitlines()[0] if str(err) else "host RAM"
        log(f"out of memory ({first}) — lower TrainingArguments.per_device_train_batch_size or "
            "TokenizerParams.max_length, use method qlora, or choose a bigger resource.instanceType")
        return exitcodes.BAD_INPUT


@dataclass
class Run:
    """What the phases share: the step's arguments and the decisions taken before anything heavy loads."""

    args: argparse.Namespace
    workdir: Path
    outputs: Path
    preset: Preset
    config: TrainingConfig
    max_length: int
    started: float
    device: Any = None  # (compute capability or None for the CPU, GPU name)
    precision: Any = None  # kairo.training.devices.Precision
    world: int = 1
    sharded: bool = False  # FSDP: the model does not fit one GPU of this node but fits all of them (kairo.sizing)
    adapter_state: Any = None  # sharded: the whole state gathered from the ranks, what rank 0 saves


@dataclass
class Data:
    tokenizer: Any
    template_source: str
    train: Any  # kairo.training.packing.PackedFile: packed rows, and in .meta the counts of examples cut and dropped
    eval: Any | None


def train(args: argparse.Namespace, argv: list[str]) -> int:
    """The recipe: config → device → data → base model → LoRA → train → evaluate → save."""
    run = read_config(args)
    relaunch = choose_device(run, argv)
    if relaunch is not None:
        return relaunch
    data = load_data(run)
    model, targets, checkpointing = load_base_model(run)
    model, base_layers = add_lora(model, run, targets)
    trainer, timing = fit(model, data, run, checkpointing)
    if timing is None:  # stopped by SIGTERM after a checkpoint: a retry resumes
        return exitcodes.TRANSIENT
    if run.sharded:  # FSDP: every rank holds a shard, so every rank takes part in the eval and the gather
        eval_loss, run.adapter_state = held_out(model, data, run), trainer.accelerator.get_state_dict(trainer.model)
    if not trainer.is_world_process_zero():
        return exitcodes.OK
    if not run.sharded:
        eval_loss = held_out(model, data, run)
    save(model, trainer, data, run, targets, base_layers, eval_loss, timing)
    return exitcodes.OK


def read_config(args: argparse.Namespace) -> Run:
    """Kaito's training_config for this preset and method, checked before anything heavy happens."""
    preset = stepkit.preset(args.preset)
    if preset.tuning is None or args.method not in preset.tuning.methods:
        raise InvalidInput([Problem("tuning.method", f"'{preset.name}' cannot be tuned with {args.method}")])
    config = resolve_training_config(args.method, None, args.config)
    found = config.problems(args.method)
    for warning in (p for p in found if p.severity == "warning"):
        log(f"config: {warning}")
    errors = [p for p in found if p.severity == "error"]
    if errors:
        raise InvalidInput(errors, args.config or f"the {args.method} default config")
    max_length = config.TokenizerParams.max_length or min(2048, preset.context_length)
    if max_length > preset.context_length:
        raise InvalidInput([Problem("training_config.TokenizerParams.max_length",
                                    f"{max_length} is longer than {preset.name}'s context of {preset.context_length}")])
    return Run(args, stepkit.workdir(args), stepkit.outputs(args), preset, config, max_length, time.monotonic(),
               world=int(os.environ.get("WORLD_SIZE", "1")))


def choose_device(run: Run, argv: list[str]) -> int | None:
    """The device and precision; on several GPUs that each hold the model, a relaunch under torchrun (its code)."""
    import torch

    from kairo.training.devices import capability, choose_precision

    # peft and transformers warn each other about renamed checkpointing helpers; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)
    args, preset, config = run.args, run.preset, run.config
    if not (run.workdir / "model" / preset.name / "config.json").is_file():
        raise InvalidInput([Problem("model", f"{run.workdir / 'model' / preset.name} holds no model — the "
                                             "fetch-model step fills it")])
    cap, gpu_name = run.device = capability(args.device)
    machine = this_machine()
    if cap is None and machine.gpus:  # --device cpu on a GPU node: judge by the CPU's memory
        machine = type(machine)((), machine.cpus, machine.memory_gib, machine.available_gib)
    too_big = fit_problem(machine, preset, args.method)
    if too_big:
        raise InvalidInput([Problem("tuning.preset.name", too_big)])
    ta = config.TrainingArguments
    preferred = (config.QuantizationConfig.bnb_4bit_compute_dtype if args.method == "qlora"
                 else config.ModelConfig.torch_dtype)
    run.precision = choose_precision(cap, preferred=preferred, bf16=ta.bf16, fp16=ta.fp16, gpu=gpu_name)
    if cap is not None and machine.gpus:
        layout = gpu_layout(preset, args.method, min(g.memory_gib for g in machine.gpus), len(machine.gpus))
        run.sharded = layout.sharded
        if torch.cuda.device_count() > 1 and "WORLD_SIZE" not in os.environ:  # one process per GPU, DDP or FSDP
            return _relaunch_distributed(argv, torch.cuda.device_count(), layout.describe())
    log(f"{preset.name} ({preset.source.describe()}), {args.method}; {run.precision.note}")
    return None


def load_data(run: Run) -> Data:
    """The chat template, assistant-only labels and packed rows of the train and eval splits (cached on the volume)."""
    from kairo.training import base_model

    config_dir = Path(run.args.config).parent if run.args.config else None
    model_dir = run.workdir / "model" / run.preset.name
    tokenizer, template_source = base_model.load_tokenizer(model_dir, run.preset, run.config, config_dir)
    log(f"chat template: {template_source}")
    train_data = _packed(run.workdir / "data" / "train.jsonl", tokenizer, run, required=True)
    eval_path = run.workdir / "data" / "eval.jsonl"
    eval_data = _packed(eval_path, tokenizer, run, required=False) if eval_path.is_file() else None
    eval_data = eval_data if eval_data is not None and len(eval_data) else None
    log(f"{train_data.meta['examples']} training examples ({train_data.tokens} tokens) packed into {len(train_data)} "
        f"rows of at most {run.max_length} tokens" + (f"; {eval_data.meta['examples']} held out" if eval_data else
                                                       "; no eval split (DatasetConfig.train_test_split is 1)"))
    return Data(tokenizer, template_source, train_data, eval_data)


def load_base_model(run: Run) -> tuple[Any, list[str], bool]:
    """The base model, checked on the meta device then loaded (4-bit for qlora); its LoRA targets; checkpointing."""
    from kairo.training import base_model

    cap = run.device[0]
    config, ta = run.config, run.config.TrainingArguments
    model_dir = run.workdir / "model" / run.preset.name
    targets = base_model.lora_targets(model_dir, run.preset, config)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_map = {"": "cpu"} if cap is None else {"": rank} if run.world > 1 else config.ModelConfig.device_map
    if run.sharded:  # FSDP places the shards: rank 0 reads the weights, the others start empty (meta)
        device_map = None
        _start_sharded_loading()
    model = base_model.load_base_model(model_dir, run.preset, config, run.precision, device_map,
                                       sharded=run.sharded)
    checkpointing = ta.gradient_checkpointing  # recomputing activations saves GPU memory; on CPU it only costs time
    checkpointing = checkpointing if checkpointing is not None else ta.extras().get("activation_checkpointing")
    gradient_checkpointing = bool(checkpointing) if checkpointing is not None else cap is not None
    if run.sharded:  # FSDP shards flat parameters of one dtype: no float32 upcast of the kbit preparation
        if gradient_checkpointing:
            model.enable_input_require_grads()
    elif base_model.quantization(config, run.precision) is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    return model, targets, gradient_checkpointing


def add_lora(model: Any, run: Run, targets: list[str]) -> tuple[Any, list[str]]:
    """LoRA on the target modules (the trained weights in float32, as a loss scaler needs); the layers it wraps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    lora = run.config.LoraConfig
    set_seed(run.config.TrainingArguments.seed)  # the same LoRA weights at step 0 on every rank and in every rerun
    model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout, target_modules=targets,
        bias=lora.bias, modules_to_save=lora.modules_to_save, task_type="CAUSAL_LM",
        **{k: v for k, v in lora.extras().items() if k != "task_type"},
    ))
    for parameter in model.parameters() if not run.sharded else ():  # FSDP's mixed precision keeps its own
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    trainable, total = model.get_nb_trainable_parameters()
    base_layers = sorted({type(m.base_layer).__name__ for m in model.modules() if hasattr(m, "lora_A")})
    log(f"LoRA r={lora.r} alpha={lora.lora_alpha:g} on {targets} ({', '.join(base_layers)} layers): "
        f"{trainable:,} of {total:,} parameters train")
    return model, base_layers


def fit(model: Any, data: Data, run: Run, checkpointing: bool) -> tuple[Any, dict[str, Any] | None]:
    """Train, checkpointing to checkpoints/ and resuming the same run: the trainer, and timings (None if stopped)."""
    import torch
    from transformers import PrinterCallback

    from kairo.training.packing import PackedCollator
    from kairo.training.trainer import KairoTrainer, TrainingLog, on_sigterm

    args, ta = run.args, run.config.TrainingArguments
    steps_per_epoch = max(1, math.ceil(len(data.train) / (ta.per_device_train_batch_size * run.world)
                                       / ta.gradient_accumulation_steps))
    total_steps = ta.max_steps if ta.max_steps > 0 else math.ceil(ta.num_train_epochs * steps_per_epoch)
    checkpoints = run.workdir / "checkpoints"
    resume_from = _checkpoint_to_resume(checkpoints, args, run.preset, run.config, run.max_length, run.workdir)
    training_args = _training_arguments(run, checkpoints, checkpointing, has_eval=data.eval is not None)
    training_log = TrainingLog(args.progress_every, args.checkpoint_every, args.checkpoint_minutes)
    trainer = KairoTrainer(
        model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=PackedCollator(data.tokenizer.pad_token_id, run.config.DataCollator.pad_to_multiple_of),
        processing_class=data.tokenizer, callbacks=[training_log],
    )
    trainer.remove_callback(PrinterCallback)  # TrainingLog reports progress and loss instead
    if resume_from:
        log(f"resuming from {resume_from.name} (step {resume_from.name.rsplit('-', 1)[-1]} of {total_steps})")
    every = f"{args.checkpoint_every} steps" if args.checkpoint_every else f"{args.checkpoint_minutes:g} minutes"
    if training_args.save_strategy == "steps":
        every += f" and every {ta.save_steps:g} steps (save_steps)"
    elif training_args.save_strategy == "epoch":
        every += " and at each epoch's end"
    log(f"training {total_steps} steps ({steps_per_epoch} an epoch); a checkpoint every {every} in {checkpoints}")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_started, cpu_started = time.monotonic(), time.process_time()
    with on_sigterm(training_log.request_stop):  # a pod being deleted: checkpoint, then stop
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    timing = {"train_seconds": time.monotonic() - train_started, "train_cpu_seconds": time.process_time() - cpu_started,
              "resumed_from_step": int(resume_from.name.rsplit("-", 1)[-1]) if resume_from else None}
    if training_log.stop_requested:
        log(f"stopped by SIGTERM at step {trainer.state.global_step}; the checkpoint is saved and a retry resumes")
        return trainer, None
    return trainer, timing


def _training_arguments(run: Run, checkpoints: Path, checkpointing: bool, has_eval: bool) -> Any:
    """transformers' TrainingArguments: the user's keys, with those kairo decides itself set here."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(run, checkpoints, checkpointing, has_eval))


def training_argument_values(run: Run, checkpoints: Path, checkpointing: bool, has_eval: bool) -> dict[str, Any]:
    """The keyword arguments of TrainingArguments (see `_training_arguments`)."""
    ta, user = run.config.TrainingArguments, run.config.TrainingArguments.extras()
    # Kaito's templates say save_strategy "no"; kairo checkpoints anyway (TrainingLog), so a retry resumes.
    save_strategy = ta.save_strategy if ta.save_strategy in ("steps", "epoch") else "no"
    return {
        **{k: v for k, v in user.items() if k not in OWNED_ARGUMENTS},
        "output_dir": str(checkpoints),
        "num_train_epochs": ta.num_train_epochs,
        "max_steps": ta.max_steps,
        "per_device_train_batch_size": ta.per_device_train_batch_size,
        "gradient_accumulation_steps": ta.gradient_accumulation_steps,
        "learning_rate": ta.learning_rate,
        "seed": ta.seed,
        "logging_steps": ta.logging_steps if "logging_steps" in ta.model_fields_set else 1,
        "save_strategy": save_strategy,
        "save_steps": ta.save_steps,
        "save_total_limit": user.get("save_total_limit", 2),
        "eval_strategy": user.get("eval_strategy", "no") if has_eval else "no",
        "bf16": run.precision.bf16,
        "fp16": run.precision.fp16,
        "use_cpu": run.device[0] is None,
        "activation_checkpointing": checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "train_sampling_strategy": "random" if run.config.DatasetConfig.shuffle_dataset else "sequential",
        "remove_unused_columns": False,
        # LoRA uses every trained parameter in each step: DDP's search for unused ones only costs a graph walk
        **({"ddp_find_unused_parameters": False} if run.world > 1 else {}),
        **(_fsdp(checkpointing) if run.sharded else {}),
        "report_to": "none",
        "disable_tqdm": True,
    }


def _fsdp(checkpointing: bool) -> dict[str, Any]:
    """FSDP through accelerate: every decoder layer a shard unit, weights read once by rank 0 and sent out;
    activation checkpointing FSDP's own (the Trainer's would gather each layer's weights twice)."""
    return {"fsdp": True, "activation_checkpointing": False,
            "fsdp_config": {"version": 2, "reshard_after_forward": True, "cpu_ram_efficient_loading": True,
                            "state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": checkpointing}}


def _start_sharded_loading() -> None:
    """What transformers reads to load only on rank 0 (FSDP's cpu_ram_efficient_loading): the process group first."""
    import torch
    import torch.distributed as dist

    os.environ.setdefault("ACCELERATE_USE_FSDP", "true")
    os.environ.setdefault("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def held_out(model: Any, data: Data, run: Run) -> float | None:
    """The loss on the eval split (None without one), measured as evaluate will measure the deployed adapter."""
    from kairo.training.packing import held_out_loss

    if data.eval is None:
        return None
    return held_out_loss(model, data.eval, run.config.TrainingArguments.per_device_train_batch_size)[0]


def save(model: Any, trainer: Any, data: Data, run: Run, targets: list[str], base_layers: list[str],
         eval_loss: float | None, timing: dict[str, Any]) -> None:
    """The adapter, metrics.json, loss.png and the step's output parameters."""
    import torch

    from kairo.training.trainer import peak_memory_bytes, plot_loss, step_losses, write_metrics

    losses = step_losses(trainer.state.log_history)
    train_loss = sum(v for _, v in losses[-10:]) / len(losses[-10:]) if losses else float("nan")
    tokens = trainer.tokens_trained * run.world
    train_seconds = timing["train_seconds"]
    metrics = {
        "preset": run.preset.name, "method": run.args.method, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "train_loss": train_loss, "eval_loss": eval_loss,
        "perplexity": math.exp(eval_loss) if eval_loss is not None and eval_loss < 50 else None,
        "tokens_per_second": tokens / train_seconds if train_seconds > 0 else None,
        "tokens_trained": tokens, "pad_fraction": trainer.pad_fraction, "examples": data.train.meta["examples"],
        "truncated": data.train.meta["truncated"], "dropped": data.train.meta["dropped"], "max_seq_length": run.max_length,
        "packed_rows": len(data.train),
        "peak_memory_bytes": peak_memory_bytes(), "peak_memory_kind": "cuda" if torch.cuda.is_available() else "rss",
        "wall_seconds": time.monotonic() - run.started, "train_seconds": train_seconds,
        "train_cpu_seconds": timing["train_cpu_seconds"], "resumed_from_step": timing["resumed_from_step"],
        "precision": run.precision.note, "chat_template": data.template_source,
        "base_layers": base_layers, "loss_per_step": [{"step": s, "loss": v} for s, v in losses],
    }
    _save_adapter(run.workdir / "adapter", model, data.tokenizer, run.preset, run.args.method, run.workdir, metrics,
                  targets, run.adapter_state)
    write_metrics(run.outputs, metrics)
    plot_loss(run.outputs, losses, eval_loss, f"{run.preset.name} {run.args.method}")
    write_output("train-loss", f"{train_loss:.6g}", run.outputs)
    write_output("eval-loss", "" if eval_loss is None else f"{eval_loss:.6g}", run.outputs)
    write_output("steps", trainer.state.global_step, run.outputs)
    evaluated = f", eval loss {eval_loss:.4f}" if eval_loss is not None else ""
    log(f"done: {trainer.state.global_step} steps, train loss {train_loss:.4f}{evaluated}, "
        f"{metrics['tokens_per_second'] or 0:.0f} tokens/s; adapter in {run.workdir / 'adapter'}")


def _packed(path: Path, tokenizer, run: Run, required: bool):
    """One split's packed rows (made once, see kairo.training.tokencache); nothing usable to train on is exit 2."""
    from kairo.training.tokencache import packed_split

    if not path.is_file():
        raise InvalidInput([Problem(f"data/{path.name}", f"{path} not found — the download step writes it")])
    packed = packed_split(path, tokenizer, run.max_length, run.workdir / "cache" / "tokenized", log)
    meta = packed.meta
    if meta["dropped"]:
        log(f"{path.name}: {meta['dropped']} rows dropped (first: {meta['first_problem']})")
    if meta["truncated"]:
        log(f"{path.name}: {meta['truncated']} examples cut to {run.max_length} tokens (TokenizerParams.max_length)")
    if required and not meta["examples"]:
        why = f" — {meta['first_problem']}" if meta["first_problem"] else ""
        raise InvalidInput([Problem(f"data/{path.name}", f"no usable training example{why}")])
    return packed


def _checkpoint_to_resume(checkpoints: Path, args, preset, config, max_length: int, workdir: Path) -> Path | None:
    """The last checkpoint of this same run (same preset, method, config and data), or None."""
    data = workdir / "data"
    summary = data / "dataset.json"
    if summary.is_file():
        digest = json.loads(summary.read_text()).get("digest")
    else:
        with open(data / "train.jsonl", "rb") as handle:
            digest = "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    run = {"preset": preset.name, "revision": preset.revision, "method": args.method, "dataset": digest,
           "max_length": max_length, "config": json.loads(config.model_dump_json())}
    fingerprint = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
    marker = checkpoints / "run.json"
    first = os.environ.get("RANK", "0") == "0"  # with several processes, the first one alone tidies up and marks
    if checkpoints.is_dir():
        same = marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
        last = _last_complete_checkpoint(checkpoints) if same and args.resume == "auto" else None
        if last or not first:
            return last
        if any(checkpoints.iterdir()):
            log("checkpoints/ holds another run's (or --resume never): starting afresh")
        shutil.rmtree(checkpoints)
    elif not first:
        return None
    write_text(marker, json.dumps({"fingerprint": fingerprint, "dataset_digest": digest}) + "\n")
    return None


def _last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint whose trainer state (written last) is whole; a kill mid-save leaves one that is not."""
    found = sorted((int(p.name.rsplit("-", 1)[1]), p) for p in checkpoints.glob("checkpoint-*")
                   if p.name.rsplit("-", 1)[1].isdigit())
    for step, folder in reversed(found):
        try:
            if json.loads((folder / "trainer_state.json").read_text()).get("global_step") == step:
                return folder
        except (OSError, ValueError):
            pass
        log(f"{folder.name} is incomplete (stopped while saving): skipping it")
    return None


def _save_adapter(target: Path, model, tokenizer, preset, method: str, workdir: Path, metrics: dict, targets,
                  state: dict | None = None) -> None:
    """PEFT adapter + tokenizer files + kairo.json, written to a temp folder and renamed into place."""
    from kairo.training import vllm

    summary = workdir / "data" / "dataset.json"
    digest = json.loads(summary.read_text()).get("digest", "") if summary.is_file() else ""
    base = preset.source.huggingface.repo if preset.source.huggingface else preset.name
    with staged_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state} if state is not None else {}))
        adapter_config = json.loads((tmp / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base  # loaders know the base by its name, not our cache path
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        record = {
            "base_model": base, "revision": preset.revision, "preset": preset.name, "method": method,
            "dataset_digest": digest, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "target_modules": targets, "metrics": {k: v for k, v in metrics.items() if k != "loss_per_step"},
            **vllm.record(adapter_config),  # whether vLLM (Kaito's default runtime) loads it, and why not
        }
        for reason in record.get("vllm_reasons", []):
            log(f"note: vLLM will not load this adapter — {reason}")
        (tmp / "kairo.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        for path in tmp.iterdir():  # safetensors writes 0600; the inference pod may read as another user
            path.chmod(0o644)


def _relaunch_distributed(argv: list[str], gpus: int, layout: str) -> int:
    """One process per GPU through torchrun, same arguments: data-parallel (DDP), or sharded (FSDP)."""
    log(f"{gpus} GPUs: {layout}; one process per GPU")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "kairo.steps.train", *argv]
    return subprocess.run(command, check=False).returncode  # noqa: S603 — our own program, argv list, no shell


if __name__ == "__main__":
    sys.exit(main())
