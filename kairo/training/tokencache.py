"""Tokenized, packed splits on the work volume: made once per data, tokenizer, chat template and max_length.

`packed_split(data/train.jsonl, tokenizer, max_length, cache/tokenized)` returns the split's packed rows as
a `PackedFile`. The first run streams the JSONL through `kairo.training.tokenize` (a pool of processes),
writes the examples' tokens to a scratch file as they come, packs them by length (best-fit decreasing,
as `kairo.training.packing.pack`) and writes the rows to an Arrow IPC file in batches, through a temp
path and a rename. Nothing holds the dataset in Python objects: memory stays flat whatever the size.

The file is named by a digest of what decides its contents: the split file's bytes, the tokenizer
(its serialised vocabulary, merges, normaliser and added tokens, and its special tokens), the chat template,
`max_length` and this format's version. A retried, resumed or re-evaluated run with the same inputs opens
the file instead, and its log says so with the time the first run spent making it. Any other change makes
a new file; files of other keys are left for the volume's lifetime (a work volume is per run).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from array import array
from collections.abc import Callable
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
    scratch = final.with_name(f".{final.name}.{os.getpid()}.tokens")
    lengths = array("i")
    counts = {"truncated": 0, "dropped": 0, "first_problem": "", "trained_tokens": 0, "encoder": "",
              "pieces_found": 0, "pieces_missed": 0}
    try:
        with open(scratch, "wb") as out:  # ids then labels of each chunk, examples in order
            for chunk in tokenize_file(tokenizer, split, max_length, processes, pieces, log):
                _write_pairs(out, chunk)
                lengths.extend(chunk.lengths.tolist())
                counts["truncated"] += chunk.truncated
                counts["dropped"] += chunk.dropped
                counts["first_problem"] = counts["first_problem"] or chunk.first_problem
                counts["trained_tokens"] += int((chunk.labels != -100).sum())
                counts["encoder"] = counts["encoder"] or chunk.encoder
                counts["pieces_found"] += chunk.pieces_found
                counts["pieces_missed"] += chunk.pieces_missed
        tokenized = time.monotonic()
        rows_read = len(lengths) + counts["dropped"]
        meta = {"format": FORMAT, "source": split.name, "max_length": max_length, "examples": len(lengths),
                "rows_read": rows_read, "tokens": int(sum(lengths)), **counts,
                "tokenize_seconds": round(tokenized - started, 3), "batch_rows": BATCH_ROWS}
        _write_packed(scratch, np.frombuffer(lengths, dtype=np.int32), max_length, final, meta, started)
    finally:
        scratch.unlink(missing_ok=True)
    return PackedFile(final)


def _write_pairs(out, chunk) -> None:
    """Each example as its ids followed by its labels (int32), so one read fetches an example whole."""
    lengths = chunk.lengths.astype(np.int64)
    example = np.repeat(np.arange(len(lengths)), lengths)
    at = np.arange(len(chunk.ids)) + (np.cumsum(lengths) - lengths)[example]  # example k's ids start at 2 × its start
    pairs = np.empty(2 * len(chunk.ids), dtype=np.int32)
    pairs[at] = chunk.ids
    pairs[at + lengths[example]] = chunk.labels
    out.write(pairs.tobytes())


def _write_packed(scratch: Path, lengths: np.ndarray, max_length: int, final: Path, meta: dict,
                  started: float) -> None:
    """Pack the scratch file's examples into rows and write them as Arrow record batches (temp path, rename)."""
    import pyarrow as pa

    rows = pack_lengths(lengths, max_length)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("lengths", pa.list_(pa.int32()))])
    temp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    try:
        with open(scratch, "rb") as source, pa.OSFile(str(temp), "wb") as sink:
            fd = source.fileno()
            # The metadata goes in the schema, which Arrow writes first: the time is that of tokenizing and packing.
            meta = {**meta, "rows": len(rows), "seconds": round(time.monotonic() - started, 3)}
            with pa.ipc.new_file(sink, schema.with_metadata({"kairo": json.dumps(meta)})) as writer:
                for first in range(0, len(rows), BATCH_ROWS):
                    writer.write_batch(_batch(fd, rows[first:first + BATCH_ROWS], lengths, offsets, schema))
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)


def _batch(fd: int, rows: list[list[int]], lengths: np.ndarray, offsets: np.ndarray, schema) -> Any:
    import pyarrow as pa

    ids_parts, label_parts, row_tokens, row_examples, example_lengths = [], [], [], [], []
    for row in rows:
        total = 0
        for i in row:
            n = int(lengths[i])
            pair = np.frombuffer(os.pread(fd, 8 * n, 8 * int(offsets[i])), dtype=np.int32)
            ids_parts.append(pair[:n])
            label_parts.append(pair[n:])
            example_lengths.append(n)
            total += n
        row_tokens.append(total)
        row_examples.append(len(row))
    token_offsets = pa.array(np.concatenate([[0], np.cumsum(row_tokens)]).astype(np.int32))
    example_offsets = pa.array(np.concatenate([[0], np.cumsum(row_examples)]).astype(np.int32))
    columns = [pa.ListArray.from_arrays(token_offsets, pa.array(np.concatenate(ids_parts))),
               pa.ListArray.from_arrays(token_offsets, pa.array(np.concatenate(label_parts))),
               pa.ListArray.from_arrays(example_offsets, pa.array(np.asarray(example_lengths, dtype=np.int32)))]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
