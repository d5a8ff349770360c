"""`kairo-step download`: fetch the dataset, check every row, and write it as chat messages split into train/eval.

Sources: http(s) URLs (several are concatenated, in order), a dataset image (an ORAS artifact or a
Kaito-style image with the files under /data), or a mounted volume. Raw files land in `data/raw/`; every
row becomes `{"messages": [{role, content}, …]}` in `data/train.jsonl` and `data/eval.jsonl` (the latter
only when DatasetConfig.train_test_split < 1); `data/dataset.json` records the digest, counts and shape.
All of `data/` is built in a temp folder and renamed at the end: a failed run leaves no `data/` behind.

Outputs: rows, eval-rows, dropped, digest (`sha256:` over the raw files in order), tokens (an estimate:
four characters a token), unchanged (`true` when the digest equals --previous-digest and not --force).
Exit codes: 2 for bad input (shape, empty, limits, refused URLs, HTTP 4xx), 75 for network trouble that
outlasted the retries (HTTP 5xx, timeouts, dropped connections).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from kairo import exitcodes, stepkit
from kairo.stepkit import StepFailed


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step download", description=__doc__.split("\n\n")[0])
    # One source of four. An empty value counts as not given: the generic WorkflowTemplate passes every
    # source flag, filled or empty, and one --url may hold several URLs separated by spaces.
    parser.add_argument("--url", action="append", default=[], help="http(s) URL(s) of parquet/jsonl/json/csv files")
    parser.add_argument("--urls-file", default="", help="a file with one URL a line (# comments); mounted by the workflow")
    parser.add_argument("--image", default="", help="a dataset image: an ORAS artifact, or an image with files under /data")
    parser.add_argument("--volume-path", default="", help="a mounted folder holding the data files")
    parser.add_argument("--pull-secret-file", help="dockerconfigjson for --image (a mounted imagePullSecret)")
    parser.add_argument("--config", help="training config file (its DatasetConfig: split, shuffle, columns)")
    parser.add_argument("--previous-digest", default="", help="digest of the data the deployed adapter learned")
    parser.add_argument("--force", nargs="?", const="true", default="false", type=_yes_no,
                        help="report unchanged=false even when the digest matches (--force, --force=true|false)")
    stepkit.add_common_flags(parser, local="allow loopback URLs (also KAIRO_LOCAL=1)", workdir=True, outputs=True,
                             cluster_config="cluster config (limits, network.allow)")
    parser.add_argument("--retries", type=int, default=4, help="attempts after the first for one URL (default 4)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a connection or data")
    parser.add_argument("--backoff", type=float, default=1.0, help="first wait between attempts, doubled each time")
    return parser


log = stepkit.logger("download")


def _yes_no(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", ""):
        return lowered != ""
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"'{value}' — expected true or false")


@dataclass
class RawFile:
    """A raw data file in the staging folder and what is known about it."""

    source: str  # a redacted URL or a path, for messages
    path: Path
    size: int
    sha256: str
    name: str = ""  # the server's name for the file when the URL's says nothing (Content-Disposition or -Type)

    @property
    def name_hint(self) -> str:
        return self.name or self.source.split("?", 1)[0]


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    args.url = [url for value in args.url for url in value.split()]
    given = [flag for flag, value in (("--url", args.url), ("--urls-file", args.urls_file.strip()),
                                      ("--image", args.image.strip()), ("--volume-path", args.volume_path.strip()))
             if value]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        log(f"give exactly one source of --url, --urls-file, --image, --volume-path (found: {found})")
        return exitcodes.BAD_INPUT
    from kairo.data.datafiles import DataFileError
    from kairo.data.datasets import DatasetError
    from kairo.data.fetch import FetchError

    try:
        return stepkit.run_step("download", run, args)
    except (DatasetError, DataFileError) as err:
        log(str(err))
        return exitcodes.BAD_INPUT
    except FetchError as err:
        log(str(err))
        return exitcodes.TRANSIENT if err.transient else exitcodes.BAD_INPUT


def run(args: argparse.Namespace) -> int:
    from kairo.atomic import staged_dir, write_output
    from kairo.cluster import load_cluster_config

    cluster = load_cluster_config(args.cluster_config)
    dataset = _dataset_config(args.config)
    local = stepkit.is_local(args) or cluster.local
    workdir = stepkit.workdir(args).resolve()
    target = workdir / "data"
    # A data/ left by an earlier run must not pass for this run's result if this run fails; a run killed part-way
    # (OOM, node lost) leaves its staging folder behind, which nothing else would ever remove.
    shutil.rmtree(target, ignore_errors=True)
    for stale in [*workdir.glob(".data.*.partial"), *workdir.glob(".data.old-*")]:
        log(f"removing {stale.name}, left by a download that did not finish")
        shutil.rmtree(stale, ignore_errors=True)
    running = hashlib.sha256()

    with staged_dir(target) as stage:
        raw = stage / "raw"
        if args.image.strip():
            files = _from_image(args, raw, cluster.limits.maxDatasetBytes, dataset, running, cluster, local)
        elif args.volume_path.strip():
            files = _from_volume(Path(args.volume_path.strip()), raw, cluster.limits.maxDatasetBytes, dataset, running)
        else:
            files, running = _from_urls(_urls(args), raw, cluster, local, args, running)
        digest = f"sha256:{running.hexdigest()}"
        summary = _normalise(files, dataset, cluster.limits, stage)
        summary = {"digest": digest, **summary}
        (stage / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")

    previous = args.previous_digest.strip()
    unchanged = bool(previous) and not args.force and previous.removeprefix("sha256:") == digest.removeprefix("sha256:")
    for name, value in (
        ("rows", summary["rows"]),
        ("eval-rows", summary["eval_rows"]),
        ("dropped", summary["dropped"]),
        ("digest", digest),
        ("tokens", summary["tokens"]),
        ("unchanged", "true" if unchanged else "false"),
    ):
        write_output(name, value, stepkit.outputs(args))
    note = " — unchanged since the deployed adapter" if unchanged else ""
    log(f"{summary['train_rows']:,} train and {summary['eval_rows']:,} eval rows (≈{summary['tokens']:,} tokens), "
        f"{summary['dropped']:,} dropped, {digest}{note}")
    return exitcodes.OK


def _dataset_config(path: str | None):
    from kairo.training.config import default_training_config, load_training_config

    if path:
        if not Path(path).is_file():
            raise StepFailed(f"--config {path}: no such file (the training config ConfigMap is not mounted?)",
                             exitcodes.BAD_INPUT)
        return load_training_config(path).DatasetConfig
    # Kaito's lora and qlora templates carry the same DatasetConfig (no eval split, shuffled).
    return default_training_config("lora").DatasetConfig


def _urls(args: argparse.Namespace) -> list[str]:
    from kairo.data.datasets import DatasetError

    if args.url:
        return list(args.url)
    try:
        text = Path(args.urls_file).read_text()
        urls = json.loads(text) if text.lstrip().startswith("[") else None
    except (OSError, ValueError) as err:
        raise DatasetError(f"--urls-file {args.urls_file}: cannot read it ({err})") from err
    if urls is None:
        urls = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not urls:
        raise DatasetError(f"{args.urls_file}: no URLs in the file")
    return [str(u) for u in urls]


def _from_urls(urls, raw: Path, cluster, local: bool, args, running) -> tuple[list[RawFile], object]:
    """Download every URL in order; returns the files and the running digest over all of them."""
    from kairo.data.datafiles import format_from_name
    from kairo.data.fetch import Fetcher, FetchError, human

    fetcher = Fetcher(
        allow=cluster.network.allow, local=local, retries=args.retries, timeout=args.timeout, backoff=args.backoff,
        deadline=time.monotonic() + cluster.timeouts.downloadSeconds, deadline_seconds=cluster.timeouts.downloadSeconds,
        min_rate=cluster.limits.minDownloadBytesPerSecond,
    )
    budget = cluster.limits.maxDatasetBytes
    files = []
    for index, url in enumerate(urls):
        dest = raw / f"{index:03d}-{_file_name(url)}"
        if budget <= 0:
            raise FetchError(f"the files before {dest.name} already fill limits.maxDatasetBytes", transient=False)
        got = fetcher.fetch(url, dest, budget, running)
        running = got.running
        budget -= got.size
        name = ""
        if format_from_name(got.name) and not format_from_name(got.source.split("?", 1)[0]):
            # `…/download?id=7` answered with `Content-Disposition: filename="train.csv"`: keep the telling name.
            name = got.name
            dest = dest.rename(raw / f"{index:03d}-{_safe_name(name)}")
        log(f"{got.source} → raw/{dest.name} ({human(got.size)}, sha256 {got.sha256[:12]}…)")
        files.append(RawFile(got.source, dest, got.size, got.sha256, name))
    return files, running


def _file_name(url: str) -> str:
    from kairo.data.fetch import url_name

    return _safe_name(url_name(url))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[-100:].lstrip(".") or "data"


def _from_volume(folder: Path, raw: Path, limit: int, dataset, running) -> list[RawFile]:
    from kairo.data.fetch import copy_file

    files = []
    for source in _data_files(folder, dataset.dataset_path):
        relative = source.relative_to(folder.resolve())
        got = copy_file(source, raw / relative, limit, running)
        limit -= got.size
        files.append(RawFile(str(source), got.path, got.size, got.sha256))
    return files


def _data_files(folder: Path, dataset_path: str | None) -> list[Path]:
    """The data files of a folder: DatasetConfig.dataset_path inside it, else every data file, sorted."""
    from kairo.data.datafiles import is_data_file
    from kairo.data.datasets import DatasetError

    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder (the dataset volume is not mounted there)")
    base = folder.resolve()
    chosen = base
    if dataset_path:
        chosen = _inside(base, dataset_path)
        if not chosen.exists():
            raise DatasetError(
                f"DatasetConfig.dataset_path '{dataset_path}' is not in the dataset folder — files there: "
                f"{_listing(folder)}"
            )
        if chosen.is_file():
            return [chosen]
    files = sorted(p for p in chosen.rglob("*") if p.is_file() and is_data_file(p) and not _hidden(p, chosen))
    if not files:
        raise DatasetError(
            f"{chosen}: no data files (parquet, jsonl, json, csv, arrow) — found: {_listing(chosen)}"
        )
    return _train_split(files, chosen)


def _train_split(files: list[Path], root: Path) -> list[Path]:
    """The train split's files when the folder holds several splits (see datafiles.split_of); else all files."""
    from kairo.data.datafiles import split_of

    splits = {path: split_of(path.relative_to(root).as_posix()) for path in files}
    train = [path for path in files if splits[path] == "train"]
    if not train or not any(split not in (None, "train") for split in splits.values()):
        return files
    rest = [path.relative_to(root).as_posix() for path in files if splits[path] != "train"]
    shown = ", ".join(rest[:5]) + (f", … ({len(rest)} in all)" if len(rest) > 5 else "")
    log(f"the dataset folder holds several splits: reading the train split ({len(train)} file"
        f"{'s' if len(train) > 1 else ''}), leaving out {shown} — set DatasetConfig.dataset_path to choose files")
    return train


