"""Tokenized, packed splits on the work volume: made once per data, tokenizer, chat template and max_length.

`packed_split(data/train.jsonl, tokenizer, max_length, cache/tokenized)` returns the split's packed rows as
a `PackedFile`. The first run streams the JSONL through `kairo.training.tokenize` (a pool of processes,
each writing the tokens of the chunks it made to its own scratch file, so only counts and lengths come
back), packs the examples by length (best-fit decreasing, as `kairo.training.packing.pack`) and writes the
rows to an Arrow IPC file in batches (a thread writes one while the next is read), through a temp path and
a rename. Which process wrote which chunk changes nothing in the file. Nothing holds the dataset in Python
objects: memory stays flat whatever the size.

The file is named by a digest of what decides its contents: the split file's bytes, the tokenizer
(its serialised vocabulary, merges, normaliser and added tokens, and its special tokens), the chat template,
`max_length` and this format's version. A retried, resumed or re-evaluated run with the same inputs opens
the file instead, and its log says so with the time the first run spent making it. Any other change makes
a new file; files of other keys are left for the volume's lifetime (a work volume is per run).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import time
from array import array
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kairo.training.packing import PackedFile, pack_lengths

FORMAT = 1  # bump when the tokens or the file layout change: older files are then never read
BATCH_ROWS = 64  # packed rows per Arrow record batch: one batch is read at a time


def split_digest(path: Path) -> str:
    """sha256 of a split file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What of the tokenizer decides the tokens: its serialised backend (no padding or truncation) and special tokens."""
    parts: dict[str, Any] = {"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        serialised = json.loads(backend.to_str())
        serialised.pop("truncation", None), serialised.pop("padding", None)  # set per call, not part of it
        parts["backend"] = serialised
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(split: Path, tokenizer: Any, max_length: int) -> str:
    """The digest naming a split's packed file (see the module docstring)."""
    what = {"format": FORMAT, "data": split_digest(split), "tokenizer": tokenizer_fingerprint(tokenizer),
            "chat_template": tokenizer.get_chat_template(), "max_length": max_length}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def packed_split(split: Path, tokenizer: Any, max_length: int, cache_dir: Path,
                 log: Callable[[str], None] = print, processes: int | None = None, pieces: Any = True) -> PackedFile:
    """The split's packed rows: from the cache when an earlier run made them, else made now and cached.

    `pieces` is `kairo.training.tokenize.piece_table`'s: whether a table of pre-token pieces may make the tokens.
    """
    key = cache_key(split, tokenizer, max_length)
    final = cache_dir / f"{split.stem}-{key}.arrow"
    if final.is_file():
        try:
            found = PackedFile(final)
        except (OSError, ValueError) as err:  # a damaged file (a full disk at the time): make it again
            log(f"{final.name} cannot be read ({err}): tokenizing {split.name} again")
        else:
            log(f"{split.name}: tokenized rows reused from {cache_dir.name}/{final.name} (made in "
                f"{found.meta['seconds']:.1f} s by an earlier run, {found.meta['examples']:,} examples)")
            return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    from kairo.training.pretokens import PiecesDisagree

    try:
        made = _make(split, tokenizer, max_length, final, processes, pieces, log)
    except PiecesDisagree as err:  # found in a later chunk: every token made so far is in doubt
        log(f"{split.name}: the pre-token table differs from the tokenizer ({err}): tokenizing again with the "
            "tokenizer's batched encoder")
        made = _make(split, tokenizer, max_length, final, processes, False, log)
    meta = made.meta
    rate = meta["rows_read"] / max(meta["tokenize_seconds"], 1e-9)
    found = meta["pieces_found"] / max(meta["pieces_found"] + meta["pieces_missed"], 1)
    how = (f"from the pre-token table, checked against the tokenizer; {found:.1%} of pieces found in it"
           if meta["encoder"] == "pieces" else "by the tokenizer's batched encoder")
    log(f"{split.name}: {meta['rows_read']:,} conversations tokenized in {meta['tokenize_seconds']:.1f} s "
        f"({rate:,.0f}/s, {how}), packed and written to {cache_dir.name}/{final.name} in {meta['seconds']:.1f} s")
    return made


