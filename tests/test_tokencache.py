"""Tokenized, packed splits are made once and reused: the same rows as in memory, the log says so, time is saved."""

from __future__ import annotations

import json
import random
import time

import pytest

from kairo.steps import evaluate, train
from kairo.training import tinymodel
from kairo.training.chat import tokenize_dataset
from kairo.training.packing import PackedDataset, PackedFile, pack, pack_lengths
from kairo.training.tokencache import packed_split
from tests.fixtures.adapter import capital_rows, make_workdir
from tests.test_tokenize import conversations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fast_packer_makes_the_same_rows(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 40), rng.randint(100, 512), 512, 700]) for _ in range(3000)]
    assert pack_lengths(lengths, 512) == pack(lengths, 512)  # pack (best-fit decreasing) defines the rows


@pytest.fixture(scope="module")
def tokenizer():
    return tinymodel.build_tokenizer()


def write_split(path, rows):
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    return path


def test_a_packed_file_holds_the_rows_packed_in_memory(tmp_path, tokenizer):
    rows = conversations() * 3
    split = write_split(tmp_path / "train.jsonl", rows)
    packed = packed_split(split, tokenizer, 160, tmp_path / "cache", log=lambda line: None, processes=2)
    in_memory = tokenize_dataset(tokenizer, rows, 160)
    expected = PackedDataset(in_memory.examples, 160)
    assert len(packed) == len(expected) > 64  # more than one record batch
    assert [packed[i] for i in range(len(packed))] == [expected[i] for i in range(len(expected))]
    assert (packed.meta["examples"], packed.meta["truncated"], packed.meta["dropped"], packed.meta["first_problem"]) \
        == (len(in_memory.examples), in_memory.truncated, in_memory.dropped, in_memory.first_problem)
    assert packed.tokens == expected.tokens
    assert not [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no scratch left


def batches(packed):
    import pyarrow as pa

    with pa.OSFile(str(packed.path)) as source:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]


@pytest.mark.parametrize("pieces", [True, False])
def test_the_packed_file_is_the_same_whatever_the_processes_and_the_order_chunks_finish_in(tmp_path, tokenizer,
                                                                                          pieces):
    rng = random.Random(3)
    rows = [rng.choice(conversations()) for _ in range(1100)]  # five chunks, shuffled so each differs
    rows = [[{**m, "content": m["content"] + " " + "word " * rng.randint(0, 30)} for m in r] for r in rows]
    split = write_split(tmp_path / "train.jsonl", rows)
    made = {n: packed_split(split, tokenizer, 256, tmp_path / f"cache{n}", log=lambda line: None, processes=n,
                            pieces=pieces) for n in (1, 2, 3)}
    one = batches(made[1])
    assert len(one) > 1
    for n in (2, 3):
        assert batches(made[n]) == one  # every row, label and batch boundary, whichever worker wrote what
    skip = {"seconds", "tokenize_seconds", "pieces_found", "pieces_missed"}
    assert {k: v for k, v in made[2].meta.items() if k not in skip} == {
        k: v for k, v in made[1].meta.items() if k not in skip}
    expected = PackedDataset(tokenize_dataset(tokenizer, rows, 256).examples, 256)
    assert [made[2][i] for i in range(len(made[2]))] == [expected[i] for i in range(len(expected))]
    assert made[2].meta["trained_tokens"] == sum(sum(x != -100 for x in expected[i]["labels"])
                                                 for i in range(len(expected)))
    assert not [p.name for n in (1, 2, 3) for p in (tmp_path / f"cache{n}").iterdir() if p.name.startswith(".")]


