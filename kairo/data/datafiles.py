"""Read dataset files row by row: parquet, JSON Lines, JSON, CSV/TSV and Arrow; text formats may be compressed
(gzip, bzip2, xz).

The format is told by the file's first bytes, then by its name (URLs such as `…/train.parquet?download=true`
keep their name in the path), or forced by Kaito's `DatasetConfig.dataset_extension`. Rows come out as
dicts, one at a time: parquet and Arrow a record batch at a time, text formats a line at a time and JSON a row
at a time (`jsonstream`), so a large file never sits in memory whole.

What reading may cost is bounded by a `ReadBudget`, not by the file's size on disk: a small gzip can inflate a
thousandfold, so decompressed bytes count against `limits.maxDatasetBytes` (all files together) as they are read,
and lines against `limits.maxRows`, blank ones included (255 KB of gzip holds 268 million blank lines).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from kairo.data.budget import BudgetExceeded, ReadBudget, human
from kairo.data.jsonstream import JSONError, TooLong, json_rows
from kairo.data.parquetpages import pages

__all__ = ["DataFileError", "InvalidLine", "ReadBudget", "RowTooLong", "columns", "detect_format", "read_rows"]

FORMATS = ("parquet", "arrow", "jsonl", "json", "csv", "tsv")
DATA_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
# Files that Hugging Face's save_to_disk and hub snapshots put beside the data: they describe it, they are not rows.
METADATA_NAMES = frozenset({"dataset_info.json", "state.json", "dataset_dict.json", "dataset_infos.json"})
_ARROW_FILE_MAGIC = b"ARROW1"
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
_GZIP_MAGIC = b"\x1f\x8b"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BOM_AND_SPACE = b"\xef\xbb\xbf \t\r\n"
_BATCH_ROWS = 1024


class DataFileError(Exception):
    """A file that cannot be read as a dataset; the message names the file and what was found."""


def format_from_name(name: str) -> str | None:
    """The format a file name (or URL path) suggests: `train.jsonl.gz` → jsonl; None when it says nothing."""
    lowered = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        lowered = lowered.removesuffix(suffix)
    for suffix, fmt in DATA_SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    return None


def is_data_file(path: Path) -> bool:
    """Whether a file in a folder (a volume, an image's /data) is part of the dataset."""
    return (not path.name.startswith(".") and path.name.lower() not in METADATA_NAMES
            and format_from_name(path.name) is not None)


# Hugging Face names splits in file and folder names: data/train-00000-of-00001.parquet, test/, validation.jsonl.
_SPLIT_WORD = re.compile(r"(?:^|[/._ -])(train|training|validation|valid|val|dev|test|testing|eval|evaluation)"
                         r"(?=[/._ 0-9-]|$)")


def split_of(relative_path: str) -> str | None:
    """The split a data file's path names, as Hugging Face reads it ('train', 'test', 'validation', …); None if none.

    A dataset saved or cloned whole carries its test split beside the train split: training on it would leak the
    data the model is judged on, so a folder that holds several splits is read for its train split only.
    """
    found = _SPLIT_WORD.search(relative_path.lower())
    if found is None:
        return None
    word = found.group(1)
    return "train" if word.startswith("train") else "test" if word.startswith("test") else word


def detect_format(path: Path, name_hint: str = "", forced: str | None = None) -> str:
    """The format of `path`: content first (magic bytes, first characters), then the name, then `forced`.

    `forced` is Kaito's dataset_extension: 'json' there means JSON or JSON Lines (as for Hugging Face's
    json loader), so the content still decides between those two.
    """
    head = _head(path, name_hint or path.name)
    _refuse_non_data(head, name_hint or path.name)
    by_content = _format_from_content(head, path)
    by_name = format_from_name(name_hint or path.name)
    if by_content in ("parquet", "arrow") and _is_compressed(path):
        raise DataFileError(
            f"{name_hint or path.name}: a compressed {by_content} file — {by_content} compresses inside the file; "
            "link the file without the outer gzip/bzip2/xz"
        )
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
    if head.lstrip(_BOM_AND_SPACE).startswith(b"{"):
        return "jsonl"  # a first line longer than we peeked at: one object per line is the likely case
    shown = head[:16]
    raise DataFileError(
        f"{name_hint or path.name}: cannot tell the format (first bytes {shown!r}) — accepted: "
        f"{', '.join(FORMATS)} (optionally .gz); name the file with its extension or set "
        "DatasetConfig.dataset_extension"
    )


def _refuse_non_data(head: bytes, name: str) -> None:
    """A web page or a Git LFS pointer where the data should be: the link was to the wrong place."""
    text = head.lstrip(_BOM_AND_SPACE)[:100].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head")):
        raise DataFileError(
            f"{name}: an HTML page, not a data file — the URL points at a web page about the file; link the file "
            "itself (Hugging Face: …/resolve/main/… instead of …/blob/main/…; GitHub: the Raw link)"
        )
    if text.startswith(b"version https://git-lfs.github.com/spec/"):
        raise DataFileError(
            f"{name}: a Git LFS pointer, not the file it stands for — link the file through LFS (Hugging Face: "
            "…/resolve/main/…; GitHub: the Download link, media.githubusercontent.com), or run git lfs pull"
        )


def _head(path: Path, name: str, size: int = 4096) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(size)
    opener = _decompressor(head)
    if opener is not None:
        try:
            with opener(path) as handle:
                return handle.read(size)
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise DataFileError(f"{name}: a broken compressed file ({err})") from err
    return head


def _decompressor(head: bytes):
    if head.startswith(_GZIP_MAGIC):
        return lambda path: gzip.open(path, "rb")
    if head.startswith(_BZIP2_MAGIC):
        return lambda path: bz2.open(path, "rb")
    if head.startswith(_XZ_MAGIC):
        return lambda path: lzma.open(path, "rb")
    return None


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as handle:
        return _decompressor(handle.read(8)) is not None


def _format_from_content(head: bytes, path: Path) -> str | None:
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(_ARROW_FILE_MAGIC) or head.startswith(_ARROW_STREAM_MAGIC):
        return "arrow"
    text = head.lstrip(_BOM_AND_SPACE)
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first_line, _, rest = text.partition(b"\n")
        try:
            json.loads(first_line.strip())
            # One object on the only line may be a wrapper ({"data": [...]}): the JSON reader tells those apart.
            return "jsonl" if rest.strip() or len(head) == 4096 else "json"
        except (ValueError, RecursionError):
            # An object spread over lines is plain JSON; a first line longer than the head could be either.
            return "json" if b"\n" in text else _by_first_line(path)
    return None


def _by_first_line(path: Path, limit: int = 1 << 26) -> str | None:
    """jsonl when the whole first line is an object and more lines follow (ShareGPT rows run past the head)."""
    try:
        with _open_text(path) as handle:
            first = handle.readline(limit)
            json.loads(first)
            following = handle.readline(limit)
            for _ in range(1000):  # blank lines after the first object; past a thousand, call it JSON Lines
                if not following or following.strip():
                    break
                following = handle.readline(limit)
    except (ValueError, RecursionError, EOFError, OSError, zlib.error, lzma.LZMAError):
        return None  # not one object on a line (or unreadable): the name decides, the reader explains
    return "jsonl" if following else "json"


def columns(path: Path, fmt: str, max_line_chars: int = 1 << 24, budget: ReadBudget | None = None) -> list[str]:
    """The column names of a file, read from its schema or header or first row, without reading it all.

    Reading them spends a copy of `budget`: the rows are read again, and counted, by `read_rows`.
    """
    if fmt == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    if fmt == "arrow":
        return list(_arrow_reader(path).schema.names)
    if fmt in ("csv", "tsv"):
        with _open_text(path, budget.copy() if budget else None) as handle:
            try:
                header = next(csv.reader(handle, delimiter="\t" if fmt == "tsv" else ","), [])
            except UnicodeDecodeError as err:
                raise DataFileError(_not_utf8(path, err)) from err
            except BudgetExceeded as err:
                raise DataFileError(str(err)) from err
        return [name.strip() for name in header]
    # JSON rows may leave out optional keys: the first hundred rows together name the columns.
    names: dict[str, None] = {}
    first_other: Any = None
    for number, row in enumerate(read_rows(path, fmt, max_line_chars, budget.copy() if budget else None)):
        if number >= 100:
            break
        if isinstance(row, dict):
            names.update(dict.fromkeys(row))
        elif first_other is None:
            first_other = row
    if not names and first_other is not None:
        found = (f"line {first_other.line} is not JSON ({first_other.error})" if isinstance(first_other, InvalidLine)
                 else f"a row is a {type(first_other).__name__}")
        raise DataFileError(f"{path.name}: no JSON objects among the first rows — {found}; each row must be an "
                            "object of named columns")
    return list(names)


def read_rows(path: Path, fmt: str, max_line_chars: int, budget: ReadBudget | None = None) -> Iterator[Any]:
    """Yield the rows of a file in order (dicts, or whatever a JSON line holds: the caller judges it).

    A text line, JSON row or CSV field longer than `max_line_chars` raises `RowTooLong` rather than being read
    whole; reading past `budget` (decompressed bytes, lines) raises DataFileError naming the limit.
    A line that is not JSON yields an `InvalidLine` marker so the caller can count it as dropped.
    A file damaged or cut off part-way raises DataFileError when the reading gets there.
    """
    try:
        yield from _rows(path, fmt, max_line_chars, budget)
    except BudgetExceeded as err:
        raise DataFileError(str(err)) from err
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        raise DataFileError(f"{path.name}: damaged or cut off part-way ({' '.join(str(err).split())})") from err
    except Exception as err:
        if type(err).__module__.startswith("pyarrow"):  # ArrowInvalid and kin from a damaged row group
            raise DataFileError(f"{path.name}: damaged part-way ({' '.join(str(err).split())})") from err
        raise


def _rows(path: Path, fmt: str, max_line_chars: int, budget: ReadBudget | None) -> Iterator[Any]:
    if fmt == "parquet":
        yield from _parquet_rows(path, max_line_chars, budget)
    elif fmt == "arrow":
        reader = _arrow_reader(path)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if hasattr(
            reader, "num_record_batches"
        ) else iter(reader)
        for batch in batches:
            if budget is not None:  # an Arrow file may compress its buffers (LZ4, zstd): count them as read
                budget.take(batch.nbytes, path.name)
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        yield from _jsonl_rows(path, max_line_chars, budget)
    elif fmt == "json":
        yield from _json_rows(path, max_line_chars, budget)
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(path, max_line_chars, "\t" if fmt == "tsv" else ",", budget)
    else:
        raise DataFileError(f"{path.name}: unknown format '{fmt}' — accepted: {', '.join(FORMATS)}")


class RowTooLong(Exception):
    """A line or field longer than the row limit, found before reading it whole; str() says where ("line 7")."""

    def __init__(self, line: int, where: str = ""):
        super().__init__(where or f"line {line}")
        self.line = line


class InvalidLine:
    """A JSON Lines line that does not parse (counted and dropped, not fatal on its own)."""

    def __init__(self, line: int, error: str):
        self.line = line
        self.error = error


def _parquet_file(path: Path, buffer_size: int = 0):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, buffer_size=buffer_size)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise DataFileError(f"{path.name}: not a readable parquet file ({err})") from err


