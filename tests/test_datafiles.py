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


# Reading within a budget: decompressed bytes and lines count as they are read (issue 26).

def test_decompressed_bytes_count_against_the_budget_not_the_file_size(tmp_path):
    from kairo.data.datafiles import ReadBudget

    path = write(tmp_path, "rows.jsonl.gz", gzip.compress(jsonl_bytes(ROWS * 200)))
    assert path.stat().st_size < 10_000
    with pytest.raises(DataFileError, match=r"larger than limits.maxDatasetBytes \(50.0 KiB\) allows once decompressed"):
        list(read_rows(path, "jsonl", 1000, ReadBudget(50 * 1024)))
    assert len(list(read_rows(path, "jsonl", 1000, ReadBudget(10 * 1024**2)))) == len(ROWS) * 200


def test_one_budget_covers_every_file_of_a_dataset(tmp_path):
    from kairo.data.datafiles import ReadBudget

    path = write(tmp_path, "rows.csv", csv_bytes(ROWS))
    budget = ReadBudget(len(csv_bytes(ROWS)) * 3 // 2)
    assert len(list(read_rows(path, "csv", 1000, budget))) == len(ROWS)
    with pytest.raises(DataFileError, match="all files together"):
        list(read_rows(path, "csv", 1000, budget))


def test_looking_at_the_columns_does_not_spend_the_budget(tmp_path):
    from kairo.data.datafiles import ReadBudget

    path = write(tmp_path, "rows.jsonl", jsonl_bytes(ROWS))
    budget = ReadBudget(len(jsonl_bytes(ROWS)) + 10)
    assert columns(path, "jsonl", 1000, budget) == ["prompt", "completion"]
    assert len(list(read_rows(path, "jsonl", 1000, budget))) == len(ROWS)


@pytest.mark.parametrize(("name", "fmt", "data"), [
    ("blank.jsonl.gz", "jsonl", b'{"prompt": "p", "completion": "c"}\n' + b"\n" * 5000),
    ("blank.csv.gz", "csv", b"prompt,completion\np,c\n" + b"\n" * 5000),
])
def test_blank_lines_count_against_the_line_limit(tmp_path, name, fmt, data):
    from kairo.data.datafiles import ReadBudget

    path = write(tmp_path, name, gzip.compress(data))
    with pytest.raises(DataFileError, match="more than 1,000 lines .*blank lines count"):
        list(read_rows(path, fmt, 1000, ReadBudget(10**9, max_lines=1000)))


def test_csv_rows_read_as_dict_reader_reads_them(tmp_path):
    path = write(tmp_path, "r.csv", b"a,b,c\n1,2\n\n3,4,5,6\n")
    assert list(read_rows(path, "csv", 1000)) == [{"a": "1", "b": "2", "c": None}, {"a": "3", "b": "4", "c": "5"}]


def test_a_json_array_row_longer_than_the_limit_is_stopped_before_it_is_whole(tmp_path):
    rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "x" * 500_000, "completion": "long"}]
    path = write(tmp_path, "rows.json", json.dumps(rows, indent=1).encode())
    reading = read_rows(path, "json", 10_000)
    assert next(reading) == rows[0]
    with pytest.raises(RowTooLong) as caught:
        next(reading)
    assert caught.value.line == 6


@pytest.mark.parametrize("text", [
    '[{"prompt": "a", "completion": "b"}, 12345678901234567890, "x", null, true]',
    '  \n[ ]\n',
    '{"version": 2, "data": [{"prompt": "a", "completion": "b"}], "notes": ["n"]}',
    '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "id": 7}',
    '{"messages": []}',
    '{}',
])
def test_json_streamed_reads_as_json_load_read_it(tmp_path, text):
    path = write(tmp_path, "rows.json", text.encode())
    data = json.loads(text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)
                 and not any("role" in i for i in v)]
        data = lists[0] if lists else [data]
    # Chunks of 64 KiB: also a row that straddles a chunk's end.
    assert list(read_rows(path, "json", 100_000)) == data


