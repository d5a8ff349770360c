"""Dataset files are recognised by their content first, then their name, and read row by row."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from kairo.data.datafiles import DataFileError, InvalidLine, RowTooLong, columns, detect_format, read_rows
from tests.fixtures.http import csv_bytes, json_bytes, jsonl_bytes, parquet_bytes

ROWS = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(50)]


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (parquet_bytes(ROWS), "parquet"),
        (jsonl_bytes(ROWS), "jsonl"),
        (json_bytes(ROWS), "json"),
        (json.dumps({"data": ROWS}, indent=2).encode(), "json"),
        (gzip.compress(jsonl_bytes(ROWS)), "jsonl"),
    ],
)
def test_the_content_tells_the_format_whatever_the_name(tmp_path, data, fmt):
    assert detect_format(write(tmp_path, "download", data)) == fmt


def test_csv_is_known_by_its_name_even_in_a_url_with_a_query(tmp_path):
    path = write(tmp_path, "raw", csv_bytes(ROWS))
    assert detect_format(path, "https://example.com/train.csv") == "csv"
    assert detect_format(write(tmp_path, "x.csv.gz", gzip.compress(csv_bytes(ROWS)))) == "csv"


def test_an_unknown_format_says_what_is_accepted(tmp_path):
    with pytest.raises(DataFileError, match="cannot tell the format.*parquet, arrow, jsonl, json, csv"):
        detect_format(write(tmp_path, "blob", b"\x00\x01binary"))


def test_parquet_is_read_one_row_group_at_a_time(tmp_path):
    path = write(tmp_path, "a.parquet", parquet_bytes(ROWS, row_group_size=8))
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == 7
    assert list(read_rows(path, "parquet", 1000)) == ROWS
    assert columns(path, "parquet") == ["prompt", "completion"]


def test_arrow_files_and_streams_as_datasets_saves_them(tmp_path):
    table = pa.Table.from_pylist(ROWS)
    for name, opener in (("file.arrow", ipc.new_file), ("stream.arrow", ipc.new_stream)):
        with pa.OSFile(str(tmp_path / name), "wb") as sink, opener(sink, table.schema) as writer:
            writer.write_table(table)
        path = tmp_path / name
        assert detect_format(path) == "arrow"
        assert list(read_rows(path, "arrow", 1000)) == ROWS


def test_a_json_object_wrapping_one_list_of_rows(tmp_path):
    path = write(tmp_path, "a.json", json.dumps({"version": 1, "data": ROWS}).encode())
    assert list(read_rows(path, "json", 1000)) == ROWS


def test_json_that_is_not_rows_is_explained(tmp_path):
    path = write(tmp_path, "a.json", b'"just a string"')
    with pytest.raises(DataFileError, match="expected a list of rows"):
        list(read_rows(path, "json", 1000))


def test_a_broken_json_line_is_marked_not_fatal(tmp_path):
    path = write(tmp_path, "a.jsonl", b'{"prompt": "a", "completion": "b"}\n{oops\n\n{"prompt": "c", "completion": "d"}\n')
    rows = list(read_rows(path, "jsonl", 1000))
    assert isinstance(rows[1], InvalidLine) and rows[1].line == 2
    assert rows[2] == {"prompt": "c", "completion": "d"}


def test_a_line_too_long_is_stopped_without_reading_it_whole(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl_bytes(ROWS[:2]) + b'{"text": "' + b"x" * 10_000 + b'"}\n')
    with pytest.raises(RowTooLong) as caught:
        list(read_rows(path, "jsonl", 1000))
    assert caught.value.line == 3


def test_a_csv_field_too_long_is_stopped(tmp_path):
    path = write(tmp_path, "a.csv", csv_bytes([{"text": "short"}, {"text": "y" * 5000}]))
    with pytest.raises(RowTooLong):
        list(read_rows(path, "csv", 1000))


def test_csv_from_a_spreadsheet_with_a_byte_order_mark(tmp_path):
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbfquestion,answer\r\nWhy?,Because.\r\n")
    assert columns(path, "csv") == ["question", "answer"]
    assert list(read_rows(path, "csv", 1000)) == [{"question": "Why?", "answer": "Because."}]


def test_json_lines_columns_come_from_the_first_rows_together(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl_bytes([{"instruction": "a", "output": "b"},
                                                   {"instruction": "c", "input": "d", "output": "e"}]))
    assert columns(path, "jsonl") == ["instruction", "output", "input"]


def test_dataset_extension_json_accepts_json_lines(tmp_path):
    path = write(tmp_path, "data", jsonl_bytes(ROWS))
    assert detect_format(path, forced="json") == "jsonl"
    with pytest.raises(DataFileError, match="dataset_extension is 'parquet' but the file looks like jsonl"):
        detect_format(path, forced="parquet")
