"""Progress that users see: `N/M` in Argo's UI (ARGO_PROGRESS_FILE) and a line in the terminal."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


class Progress:
    """Report `done/total` at most every `every` seconds (and always at the end)."""

    def __init__(self, total: int, label: str = "", every: float = 2.0, stream=None):
        self.total = max(int(total), 1)
        self.label = label
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.file = os.environ.get("ARGO_PROGRESS_FILE")
        self._last = 0.0

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and done < self.total and now - self._last < self.every:
            return
        self._last = now
        done = min(int(done), self.total)
        if self.file:
            try:
                Path(self.file).write_text(f"{done}/{self.total}")
            except OSError:
                pass  # progress is a courtesy; never fail a step over it
        suffix = f" {note}" if note else ""
        print(f"[progress] {self.label} {done}/{self.total}{suffix}".replace("  ", " "), file=self.stream, flush=True)

    def finish(self, note: str = "") -> None:
        self.update(self.total, note, force=True)
