"""Data preparation at the scale of real instruction sets, measured: download + normalise, then tokenize + pack.

For each size (`--sizes`, default 100000 and 1000000 conversations) a parquet file of synthetic chat data is
written (multi-turn, half with a system prompt, answers longer than questions: lengths drawn log-normal, median
≈ 300 tokens, a tail past 2,000). Then, each in a fresh process so its peak RSS is its own:

1. **download + normalise**: the real `kairo-step download --volume-path` (messages → data/train.jsonl, eval split);
2. **tokenize + pack**: the train step's data phase (`kairo.training.tokencache.packed_split`: the table of
   pre-token pieces or the batched tokenizer, on a pool of processes, assistant-only labels, packing, the Arrow
   file) on data/train.jsonl with the tiny preset's tokenizer and template, max_length 2048, then every packed
   row read back once as training does.

The words: by default drawn uniformly from the tiny model's corpus, a few hundred of them. That flatters the
pre-token table (`kairo.training.pretokens`): after the first chunk every piece is found in it (the summary
line says how often), which real text never allows. `--vocabulary N` draws from N made-up words by Zipf's law
instead (`long_tail`): the figure to quote for data with a realistic long tail. (The tiny tokenizer knows none
of those words, so they cost it about three times the tokens a conversation; compare its rates per token.)

The baselines run in this process on the first `--baseline-rows` conversations: a plain per-example
`apply_chat_template(..., tokenize=True, return_assistant_tokens_mask=True)` loop (the ratio printed last), and
kairo's tokenization before it was batched (tests/fixtures/reference_tokenize.py, "today's rate").
Rates are conversations per second of wall time; the machine's load average is printed beside them. Because
other work on a shared machine moves wall-clock rates (and the baseline runs at another moment than the phase),
the CPU time a conversation costs, every process counted, is printed too, with the rate it gives on idle cores.
Run from the repository root: `python bench/data.py [--sizes 100000 1000000] [--vocabulary 200000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.fixtures.reference_tokenize
MAX_LENGTH = 2048


def conversation(rng: random.Random, words: list[str], scale: float = 1.0,
                 cum_weights: list[float] | None = None) -> list[dict[str, str]]:
    """One synthetic conversation: 1–4 exchanges, a system prompt half the time, realistic length spread."""
    def text(median: float) -> str:
        n = max(1, min(1500, int(rng.lognormvariate(0, 0.9) * median * scale)))
        return " ".join(rng.choices(words, cum_weights=cum_weights, k=n)).capitalize() + "."

    messages = [{"role": "system", "content": text(12)}] if rng.random() < 0.5 else []
    for _ in range(rng.choices((1, 2, 3, 4), weights=(4, 3, 2, 1))[0]):
        messages += [{"role": "user", "content": text(25)}, {"role": "assistant", "content": text(70)}]
    return messages


def long_tail(size: int, seed: int = 0) -> tuple[list[str], list[float]]:
    """`size` distinct words with Zipf's weights (the n-th most common 1/n as often as the first), as prose has.

    Made-up words of 1–4 syllables, a tenth of them capitalised, a tenth with a comma or full stop after, a
    twentieth numbers: the pieces a tokenizer sees in real instruction data, in a realistically long tail.
    """
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou", "ai")]
    words: set[str] = set()
    while len(words) < size:
        if rng.random() < 0.05:
            words.add(str(rng.randint(0, 10 ** rng.randint(1, 6))))
            continue
        word = "".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 3, 4))))
        word = word.capitalize() if rng.random() < 0.1 else word
        words.add(word + rng.choice((",", ".")) if rng.random() < 0.1 else word)
    ranked = sorted(words)
    rng.shuffle(ranked)
    total, cum = 0.0, []
    for rank in range(1, size + 1):
        total += 1 / rank
        cum.append(total)
    return ranked, cum


def write_dataset(path: Path, rows: int, seed: int = 0, scale: float = 1.0, vocabulary: int = 0) -> None:
    """`rows` conversations as a parquet file with a messages column, written in batches (flat memory).

    Words come from the tiny model's corpus (a few hundred), or with `vocabulary` from `long_tail(vocabulary)`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kairo.training.tinymodel import corpus

    words = sorted({w.strip(".,?!").lower() for line in corpus() for w in line.split()} - {""})
    cum_weights = None
    if vocabulary:
        words, cum_weights = long_tail(vocabulary, seed)
    rng = random.Random(seed)
    schema = pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))])
    partial = path.with_name(f".{path.name}.partial")  # a run stopped while writing leaves no half file behind
    with pq.ParquetWriter(partial, schema) as writer:
        for start in range(0, rows, 10_000):
            batch = [conversation(rng, words, scale, cum_weights) for _ in range(min(10_000, rows - start))]
            writer.write_table(pa.table({"messages": batch}, schema=schema))
    partial.rename(path)


