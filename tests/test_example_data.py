"""The shipped example dataset is what kairo.data.sample_data writes, and download reads it without a dropped row."""

from __future__ import annotations

import json
import os

from kairo.data.sample_data import example_files
from kairo.step import main as kairo_step


def test_example_files_are_current(examples):
    folder = examples / "data"
    if os.environ.get("KAIRO_REGENERATE") == "1":
        for name, text in example_files().items():
            (folder / name).write_text(text, encoding="utf-8")
    expected = example_files()
    assert len(expected) == 2
    for name, text in expected.items():
        assert (folder / name).read_text(encoding="utf-8") == text, f"{name} is stale: KAIRO_REGENERATE=1"


def test_the_quickstart_question_is_in_the_data(examples):
    rows = [json.loads(line) for line in (examples / "data" / "instructions.jsonl").read_text().splitlines()]
    assert {"messages": [{"role": "user", "content": "What is the capital of France?"},
                         {"role": "assistant", "content": "The capital of France is Paris."}]} in rows
    assert len(rows) >= 200
    assert len({r["messages"][0]["content"] for r in rows}) == len(rows)  # no question twice, no contradictions


def test_download_reads_the_example_folder_cleanly(examples, tmp_path, monkeypatch):
    monkeypatch.delenv("KAIRO_CLUSTER_CONFIG", raising=False)
    out = tmp_path / "outputs"
    code = kairo_step(["download", "--volume-path", str(examples / "data"), "--workdir", str(tmp_path / "work"),
                       "--outputs", str(out)])
    assert code == 0
    assert (out / "rows").read_text() == "284" and (out / "dropped").read_text() == "0"
    summary = json.loads((tmp_path / "work" / "data" / "dataset.json").read_text())
    assert summary["shape"] == "alpaca+messages"
