"""Read the rows of a JSON file one at a time, never the whole file: a list of rows, or an object holding one.

`json.load` builds the whole document, several times its size in memory; a 2.6 MB `.json.gz` that inflates to
1 GiB reached 5.8 GB. Here the file is read in chunks and each row is decoded on its own (`raw_decode`), so
memory stays at one row plus a chunk whatever the file's size; a row longer than the limit raises `TooLong`
before it is read whole.

The shapes accepted are `json.load`'s, read the same way: `[row, …]`; `{"data": [row, …], …}` (the one key whose
list holds rows: objects that are not conversation turns, told by the list's first item); and an object whose
lists hold turns or text, which is itself one row.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from typing import IO, Any

CHUNK = 1 << 16
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JSONError(ValueError):
    """The file is not the JSON it should be; the message says what and where."""


class TooLong(Exception):
    """A row (or a single value) longer than the limit, found before reading it whole; `line` is where it starts."""

    def __init__(self, line: int):
        super().__init__(f"line {line}")
        self.line = line


class _Reader:
    """A window on a text stream: `buf[pos:]` is what is read and not yet consumed."""

    def __init__(self, handle: IO[str], max_chars: int):
        self.handle = handle
        self.max_chars = max_chars
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # of buf[0]
        self.dropped = 0  # characters consumed and let go before buf[0]

    def more(self, wanted: int = CHUNK) -> bool:
        """Read at least `wanted` more characters (fewer at the end); False at the end of the file."""
        if self.eof:
            return False
        if self.pos:
            self.line += self.buf.count("\n", 0, self.pos)
            self.dropped += self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
        chunk = self.handle.read(max(wanted, CHUNK))
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def offset(self) -> int:
        return self.dropped + self.pos

    def where(self) -> int:
        return self.line_of(self.offset())

    def peek(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str, what: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            shown = repr(found) if found else "the end of the file"
            raise JSONError(f"not valid JSON: expected {what} at line {self.where()}, found {shown}")
        self.pos += 1
        return found

    def value(self) -> Any:
        """Decode the next value, reading more until it is whole; TooLong past `max_chars`."""
        self.peek()
        start = self.offset()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except RecursionError as err:
                raise JSONError(f"not valid JSON: nested too deep at line {self.line_of(start)}") from err
            except json.JSONDecodeError as err:
                # Cut off by the chunk's end (an unterminated string, a value still to come) or really wrong.
                cut = err.msg.startswith("Unterminated string") or err.pos >= len(self.buf) - 8
                if not cut or self.eof:
                    raise JSONError(f"not valid JSON: {err.msg} at line {self.line_of(self.dropped + err.pos)}") from err
                self._grow(start)
                continue
            if end == len(self.buf) and not self.eof:  # a number may go on in the next chunk
                self._grow(start)
                continue
            self.pos = end
            return value

    def line_of(self, offset: int) -> int:
        """The line of a character still in the window (messages only: it counts the window's newlines)."""
        return self.line + self.buf.count("\n", 0, max(offset - self.dropped, 0))

    def _grow(self, start: int) -> None:
        if len(self.buf) - self.pos > self.max_chars:
            raise TooLong(self.line_of(start))
        self.more(len(self.buf) - self.pos)  # doubling: a long row costs its length, not its length squared


def json_rows(handle: IO[str], max_row_chars: int) -> Iterator[Any]:
    """Yield the rows of the JSON document in `handle` (see the module's docstring for the shapes)."""
    reader = _Reader(handle, max_row_chars)
    first = reader.peek()
    if first == "[":
        yield from _list_items(reader)
    elif first == "{":
        yield from _object_rows(reader)
    elif not first:
        raise JSONError("not valid JSON: the file is empty")
    else:
        value = reader.value()
        raise JSONError(f"JSON holding a {type(value).__name__} — expected a list of rows")
    if reader.peek():
        raise JSONError(f"not valid JSON: more after the end of the document, at line {reader.where()}")


def _list_items(reader: _Reader) -> Iterator[Any]:
    reader.expect("[", "'['")
    yield from _items(reader)


def _items(reader: _Reader) -> Iterator[Any]:
    """The items of a list whose '[' was just read."""
    if reader.peek() == "]":
        reader.pos += 1
        return
    while True:
        yield reader.value()
        if reader.expect(",]", "',' or ']'") == "]":
            return


def _is_row(item: Any) -> bool:
    """A list item that is a row, not a conversation turn (those have a role or a from)."""
    return isinstance(item, dict) and "role" not in item and "from" not in item


def _object_rows(reader: _Reader) -> Iterator[Any]:
    """A wrapper's one list of rows, streamed; or the object itself as one row, kept within the row limit."""
    reader.expect("{", "'{'")
    kept: dict[str, Any] = {}
    rows_key: str | None = None
    begin = reader.offset()
    if reader.peek() == "}":
        reader.pos += 1
        yield kept
        return
    while True:
        if reader.peek() != '"':
            reader.expect('"', "a key in quotes")
        key = reader.value()
        reader.expect(":", "':'")
        if reader.peek() != "[":
            value = reader.value()
        else:
            reader.pos += 1
            items = _items(reader)
            value = list(itertools.islice(items, 1))
            if value and _is_row(value[0]):
                if rows_key is not None:
                    raise JSONError(f"a JSON object with several lists of rows ({rows_key}, {key}) — expected a list "
                                    "of rows, or an object with exactly one list of rows")
                rows_key = key
                kept.clear()
                yield value[0]
                yield from items
            else:
                start = reader.offset()
                for item in items:  # turns or text: part of the one row this object is, unless rows came before
                    if rows_key is None:
                        value.append(item)
                        if reader.offset() - begin > reader.max_chars:
                            raise TooLong(reader.line_of(start))
        if rows_key is None:
            kept[key] = value
            if reader.offset() - begin > reader.max_chars:
                raise TooLong(1)
        if reader.expect(",}", "',' or '}'") == "}":
            break
    if rows_key is None:
        yield kept
