"""The pages of a parquet column chunk as their headers describe them, read without decompressing anything.

A parquet value is never split across pages, and a page is decompressed whole when it is read: so a page's
uncompressed size over its number of values bounds the values in it from below (a page of one 1 GiB value says
1 GiB), and its size is what reading it costs. The column chunk's metadata only gives the sum over all pages, which
hides one huge cell among many small ones; the page headers do not.

A page header is a Thrift struct in the compact protocol (parquet.thrift `PageHeader`): field 2 is the uncompressed
size, 3 the compressed size, and the page kind's own header (5 data, 7 dictionary, 8 data v2) starts with the number
of values. Anything unexpected (an encrypted file, a writer's oddity) ends the walk quietly: this is a check ahead
of the real reader, which reports damage itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

_HEAD = 512  # most headers are a few dozen bytes; page statistics can make them longer
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class Page:
    """One page: what it holds (values) and what it costs to read (bytes, uncompressed)."""

    uncompressed: int
    values: int


class _Unreadable(Exception):
    pass


class _Compact:
    """Just enough of Thrift's compact protocol to read one struct and skip what it does not need."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Unreadable("short")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise _Unreadable("varint")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self, wanted: dict[int, str] | None = None) -> dict[int, int]:
        """Read a struct; returns the integer fields whose ids are in `wanted` and the first int of nested structs."""
        found: dict[int, int] = {}
        field = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == 0:
                return found
            delta = head >> 4
            field = field + delta if delta else self.zigzag()
            if wanted and field in wanted and kind in (5, 6):
                found[field] = self.zigzag()
            elif wanted and field in wanted and kind == 12:
                found[field] = self.struct({1: "num_values"}).get(1, 0)
            else:
                self.skip(kind)

    def skip(self, kind: int) -> None:
        if kind in (1, 2):
            return
        if kind == 3:
            self.pos += 1
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.pos += 8
        elif kind == 8:
            length = self.varint()  # read first: `self.pos += self.varint()` would add to the old position
            self.pos += length
        elif kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self.skip(head & 0x0F if head & 0x0F not in (1, 2) else 3)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == 12:
            self.struct()
        else:
            raise _Unreadable(f"type {kind}")
        if self.pos > len(self.data):
            raise _Unreadable("short")


def _header(fd: int, offset: int) -> tuple[dict[int, int], int]:
    size = _HEAD
    while True:
        data = os.pread(fd, size, offset)
        reader = _Compact(data)
        try:
            fields = reader.struct({2: "uncompressed", 3: "compressed", 5: "data", 7: "dictionary", 8: "data_v2"})
            return fields, reader.pos
        except _Unreadable:
            if len(data) < size or size >= _MAX_HEADER:
                raise
            size *= 8


def pages(path: str | os.PathLike[str], column) -> Iterator[Page]:
    """The pages of one column chunk (pyarrow's ColumnChunkMetaData), first to last; stops early if unreadable."""
    start = column.data_page_offset
    if column.has_dictionary_page and column.dictionary_page_offset and column.dictionary_page_offset < start:
        start = column.dictionary_page_offset
    end = start + column.total_compressed_size
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = start
        while offset < end:
            try:
                fields, length = _header(fd, offset)
            except (_Unreadable, OSError, ValueError, RecursionError):  # a header nested on purpose, a bad offset
                return
            compressed = fields.get(3, -1)
            if compressed < 0 or fields.get(2, -1) < 0:
                return
            values = fields.get(5) or fields.get(7) or fields.get(8) or 0
            yield Page(fields[2], values)
            offset += length + compressed
    finally:
        os.close(fd)