def _inside(base: Path, dataset_path: str) -> Path:
    """dataset_path inside the folder; Kaito writes it relative to /mnt (`data/train.jsonl`), so that is undone."""
    from kairo.data.datasets import DatasetError

    relative = dataset_path.strip("/")
    for prefix in ("mnt/", "data/"):
        if relative.startswith(prefix) and not (base / relative).exists():
            relative = relative[len(prefix) :]
    resolved = (base / relative).resolve()
    if resolved != base and base not in resolved.parents:
        raise DatasetError(f"DatasetConfig.dataset_path '{dataset_path}' points outside the dataset folder")
    return resolved


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _listing(folder: Path) -> str:
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())[:20]
    return ", ".join(names) if names else "nothing"


def _from_image(args, raw: Path, limit: int, dataset, running, cluster, local: bool) -> list[RawFile]:
    """Pull a dataset image (ORAS artifact, or an image with files under /data) into raw/ and hash its files."""
    from kairo.clients import oci
    from kairo.data.fetch import hash_file

    image = args.image.strip()
    secret = stepkit.mounted_secret(args.pull_secret_file, image, log)
    access = oci.registry_access(image, cluster, auth_file=secret, local=local, retries=args.retries,
                                 retry_wait=args.backoff)
    try:
        oci.pull_dataset(image, raw, access, max_bytes=limit)
    except oci.RegistryError as err:
        raise StepFailed(f"{image}: {err}", err.exit_code) from err
    except SystemExit as err:  # oras-py ends some failures with SystemExit: a failed pull, not our exit
        raise StepFailed(f"{image}: the pull failed ({err})", exitcodes.TRANSIENT) from err
    files = []
    for path in _data_files(raw, dataset.dataset_path):
        got = hash_file(path, running)
        files.append(RawFile(f"{image}:{path.relative_to(raw.resolve()).as_posix()}", path, got.size, got.sha256))
    return files


