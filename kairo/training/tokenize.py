"""Conversations → token ids and assistant-only labels, in batches and on every core.

The labels are those `kairo.training.chat` defines (its docstring): an assistant turn's span is found by
rendering the conversation up to that turn, with and without it, and a token is learned when it starts
inside a span. What makes this fast is only how the work is done:

- the chat template is compiled once and rendered directly, once per conversation shape where it can
  (`kairo.training.render`);
- a chunk of rendered texts is tokenized at once: from the table of pre-token pieces seen before
  (`kairo.training.pretokens`) where the tokenizer is a byte-level BPE that table reproduces, else in one
  `encode_batch` call of the fast tokenizer, with offsets;
- spans become labels with numpy, for the whole chunk at once (a character mask looked up at each token's start);
- chunks run in a pool of processes, one per core, each returning flat int32 arrays.

The piece table is trusted only after it gave the tokenizer's own ids and offsets on every conversation of
the data's first chunk; after that the shortest conversation of each chunk is still compared, and a difference
anywhere raises `PiecesDisagree`, on which callers start again on the tokenizer's own path.

An assistant turn with `weight: 0` (OpenAI's fine-tuning format) gets no span: it is context, never a
target. A tokenizer without a fast (Rust) backend takes the same path one text at a time.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kairo.problems import InvalidInput, Problem
from kairo.training.chat import IGNORE, parse_line
from kairo.training.pretokens import Encoded, PieceCache, PiecesDisagree, joined, refusal
from kairo.training.pretokens import encode_batch as backend_encode
from kairo.training.render import Renderer, assistant_spans

CHUNK = 256  # conversations per encode_batch call and per task sent to a worker
POOL_FROM = 2 * CHUNK  # fewer rows than this are tokenized in this process: a pool costs more than it saves


@dataclass
class Chunk:
    """Tokenized conversations of one chunk, flat: example k is ids[starts[k]:starts[k] + lengths[k]]."""

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    truncated: int = 0
    dropped: int = 0
    first_problem: str = ""
    unreadable: list[Problem] = field(default_factory=list)
    encoder: str = "tokenizer"  # or "pieces": the table of pre-token pieces made the tokens
    pieces_found: int = 0
    pieces_missed: int = 0
    stored: tuple[str, int] = ("", 0)  # after `store`: the file holding the pairs, where they start; ids/labels empty
    trained_tokens: int = 0  # labels that are not IGNORE (set by `store`)

    def store(self, folder: Path) -> None:
        """Append each example's ids then labels (int32) to this process's file in `folder`, and let go of them.

        One read then fetches an example whole; the process that made the chunk writes it, so the tokens
        never travel to the parent.
        """
        lengths = self.lengths.astype(np.int64)
        example = np.repeat(np.arange(len(lengths)), lengths)
        at = np.arange(len(self.ids)) + (np.cumsum(lengths) - lengths)[example]  # example k's ids at 2 × its start
        pairs = np.empty(2 * len(self.ids), dtype=np.int32)
        pairs[at] = self.ids
        pairs[at + lengths[example]] = self.labels
        name = f"{os.getpid()}.pairs"
        with open(folder / name, "ab") as out:
            self.stored = (name, out.tell())
            out.write(pairs.tobytes())
        self.trained_tokens = int((self.labels != IGNORE).sum())
        self.ids, self.labels = self.ids[:0], self.labels[:0]

    def __getstate__(self) -> dict[str, Any]:
        # From a worker to the parent: a label is the token's id or IGNORE, so one bit a token says which.
        state = dict(self.__dict__)
        state["labels"] = (np.packbits(self.labels != IGNORE), len(self.labels))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        bits, count = state["labels"]
        learned = np.unpackbits(bits, count=count).astype(bool)
        self.__dict__.update(state, labels=np.where(learned, state["ids"], IGNORE).astype(np.int32))

    def examples(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, labels) of each example, in order."""
        start = 0
        for length in self.lengths.tolist():
            yield self.ids[start:start + length], self.labels[start:start + length]
            start += length


