"""Packing, measured: kairo's train step against plain transformers Trainer with dynamic padding, in one run.

Same tiny model (tiny-llama-test), same LoRA settings, same synthetic instruction data (mostly short
examples and a tail of long ones, as real instruction sets are), same examples for one epoch, same
assistant-only labels. Prints non-pad tokens/s and the share of padding in the batches of both, and the
throughput ratio. Goal: ≥ 1.5× and < 5 % padding. Run from the repository root: `python bench/train.py`
(or `make bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

LORA = {"r": 8, "lora_alpha": 16}
LEARNING_RATE = 1e-3


def synthetic_conversations(count: int, seed: int = 0, *, question: tuple[int, int] = (4, 20),
                            short: tuple[int, int] = (5, 40), long: tuple[int, int] = (120, 350),
                            long_share: float = 0.15) -> list[list[dict[str, str]]]:
    """Instruction data with a realistic length spread: mostly short answers (85 %), a tail of long ones.

    The ranges are words (about one token each with the tiny tokenizer); bench/gpu_train.py stretches them
    to a 2048-token context.
    """
    from kairo.training.tinymodel import _WORDS

    rng = random.Random(seed)

    def words(low: int, high: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))

    rows = []
    for _ in range(count):
        is_long = rng.random() < long_share
        rows.append([{"role": "user", "content": words(*question) + "?"},
                     {"role": "assistant", "content": words(*long) if is_long else words(*short)}])
    return rows


def train_work(tmp: Path, conversations: list) -> tuple[Path, Path]:
    """A train step's work dir under `tmp`: the tiny model and `conversations` as its data; (work, model dir)."""
    from kairo.training.tinymodel import build_tiny_model

    work = tmp / "work"
    model_dir = build_tiny_model(work / "model" / "tiny-llama-test")
    (work / "data").mkdir(parents=True)
    (work / "data" / "train.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    (work / "data" / "dataset.json").write_text(json.dumps({"digest": "sha256:bench", "rows": len(conversations)}))
    return work, model_dir


def ours(work: Path, batch_rows: int, max_length: int) -> dict:
    """kairo's train step, as a workflow runs it (its own process setup aside): packed rows, no padding."""
    from kairo.steps import train

    config = work / "training_config.yaml"
    config.write_text(
        "training_config:\n"
        f"  LoraConfig: {json.dumps(LORA)}\n"
        f"  TrainingArguments: {{num_train_epochs: 1, learning_rate: {LEARNING_RATE}, "
        f"per_device_train_batch_size: {batch_rows}}}\n"
        f"  TokenizerParams: {{max_length: {max_length}}}\n"
    )
    code = train.main(["--preset", "tiny-llama-test", "--method", "lora", "--config", str(config), "--workdir",
                       str(work), "--outputs", str(work / "outputs"), "--device", "cpu", "--progress-every", "1000", "--resume", "never"])
    if code:
        raise SystemExit(f"the train step failed with exit code {code}")
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    return {"tokens": metrics["tokens_trained"], "seconds": metrics["train_seconds"],
            "cpu_seconds": metrics["train_cpu_seconds"],
            "pad_fraction": metrics["pad_fraction"], "steps": metrics["steps"]}


def baseline(model_dir: Path, conversations, batch_size: int, max_length: int) -> dict:
    """Plain transformers Trainer: one example a row, each batch padded to its longest example."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from kairo.presets import get_preset
    from kairo.training.chat import tokenize_dataset

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = tokenize_dataset(tokenizer, conversations, max_length).examples
    dataset = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e)} for e in examples]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    targets = list(get_preset("tiny-llama-test").tuning.target_modules)
    model = get_peft_model(model, LoraConfig(**LORA, target_modules=targets, task_type="CAUSAL_LM"))

    class Counting(Trainer):
        real = padded = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            Counting.real += int(inputs["attention_mask"].sum())
            Counting.padded += int(inputs["attention_mask"].numel())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, num_train_epochs=1, learning_rate=LEARNING_RATE,
                                 per_device_train_batch_size=batch_size, use_cpu=True, report_to="none",
                                 save_strategy="no", logging_steps=1000, disable_tqdm=True, seed=42)
        trainer = Counting(model=model, args=args, train_dataset=dataset,
                           data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest"))
        started, cpu_started = time.monotonic(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    return {"tokens": Counting.real, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "pad_fraction": 1 - Counting.real / Counting.padded,
            "steps": trainer.state.global_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=600, help="conversations in the dataset")
    parser.add_argument("--batch-size", type=int, default=8, help="the baseline's examples per step")
    parser.add_argument("--batch-rows", type=int, default=4,
                        help="kairo's packed rows per step (4 × 512 tokens: about the baseline's padded batch)")
    parser.add_argument("--max-length", type=int, default=512, help="longest sequence (the tiny model's context)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating; the best one counts")
    parser.add_argument("--min-ratio", type=float, default=0, help="exit 1 when the ratio is below this")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    conversations = synthetic_conversations(args.examples)
    with tempfile.TemporaryDirectory() as tmp:
        work, model_dir = train_work(Path(tmp), conversations)
        # Alternate the two, so that neither pays alone for the process warming up; keep each one's best round.
        runs: dict[str, list[dict]] = {"base": [], "kairo": []}
        for _ in range(args.rounds):
            runs["base"].append(baseline(model_dir, conversations, args.batch_size, args.max_length))
            runs["kairo"].append(ours(work, args.batch_rows, args.max_length))
        base, kairo = (min(runs[k], key=lambda r: r["seconds"]) for k in ("base", "kairo"))

    rows = []
    for name, result in (("transformers Trainer, dynamic padding", base), ("kairo train step, packed", kairo)):
        result["rate"] = result["tokens"] / result["seconds"]
        result["cpu_rate"] = result["tokens"] / result["cpu_seconds"]
        rows.append(f"  {name:<38} {result['rate']:7.0f} tokens/s  ({result['cpu_rate']:6.0f} per CPU-second)  "
                    f"padding {100 * result['pad_fraction']:5.1f} %  {result['steps']:3d} steps, {result['tokens']} "
                    f"tokens in {result['seconds']:.1f} s")
    ratio = kairo["rate"] / base["rate"]
    print(f"train throughput on tiny-llama-test, {args.examples} examples, one epoch, CPU, best of {args.rounds}:")
    print("\n".join(rows))
    print(f"  ratio (kairo / baseline): {ratio:.2f}× in non-pad tokens/s ({kairo['cpu_rate'] / base['cpu_rate']:.2f}× "
          "per CPU-second, which a busy machine disturbs less)   goal ≥ 1.5× and padding < 5 %")
    return 1 if ratio < args.min_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
