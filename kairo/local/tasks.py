"""The state of a local run: one TaskRun per DAG task, and what `depends` reads from them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from kairo.local.mounts import Unsupported

DONE = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")


@dataclass
class TaskRun:
    """One DAG task (or the exit handler) as it runs here."""

    name: str
    template: str
    depends: str
    when: str
    arguments: dict[str, str]
    state: str = "Pending"
    attempts: int = 0
    exit_code: int | None = None
    message: str = ""
    started: float | None = None
    finished: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    progress_path: Path | None = None
    continue_on: tuple[str, ...] = ()  # the DAG task's continueOn: the end states that do not fail the DAG
    node: str = ""  # where it runs (tasks/NODE): `outer.inner` for a task of a nested DAG, else its name
    quiet: bool = False  # a nested DAG's task: its outer task is what the view shows

    def __post_init__(self) -> None:
        self.node = self.node or self.name

    @property
    def continues(self) -> bool:
        """True when this task ended in a state its continueOn lets the DAG go on from."""
        return self.state in self.continue_on

    @property
    def duration(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class RunResult:
    status: str
    tasks: dict[str, TaskRun]
    exit_task: TaskRun | None  # the exit handler as one task (a DAG's summed up: Failed when one of its tasks failed)
    run_dir: Path
    exit_tasks: dict[str, TaskRun] = field(default_factory=dict)  # the exit handler's DAG tasks, when it is a DAG

    @property
    def failed(self) -> list[TaskRun]:
        return [t for t in self.tasks.values() if t.state in ("Failed", "Error")]


def dependency_met(name: str, tasks: dict[str, TaskRun]) -> bool:
    """What `depends` reads for `name` (`task` or `task.Result`)."""
    task_name, _, result = name.partition(".")
    if task_name not in tasks:
        raise Unsupported(f"depends names an unknown task '{task_name}'")
    state = tasks[task_name].state
    if not result:  # a bare name means it succeeded or was skipped
        return state in ("Succeeded", "Skipped")
    results = {"Succeeded": ("Succeeded",), "Failed": ("Failed",), "Errored": ("Error",), "Skipped": ("Skipped",),
               "Omitted": ("Omitted",), "Daemoned": (), "AnySucceeded": ("Succeeded",),
               "AllFailed": ("Failed",)}
    if result not in results:
        raise Unsupported(f"depends uses '{name}', which the local runner does not know")
    return state in results[result]