def test_the_same_inputs_reuse_the_file_and_any_change_makes_another(tmp_path, tokenizer):
    split = write_split(tmp_path / "train.jsonl", conversations())
    lines: list[str] = []
    first = packed_split(split, tokenizer, 160, tmp_path / "cache", log=lines.append)
    again = packed_split(split, tokenizer, 160, tmp_path / "cache", log=lines.append)
    assert again.path == first.path and "conversations tokenized in" in lines[0] and "reused" in lines[1]
    assert packed_split(split, tokenizer, 128, tmp_path / "cache", log=lines.append).path != first.path
    tokenizer.chat_template = tinymodel.CHAT_TEMPLATE.replace("<|assistant|>", "<|assistant|> ")
    assert packed_split(split, tokenizer, 160, tmp_path / "cache", log=lines.append).path != first.path
    tokenizer.chat_template = tinymodel.CHAT_TEMPLATE
    with open(split, "a") as handle:
        handle.write(json.dumps({"messages": conversations()[0]}) + "\n")
    assert packed_split(split, tokenizer, 160, tmp_path / "cache", log=lines.append).path != first.path
    assert sum("reused" in line for line in lines) == 1


def test_a_damaged_cache_file_is_made_again(tmp_path, tokenizer):
    split = write_split(tmp_path / "train.jsonl", conversations())
    made = packed_split(split, tokenizer, 160, tmp_path / "cache", log=lambda line: None)
    made.path.write_bytes(made.path.read_bytes()[:100])
    lines: list[str] = []
    again = packed_split(split, tokenizer, 160, tmp_path / "cache", log=lines.append)
    assert "cannot be read" in lines[0] and len(PackedFile(again.path)) == len(made)


ONE_STEP = """\
training_config:
  TrainingArguments: {max_steps: 1, per_device_train_batch_size: 2}
  TokenizerParams: {max_length: 128}
"""


def test_a_second_train_run_reuses_the_tokens_says_so_and_saves_the_time(tmp_path, tiny_model_dir, capsys):
    work = make_workdir(tmp_path, tiny_model_dir, capital_rows() * 200, capital_rows())
    config = work / "training_config.yaml"
    config.write_text(ONE_STEP)
    argv = ["--preset", "tiny-llama-test", "--method", "lora", "--workdir", str(work), "--config", str(config),
            "--outputs", str(work / "outputs"), "--device", "cpu", "--resume", "never"]
    assert train.main(argv) == 0
    first = capsys.readouterr().err
    assert "train.jsonl: " in first and "conversations tokenized in" in first and "reused" not in first
    assert train.main(argv) == 0
    second = capsys.readouterr().err
    assert "train.jsonl: tokenized rows reused from tokenized/train-" in second
    assert "eval.jsonl: tokenized rows reused from tokenized/eval-" in second
    # evaluate measures the new adapter on the very tokens train measured its eval loss on
    assert evaluate.main(["--preset", "tiny-llama-test", "--method", "lora", "--workdir", str(work), "--config",
                          str(config), "--outputs", str(work / "outputs"), "--device", "cpu"]) == 0
    assert "eval.jsonl: tokenized rows reused from tokenized/eval-" in capsys.readouterr().err
    report = json.loads((work / "outputs" / "eval.json").read_text())
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    assert report["conversations"] == 14 and report["new"]["loss"] == pytest.approx(metrics["eval_loss"], rel=1e-4)

    def data_seconds() -> float:
        run = train.read_config(train.make_parser().parse_args(argv))
        started = time.monotonic()
        train.load_data(run)
        return time.monotonic() - started

    reused = data_seconds()
    for path in (work / "cache" / "tokenized").iterdir():
        path.unlink()
    made = data_seconds()
    assert reused < made / 2, (reused, made)


def test_without_preadv_the_rows_are_read_the_same(tmp_path, tokenizer, monkeypatch):
    from kairo.training import tokencache

    split = write_split(tmp_path / "train.jsonl", conversations() * 3)
    with_preadv = batches(packed_split(split, tokenizer, 160, tmp_path / "a", log=lambda line: None, processes=1))
    monkeypatch.setattr(tokencache, "_preadv", tokencache._pread_into)  # as on an OS without os.preadv
    assert batches(packed_split(split, tokenizer, 160, tmp_path / "b", log=lambda line: None, processes=1)) \
        == with_preadv
