"""Packing: several examples share one training row, and none of them sees another.

Examples are placed into rows of at most `max_seq_length` tokens (best-fit decreasing, so rows come out
nearly full and almost nothing is padding). Each example keeps its own position ids, starting at 0; the
model (transformers' mask builder, or flash-attention's varlen kernels) reads a restart of the position ids
as the start of a new sequence and gives every example its own causal mask, so packed examples never attend
to each other. That holds only with no attention_mask and no KV cache: the batches here carry none, and
the model must run with `use_cache=False`.

Rows of a batch are padded to the longest one; the padding is its own little sequence (positions 0…k) with
labels -100, so it neither attends to real tokens nor counts in the loss.
"""

from __future__ import annotations

import bisect
import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kairo.training.chat import IGNORE, Example


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows of at most `capacity` tokens (best-fit decreasing)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens still free, row number), kept sorted
    for i in order:
        size = min(lengths[i], capacity)
        at = bisect.bisect_left(free, (size, -1))
        if at == len(free):
            rows.append([i])
            bisect.insort(free, (capacity - size, len(rows) - 1))
            continue
        room, row = free.pop(at)
        rows[row].append(i)
        bisect.insort(free, (room - size, row))
    return rows


def pack_lengths(lengths: Sequence[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """`pack`'s rows, the same ones, in time that stays linear for millions of examples.

    Rows are kept by free room (a heap of row numbers per room, a bit per room that has rows), so the
    best fit — the least room that holds the example, the lowest row number among equals — is a bit scan.
    """
    given = np.asarray(lengths, dtype=np.int64)
    sizes = np.minimum(given, capacity)
    order = np.argsort(-given, kind="stable")  # longest first, ties by index: pack's order
    rows: list[list[int]] = []
    by_room: list[list[int]] = [[] for _ in range(capacity + 1)]
    has_room = 0  # bit r set: some row has exactly r tokens free
    for i, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        fits = has_room >> size
        if not fits:
            rows.append([i])
            room = capacity - size
            heapq.heappush(by_room[room], len(rows) - 1)
            has_room |= 1 << room
            continue
        room = size + ((fits & -fits).bit_length() - 1)
        row = heapq.heappop(by_room[room])
        if not by_room[room]:
            has_room &= ~(1 << room)
        rows[row].append(i)
        left = room - size
        heapq.heappush(by_room[left], row)
        has_room |= 1 << left
    return rows


class PackedFile(torch.utils.data.Dataset):
    """Packed rows read from an Arrow file that `kairo.training.tokencache` wrote, one record batch at a time.

    Only the batch being read is in memory (the file is read, not mapped), so memory stays flat however
    large the split; `meta` holds the counts recorded when it was made.
    """

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = Path(path)
        with pa.OSFile(str(self.path)) as source:
            reader = pa.ipc.open_file(source)
            metadata = reader.schema.metadata or {}
            self.batches = reader.num_record_batches
        if b"kairo" not in metadata:
            raise ValueError(f"{self.path.name} is not a kairo token file")
        self.meta: dict[str, Any] = json.loads(metadata[b"kairo"])
        self.tokens = int(self.meta["tokens"])
        self._reader: Any = None
        self._cached: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open the file themselves
        return {**self.__dict__, "_reader": None, "_cached": None}

    def _batch(self, number: int) -> Any:
        import pyarrow as pa

        if self._cached is None or self._cached[0] != number:
            if self._reader is None:
                self._reader = pa.ipc.open_file(pa.OSFile(str(self.path)))
            self._cached = (number, self._reader.get_batch(number))
        return self._cached[1]

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        number, at = divmod(index, int(self.meta["batch_rows"]))
        batch = self._batch(number)
        lengths = batch.column(2)[at].values.to_numpy()
        return {"input_ids": batch.column(0)[at].values.to_numpy().tolist(),
                "labels": batch.column(1)[at].values.to_numpy().tolist(),
                "position_ids": [p for n in lengths.tolist() for p in range(n)]}


class PackedDataset(torch.utils.data.Dataset):
    """Packed rows of examples: input ids, labels and per-example position ids."""

    def __init__(self, examples: Sequence[Example], max_seq_length: int):
        self.examples = list(examples)
        self.rows = pack([len(e) for e in self.examples], max_seq_length)
        self.tokens = sum(len(e) for e in self.examples)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for i in self.rows[index]:
            example = self.examples[i]
            ids += example.input_ids
            labels += example.labels
            positions += range(len(example))
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


@dataclass
class PackedCollator:
    """Stack packed rows into a batch: padded to the longest row, no attention mask, `num_tokens` real tokens."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor | int]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids, labels, positions = [], [], []
        for r in rows:
            pad = width - len(r["input_ids"])
            ids.append(r["input_ids"] + [self.pad_token_id] * pad)
            labels.append(r["labels"] + [IGNORE] * pad)
            positions.append(r["position_ids"] + list(range(pad)))
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(positions),
            "num_tokens": sum(len(r["input_ids"]) for r in rows),
        }


def held_out_loss(model, dataset: PackedDataset, batch_size: int = 1) -> tuple[float, int]:
    """Mean loss per assistant token over `dataset` (every token weighs the same), and how many there were."""
    collate = PackedCollator(pad_token_id=0)
    device = next(p for p in model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
                batch.pop("num_tokens")
                batch = {k: v.to(device) for k, v in batch.items()}
                targets = int((batch["labels"][:, 1:] != IGNORE).sum())
                if targets == 0:
                    continue
                loss = model(**batch, use_cache=False).loss
                total += float(loss) * targets
                count += targets
    finally:
        model.train(was_training)
    return (total / count if count else float("nan")), count