def _make(split: Path, tokenizer: Any, max_length: int, final: Path, processes: int | None, pieces: Any,
          log: Callable[[str], None]) -> PackedFile:
    from kairo.training.tokenize import tokenize_file

    started = time.monotonic()
    # The processes that tokenize write their chunks' tokens here themselves (a file each): only counts come back.
    scratch = final.with_name(f".{final.name}.{os.getpid()}.tokens")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    lengths, where, files = array("i"), array("q"), array("i")  # per example: its tokens, byte offset, file
    names: dict[str, int] = {}
    counts = {"truncated": 0, "dropped": 0, "first_problem": "", "trained_tokens": 0, "encoder": "",
              "pieces_found": 0, "pieces_missed": 0}
    try:
        for chunk in tokenize_file(tokenizer, split, max_length, processes, pieces, log, store=scratch):
            name, at = chunk.stored
            starts = at + 8 * (np.cumsum(chunk.lengths, dtype=np.int64) - chunk.lengths)
            where.frombytes(starts.tobytes())
            files.extend([names.setdefault(name, len(names))] * len(chunk.lengths))
            lengths.frombytes(chunk.lengths.astype(np.int32).tobytes())
            counts["truncated"] += chunk.truncated
            counts["dropped"] += chunk.dropped
            counts["first_problem"] = counts["first_problem"] or chunk.first_problem
            counts["trained_tokens"] += chunk.trained_tokens
            counts["encoder"] = counts["encoder"] or chunk.encoder
            counts["pieces_found"] += chunk.pieces_found
            counts["pieces_missed"] += chunk.pieces_missed
        tokenized = time.monotonic()
        rows_read = len(lengths) + counts["dropped"]
        meta = {"format": FORMAT, "source": split.name, "max_length": max_length, "examples": len(lengths),
                "rows_read": rows_read, "tokens": int(sum(lengths)), **counts,
                "tokenize_seconds": round(tokenized - started, 3), "batch_rows": BATCH_ROWS}
        sources = [scratch / name for name in sorted(names, key=names.get)]
        _write_packed(sources, np.frombuffer(lengths, dtype=np.int32), np.frombuffer(where, dtype=np.int64),
                      np.frombuffer(files, dtype=np.int32), max_length, final, meta, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PackedFile(final)


def _write_packed(sources: list[Path], lengths: np.ndarray, where: np.ndarray, files: np.ndarray, max_length: int,
                  final: Path, meta: dict, started: float) -> None:
    """Pack the stored examples into rows and write them as Arrow record batches (temp path, rename).

    Example i is `lengths[i]` ids then as many labels at byte `where[i]` of `sources[files[i]]`. A thread
    writes each batch (Arrow lets go of the GIL) while the next is gathered.
    """
    collecting = gc.isenabled()
    gc.disable()  # the rows are many small lists and make no cycles: a collection here scans the whole heap, often
    try:
        _pack_and_write(sources, lengths, where, files, max_length, final, meta, started)
    finally:
        if collecting:
            gc.enable()


def _pack_and_write(sources: list[Path], lengths: np.ndarray, where: np.ndarray, files: np.ndarray,
                    max_length: int, final: Path, meta: dict, started: float) -> None:
    import pyarrow as pa

    rows = pack_lengths(lengths, max_length)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("lengths", pa.list_(pa.int32()))])
    temp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    handles = [open(source, "rb") for source in sources]  # noqa: SIM115 (closed below)
    try:
        fds = [handle.fileno() for handle in handles]
        with pa.OSFile(str(temp), "wb") as sink:
            # The metadata goes in the schema, which Arrow writes first: the time is that of tokenizing and packing.
            meta = {**meta, "rows": len(rows), "seconds": round(time.monotonic() - started, 3)}
            with pa.ipc.new_file(sink, schema.with_metadata({"kairo": json.dumps(meta)})) as writer, \
                    ThreadPoolExecutor(1) as thread:
                pending: deque = deque()
                for first in range(0, len(rows), BATCH_ROWS):
                    batch = _batch(fds, rows[first:first + BATCH_ROWS], lengths, where, files, schema)
                    pending.append(thread.submit(writer.write_batch, batch))
                    if len(pending) > 2:  # a few batches in memory at most
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
        os.replace(temp, final)
    finally:
        for handle in handles:
            handle.close()
        temp.unlink(missing_ok=True)


def _batch(fds: list[int], rows: list[list[int]], lengths: np.ndarray, where: np.ndarray, files: np.ndarray,
           schema) -> Any:
    """One record batch of packed rows: each example's ids and labels read in one preadv, straight into the columns."""
    import pyarrow as pa

    taken = np.fromiter((i for row in rows for i in row), dtype=np.int64)
    sizes = lengths[taken]
    ends = np.cumsum(sizes, dtype=np.int64)
    ids = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int32)
    labels = np.empty_like(ids)
    into_ids, into_labels = memoryview(ids).cast("B"), memoryview(labels).cast("B")
    start = 0
    for f, n, w in zip(files[taken].tolist(), sizes.tolist(), where[taken].tolist(), strict=True):
        end = start + 4 * n
        if _preadv(fds[f], [into_ids[start:end], into_labels[start:end]], w) != 8 * n:
            raise OSError("a scratch file of tokens ended early")
        start = end
    row_examples = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    token_offsets = pa.array(np.concatenate([[0], ends[np.cumsum(row_examples) - 1]]).astype(np.int32))
    example_offsets = pa.array(np.concatenate([[0], np.cumsum(row_examples)]).astype(np.int32))
    columns = [pa.ListArray.from_arrays(token_offsets, pa.array(ids)),
               pa.ListArray.from_arrays(token_offsets, pa.array(labels)),
               pa.ListArray.from_arrays(example_offsets, pa.array(sizes.astype(np.int32)))]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _pread_into(fd: int, buffers: list[memoryview], at: int) -> int:
    """os.preadv where the OS has none (macOS before 11): read once, copy into the buffers; the bytes read."""
    data = os.pread(fd, sum(len(b) for b in buffers), at)
    start = 0
    for buffer in buffers:
        part = data[start:start + len(buffer)]
        buffer[:len(part)] = part
        start += len(part)
    return len(data)


_preadv = getattr(os, "preadv", _pread_into)
