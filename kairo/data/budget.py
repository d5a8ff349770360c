"""What reading a dataset may cost, counted as it is read: decompressed bytes over all its files, lines in a file.

A small gzip can inflate a thousandfold (2.6 MB to 1 GiB), so a limit on the bytes downloaded bounds nothing: the
readers take every byte they decompress from one `ReadBudget` (limits.maxDatasetBytes), and every line, blank
ones too, from its line allowance (255 KB of gzip holds 268 million blank lines).
"""

from __future__ import annotations

import io
from typing import IO


class BudgetExceeded(Exception):
    """Reading went past the budget; the message names the file, the limit and its setting."""


class ReadBudget:
    """What reading a dataset may still cost: decompressed bytes over all its files, and lines in any one file."""

    BYTES_SETTING = "limits.maxDatasetBytes"

    def __init__(self, max_bytes: int, max_lines: int | None = None, lines_setting: str = "limits.maxRows"):
        self.max_bytes = max_bytes
        self.left = max_bytes
        self.max_lines = max_lines
        self.lines_setting = lines_setting

    def copy(self) -> ReadBudget:
        """The same allowance, spent separately (a first look at a file that is read again afterwards)."""
        copied = ReadBudget(self.max_bytes, self.max_lines, self.lines_setting)
        copied.left = self.left
        return copied

    def take(self, size: int, name: str) -> None:
        self.left -= size
        if self.left < 0:
            raise BudgetExceeded(
                f"{name}: the data is larger than {self.BYTES_SETTING} ({human(self.max_bytes)}) allows once "
                "decompressed (all files together, counted as they are read) — raise the limit in the cluster config "
                "if the data is real"
            )

    def check_lines(self, lines: int, name: str) -> None:
        if self.max_lines is not None and lines > self.max_lines:
            raise BudgetExceeded(f"{name}: more than {self.max_lines:,} lines ({self.lines_setting}; blank lines count) "
                                 "— split the file or raise the limit in the cluster config")

    def counted(self, raw: IO[bytes], name: str) -> IO[bytes]:
        """`raw`, buffered, with every byte read from it taken from this budget."""
        return io.BufferedReader(_Counted(raw, self, name), 1 << 16)


class _Counted(io.RawIOBase):
    """A byte stream whose bytes are taken from a budget as they are read, so a bomb stops at the limit."""

    def __init__(self, inner: IO[bytes], budget: ReadBudget, name: str):
        self.inner = inner
        self.budget = budget
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = self.inner.readinto(buffer)  # type: ignore[attr-defined]
        if size:
            self.budget.take(size, self.name)
        return size

    def close(self) -> None:
        self.inner.close()
        super().close()


def human(size: int) -> str:
    """Bytes as a person reads them: 1.5 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
