"""What a local run shows: a live table of tasks (state, duration, progress, loss) on a terminal, plain lines otherwise."""

from __future__ import annotations

import re
import sys
import threading
from typing import TextIO

from kairo.local.tasks import TaskRun

_LOSS = re.compile(r"loss[=: ]+([0-9.]+)")
_STYLE = {"Succeeded": "green", "Failed": "red", "Error": "red", "Running": "cyan", "Retrying": "yellow",
          "Skipped": "dim", "Omitted": "dim", "Pending": "dim", "Ready": "dim"}


def progress_of(task: TaskRun) -> tuple[int, int] | None:
    """`(done, total)` from the task's ARGO_PROGRESS_FILE, when it wrote one."""
    try:
        text = task.progress_path.read_text().strip() if task.progress_path else ""
    except OSError:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def last_note(task: TaskRun) -> str:
    """The latest `[progress]` line's note (e.g. the training loss), read from the end of the log."""
    if not task.log_path or not task.log_path.exists():
        return ""
    with open(task.log_path, "rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 4096))
        tail = handle.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        if line.startswith("[progress]"):
            loss = _LOSS.search(line)
            return f"loss {loss.group(1)}" if loss else line.split(maxsplit=2)[-1][:40]
    return ""


class PlainView:
    """One line per state change: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def changed(self, task: TaskRun) -> None:
        with self._lock:
            detail = f" — {task.message}" if task.message else ""
            took = f" ({task.duration:.1f}s)" if task.state in ("Succeeded", "Failed", "Error") else ""
            print(f"[kairo] {task.name}: {task.state}{took}{detail}", file=self.stream, flush=True)


class LiveView:
    """A rich table redrawn a few times a second while the run goes on."""

    def __init__(self, tasks: list[TaskRun] | None = None):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.tasks: dict[str, TaskRun] = {t.name: t for t in tasks or []}
        self._live = None
        self._stop = threading.Event()

    def __enter__(self) -> LiveView:
        from rich.live import Live

        self._live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
        self._live.__enter__()
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)

    def changed(self, task: TaskRun) -> None:
        self.tasks[task.name] = task

    def _refresh(self) -> None:
        while not self._stop.wait(0.5):
            if self._live is not None:
                self._live.update(self._table())

    def _table(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title="kairo run --local", expand=False)
        for column in ("task", "state", "time", "progress", "note"):
            table.add_column(column)
        for task in self.tasks.values():
            progress = progress_of(task)
            bar = ProgressBar(total=progress[1], completed=progress[0], width=24) if progress else ""
            count = f" {progress[0]}/{progress[1]}" if progress else ""
            style = _STYLE.get(task.state, "")
            note = last_note(task) if task.state in ("Running", "Retrying") else task.message[:60]
            table.add_row(task.name, f"[{style}]{task.state}[/]", f"{task.duration:.0f}s" if task.started else "",
                          bar if not count else _joined(bar, count), note)
        return table


def _joined(bar, text: str):
    from rich.table import Table

    grid = Table.grid()
    grid.add_row(bar, text)
    return grid


def make_view(tty: bool | None = None) -> PlainView | LiveView:
    tty = sys.stderr.isatty() if tty is None else tty
    return LiveView() if tty else PlainView()
