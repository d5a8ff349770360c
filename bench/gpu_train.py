"""The train step on a GPU: kairo's recipe beside Kaito's, its levers on and off, and its CUDA paths checked.

One run, one process, in this order (the time budget skips what no longer fits, recording why):

1. **Recipes** on a random-weight model of Phi-3-mini's architecture and size (3.8B, built from its published
   config.json, no download; `--shape llama-3-8b` for Llama-3-8B's), trained one epoch on the same synthetic
   chat data (most examples short, a tail of long ones) with the same Kaito ConfigMap: kairo's train step
   (`kairo.steps.train.main`, as a workflow runs it) in `qlora` (NF4, double quant, bf16 compute) and `lora`
   (bf16), and Kaito's recipe (TRL SFTTrainer, batch 1, no packing, loss on every token, LoRA r 8 / α 8).
2. **Checks**: the bf16 path; the fp16 + loss-scaler path forced as on a V100 (capability 7.0); a run killed
   (SIGKILL) after a checkpoint and resumed against an uninterrupted one; the adapter loaded with PEFT;
   `kairo serve` on the GPU answering one request, then 16 at once.
3. **Levers**, each on/off against the same base (kairo's recipe, `--lever-method`, `--lever-batch` rows):
   packing vs padding, SDPA vs eager, gradient checkpointing (also at the largest micro-batch that fits
   without it), Liger Kernel, torch.compile, micro-batch size — each through the config key a user has
   (`ModelConfig.attn_implementation`, `TrainingArguments.gradient_checkpointing` / `use_liger_kernel` /
   `torch_compile` / `per_device_train_batch_size`); padding is the recipe with one example per row.

Per configuration: real (non-pad) tokens/s and step time at steady state (first steps left out), peak GPU
memory (allocated and reserved), MFU by both conventions (bench/gpu_parts.py `flops_per_token`: LoRA ≈ 4·N
per token for N matrix-multiply parameters, plus causal attention; the 6·N figure beside it; against
`--peak-tflops`, the H200's ≈ 790 TFLOP/s of dense bf16 measured here), train loss, and the held-out loss
(kairo's `held_out_loss`, assistant tokens) after the same tokens. Writes `<date>-<machine>-<shape>.json`
and a short `.log` to `--out` after every configuration, so a run cut short keeps what it measured.

On CPU, `--tiny` runs every part at toy sizes (tests/test_bench_gpu_train.py), so that the GPU run cannot
fail on a typo. The GPU run (bench/README.md says more): here, from the repository root,

    make bench-gpu-prepare     # the wheels the H200 lacks (bitsandbytes, trl, datasets, …) into .whl/

then the device tool's `run` with `carry: [".whl"]`, `timeout_s: 540` and the command

    bash bench/gpu_run.sh

which installs the wheels into /tmp/site, puts it on PYTHONPATH and runs `python3 bench/gpu_train.py --out
$OUT` (a 400 s budget; about 7 minutes with the install). Copy the JSON and the log it returns to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gpu_parts as parts  # noqa: E402 — bench/ is not a package; its modules sit beside this file
from gpu_recipes import kairo_config, run_kairo, run_kaito  # noqa: E402

# --tiny runs every code path once; these repeat one (batch-N is gc-fit's path) or cost CPU minutes (compile).
TINY_LEAVES_OUT = {"batch-8": "--tiny: the gc-fit pair runs the same path", "batch-2": "--tiny: as batch-8",
                   "batch-16": "--tiny: as batch-8",
                   "compile": "--tiny: tracing the model takes about 20 s of CPU; the GPU run compiles it"}
# Most telling first; compile last: its first step compiles for a minute or more and cannot be cut short.
LEVERS = ("base", "padding", "gc-off", "batch-8", "liger", "eager", "gc-fit", "batch-2", "batch-16", "compile")
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "liger_kernel",
            "tokenizers", "safetensors", "fastapi", "uvicorn", "pydantic")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU: every part runs, nothing is measured")
    parser.add_argument("--shape", choices=sorted(parts.SHAPES), default="phi-3-mini", help="model architecture")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for the JSON and the log")
    parser.add_argument("--work", help="scratch folder (default: a temp folder, removed at the end)")
    parser.add_argument("--budget-s", type=float, help="stop starting configurations after this many seconds "
                                                       "(default 400; --tiny 600)")
    parser.add_argument("--arm-cap-s", type=float, help="longest training of one configuration (default 75)")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the GPU's dense bf16 peak for MFU")
    parser.add_argument("--examples", type=int, help="training conversations (default 256; --tiny 24)")
    parser.add_argument("--eval-examples", type=int, help="held-out conversations (default 32; --tiny 6)")
    parser.add_argument("--max-length", type=int, help="tokens per packed row (default 2048; --tiny 256)")
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate of every configuration")
    parser.add_argument("--lever-method", choices=["lora", "qlora"], default="lora", help="method the levers use")
    parser.add_argument("--lever-batch", type=int, default=4, help="micro-batch (rows) of the lever base")
    parser.add_argument("--lever-steps", type=int, help="optimizer steps of a lever at --lever-batch "
                                                        "(default 12; --tiny 3)")
    parser.add_argument("--check-layers", type=int, default=4,
                        help="decoder layers of the smaller model the checks train (the same widths)")
    parser.add_argument("--parts", default="recipes,checks,levers", help="which parts to run, comma-separated")
    parser.add_argument("--skip", default="", help="configurations to leave out, comma-separated names")
    return parser


class Bench:
    """One run: its settings, folders, time budget, and the results written as they come."""

    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.tiny = args.tiny
        self.cuda = torch.cuda.is_available()
        self.started = time.monotonic()
        self.budget = args.budget_s or (600.0 if self.tiny else 400.0)
        self.arm_cap = args.arm_cap_s or (60.0 if self.tiny else 75.0)
        self.examples = args.examples or (24 if self.tiny else 256)
        self.eval_examples = args.eval_examples or (6 if self.tiny else 32)
        self.max_length = args.max_length or (256 if self.tiny else 2048)
        self.lever_steps = args.lever_steps or (3 if self.tiny else 12)
        self.skip = {s for s in args.skip.split(",") if s}
        self.work = Path(args.work or tempfile.mkdtemp(prefix="kairo-gpu-bench-"))
        self.preset = parts.SHAPES[args.shape]["preset"]
        machine = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-") if self.cuda else "cpu"
        stem = f"{datetime.now(UTC):%Y-%m-%d}-{machine}-{args.shape}" + ("-tiny" if self.tiny else "")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.log_path = self.out / f"{stem}.json", self.out / f"{stem}.log"
        self.log_path.write_text("")
        self.results: dict[str, Any] = {"bench": "bench/gpu_train.py", "started": datetime.now(UTC).isoformat(
            timespec="seconds"), "argv": sys.argv[1:], "settings": {}, "environment": {}, "model": {},
            "data": {}, "configurations": {}, "checks": {}, "levers": {}, "skipped": {}}
        self.estimates: dict[str, dict[str, float]] = {}  # per recipe-method: seconds outside training, per token
        self.tokenizer: Any = None
        self.train_rows: list = []  # the training conversations (Kaito's recipe reads them as a Dataset)
        self.eval_examples_tokenized: list = []  # the held-out examples every configuration is scored on
        self.flops: dict[str, float] = {}

    # ── time and output ──
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fits(self, name: str, estimate: float) -> bool:
        """Whether a configuration estimated to take `estimate` seconds still fits the budget; record a skip if not."""
        if name in self.skip:
            self.skipped(name, "left out with --skip")
            return False
        left = self.budget - self.elapsed()
        if estimate > left:
            self.skipped(name, f"time budget: {left:.0f} s left of {self.budget:.0f} s, it needs about {estimate:.0f} s")
            return False
        return True

    def skipped(self, name: str, why: str) -> None:
        self.results["skipped"][name] = why
        self.say(f"{name}: skipped ({why})")
        self.save()

    def say(self, line: str) -> None:
        stamped = f"[{self.elapsed():6.1f}s] {line}"
        print(f"gpu-bench {stamped}", file=sys.__stderr__, flush=True)
        with open(self.log_path, "a") as handle:
            handle.write(stamped + "\n")

    def save(self) -> None:
        self.results["elapsed_seconds"] = round(self.elapsed(), 1)
        parts.write_json(self.json_path, self.results)

    def deadline(self) -> float:
        return min(self.started + self.budget, time.monotonic() + self.arm_cap)


# ── setup: the environment, the model, the data ──

def environment(bench: Bench) -> dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            found[name] = None
    build = ROOT / ".whl" / "BUILD.json"  # written by bench/gpu_prepare.py: the commit the wheels were built at
    env: dict[str, Any] = {"python": platform.python_version(), "packages": found, "cpus": os.cpu_count(),
                           "torch_cuda": torch.version.cuda, "kairo_differs_from_tree": kairo_differences(),
                           "prepared": json.loads(build.read_text()) if build.is_file() else None}
    if bench.cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                      "memory_gib": round(props.total_memory / parts.GIB, 1), "count": torch.cuda.device_count()}
    return env


def kairo_differences() -> list[str]:
    """Source files of the imported kairo that differ from this tree's (an install older than the tree)."""
    import importlib

    folders = {"kairo": ROOT / "kairo", "kairo.steps": ROOT / "steps", "kairo.presets": ROOT / "presets",
               "kairo.pipelines": ROOT / "pipelines"}
    differ = []
    for package, tree in folders.items():
        installed = Path(importlib.import_module(package).__file__).parent
        if installed.resolve() == tree.resolve():
            continue
        for source in tree.rglob("*"):
            if source.suffix not in (".py", ".yaml", ".jinja", ".json") or "__pycache__" in source.parts:
                continue
            if package == "kairo" and source.relative_to(tree).parts[0] in ("steps", "presets", "pipelines"):
                continue
            copy = installed / source.relative_to(tree)
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                differ.append(str(source.relative_to(ROOT)))
    return differ