def labels_for(ids: np.ndarray, starts: np.ndarray, spans: list[tuple[int, int]], text_length: int) -> np.ndarray:
    """Each token's label: its id where it starts inside a span, -100 elsewhere and on the first token."""
    inside = np.zeros(text_length + 1, dtype=bool)
    for a, b in spans:
        inside[a:b] = True
    labels = np.where(inside[np.minimum(starts, text_length)], ids, IGNORE).astype(np.int32)
    if len(labels):
        labels[0] = IGNORE  # packed after another example, the first token would be predicted from that one
    return labels


def encode(tokenizer: Any, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, token start offsets) of each text, as `tokenizer(text, add_special_tokens=False)` gives them."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.truncation is None and backend.padding is None and not getattr(
            tokenizer, "split_special_tokens", False):
        return backend_encode(backend, texts)  # what tokenizer(texts) runs, without the Python lists
    if backend is not None:
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                            return_attention_mask=False, verbose=False)
    else:
        encoded = {"input_ids": [], "offset_mapping": []}
        for text in texts:
            one = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            encoded["input_ids"].append(one["input_ids"])
            encoded["offset_mapping"].append(one["offset_mapping"])
    out = []
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
        out.append((np.asarray(ids, dtype=np.int32), starts))
    return out


def tokenize_chunk(tokenizer: Any, render: Callable[..., str], rows: list[tuple[int, Any]], max_length: int,
                   pieces: PieceCache | None = None, compare: int = 0) -> Chunk:
    """Tokenize numbered conversations (row number, messages); the rows' fates are counted as chat.py counts them.

    With `pieces`, the tokens come from the piece table and `compare` conversations (all of them, or the
    shortest ones: the check is cheap) are also tokenized by the tokenizer and compared (PiecesDisagree on a
    difference).
    """
    chunk = Chunk(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
    rendered: list[tuple[int, str, list[tuple[int, int]], list[dict[str, Any]]]] = []
    problems: list[tuple[int, str]] = []  # (row number, why): the first in row order is reported
    for number, messages in rows:
        try:
            text, spans = render.spans(messages) if isinstance(render, Renderer) else assistant_spans(render, messages)
        except Exception as err:  # a template error (e.g. roles that must alternate) is the data's problem
            chunk.dropped += 1
            problems.append((number, f"row {number}: the chat template refused it: {err}"))
            continue
        rendered.append((number, text, spans, messages))
    texts = [r[1] for r in rendered]
    if pieces is None:
        encoded = joined(encode(tokenizer, texts))
    else:
        found, missed = pieces.hits, pieces.misses
        encoded = pieces.encode(texts)
        chosen = range(len(texts)) if compare >= len(texts) else sorted(
            range(len(texts)), key=lambda k: len(texts[k]))[:compare]
        _compare(tokenizer, encoded, [(k, rendered[k][0], texts[k]) for k in chosen])
        chunk.encoder, chunk.pieces_found, chunk.pieces_missed = "pieces", pieces.hits - found, pieces.misses - missed
    labels, learned = chunk_labels(encoded, [r[1] for r in rendered], [r[2] for r in rendered], max_length)
    keep = np.zeros(len(rendered), dtype=bool)
    for k, ((number, _text, _spans, messages), count, kept) in enumerate(
            zip(rendered, encoded.counts.tolist(), learned.tolist(), strict=True)):
        cut = count > max_length
        if not kept:
            unweighted = any(m["role"] == "assistant" for m in messages) and not any(
                m["role"] == "assistant" and m.get("weight", 1) != 0 for m in messages)
            chunk.dropped += 1
            problems.append((number, f"row {number}: no assistant tokens left within max_length {max_length}"
                             if cut and not unweighted else f"row {number}: every assistant turn has weight 0"
                             if unweighted else f"row {number}: no assistant turn"))
            continue
        chunk.truncated += cut
        keep[k] = True
    chunk.first_problem = min(problems)[1] if problems else ""
    if keep.any():
        text_of = np.repeat(np.arange(len(rendered)), encoded.counts)
        place = np.arange(len(encoded.ids)) - (np.cumsum(encoded.counts) - encoded.counts)[text_of]
        taken = keep[text_of] & (place < max_length)
        chunk.ids, chunk.labels = encoded.ids[taken], labels[taken]
        chunk.lengths = np.minimum(encoded.counts[keep], max_length).astype(np.int32)
    return chunk


def chunk_labels(encoded: Encoded, texts: list[str], spans: list[list[tuple[int, int]]],
                 max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """`labels_for` of every text at once, and how many labels each text keeps within `max_length`."""
    lengths = np.asarray([len(t) for t in texts], dtype=np.int64)
    base = np.cumsum(lengths + 1) - (lengths + 1)  # each text in one mask, with a spare slot after it
    inside = np.zeros(int((lengths + 1).sum()), dtype=bool)
    for at, text_spans in zip(base.tolist(), spans, strict=True):
        for a, b in text_spans:
            inside[at + a:at + b] = True
    text_of = np.repeat(np.arange(len(texts)), encoded.counts)
    labels = np.where(inside[base[text_of] + np.minimum(encoded.starts, lengths[text_of])], encoded.ids,
                      IGNORE).astype(np.int32)
    firsts = (np.cumsum(encoded.counts) - encoded.counts)[encoded.counts > 0]
    labels[firsts] = IGNORE  # packed after another example, the first token would be predicted from that one
    place = np.arange(len(labels)) - (np.cumsum(encoded.counts) - encoded.counts)[text_of]
    within = place < max_length
    learned = np.bincount(text_of[within], weights=labels[within] != IGNORE, minlength=len(texts))
    return labels, learned > 0


def _compare(tokenizer: Any, encoded: Encoded, rows: list[tuple[int, int, str]]) -> None:
    """Raise PiecesDisagree unless these texts' tokens (place in the chunk, row number, text) are the tokenizer's."""
    if not rows:
        return
    firsts = (np.cumsum(encoded.counts) - encoded.counts).tolist()
    counts = encoded.counts.tolist()
    for (k, number, text), (ids, starts) in zip(rows, encode(tokenizer, [text for _, _, text in rows]), strict=True):
        got = slice(firsts[k], firsts[k] + counts[k])
        if not (np.array_equal(ids, encoded.ids[got]) and np.array_equal(starts, encoded.starts[got])):
            raise PiecesDisagree(f"row {number}: the pre-token table's tokens of {text[:60]!r}… differ from the "
                                 "tokenizer's")


def tokenize_lines(tokenizer: Any, render: Callable[..., str], lines: list[tuple[int, bytes]], name: str,
                   max_length: int, pieces: PieceCache | None = None, compare: int = 0) -> Chunk:
    """Parse and tokenize numbered JSONL lines of the file `name`; unreadable lines are listed, not tokenized."""
    rows, unreadable = [], []
    for number, line in lines:
        parsed = parse_line(line, f"{name}:{number}")
        if isinstance(parsed, Problem):
            unreadable.append(parsed)
        else:
            rows.append((number, parsed))
    chunk = tokenize_chunk(tokenizer, render, rows, max_length, pieces, compare)
    chunk.unreadable = unreadable
    return chunk


@dataclass(frozen=True)
class Block:
    """`size` lines of a file at most (blank ones too): where they start, how many bytes, the first's line number."""

    offset: int
    length: int
    first: int


def blocks(path: Path, size: int = CHUNK) -> Iterator[Block]:
    """The file as Blocks of `size` lines, found by reading it in large pieces (a worker reads its own block)."""
    start = lines = position = 0
    number = 1
    with open(path, "rb") as handle:
        while data := handle.read(1 << 22):
            at = data.find(b"\n")
            while at >= 0:
                lines += 1
                if lines == size:
                    end = position + at + 1
                    yield Block(start, end - start, number)
                    start, number, lines = end, number + size, 0
                at = data.find(b"\n", at + 1)
            position += len(data)
    if position > start:
        yield Block(start, position - start, number)


def block_lines(fd: int, block: Block) -> list[tuple[int, bytes]]:
    """The block's non-blank lines, each with its line number (1-based, blank lines counted)."""
    data = os.pread(fd, block.length, block.offset)
    return [(block.first + i, line) for i, line in enumerate(data.split(b"\n")) if line.strip()]


def piece_table(tokenizer: Any, pieces: bool | PieceCache = True) -> tuple[PieceCache | None, str]:
    """The piece table to try (`pieces`: True when the tokenizer allows one, False never, or that table), or why none."""
    if isinstance(pieces, PieceCache):
        return pieces, ""
    if not pieces:
        return None, "the pre-token table is switched off"
    why = refusal(tokenizer)
    return (None, why) if why else (PieceCache(tokenizer), "")


def _first_chunk(tokenizer: Any, render: Renderer, lines: list[tuple[int, bytes]], name: str, max_length: int,
                 table: PieceCache | None, why: str, log: Callable[[str], None]) -> tuple[Chunk, PieceCache | None]:
    """The data's first chunk, and the piece table when its every conversation gave the tokenizer's own tokens."""
    if table is not None:
        try:
            chunk = tokenize_lines(tokenizer, render, lines, name, max_length, table, compare=len(lines))
        except PiecesDisagree as err:
            why = f"the pre-token table differs from the tokenizer: {err}"
        else:
            return chunk, table
    log(f"{name}: tokenizing with the tokenizer's batched encoder: {why}")
    return tokenize_lines(tokenizer, render, lines, name, max_length), None


# ── the pool: workers are forked with the tokenizer (and the piece table) already in memory ──
_WORKER: dict[str, Any] = {}


def _work(args: tuple[Block, str, int, Path | None]) -> Chunk:
    block, name, max_length, store = args
    table = _WORKER["pieces"]
    chunk = tokenize_lines(_WORKER["tokenizer"], _WORKER["render"], block_lines(_WORKER["fd"], block), name,
                           max_length, table, compare=1 if table is not None else 0)
    if store is not None:
        chunk.store(store)
    return chunk


def workers() -> int:
    """How many processes tokenize: the cores this process may use (KAIRO_TOKENIZE_PROCS overrides)."""
    if os.environ.get("KAIRO_TOKENIZE_PROCS"):
        return max(1, int(os.environ["KAIRO_TOKENIZE_PROCS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def tokenize_file(tokenizer: Any, path: Path, max_length: int, processes: int | None = None,
                  pieces: bool | PieceCache = True, log: Callable[[str], None] | None = None,
                  store: Path | None = None) -> Iterator[Chunk]:
    """Tokenized chunks of a normalised JSONL file, in order, streamed: at most a few chunks are in memory.

    `pieces` as `piece_table` takes it; `log` hears why, when the tokenizer's own path is taken. With `store`
    (a folder), each chunk's tokens are written there by the process that made them (`Chunk.store`) and the
    chunks come without ids and labels. Raises PiecesDisagree
    when the piece table's tokens differ from the tokenizer's in a later chunk (tokenize the file again
    with pieces=False), and InvalidInput naming up to ten unreadable lines once the whole file has been
    read (as `read_conversations` does).
    """
    if processes is None:  # ≈400 bytes a row: a few hundred rows are quicker in this process
        processes = 1 if path.stat().st_size < POOL_FROM * 400 else workers()
    render = Renderer(tokenizer)
    table, why = piece_table(tokenizer, pieces)
    name = path.name
    unreadable: list[Problem] = []
    chunks = blocks(path)
    with open(path, "rb") as handle:
        fd = handle.fileno()
        block = next(chunks, None)
        if block is not None:
            chunk, table = _first_chunk(tokenizer, render, block_lines(fd, block), name, max_length, table, why,
                                        log or (lambda _: None))
            unreadable += chunk.unreadable
            if store is not None:
                chunk.store(store)
            yield chunk
        if processes <= 1:
            for block in chunks:
                chunk = tokenize_lines(tokenizer, render, block_lines(fd, block), name, max_length, table,
                                       compare=1 if table is not None else 0)
                unreadable += chunk.unreadable
                if store is not None:
                    chunk.store(store)
                yield chunk
        else:
            yield from _pooled(tokenizer, render, table, fd, chunks, name, max_length, processes, unreadable, store)
    if unreadable:
        raise InvalidInput(unreadable[:10], str(path))


def _pooled(tokenizer: Any, render: Renderer, table: PieceCache | None, fd: int, chunks: Iterator[Block],
            name: str, max_length: int, processes: int, unreadable: list[Problem],
            store: Path | None = None) -> Iterator[Chunk]:
    import multiprocessing

    _WORKER.update(tokenizer=tokenizer, render=render, pieces=table, fd=fd)
    # Forked workers must not start the Rust tokenizer's own thread pool (it deadlocks after fork): one
    # thread each, the pool being the parallelism.
    parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    context = multiprocessing.get_context("fork")
    try:
        # gc.freeze: a worker's collections skip what it inherited (the tokenizer, the template…), which they
        # would otherwise scan again and again for nothing, while each chunk makes many small objects.
        with context.Pool(processes, initializer=gc.freeze) as pool:
            pending: deque = deque()
            for block in chunks:  # a worker reads its block itself: only its place in the file is sent
                pending.append(pool.apply_async(_work, ((block, name, max_length, store),)))
                if len(pending) >= 2 * processes:  # bounded: the file is never all in memory
                    chunk = pending.popleft().get()
                    unreadable += chunk.unreadable
                    yield chunk
            while pending:
                chunk = pending.popleft().get()
                unreadable += chunk.unreadable
                yield chunk
    finally:
        _WORKER.clear()
        if parallelism is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = parallelism


def tokenize_conversations(tokenizer: Any, conversations: Iterable[list[dict[str, Any]]], max_length: int,
                           pieces: bool | PieceCache = True) -> Chunk:
    """Conversations already in memory (a few hundred: evaluate's sample, tests) as one Chunk, in this process.

    The piece table is used as in `tokenize_file`: when it gives the tokenizer's tokens on the first chunk,
    and the tokenizer's own path for all of them as soon as one compared conversation differs.
    """
    render = Renderer(tokenizer)
    rows = list(enumerate(conversations, start=1))
    table, _ = piece_table(tokenizer, pieces)
    try:
        parts = [tokenize_chunk(tokenizer, render, rows[i:i + CHUNK], max_length, table,
                                compare=CHUNK if i == 0 else 1) for i in range(0, len(rows), CHUNK)]
    except PiecesDisagree:
        parts = [tokenize_chunk(tokenizer, render, rows[i:i + CHUNK], max_length) for i in range(0, len(rows), CHUNK)]
    return merge(parts)


def merge(parts: list[Chunk]) -> Chunk:
    """Chunks as one, in order."""
    if not parts:
        return Chunk(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.int32))
    return Chunk(np.concatenate([p.ids for p in parts]), np.concatenate([p.labels for p in parts]),
                 np.concatenate([p.lengths for p in parts]), sum(p.truncated for p in parts),
                 sum(p.dropped for p in parts), next((p.first_problem for p in parts if p.first_problem), ""),
                 [u for p in parts for u in p.unreadable], parts[0].encoder, sum(p.pieces_found for p in parts),
                 sum(p.pieces_missed for p in parts))
