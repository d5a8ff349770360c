"""Read dataset files row by row: parquet, JSON Lines, JSON, CSV and Arrow, plain or gzip-compressed.

The format is told by the file's first bytes, then by its name (URLs such as `…/train.parquet?download=true`
keep their name in the path), or forced by Kaito's `DatasetConfig.dataset_extension`. Rows come out as
dicts, one at a time: parquet and Arrow a record batch at a time, text formats a line at a time, so a
large file never sits in memory whole (a JSON array file is the exception: JSON has no streaming reader here).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

FORMATS = ("parquet", "arrow", "jsonl", "json", "csv")
DATA_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
}
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_GZIP_MAGIC = b"\x1f\x8b"
_BATCH_ROWS = 1024


class DataFileError(Exception):
    """A file that cannot be read as a dataset; the message names the file and what was found."""


def format_from_name(name: str) -> str | None:
    """The format a file name (or URL path) suggests: `train.jsonl.gz` → jsonl; None when it says nothing."""
    lowered = name.lower()
    if lowered.endswith(".gz"):
        lowered = lowered[:-3]
    for suffix, fmt in DATA_SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    return None


def is_data_file(path: Path) -> bool:
    """Whether a file in a folder (a volume, an image's /data) is part of the dataset."""
    return not path.name.startswith(".") and format_from_name(path.name) is not None


def detect_format(path: Path, name_hint: str = "", forced: str | None = None) -> str:
    """The format of `path`: content first (magic bytes, first characters), then the name, then `forced`.

    `forced` is Kaito's dataset_extension: 'json' there means JSON or JSON Lines (as for Hugging Face's
    json loader), so the content still decides between those two.
    """
    head = _head(path)
    by_content = _format_from_content(head, path)
    by_name = format_from_name(name_hint or path.name)
    if forced:
        family = ("json", "jsonl") if forced in ("json", "jsonl") else (forced,)
        if by_content and by_content not in family:
            raise DataFileError(
                f"{name_hint or path.name}: DatasetConfig.dataset_extension is '{forced}' but the file looks like "
                f"{by_content} — remove dataset_extension or point it at the right files"
            )
        return by_content or forced
    if by_content:
        return by_content
    if by_name:
        return by_name
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"  # a first line longer than we peeked at: one object per line is the likely case
    shown = head[:16]
    raise DataFileError(
        f"{name_hint or path.name}: cannot tell the format (first bytes {shown!r}) — accepted: "
        f"{', '.join(FORMATS)} (optionally .gz); name the file with its extension or set "
        "DatasetConfig.dataset_extension"
    )


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(size)
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as handle:
                return handle.read(size)
        except (OSError, EOFError) as err:
            raise DataFileError(f"{path.name}: a broken gzip file ({err})") from err
    return head


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _format_from_content(head: bytes, path: Path) -> str | None:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC) or head.startswith(_ARROW_STREAM_MAGIC):
        return "arrow"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first_line = text.split(b"\n", 1)[0].strip()
        try:
            json.loads(first_line)
            return "jsonl"  # the first line is a whole object: one object per line
        except ValueError:
            # An object spread over lines is plain JSON; a first line longer than the head could be either.
            return "json" if b"\n" in text else None
    return None