def prepare_data(bench: Bench, model_dir: Path) -> dict[str, Any]:
    """data/train.jsonl and data/eval.jsonl (kairo's work-dir layout), and their token lengths."""
    from train import synthetic_conversations
    from transformers import AutoTokenizer

    from kairo.training.chat import tokenize_dataset

    spread = {} if bench.tiny else {"question": (8, 40), "short": (20, 250), "long": (400, 1800), "long_share": 0.2}
    rows = synthetic_conversations(bench.examples + bench.eval_examples, seed=1, **spread)
    data = bench.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train_rows, eval_rows = rows[: bench.examples], rows[bench.examples:]
    for name, subset in (("train", train_rows), ("eval", eval_rows)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in subset))
    (data / "dataset.json").write_text(json.dumps({"digest": "sha256:gpu-bench", "rows": len(train_rows)}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train_set = tokenize_dataset(tokenizer, train_rows, bench.max_length)
    eval_set = tokenize_dataset(tokenizer, eval_rows, bench.max_length)
    bench.train_rows, bench.eval_examples_tokenized = train_rows, eval_set.examples
    lengths = [len(e) for e in train_set.examples]
    return {"train": parts.length_spread(lengths), "eval": parts.length_spread([len(e) for e in eval_set.examples]),
            "truncated": train_set.truncated, "max_length": bench.max_length, "lengths": lengths,
            "words": spread or "bench/train.py's defaults"}


# ── the parts of the run ──

def finish(bench: Bench, result: dict[str, Any]) -> dict[str, Any]:
    """Add MFU (both conventions) to a configuration's result."""
    result.update(parts.mfu(result.get("tokens_per_second"), bench.flops, bench.args.peak_tflops))
    return result


def record(bench: Bench, section: str, name: str, result: dict[str, Any]) -> dict[str, Any]:
    bench.results[section][name] = finish(bench, result) if "tokens_per_second" in result else result
    kind = f"{result.get('recipe')}-{result.get('method')}"
    if result.get("train_seconds") and result.get("tokens_trained") and kind not in bench.estimates:
        bench.estimates[kind] = {"overhead": max(0.0, result["wall_seconds"] - result["train_seconds"]),
                                 "per_token": result["train_seconds"] / result["tokens_trained"]}
    rate = result.get("tokens_per_second")
    memory = result.get("peak_allocated_gib")
    bench.say(f"{name}: {result.get('status')}" + (f", {rate:.0f} tokens/s" if rate else "")
              + (f", step {result['step_seconds_median']:.3f} s" if result.get("step_seconds_median") else "")
              + (f", peak {memory} GiB" if memory is not None else "")
              + (f", MFU(4N) {100 * result['mfu_4n']:.1f} %" if result.get("mfu_4n") else "")
              + (f", eval loss {result['eval_loss']:.4f}" if isinstance(result.get("eval_loss"), float) else "")
              + (f" — {str(result.get('error'))[-300:]}" if result.get("status") == "failed" else ""))
    bench.save()
    return result


def estimate(bench: Bench, recipe: str, method: str, tokens: float, default: float, slower: float = 1.0) -> float:
    """Seconds a configuration training `tokens` tokens should take, from the first one of its kind that ran
    (kairo's own, `slower` times slower per token, when that kind has not run yet), else `default`."""
    known = bench.estimates.get(f"{recipe}-{method}")
    if known is None and recipe != "kairo" and f"kairo-{method}" in bench.estimates:
        known = dict(bench.estimates[f"kairo-{method}"])
        known["per_token"] *= slower
    return known["overhead"] + tokens * known["per_token"] if known else default


def recipes(bench: Bench) -> None:
    """kairo's recipe and Kaito's, qlora and lora, one epoch of the same data each."""
    for method in ("qlora", "lora"):
        name = f"kairo-{method}"
        if bench.fits(name, estimate(bench, "kairo", method, bench.results["data"]["train"]["tokens"], 30)):
            record(bench, "configurations", name, run_kairo(bench, name, method, kairo_config(bench, method)))
    for method in ("qlora", "lora"):
        name = f"kaito-{method}"
        if bench.fits(name, estimate(bench, "kaito", method, bench.results["data"]["train"]["tokens"], 60, 4)):
            record(bench, "configurations", name, run_kaito(bench, name, method))
    compare_recipes(bench)


def compare_recipes(bench: Bench) -> None:
    """Ours against Kaito's per method: the throughput ratio, and each one's loss after the same tokens."""
    found = bench.results["configurations"]
    summary = {}
    for method in ("qlora", "lora"):
        ours, theirs = found.get(f"kairo-{method}", {}), found.get(f"kaito-{method}", {})
        if ours.get("status") != "ok" or theirs.get("status") != "ok":
            continue
        common = min(sum(ours["tokens_per_step_list"]), sum(theirs["tokens_per_step_list"]))
        summary[method] = {
            "throughput_ratio": ratio(ours.get("tokens_per_second"), theirs.get("tokens_per_second")),
            "memory_ratio": ratio(ours.get("peak_allocated_gib"), theirs.get("peak_allocated_gib")),
            "tokens_compared": common, "same_tokens": ours.get("tokens_trained") == theirs.get("tokens_trained"),
            "train_loss_at_tokens": {"kairo": loss_at(ours, common), "kaito": loss_at(theirs, common)},
            "eval_loss": {"kairo": ours.get("eval_loss"), "kaito": theirs.get("eval_loss")},
            "note": "train losses differ in what they count (kairo: assistant tokens; Kaito: every token); the "
                    "held-out loss is the same function (assistant tokens) on the same examples",
        }
    bench.results["comparison"] = summary
    bench.save()


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def loss_at(result: dict[str, Any], tokens: int) -> float | None:
    """The train loss logged at the step where `tokens` real tokens had been trained."""
    seen = 0
    for step_tokens, loss in zip(result.get("tokens_per_step_list", []), result.get("loss_per_step", []),
                                 strict=False):
        seen += step_tokens
        if seen >= tokens:
            return loss
    losses = result.get("loss_per_step") or [None]
    return losses[-1]


def levers(bench: Bench) -> None:
    """Each lever on and off against the same base, in the order of what they are expected to be worth."""
    method, batch, steps = bench.args.lever_method, bench.args.lever_batch, bench.lever_steps

    def lever(name: str, rows: int = batch, **kwargs) -> dict[str, Any] | None:
        patches = kwargs.pop("patches", ())
        runs = max(4, steps * batch // rows) if rows > batch else steps  # about the base's tokens
        guess = estimate(bench, "kairo", method, rows * runs * bench.max_length, 30)
        if not bench.fits(name, guess + kwargs.pop("extra_s", 0)):
            return None
        config = kairo_config(bench, method, batch=rows, steps=runs, **kwargs)
        result = run_kairo(bench, name, method, config, patches=patches, warmup=kwargs.get("warmup", 2))
        result["settings"] = {"batch": rows, "steps": runs, **{k: v for k, v in kwargs.items() if v}}
        return record(bench, "levers", name, result)

    # The train step packs through kairo.training.tokencache, which imported pack_lengths at its top.
    one_per_row = parts.replaced("pack_lengths", lambda lengths, capacity: [[i] for i in range(len(lengths))],
                                 ("kairo.training.packing", "kairo.training.tokencache"))
    simple = {  # a lever that is one setting against the base
        "base": {}, "padding": {"patches": (one_per_row,)},
        "gc-off": {"training": {"gradient_checkpointing": False}},
        "eager": {"model": {"attn_implementation": "eager"}},
        "compile": {"training": {"torch_compile": True}, "extra_s": 60},  # compiling takes a minute or so
    }
    liger = liger_problem(bench)
    for name in LEVERS:
        if bench.tiny and name in TINY_LEAVES_OUT:
            bench.skipped(name, TINY_LEAVES_OUT[name])
        elif name in simple:
            lever(name, **simple[name])
        elif name.startswith("batch-"):
            lever(name, rows=int(name.split("-")[1]))
        elif name == "liger":
            if liger:
                bench.skipped("liger", liger)
            else:
                lever("liger", training={"use_liger_kernel": True})
        elif name == "gc-fit":
            _checkpointing_at_the_largest_batch(bench, batch, lever)
    summarise_levers(bench)


def _checkpointing_at_the_largest_batch(bench: Bench, batch: int, lever: Any) -> None:
    """Gradient checkpointing off then on at the largest micro-batch that fits without it."""
    fitted = largest_batch(bench, batch)
    off = lever(f"gc-off-batch-{fitted}", rows=fitted, training={"gradient_checkpointing": False}) if fitted else None
    if off and off["status"] == "failed" and "out of memory" in str(off.get("error")) and fitted > batch:
        off["status"] = "out-of-memory"  # a finding, not a failure: the estimate was too bold
        bench.save()
        fitted = max(batch, fitted * 3 // 4)  # once more, a quarter smaller
        off = lever(f"gc-off-batch-{fitted}", rows=fitted, training={"gradient_checkpointing": False})
    if off and off["status"] == "ok":
        lever(f"gc-on-batch-{fitted}", rows=fitted, training={"gradient_checkpointing": True})


def liger_problem(bench: Bench) -> str | None:
    """Why the Liger Kernel lever cannot run here, or None."""
    if not bench.cuda:
        return "Liger Kernel is Triton: it needs a CUDA GPU"
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception as err:  # not installed, or Triton refuses this machine
        return f"liger_kernel does not import: {type(err).__name__}: {err}"
    return None


def largest_batch(bench: Bench, batch: int) -> int | None:
    """The largest micro-batch the GPU holds without gradient checkpointing, from gc-off's memory at `batch`."""
    off = bench.results["levers"].get("gc-off", {})
    weights, peak = off.get("weights_gib"), off.get("peak_allocated_gib")
    if bench.tiny:
        return batch * 2  # nothing to measure on CPU; the code path still runs
    if off.get("status") != "ok" or not weights or not peak or peak <= weights:
        bench.skipped("gc-fit", "needs gc-off's memory figures")
        return None
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / parts.GIB
    per_row = (peak - weights) / batch
    fitted = int((0.9 * total - weights) // per_row)
    bench.results["levers_fit"] = {"per_row_gib": round(per_row, 2), "weights_gib": weights,
                                   "largest_batch": fitted, "of_gib": round(total, 1)}
    return max(batch, min(fitted, 64))


def summarise_levers(bench: Bench) -> None:
    """Each lever's throughput and memory relative to the base (or to its own 'off' arm)."""
    found = bench.results["levers"]
    base = found.get("base", {})
    summary = {}
    for name, result in found.items():
        if name == "base" or result.get("status") != "ok":
            continue
        against = base
        if name.startswith("gc-on-batch-"):
            against = found.get(name.replace("gc-on", "gc-off"), {})
        summary[name] = {"against": "gc-off at the same batch" if against is not base else "base",
                         "throughput": ratio(result.get("tokens_per_second"), against.get("tokens_per_second")),
                         "peak_memory": ratio(result.get("peak_allocated_gib"), against.get("peak_allocated_gib"))}
    bench.results["lever_summary"] = summary
    bench.save()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-train"]:
        return child_train(argv[1:])
    args = make_parser().parse_args(argv)
    if args.tiny:  # toy matrices: one thread each is fastest, and a shared CPU's OpenMP pool spins at barriers
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    bench = Bench(args)
    if not bench.cuda and not bench.tiny:
        print("gpu_train.py: no CUDA GPU here — the full-size run needs one; on a CPU run --tiny", file=sys.stderr)
        return 2
    bench.say(f"writing {bench.json_path} and {bench.log_path.name}; work in {bench.work}; budget {bench.budget:.0f} s")
    wanted = set(args.parts.split(","))
    try:
        bench.results["settings"] = {
            "tiny": bench.tiny, "shape": args.shape, "preset": bench.preset, "examples": bench.examples,
            "eval_examples": bench.eval_examples, "max_length": bench.max_length, "lr": args.lr,
            "budget_s": bench.budget, "arm_cap_s": bench.arm_cap, "peak_tflops": args.peak_tflops,
            "lever_method": args.lever_method, "lever_batch": args.lever_batch, "lever_steps": bench.lever_steps,
            "mfu_convention": parts.MFU_CONVENTION,
        }
        bench.results["environment"] = environment(bench)
        stale = bench.results["environment"]["kairo_differs_from_tree"]
        if stale:
            bench.say(f"the installed kairo is older than this tree ({', '.join(stale[:5])}…): run "
                      "`make bench-gpu-prepare` again")
            bench.save()
            return 2
        bench.results["model"] = parts.prepare_model(bench, None, "main")
        data = prepare_data(bench, Path(bench.results["model"]["dir"]))
        lengths = data.pop("lengths")
        bench.results["data"] = data
        model = bench.results["model"]
        bench.flops = parts.flops_per_token(model["matmul_parameters"], model["layers_n"], model["attention_width"],
                                            lengths)
        bench.results["flops_per_token"] = bench.flops
        bench.save()
        import gpu_checks

        if "recipes" in wanted:
            recipes(bench)
        if "checks" in wanted:
            gpu_checks.run_all(bench)
        if "levers" in wanted:
            levers(bench)
    finally:
        bench.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        bench.save()
        if not args.work:
            shutil.rmtree(bench.work, ignore_errors=True)
    for line in summary_table(bench.results):
        bench.say(line)
    failed = [n for s in ("configurations", "checks", "levers") for n, r in bench.results[s].items()
              if isinstance(r, dict) and r.get("status") == "failed"]
    bench.say(f"done in {bench.elapsed():.0f} s: {bench.json_path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def summary_table(results: dict[str, Any]) -> list[str]:
    """The run in a few lines, printed last (the device tool returns the end of the output)."""
    def number(value: Any, form: str) -> str:
        return format(value, form) if isinstance(value, int | float) else "-"

    lines = [f"{'configuration':<22} {'status':<7} {'tokens/s':>9} {'step s':>7} {'peak GiB':>13} {'MFU 4N':>7} "
             f"{'MFU 6N':>7} {'pad':>5} {'eval loss':>9}"]
    for section in ("configurations", "levers"):
        for name, r in results[section].items():
            peak = f"{number(r.get('peak_allocated_gib'), '.1f')}/{number(r.get('peak_reserved_gib'), '.1f')}"
            lines.append(f"{name:<22} {r.get('status', '?'):<7} {number(r.get('tokens_per_second'), '9.0f')} "
                         f"{number(r.get('step_seconds_median'), '7.3f')} {peak:>13} "
                         f"{number(r.get('mfu_4n'), '7.1%')} {number(r.get('mfu_6n'), '7.1%')} "
                         f"{number(r.get('pad_fraction'), '5.0%')} {number(r.get('eval_loss'), '9.4f')}")
    for method, c in results.get("comparison", {}).items():
        lines.append(f"{method}: kairo / Kaito throughput {number(c['throughput_ratio'], '.2f')}x, peak memory "
                     f"{number(c['memory_ratio'], '.2f')}x, eval loss {number(c['eval_loss']['kairo'], '.4f')} vs "
                     f"{number(c['eval_loss']['kaito'], '.4f')} "
                     + (f"after the same {c['tokens_compared']} tokens" if c["same_tokens"] else
                        "after different tokens (one was cut at --arm-cap-s); train_loss_at_tokens compares"))
    lines.append("levers: " + ", ".join(f"{n} {number(v['throughput'], '.2f')}x" for n, v in
                                        results.get("lever_summary", {}).items()))
    lines.append("checks: " + ", ".join(f"{n} {r.get('status')}" for n, r in results["checks"].items()
                                        if isinstance(r, dict) and "status" in r))
    serve = results["checks"].get("serve", {})
    if serve.get("status") == "ok":
        lines.append(f"serve: one request {serve['one_request']['tokens_per_second']:.0f} tokens/s, 16 at once "
                     f"{serve['sixteen_concurrent']['tokens_per_second']:.0f} tokens/s")
    if results["skipped"]:
        lines.append("skipped: " + "; ".join(f"{n} ({why})" for n, why in results["skipped"].items()))
    return lines


def child_train(argv: list[str]) -> int:
    """`--child-train tiny|full ARGS…`: kairo's train step alone in this process (the run the resume check kills)."""
    from kairo.steps import train

    if argv[0] == "tiny":
        with parts.replaced("fit_problem", lambda *a: None, ("kairo.machine", "kairo.steps.train")):
            return train.main(argv[1:])
    return train.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