def _parquet_rows(path: Path, max_cell_bytes: int, budget: ReadBudget | None) -> Iterator[dict[str, Any]]:
    """Rows a batch at a time; each row group judged from the file's metadata before any of it is read.

    A 33 KB file can hold a 1 GiB cell (it compresses to nothing): the column chunk's uncompressed size over its
    values tells such cells apart before they are built, and every row group's uncompressed size is taken from
    the budget. Pages are read through a buffer (`buffer_size`), not a column chunk at once.
    """
    import pyarrow as pa

    parquet = _parquet_file(path, buffer_size=1 << 20)
    first_row = 1
    for group in range(parquet.num_row_groups):
        info = parquet.metadata.row_group(group)
        _check_row_group(path, info, group, first_row, max_cell_bytes, budget)
        # Batches of about _BATCH_BYTES, told from the row group's size: 1,024 rows of 2 MB each would be 2 GB.
        rows = max(1, min(_BATCH_ROWS, _BATCH_BYTES * max(info.num_rows, 1) // max(info.total_byte_size, 1)))
        try:
            for batch in parquet.iter_batches(batch_size=rows, row_groups=[group], use_threads=False):
                yield from batch.to_pylist()
        except (MemoryError, pa.ArrowCapacityError) as err:  # ArrowMemoryError is a MemoryError
            raise DataFileError(f"{_group_too_large(path, info, group)} ({' '.join(str(err).split())})") from err
        first_row += info.num_rows


_BATCH_BYTES = 64 << 20


def _group_too_large(path: Path, info, group: int) -> str:
    return (f"{path.name}: row group {group + 1} too large to read in the memory there is ("
            f"{human(info.total_byte_size)} uncompressed, {info.num_rows:,} row{'s' if info.num_rows != 1 else ''}) — "
            "write the file with smaller row groups and rows (pyarrow: write_table(…, row_group_size=10_000); Hugging "
            "Face's parquet files keep row groups near 100 MB), or give the step more memory")


def _check_row_group(path: Path, info, group: int, first_row: int, max_cell_bytes: int,
                     budget: ReadBudget | None) -> None:
    rows = max(info.num_rows, 1)
    for index in range(info.num_columns):
        column = info.column(index)
        values = max(column.num_values, rows)
        if column.total_uncompressed_size // values > max_cell_bytes:
            span = f"row {first_row:,}" if rows == 1 else f"rows {first_row:,}–{first_row + rows - 1:,}"
            raise RowTooLong(first_row, f"{span} (column '{column.path_in_schema}', row group {group + 1}: "
                                        f"{human(column.total_uncompressed_size)} for {rows:,} "
                                        f"row{'s' if rows > 1 else ''}, read from the file's metadata)")
        if column.total_uncompressed_size > max_cell_bytes:
            _check_pages(path, column, group, max_cell_bytes)
    if budget is not None:
        budget.take(info.total_byte_size, path.name)


_MAX_PAGE_BYTES = 256 << 20


def _check_pages(path: Path, column, group: int, max_cell_bytes: int) -> None:
    """One huge cell among many small ones hides in the column's total; its page tells it (see parquetpages)."""
    where = f"column '{column.path_in_schema}', row group {group + 1}"
    for number, page in enumerate(pages(path, column), start=1):
        if page.values and page.uncompressed // page.values > max_cell_bytes:
            raise RowTooLong(0, f"a row in page {number} ({where}: {human(page.uncompressed)} for "
                                f"{page.values:,} value{'s' if page.values > 1 else ''}, read from the page header)")
        if page.uncompressed > max(_MAX_PAGE_BYTES, max_cell_bytes * 2):
            raise DataFileError(f"{path.name}: page {number} of {where} is {human(page.uncompressed)} uncompressed — "
                                "too large to read; write the file with smaller rows and pages (pyarrow: "
                                "write_table(…, data_page_size=1 << 20))")


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


def _open_text(path: Path, budget: ReadBudget | None = None) -> IO[str]:
    with open(path, "rb") as handle:
        opener = _decompressor(handle.read(8))
    raw: IO[bytes] = opener(path) if opener else open(path, "rb")  # noqa: SIM115
    if budget is not None:
        raw = budget.counted(raw, path.name)
    # utf-8-sig drops a byte-order mark that spreadsheet exports put in front of the first column name.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")


def _jsonl_rows(path: Path, max_line_chars: int, budget: ReadBudget | None) -> Iterator[Any]:
    with _open_text(path, budget) as handle:
        number = 0
        while True:
            try:
                line = handle.readline(max_line_chars + 1)
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path.name}: not UTF-8 text near line {number + 1} ({err.reason})") from err
            if not line:
                return
            number += 1
            if budget is not None:
                budget.check_lines(number, path.name)
            if len(line) > max_line_chars and not line.endswith("\n"):
                raise RowTooLong(number)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as err:  # nesting deeper than Python's parser goes: not a row
                row = InvalidLine(number, str(err))
            yield row


def _json_rows(path: Path, max_row_chars: int, budget: ReadBudget | None) -> Iterator[Any]:
    try:
        with _open_text(path, budget) as handle:
            yield from json_rows(handle, max_row_chars)
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path.name}: not UTF-8 text ({err.reason} at byte {err.start:,}) — save it as UTF-8") from err
    except TooLong as err:
        raise RowTooLong(err.line) from err
    except JSONError as err:
        raise DataFileError(f"{path.name}: {err}") from err