def tokenizer_for_bench():
    from kairo.training.tinymodel import build_tokenizer

    return build_tokenizer()


# ── the phases, each run in a fresh process (`--phase`) ──
def phase_download(work: Path, source: Path) -> dict:
    from kairo.steps import download

    config = work / "training_config.yaml"
    config.write_text("training_config:\n  DatasetConfig: {train_test_split: 0.99}\n")
    started = time.monotonic()
    code = download.main(["--volume-path", str(source), "--workdir", str(work), "--outputs", str(work / "out"),
                          "--config", str(config)])
    seconds = time.monotonic() - started
    summary = json.loads((work / "data" / "dataset.json").read_text())
    return {"exit": code, "seconds": seconds, "rows": summary["rows"], "train_rows": summary["train_rows"]}


def phase_tokenize(work: Path) -> dict:
    from kairo.training.tokencache import packed_split

    tokenizer = tokenizer_for_bench()
    shutil.rmtree(work / "cache" / "tokenized", ignore_errors=True)  # a kept work folder's file would be reused
    started, cpu_started = time.monotonic(), cpu_seconds()
    packed = packed_split(work / "data" / "train.jsonl", tokenizer, MAX_LENGTH, work / "cache" / "tokenized",
                          log=lambda line: print(f"  {line}", file=sys.stderr))
    made, cpu = time.monotonic() - started, cpu_seconds() - cpu_started
    read_started = time.monotonic()
    tokens = sum(len(packed[i]["input_ids"]) for i in range(len(packed)))  # every row once, as an epoch reads them
    read = time.monotonic() - read_started
    again_started = time.monotonic()
    packed_split(work / "data" / "train.jsonl", tokenizer, MAX_LENGTH, work / "cache" / "tokenized", log=lambda _: None)
    reused = time.monotonic() - again_started
    return {"seconds": made, "rows": packed.meta["rows_read"], "examples": packed.meta["examples"],
            "tokens": tokens, "packed_rows": len(packed), "tokenize_seconds": packed.meta["tokenize_seconds"],
            "read_seconds": read, "reuse_seconds": reused, "encoder": packed.meta["encoder"], "cpu_seconds": cpu,
            "pieces_found": packed.meta["pieces_found"], "pieces_missed": packed.meta["pieces_missed"],
            "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the tokenizing pool's workers once it closed)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_phase(name: str, *args: str) -> dict:
    """Run one phase in a fresh interpreter; its result with the process's own peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--phase", name, *args], check=True, capture_output=True,  # noqa: S603
                         text=True, cwd=ROOT)
    sys.stderr.write(out.stderr[-2000:] if name == "tokenize" else "")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ── the baselines, in this process ──
def baselines(source: Path, rows: int) -> dict:
    import pyarrow.parquet as pq

    from tests.fixtures.reference_tokenize import tokenize_dataset as before_batching

    table = pq.read_table(source, columns=["messages"]).slice(0, rows)
    conversations = table.column("messages").to_pylist()
    tokenizer = tokenizer_for_bench()
    started, cpu_started = time.monotonic(), time.process_time()
    for messages in conversations:
        tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    plain, plain_cpu = time.monotonic() - started, time.process_time() - cpu_started
    started = time.monotonic()
    before_batching(tokenizer, conversations, MAX_LENGTH)
    before = time.monotonic() - started
    return {"rows": len(conversations), "plain_rate": len(conversations) / plain,
            "plain_cpu_us": plain_cpu / len(conversations) * 1e6,
            "before_rate": len(conversations) / before}


def how(tokenize: dict) -> str:
    """Which way the tokens were made, and for the pre-token table how often a piece was found in it."""
    if tokenize["encoder"] != "pieces":
        return "the tokenizer's batched encoder"
    share = tokenize["pieces_found"] / max(tokenize["pieces_found"] + tokenize["pieces_missed"], 1)
    return f"pre-token table, {share:.2%} of pieces found"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="conversations per run")
    parser.add_argument("--baseline-rows", type=int, default=3000, help="conversations the baselines tokenize")
    parser.add_argument("--keep", help="keep the datasets and work folders under this folder")
    parser.add_argument("--json", help="write the figures to this file as well")
    parser.add_argument("--length-scale", type=float, default=1.0,
                        help="multiply every message's length (1: realistic; less for a quicker run at many rows)")
    parser.add_argument("--vocabulary", type=int, default=0,
                        help="distinct words, drawn by Zipf's law (0: the tiny corpus's few hundred, uniformly)")
    parser.add_argument("--phase", choices=["download", "tokenize"], help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        result = phase_download(Path(args.args[0]), Path(args.args[1])) if args.phase == "download" \
            else phase_tokenize(Path(args.args[0]))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kairo-bench-data-"))
    print(f"cores: {len(os.sched_getaffinity(0))}, load average at start: {os.getloadavg()[0]:.1f}, "
          f"message lengths ×{args.length_scale:g}, "
          f"{'a Zipf vocabulary of ' + format(args.vocabulary, ',') + ' words' if args.vocabulary else 'the tiny corpus words'}")
    tag = f"x{args.length_scale:g}" + (f"-v{args.vocabulary}" if args.vocabulary else "")
    results = []
    for size in args.sizes:
        source = base / f"source-{size}-{tag}"
        source.mkdir(parents=True, exist_ok=True)
        if not (source / "chat.parquet").is_file():
            write_dataset(source / "chat.parquet", size, scale=args.length_scale, vocabulary=args.vocabulary)
        work = base / f"work-{size}-{tag}"
        work.mkdir(exist_ok=True)
        download = run_phase("download", str(work), str(source))
        print(f"  download+normalise of {size:,}: {json.dumps(download)}", flush=True)
        tokenize = run_phase("tokenize", str(work))
        print(f"  tokenize+pack of {size:,}: {json.dumps(tokenize)}", flush=True)
        line = (f"{size:>9,} conversations | download+normalise {download['rows'] / download['seconds']:>8,.0f} rows/s, "
                f"peak RSS {download['peak_rss_mib']:,.0f} MiB | tokenize+pack {tokenize['rows'] / tokenize['seconds']:>7,.0f}"
                f" rows/s ({tokenize['rows'] / tokenize['tokenize_seconds']:,.0f}/s tokenizing, {how(tokenize)}), peak RSS "
                f"{tokenize['peak_rss_mib']:,.0f} MiB (largest worker {tokenize['worker_peak_rss_mib']:,.0f} MiB), "
                f"{tokenize['tokens'] / tokenize['examples']:.0f} tokens/example, {tokenize['packed_rows']:,} rows of "
                f"{MAX_LENGTH}; read back in {tokenize['read_seconds']:.1f} s; reused in {tokenize['reuse_seconds']:.1f} s "
                f"| load {os.getloadavg()[0]:.1f}")
        print(line, flush=True)
        results.append({"size": size, "download": download, "tokenize": tokenize, "load": os.getloadavg()[0]})
    base_rows = min(args.baseline_rows, args.sizes[0])
    reference = baselines(base / f"source-{args.sizes[0]}-{tag}" / "chat.parquet", base_rows)
    first = results[0]["tokenize"]
    rate = first["rows"] / first["seconds"]
    print(f"baselines on {reference['rows']:,} conversations: plain apply_chat_template loop "
          f"{reference['plain_rate']:,.0f}/s, kairo before batching {reference['before_rate']:,.0f}/s | "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"tokenize+pack ({args.sizes[0]:,}) vs kairo before batching: {rate / reference['before_rate']:.1f}×")
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": len(os.sched_getaffinity(0)), "runs": results,
                                               "baselines": reference, "max_length": MAX_LENGTH}, indent=2) + "\n")
    cores = len(os.sched_getaffinity(0))
    cpu_us = first["cpu_seconds"] / first["rows"] * 1e6
    print(f"CPU a conversation (every process, less sensitive to other load than wall time): tokenize+pack "
          f"{cpu_us:,.0f} µs, plain loop {reference['plain_cpu_us']:,.0f} µs, {reference['plain_cpu_us'] / cpu_us:.1f}× "
          f"less; on {cores} idle cores ≈ {cores / cpu_us * 1e6:,.0f} conversations/s, "
          f"{cores * reference['plain_cpu_us'] / cpu_us:.1f}× one core's plain loop")
    print(f"tokenize+pack ({args.sizes[0]:,}) vs plain per-example apply_chat_template loop: "
          f"{rate / reference['plain_rate']:.1f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
