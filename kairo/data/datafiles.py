"""Read dataset files row by row: parquet, JSON Lines, JSON, CSV/TSV and Arrow; text formats may be compressed
(gzip, bzip2, xz).

The format is told by the file's first bytes, then by its name (URLs such as `…/train.parquet?download=true`
keep their name in the path), or forced by Kaito's `DatasetConfig.dataset_extension`. Rows come out as
dicts, one at a time: parquet and Arrow a record batch at a time, text formats a line at a time, so a
large file never sits in memory whole (a JSON array file is the exception: JSON has no streaming reader here).
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
            while following and not following.strip():
                following = handle.readline(limit)
    except (ValueError, RecursionError, EOFError, OSError, zlib.error, lzma.LZMAError):
        return None  # not one object on a line (or unreadable): the name decides, the reader explains
    return "jsonl" if following else "json"


def columns(path: Path, fmt: str, max_line_chars: int = 1 << 24) -> list[str]:
    """The column names of a file, read from its schema or header or first row, without reading it all."""
    if fmt == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    if fmt == "arrow":
        return list(_arrow_reader(path).schema.names)
    if fmt in ("csv", "tsv"):
        with _open_text(path) as handle:
            try:
                header = next(csv.reader(handle, delimiter="\t" if fmt == "tsv" else ","), [])
            except UnicodeDecodeError as err:
                raise DataFileError(_not_utf8(path, err)) from err
        return [name.strip() for name in header]
    # JSON rows may leave out optional keys: the first hundred rows together name the columns.
    names: dict[str, None] = {}
    first_other: Any = None
    for number, row in enumerate(read_rows(path, fmt, max_line_chars)):
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


def read_rows(path: Path, fmt: str, max_line_chars: int) -> Iterator[Any]:
    """Yield the rows of a file in order (dicts, or whatever a JSON line holds: the caller judges it).

    A text line or CSV field longer than `max_line_chars` raises `RowTooLong` rather than being read whole.
    A line that is not JSON yields an `InvalidLine` marker so the caller can count it as dropped.
    A file damaged or cut off part-way raises DataFileError when the reading gets there.
    """
    try:
        yield from _rows(path, fmt, max_line_chars)
    except (EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        raise DataFileError(f"{path.name}: damaged or cut off part-way ({' '.join(str(err).split())})") from err
    except Exception as err:
        if type(err).__module__.startswith("pyarrow"):  # ArrowInvalid and kin from a damaged row group
            raise DataFileError(f"{path.name}: damaged part-way ({' '.join(str(err).split())})") from err
        raise


def _rows(path: Path, fmt: str, max_line_chars: int) -> Iterator[Any]:
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
    elif fmt in ("csv", "tsv"):
        yield from _csv_rows(path, max_line_chars, "\t" if fmt == "tsv" else ",")
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


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise DataFileError(f"{path.name}: not a readable parquet file ({err})") from err


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    parquet = _parquet_file(path)
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
    with open(path, "rb") as handle:
        opener = _decompressor(handle.read(8))
    raw: IO[bytes] = opener(path) if opener else open(path, "rb")  # noqa: SIM115
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
                row = json.loads(line)
            except (ValueError, RecursionError) as err:  # nesting deeper than Python's parser goes: not a row
                row = InvalidLine(number, str(err))
            yield row


def _json_rows(path: Path) -> Iterator[Any]:
    try:
        with _open_text(path) as handle:
            data = json.load(handle)
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path.name}: not UTF-8 text ({err.reason} at byte {err.start:,}) — save it as UTF-8") from err
    except (ValueError, RecursionError) as err:
        raise DataFileError(f"{path.name}: not valid JSON ({err})") from err
    if isinstance(data, dict):
        # {"data": [...]} and similar wrappers: the one key whose value is a list of rows. An object whose lists
        # hold turns ({"messages": [{role, content}, …]}) or text is itself one row.
        lists = [key for key, value in data.items() if _is_rows(value)]
        if len(lists) > 1:
            raise DataFileError(
                f"{path.name}: a JSON object with several lists of rows ({', '.join(sorted(lists)[:10])}) — "
                "expected a list of rows, or an object with exactly one list of rows"
            )
        data = data[lists[0]] if lists else [data]
    if not isinstance(data, list):
        raise DataFileError(f"{path.name}: JSON holding a {type(data).__name__} — expected a list of rows")
    yield from data


def _not_utf8(path: Path, err: UnicodeDecodeError, line: int | None = None) -> str:
    near = f" near line {line:,}" if line else ""
    return (f"{path.name}: not UTF-8 text{near} ({err.reason}) — save it as UTF-8 (Excel: \"CSV UTF-8\"; "
            "iconv -f cp1252 -t utf-8)")


def _is_rows(value: Any) -> bool:
    """A list of objects that are rows, not conversation turns (those have a role or a from)."""
    return (isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)
            and not any("role" in item or "from" in item for item in value))


def _csv_rows(path: Path, max_line_chars: int, delimiter: str = ",") -> Iterator[dict[str, Any]]:
    previous = csv.field_size_limit()
    csv.field_size_limit(max_line_chars)
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
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
                    raise DataFileError(_not_utf8(path, err, reader.line_num + 1)) from err
                # Extra cells land under the key None; a short row has None values.
                row.pop(None, None)  # type: ignore[call-overload]
                yield row
    finally:
        csv.field_size_limit(previous)
