"""How a local task is retried, timed out and stopped — Argo's rules, applied to a process."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from kairo.argo.expr import evaluate_bool
from kairo.local.support import parse_duration


def should_retry(retry: dict[str, Any], state: str, code: int | None, message: str) -> bool:
    """Argo's retryStrategy: the policy allows this end state, and the expression (if any) holds."""
    if not retry:
        return False
    policy = retry.get("retryPolicy", "OnFailure")
    allowed = {"Always": ("Failed", "Error"), "OnFailure": ("Failed",), "OnError": ("Error",),
               "OnTransientError": ("Error",)}[policy]
    if state not in allowed:
        return False
    expression = retry.get("expression")
    if not expression:
        return True
    names = {"lastRetry.exitCode": str(code if code is not None else -1), "lastRetry.status": state,
             "lastRetry.duration": "0", "lastRetry.message": message}
    return evaluate_bool(expression, names)


def deadline_of(template: dict[str, Any]) -> float | None:
    values = [parse_duration(template[k]) for k in ("activeDeadlineSeconds", "timeout") if template.get(k)]
    return min(values) if values else None


def backoff_seconds(retry: dict[str, Any], attempt: int) -> float:
    backoff = retry.get("backoff") or {}
    base = parse_duration(backoff.get("duration", "1s"))
    factor = float(backoff.get("factor", 2))
    wait = base * (factor ** (attempt - 1))
    cap = backoff.get("maxDuration") or backoff.get("cap")
    wait = min(wait, parse_duration(cap)) if cap else wait
    # Retry waits are sized for clusters (nodes coming back); on one machine a short wait is enough.
    return min(wait, float(os.environ.get("KAIRO_LOCAL_MAX_BACKOFF", "5")))


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def last_line(path: Path | None) -> str:
    if not path or not path.exists():
        return ""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; none elsewhere): what a pod's container holds besides its first one.

    torchrun starts its workers in sessions of their own, so a process group does not reach them.
    """
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of `pids` still there (a pod's processes, as the kubelet ends a container)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
