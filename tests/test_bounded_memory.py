"""Hostile inputs cost bounded memory and time: each case runs as a program under an address-space cap.

The cases of issue 26 that took gigabytes from a few kilobytes — a gzip bomb, blank lines, a JSON array read
whole, a parquet cell that compresses to nothing, a layer of countless empty files, a YAML alias bomb — each run
under `prlimit --as` (tests/fixtures/bounded.py). Limits are set low in the cluster config so that every case
stays a few seconds; the code paths are those of the defaults.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.fixtures.bounded import MIB, run_bounded
from tests.test_workspace_files import ALIAS_BOMB

ROW = {"question": "What is two plus two?", "answer": "Four. " * 150}


def download(tmp_path: Path, url: str, cluster: dict, **caps) -> object:
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster))
    argv = ["-m", "kairo.step", "download", "--url", url, "--local", "--workdir", str(tmp_path / "work"),
            "--outputs", str(tmp_path / "out"), "--cluster-config", str(config), "--retries", "0", "--timeout", "10"]
    return run_bounded(argv, **caps)


@pytest.fixture(scope="module")
def json_bomb() -> bytes:
    """A JSON array of 64 MiB in a gzip of about a quarter MiB."""
    row = json.dumps(ROW).encode()
    count = 64 * MIB // (len(row) + 1)
    return gzip.compress(b"[" + b",".join([row] * count) + b"]", compresslevel=6, mtime=0)


def test_a_gzip_that_inflates_past_the_limit_stops_at_the_limit(http, tmp_path, json_bomb):
    url = http.serve("train.json.gz", json_bomb)
    got = download(tmp_path, url, {"limits": {"maxDatasetBytes": 16 * MIB}}, seconds=60)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "larger than limits.maxDatasetBytes (16.0 MiB) allows once decompressed" in got.stderr
    assert len(json_bomb) < MIB and got.peak_rss < 200 * MIB


def test_gzipped_blank_lines_count_against_the_line_limit(http, tmp_path):
    blank = gzip.compress(json.dumps(ROW).encode() + b"\n" * (64 * MIB), compresslevel=6, mtime=0)
    url = http.serve("train.jsonl.gz", blank)
    got = download(tmp_path, url, {"limits": {"maxRows": 100_000}}, seconds=30)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "more than 201,000 lines (twice limits.maxRows; blank lines count)" in got.stderr and got.peak_rss < 200 * MIB


def test_a_large_json_array_is_read_a_row_at_a_time(tmp_path):
    path = tmp_path / "rows.json"
    row = json.dumps({"q": "a", "a": "b"})
    path.write_text("[" + ",".join([row] * 1_000_000) + "]")  # 21 MB of text; json.load needs over 200 MiB here
    script = ("import sys; from pathlib import Path; from kairo.data.datafiles import read_rows; "
              "print(sum(1 for _ in read_rows(Path(sys.argv[1]), 'json', 10_000)))")
    got = run_bounded(["-c", script, str(path)], memory=160 * MIB, seconds=60)
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.split() == ["1000000"] and got.peak_rss < 100 * MIB


def test_a_parquet_cell_of_many_megabytes_is_refused_from_the_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    size = 32 * MIB  # 32 times the default limits.maxRowChars; the was 1 GiB in a 33 KB file
    cell = pa.StringArray.from_buffers(1, pa.py_buffer(struct.pack("<ii", 0, size)), pa.py_buffer(b"a" * size))
    pq.write_table(pa.table({"question": ["q"], "answer": cell}), path, compression="zstd", use_dictionary=False)
    assert path.stat().st_size < MIB
    got = run_bounded(["-m", "kairo.step", "download", "--volume-path", str(tmp_path), "--workdir",
                       str(tmp_path / "work"), "--outputs", str(tmp_path / "out")], seconds=60)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "row 1 (column 'answer', row group 1: 32.0 MiB for 1 row, read from the file's metadata)" in got.stderr
    assert got.peak_rss < 250 * MIB


def empty_files_layer(count: int) -> bytes:
    """A tar+gzip layer of `count` empty files under data/ (written header by header: fast to make)."""
    raw = io.BytesIO()
    for number in range(count):
        info = tarfile.TarInfo(f"data/{number}")
        raw.write(info.tobuf(tarfile.USTAR_FORMAT))
    raw.write(b"\0" * 1024)
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def test_a_layer_of_countless_empty_files_stops_at_the_entry_limit(tmp_path):
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(empty_files_layer(30_000))  # the was 200,000 (1.8 MB); the limit is set lower here
    script = ("import sys; from kairo.oci.layers import extract\n"
              "try:\n    extract([sys.argv[1]], sys.argv[2], max_entries=20_000)\n"
              "except ValueError as err:\n    print(err); sys.exit(2)")
    got = run_bounded(["-c", script, str(layer), str(tmp_path / "out")], memory=512 * MIB, seconds=60)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "more than 20,000 entries in the image's layers" in got.stdout
    assert not (tmp_path / "out").exists() and got.peak_rss < 200 * MIB


def test_validate_refuses_a_yaml_alias_bomb_in_bounded_memory(examples, tmp_path):
    path = tmp_path / "bomb.yaml"
    text = (examples / "tuning-phi-3.yaml").read_text().replace(
        "metadata:\n  name: workspace-tuning-phi-3", "metadata:\n  name: workspace-tuning-phi-3\n  annotations:\n"
        "    bomb: x\nx-bomb:\n  " + ALIAS_BOMB.replace("\n", "\n  "), 1)
    path.write_text(text)
    got = run_bounded(["-m", "kairo.cli", "validate", str(path)], memory=512 * MIB, seconds=30)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "YAML aliases (*name) are expanded" in got.stderr and got.peak_rss < 200 * MIB


READ_ROWS = ("import sys; from pathlib import Path; from kairo.data.datafiles import read_rows, DataFileError\n"
             "try:\n    print(sum(1 for _ in read_rows(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))\n"
             "except DataFileError as err:\n    print(err); sys.exit(2)")


def test_a_large_parquet_row_group_is_read_a_bounded_batch_at_a_time(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    texts = pa.array([f"{n:08d}" + "x" * 1000 for n in range(50_000)])
    pq.write_table(pa.table({"prompt": texts, "completion": texts}), path, row_group_size=50_000, compression="zstd")
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size > 90 * MIB  # read whole: over 250 MiB
    got = run_bounded(["-c", READ_ROWS, str(path), "parquet", "10000"], seconds=60)
    assert got.returncode == 0 and got.stdout.split() == ["50000"], got.stderr[-3000:]
    assert got.peak_rss < 180 * MIB


def test_a_parquet_row_too_large_for_the_memory_says_row_group_too_large(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    size = 48 * MIB
    cell = pa.StringArray.from_buffers(1, pa.py_buffer(struct.pack("<ii", 0, size)), pa.py_buffer(b"x" * size))
    pq.write_table(pa.table({"prompt": cell, "completion": cell}), path, compression="zstd", use_dictionary=False)
    # A row limit far above the row, so that only the memory stops it: Python and pyarrow take about 330 MiB of
    # address space here, reading the row about 900 more.
    got = run_bounded(["-c", READ_ROWS, str(path), "parquet", str(1 << 30)], memory=600 * MIB, seconds=60)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "row group 1 too large to read in the memory there is (96.0 MiB uncompressed, 1 row)" in got.stdout


def test_an_alias_bomb_in_a_training_config_is_refused_in_bounded_memory(examples, tmp_path):
    config = tmp_path / "training_config.yaml"
    config.write_text("bomb:\n  " + ALIAS_BOMB.replace("\n", "\n  ") +
                      "\ntraining_config:\n  TrainingArguments:\n    report_to: *a9\n")
    got = run_bounded(["-m", "kairo.cli", "validate", str(examples / "tuning-phi-3.yaml"), "--config", str(config)],
                      memory=512 * MIB, seconds=30)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "YAML aliases (*name) are expanded" in got.stderr and got.peak_rss < 200 * MIB


def test_an_alias_bomb_inside_a_configmaps_training_config_text_is_refused(examples, tmp_path):
    inner = ("bomb:\n  " + ALIAS_BOMB.replace("\n", "\n  ") +
             "\ntraining_config:\n  TrainingArguments:\n    report_to: *a9\n")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bomb-config"},
                 "data": {"training_config.yaml": inner}}
    text = (examples / "tuning-phi-3.yaml").read_text().replace("tuning:\n", "tuning:\n  config: bomb-config\n", 1)
    path = tmp_path / "w.yaml"
    path.write_text(text + "\n---\n" + yaml.safe_dump(configmap))
    got = run_bounded(["-m", "kairo.cli", "validate", str(path)], memory=512 * MIB, seconds=30)
    assert got.returncode == 2, got.stderr[-3000:]
    assert "ConfigMap 'bomb-config'" in got.stderr and "YAML aliases (*name) are expanded" in got.stderr
