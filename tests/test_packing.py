"""Packing: rows come out nearly full, every example once, and packed examples never see each other."""

from __future__ import annotations

import random

import pytest
import torch

from kairo.training.chat import IGNORE, Example
from kairo.training.packing import PackedCollator, PackedDataset, held_out_loss, pack


def example(ids: list[int], prompt: int = 1) -> Example:
    return Example(ids, [IGNORE] * prompt + ids[prompt:])


def test_rows_hold_every_example_once_and_never_exceed_the_length():
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(300)] + [rng.randint(200, 500) for _ in range(20)]
    rows = pack(lengths, 512)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 512 for row in rows)
    assert len(rows) == -(-sum(lengths) // 512)  # as few rows as the tokens allow


def test_an_example_longer_than_a_row_gets_a_row_of_its_own():
    assert pack([10, 700, 5], 512) == [[1], [0, 2]]


def test_each_packed_example_starts_its_own_positions():
    data = PackedDataset([example([1, 5, 6]), example([1, 7]), example([1, 8, 9, 10])], max_seq_length=16)
    row = data[0]
    assert len(data) == 1
    assert sorted(row["input_ids"]) == sorted([1, 5, 6, 1, 7, 1, 8, 9, 10])
    assert row["position_ids"].count(0) == 3
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    assert all(row["labels"][s] == IGNORE for s in starts)  # no example is asked to predict another's start


def test_padding_is_its_own_sequence_outside_the_loss():
    collate = PackedCollator(pad_token_id=0, pad_to_multiple_of=8)
    batch = collate([{"input_ids": [1, 2, 3], "labels": [IGNORE, 2, 3], "position_ids": [0, 1, 2]},
                     {"input_ids": [1, 4], "labels": [IGNORE, 4], "position_ids": [0, 1]}])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"][1].tolist() == [0, 1, 0, 1, 2, 3, 4, 5]
    assert batch["labels"][1, 2:].eq(IGNORE).all()
    assert batch["num_tokens"] == 5
    assert "attention_mask" not in batch  # a mask would turn off the per-example attention


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    model.config.use_cache = False  # as kairo.training.base_model loads it for training
    return model


def logits(model, batch) -> torch.Tensor:
    batch = {k: v for k, v in batch.items() if k != "num_tokens"}
    with torch.no_grad():
        return model(**batch).logits


def test_packed_examples_do_not_attend_to_each_other(tiny_model):
    first, second = example([1, 40, 41, 42, 43, 44, 45]), example([1, 50, 51, 52, 53])
    collate = PackedCollator(pad_token_id=0)
    alone = logits(tiny_model, collate([PackedDataset([second], 64)[0]]))[0]
    packed_data = PackedDataset([first, second], 64)
    packed = logits(tiny_model, collate([packed_data[0]]))[0]
    order = packed_data.rows[0]
    offset = sum(len(packed_data.examples[i]) for i in order[: order.index(1)])
    torch.testing.assert_close(packed[offset: offset + len(second)], alone, atol=1e-5, rtol=1e-4)


def test_a_row_padded_in_a_batch_gives_the_same_logits_as_alone(tiny_model):
    short, long = example([1, 60, 61]), example([1, 70, 71, 72, 73, 74, 75, 76])
    collate = PackedCollator(pad_token_id=0)
    alone = logits(tiny_model, collate([{"input_ids": short.input_ids, "labels": short.labels,
                                         "position_ids": list(range(len(short)))}]))[0]
    batch = collate([{"input_ids": long.input_ids, "labels": long.labels, "position_ids": list(range(len(long)))},
                     {"input_ids": short.input_ids, "labels": short.labels, "position_ids": list(range(len(short)))}])
    torch.testing.assert_close(logits(tiny_model, batch)[1, : len(short)], alone, atol=1e-5, rtol=1e-4)


def test_with_a_kv_cache_the_examples_would_leak_into_each_other(tiny_model):
    first, second = [1, 40, 41, 42, 43], [1, 50, 51, 52]
    ids = torch.tensor([first + second])
    positions = torch.tensor([list(range(len(first))) + list(range(len(second)))])
    with torch.no_grad():
        alone = tiny_model(input_ids=torch.tensor([second]), use_cache=True).logits[0]
        leaked = tiny_model(input_ids=ids, position_ids=positions, use_cache=True).logits[0, len(first):]
    assert not torch.allclose(leaked, alone, atol=1e-3)  # why training runs with use_cache=False


def test_held_out_loss_weighs_every_assistant_token_the_same(tiny_model):
    examples = [example([1, 30, 31, 32, 33, 34, 35], prompt=3), example([1, 36, 37], prompt=1)]
    loss, count = held_out_loss(tiny_model, PackedDataset(examples, 64))
    total = 0.0
    for e in examples:
        with torch.no_grad():
            out = tiny_model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels]))
        total += float(out.loss) * sum(1 for t in e.labels[1:] if t != IGNORE)
    assert count == 4 + 2
    assert loss == pytest.approx(total / count, rel=1e-5)