def _normalise(files: list[RawFile], dataset, limits, stage: Path) -> dict:
    """Read every raw file, turn rows into messages, split them, write train/eval; return the summary."""
    from kairo.data.datafiles import (
        DataFileError,
        InvalidLine,
        ReadBudget,
        RowTooLong,
        columns,
        detect_format,
        read_rows,
    )
    from kairo.data.datasets import DatasetError, Mapping, Normaliser, conversation_form, detect_shape
    from kairo.data.message_trees import conversation_rows

    mapping = Mapping.from_config(dataset)
    counter = Normaliser(limits.maxRows, limits.maxRowChars, limits.maxDroppedFraction)
    max_line = limits.maxRowChars * 6 + 1024  # JSON escapes (\uXXXX) make a line up to six times its text
    # Decompressed bytes over all files; lines in a file, blank ones too (the row limit counts only rows, and
    # reports them first: the line limit is for files of mostly nothing).
    budget = ReadBudget(limits.maxDatasetBytes, limits.maxRows * 2 + 1000, "twice limits.maxRows")
    rows_path = stage / ".rows.jsonl"
    offsets = array("q")
    sources = []
    shapes: list[str] = []
    with open(rows_path, "wb") as out:
        for raw in files:
            fmt = detect_format(raw.path, raw.name_hint, dataset.dataset_extension)
            entry = {"source": raw.source, "file": str(raw.path.relative_to(stage)), "bytes": raw.size,
                     "sha256": raw.sha256, "format": fmt, "shape": None, "rows": 0}
            sources.append(entry)
            before = counter.rows
            try:
                names = columns(raw.path, fmt, max_line, budget)
                if not names and fmt in ("jsonl", "json", "csv", "tsv"):
                    log(f"{raw.source} has no rows")
                    continue
                shape = detect_shape(names, mapping, raw.source)
                rows = read_rows(raw.path, fmt, max_line, budget)
                if shape.name == "message-tree":
                    rows = conversation_rows(rows, lambda line, source=raw.source: log(f"{source}: {line}"))
                for number, row in enumerate(rows, start=1):
                    if number == 1:
                        entry["shape"] = conversation_form(row, shape)
                    if isinstance(row, InvalidLine):
                        counter.add_unreadable("not valid JSON", f"line {row.line} of {raw.source}")
                        continue
                    messages = counter.add(row, shape, f"row {number} of {raw.source}")
                    if messages is not None:
                        offsets.append(out.tell())
                        out.write(_utf8(json.dumps({"messages": messages}, ensure_ascii=False)) + b"\n")
            except RowTooLong as err:
                raise DatasetError(
                    f"{err} of {raw.source} is longer than limits.maxRowChars ({limits.maxRowChars:,} "
                    "characters) allows — shorten or remove that row, or raise the limit in the cluster config"
                ) from err
            except DataFileError as err:
                # The reader names the staged copy (raw/000-x.json); the person knows the file by its URL or path.
                message = str(err)
                if message.startswith(f"{raw.path.name}: "):
                    message = f"{raw.source}: {message[len(raw.path.name) + 2:]}"
                raise DataFileError(message) from err
            entry["rows"] = counter.rows - before
            entry["shape"] = entry["shape"] or shape.name
            shapes.append(entry["shape"])
            log(f"{raw.source}: {fmt}, {shape.describe()}, {entry['rows']:,} rows")
    counter.check()
    if counter.dropped:
        log(f"dropped {sum(counter.dropped.values()):,} rows — {counter.drop_summary()}")
    train_rows, eval_rows = _write_split(rows_path, offsets, dataset, stage)
    rows_path.unlink()
    return {
        "rows": counter.kept,
        "train_rows": train_rows,
        "eval_rows": eval_rows,
        "dropped": sum(counter.dropped.values()),
        "dropped_reasons": dict(counter.dropped.most_common()),
        "tokens": counter.tokens,
        "shape": "+".join(dict.fromkeys(shapes)) or "none",
        "split": {"train_test_split": dataset.train_test_split, "shuffle_dataset": dataset.shuffle_dataset,
                  "shuffle_seed": dataset.shuffle_seed},
        "sources": sources,
    }


def _utf8(line: str) -> bytes:
    """The line as UTF-8; a lone surrogate (JSON's "\\ud83d" from a cut emoji) becomes U+FFFD instead of failing."""
    try:
        return line.encode()
    except UnicodeEncodeError:
        return line.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def _write_split(rows_path: Path, offsets, dataset, stage: Path) -> tuple[int, int]:
    from kairo.data.datasets import split_order, split_sizes

    train_rows, eval_rows = split_sizes(len(offsets), dataset.train_test_split)
    order = split_order(len(offsets), dataset.shuffle_dataset, dataset.shuffle_seed)
    with open(rows_path, "rb") as rows:
        parts = [("train.jsonl", order[:train_rows])]
        if dataset.train_test_split < 1:
            parts.append(("eval.jsonl", order[train_rows:]))
        for name, indices in parts:
            with open(stage / name, "wb") as out:
                for index in indices:
                    rows.seek(offsets[index])
                    out.write(rows.readline())
    return train_rows, eval_rows


if __name__ == "__main__":
    sys.exit(main())
