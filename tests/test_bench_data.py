"""bench/data.py at a toy size: every phase runs (download, tokenize + pack + read back + reuse, the baselines)
and the figures come out, the ratio last — so the long runs cannot fail on a typo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_data_bench_runs_every_phase_and_prints_the_ratio_last(tmp_path):
    figures = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "data.py"), "--sizes", "400", "--baseline-rows", "50",
                           "--keep", str(tmp_path / "work"), "--json", str(figures)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert "vs plain per-example apply_chat_template loop" in lines[-1] and lines[-1].endswith("×")
    result = json.loads(figures.read_text())
    (run,) = result["runs"]
    assert run["download"]["exit"] == 0 and run["download"]["rows"] == 400
    assert run["tokenize"]["rows"] == run["download"]["train_rows"]
    assert run["tokenize"]["peak_rss_mib"] > 0 and run["tokenize"]["reuse_seconds"] < run["tokenize"]["seconds"]


def test_the_data_bench_draws_a_long_tailed_vocabulary_when_asked(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "data.py"), "--sizes", "300", "--baseline-rows", "20",
                           "--vocabulary", "5000", "--keep", str(tmp_path / "work")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "a Zipf vocabulary of 5,000 words" in proc.stdout and "pre-token table, " in proc.stdout
    assert (tmp_path / "work" / "source-300-x1-v5000" / "chat.parquet").is_file()