def _not_utf8(path: Path, err: UnicodeDecodeError, line: int | None = None) -> str:
    near = f" near line {line:,}" if line else ""
    return (f"{path.name}: not UTF-8 text{near} ({err.reason}) — save it as UTF-8 (Excel: \"CSV UTF-8\"; "
            "iconv -f cp1252 -t utf-8)")


def _csv_rows(path: Path, max_line_chars: int, delimiter: str = ",",
              budget: ReadBudget | None = None) -> Iterator[dict[str, Any]]:
    previous = csv.field_size_limit()
    csv.field_size_limit(max_line_chars)
    try:
        with _open_text(path, budget) as handle:
            # csv.reader, not DictReader: DictReader skips blank lines in a loop of its own, uncounted.
            reader = csv.reader(handle, delimiter=delimiter)
            names: list[str] | None = None
            records = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    if "field larger than field limit" in str(err):
                        raise RowTooLong(reader.line_num) from err
                    raise DataFileError(f"{path.name}: not valid CSV near line {reader.line_num} ({err})") from err
                except UnicodeDecodeError as err:
                    raise DataFileError(_not_utf8(path, err, reader.line_num + 1)) from err
                records += 1
                if budget is not None:
                    budget.check_lines(records, path.name)
                if not record:
                    continue
                if names is None:
                    names = [name.strip() for name in record]
                    continue
                # As DictReader: a short row has None values; extra cells are dropped.
                yield {name: record[i] if i < len(record) else None for i, name in enumerate(names)}
    finally:
        csv.field_size_limit(previous)