def columns(path: Path, fmt: str, max_line_chars: int = 1 << 24) -> list[str]:
    """The column names of a file, read from its schema or header or first row, without reading it all."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    if fmt == "arrow":
        return list(_arrow_reader(path).schema.names)
    if fmt == "csv":
        with _open_text(path) as handle:
            header = next(csv.reader(handle), [])
        return [name.strip() for name in header]
    # JSON rows may leave out optional keys: the first hundred rows together name the columns.
    names: dict[str, None] = {}
    for number, row in enumerate(read_rows(path, fmt, max_line_chars)):
        if number >= 100:
            break
        if isinstance(row, dict):
            names.update(dict.fromkeys(row))
    return list(names)


def read_rows(path: Path, fmt: str, max_line_chars: int) -> Iterator[Any]:
    """Yield the rows of a file in order (dicts, or whatever a JSON line holds: the caller judges it).

    A text line or CSV field longer than `max_line_chars` raises `RowTooLong` rather than being read whole.
    A line that is not JSON yields an `InvalidLine` marker so the caller can count it as dropped.
    """
    if fmt == "parquet":
        yield from _parquet_rows(path)
    elif fmt == "arrow":
        reader = _arrow_reader(path)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if hasattr(
            reader, "num_record_batches"
        ) else iter(reader)
        for batch in batches:
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, max_line_chars)
    elif fmt == "json":
        yield from _json_rows(path)
    elif fmt == "csv":
        yield from _csv_rows(path, max_line_chars)
    else:
        raise DataFileError(f"{path.name}: unknown format '{fmt}' — accepted: {', '.join(FORMATS)}")


class RowTooLong(Exception):
    """A line or field longer than the row limit, found before reading it whole."""

    def __init__(self, line: int):
        super().__init__(f"line {line}")
        self.line = line


class InvalidLine:
    """A JSON Lines line that does not parse (counted and dropped, not fatal on its own)."""

    def __init__(self, line: int, error: str):
        self.line = line
        self.error = error


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise DataFileError(f"{path.name}: not a readable parquet file ({err})") from err
    # One row group at a time keeps memory at a row group, however many there are.
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            yield from batch.to_pylist()


def _arrow_reader(path: Path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    source = pa.memory_map(str(path), "r")
    try:
        return ipc.open_file(source)
    except pa.ArrowInvalid:
        try:
            return ipc.open_stream(pa.memory_map(str(path), "r"))
        except pa.ArrowInvalid as err:
            raise DataFileError(f"{path.name}: not a readable Arrow file ({err})") from err


def _open_text(path: Path) -> IO[str]:
    raw: IO[bytes] = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")  # noqa: SIM115
    # utf-8-sig drops a byte-order mark that spreadsheet exports put in front of the first column name.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")


def _jsonl_rows(path: Path, max_line_chars: int) -> Iterator[Any]:
    with _open_text(path) as handle:
        number = 0
        while True:
            try:
                line = handle.readline(max_line_chars + 1)
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path.name}: not UTF-8 text near line {number + 1} ({err.reason})") from err
            if not line:
                return
            number += 1
            if len(line) > max_line_chars and not line.endswith("\n"):
                raise RowTooLong(number)
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as err:
                yield InvalidLine(number, str(err))


def _json_rows(path: Path) -> Iterator[Any]:
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFileError(f"{path.name}: not valid JSON ({err})") from err
    if isinstance(data, dict):
        # {"data": [...]} and similar wrappers: the one key whose value is a list of rows.
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataFileError(
                f"{path.name}: a JSON object with keys {sorted(data)[:10]} — expected a list of rows, "
                "or an object with exactly one list of rows"
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataFileError(f"{path.name}: JSON holding a {type(data).__name__} — expected a list of rows")
    yield from data


def _csv_rows(path: Path, max_line_chars: int) -> Iterator[dict[str, Any]]:
    previous = csv.field_size_limit()
    csv.field_size_limit(max_line_chars)
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is not None:
                reader.fieldnames = [name.strip() for name in reader.fieldnames]
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    if "field larger than field limit" in str(err):
                        raise RowTooLong(reader.line_num) from err
                    raise DataFileError(f"{path.name}: not valid CSV near line {reader.line_num} ({err})") from err
                except UnicodeDecodeError as err:
                    raise DataFileError(f"{path.name}: not UTF-8 text ({err.reason})") from err
                # Extra cells land under the key None; a short row has None values.
                row.pop(None, None)  # type: ignore[call-overload]
                yield row
    finally:
        csv.field_size_limit(previous)