def test_json_rows_straddling_chunks_are_whole(tmp_path):
    rows = [{"prompt": f"p{i}" * (i % 97), "completion": 1.5 * i} for i in range(5000)]
    path = write(tmp_path, "rows.json", json.dumps(rows).encode())
    assert list(read_rows(path, "json", 100_000)) == rows


@pytest.mark.parametrize(("text", "message"), [
    ('[{"a": 1} {"b": 2}]', "expected ',' or ']' at line 1"),
    ('[{"a": 1}] trailing', "more after the end of the document"),
    ('[{"a": 1}, ', "Expecting value"),
    ('{"data": [{"a": 1}], "more": [{"b": 2}]}', r"several lists of rows \(data, more\)"),
    ('"just text"', "JSON holding a str"),
    ('', "not valid JSON: the file is empty"),
])
def test_json_that_is_not_rows_says_what_and_where(tmp_path, text, message):
    path = write(tmp_path, "rows.json", text.encode())
    with pytest.raises(DataFileError, match=message):
        list(read_rows(path, "json", 1000))


def test_parquet_row_groups_count_uncompressed_against_the_budget(tmp_path):
    from kairo.data.datafiles import ReadBudget

    path = write(tmp_path, "rows.parquet", parquet_bytes([{"prompt": f"{i}" + "p" * 1000, "completion": "c"} for i in range(100)]))
    assert path.stat().st_size < 20_000
    with pytest.raises(DataFileError, match="limits.maxDatasetBytes"):
        list(read_rows(path, "parquet", 10_000, ReadBudget(50_000)))


def test_a_parquet_cell_too_long_is_told_from_the_metadata(tmp_path):
    path = write(tmp_path, "rows.parquet", parquet_bytes([{"prompt": "p", "completion": "c" * 200_000}]))
    with pytest.raises(RowTooLong, match=r"row 1 \(column 'completion', row group 1: .* read from the file's metadata"):
        list(read_rows(path, "parquet", 10_000))


def big_cell_among_small(tmp_path, **write_options):
    import pyarrow.parquet as pq

    texts = [f"row {n} " + "x" * 100 for n in range(3000)]
    texts[2000] = "y" * (2 << 20)  # one 2 MiB cell: the column's average (800 bytes) hides it
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"prompt": texts, "completion": ["c"] * 3000}), path, use_dictionary=False,
                   **write_options)
    return path


def test_a_huge_cell_among_small_ones_is_told_from_its_page_header(tmp_path):
    path = big_cell_among_small(tmp_path, data_page_size=1024, write_batch_size=16)
    with pytest.raises(RowTooLong, match=r"a row in page \d+ \(column 'prompt', row group 1: .* read from the page header"):
        list(read_rows(path, "parquet", 100_000))


def test_a_page_too_large_to_read_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from kairo.data import datafiles

    monkeypatch.setattr(datafiles, "_MAX_PAGE_BYTES", 1 << 20)  # 256 MiB in earnest; a page of 2 MiB here
    path = big_cell_among_small(tmp_path)
    with pytest.raises(DataFileError, match=r"page \d+ of column 'prompt', row group 1 is 2.\d MiB uncompressed — too "
                                            "large to read"):
        list(read_rows(path, "parquet", 100_000))
    assert len(list(read_rows(path, "parquet", 10_000_000))) == 3000  # a cell limit above the page: read


def test_arrow_batches_count_against_the_budget(tmp_path):
    from kairo.data.datafiles import ReadBudget

    table = pa.table({"prompt": [f"{n}" + "p" * 1000 for n in range(200)], "completion": ["c"] * 200})
    path = tmp_path / "rows.arrow"
    with ipc.new_file(path, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    assert path.stat().st_size < 20_000
    with pytest.raises(DataFileError, match="limits.maxDatasetBytes"):
        list(read_rows(path, "arrow", 10_000, ReadBudget(100_000)))
