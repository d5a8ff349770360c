"""The inference server `deploy --local` leaves running on this machine, and how it is stopped again.

Its files live in the run's `state/` folder: `serve.pid`, `serve.log`, `deployed.json` (the same
record the cluster keeps on the Service's annotations) and `adapters.json` (what the cluster's adapters
ConfigMap holds: the server watches it, so a retrain switches the served adapter without a restart).
`cleanup --local` calls `stop(workdir)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kairo.atomic import write_text


class ServerFailed(Exception):
    """The server exited or did not become ready; the message carries the end of its log."""


def state_dir(workdir: str | os.PathLike[str]) -> Path:
    return Path(workdir) / "state"


def pid_path(workdir: str | os.PathLike[str]) -> Path:
    return state_dir(workdir) / "serve.pid"


def log_path(workdir: str | os.PathLike[str]) -> Path:
    return state_dir(workdir) / "serve.log"


def deployed_path(workdir: str | os.PathLike[str]) -> Path:
    return state_dir(workdir) / "deployed.json"


def adapters_path(workdir: str | os.PathLike[str]) -> Path:
    return state_dir(workdir) / "adapters.json"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], workdir: str | os.PathLike[str], env: dict[str, str] | None = None) -> int:
    """Start `command` detached (its own session, so the step can exit) logging to state/serve.log; its pid."""
    log = log_path(workdir)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 — a fixed program and flags built by deploy, no shell
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, close_fds=True,
        )
    write_text(pid_path(workdir), f"{proc.pid}\n")
    return proc.pid


def wait_ready(url: str, pid: int, timeout: float, workdir: str | os.PathLike[str]) -> None:
    """Wait until `url`/ready answers 200; ServerFailed when the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ServerFailed(f"the server exited before it was ready; the end of its log:\n{log_tail(workdir)}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as answer:  # noqa: S310 — our own loopback URL
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or still loading the model
        time.sleep(0.2)
    raise ServerFailed(f"the server was not ready after {timeout:g}s; the end of its log:\n{log_tail(workdir)}")


class SwitchRefused(ServerFailed):
    """The server could not switch to the new adapter; it keeps serving the one before."""


def wait_serving(url: str, name: str, digest: str, timeout: float, pid: int | None = None) -> None:
    """Wait until `url`/health reports `digest` serving under `name`; SwitchRefused when the server says the
    switch to it failed, ServerFailed when the server dies or time runs out."""
    deadline = time.monotonic() + timeout
    said: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise ServerFailed("the server exited during the switch")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310 — our own loopback URL
                said = json.loads(answer.read())
        except (urllib.error.URLError, OSError, ValueError):
            said = {}
        if (said.get("adapters") or {}).get(name) == digest:
            return
        switch = said.get("switch") or {}
        if switch.get("error") and (switch.get("wanted") or {}).get(name) == digest:
            raise SwitchRefused(f"the server did not switch {name} to {digest}: {switch['error']}")
        time.sleep(0.1)
    serving = (said.get("adapters") or {}).get(name, "nothing")
    raise ServerFailed(f"the server did not report {digest} for {name} after {timeout:g}s (it serves {serving})")


def running(workdir: str | os.PathLike[str]) -> int | None:
    """The pid of the server started for this work folder, when it still runs."""
    pid = server_pid(workdir)
    return pid if pid is not None and alive(pid) and _is_our_server(pid, workdir) else None


def server_pid(workdir: str | os.PathLike[str]) -> int | None:
    """The pid `start` recorded for this work folder; None when no server was started (or the file is unreadable)."""
    try:
        return int(pid_path(workdir).read_text().strip())
    except (OSError, ValueError):
        return None


def stop(workdir: str | os.PathLike[str], grace: float = 10) -> bool:
    """Stop the server started for this work folder; False when none runs. Never signals another process."""
    pid = server_pid(workdir)
    if pid is None:
        return False
    running = alive(pid) and _is_our_server(pid, workdir)
    if running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # its own session: the group is the server and its workers
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pid_path(workdir).unlink(missing_ok=True)
    return running


def read_deployed(workdir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads(deployed_path(workdir).read_text())
    except (OSError, ValueError):
        return None


def write_deployed(workdir: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    return write_text(deployed_path(workdir), json.dumps(data, indent=2) + "\n")


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not; one of another user's does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited but was not reaped yet is a zombie: not alive for our purpose.
    with contextlib.suppress(OSError):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return False
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_server(pid: int, workdir: str | os.PathLike[str]) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc (macOS): the pid file is all we have
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    text = b" ".join(args).decode(errors="replace")
    return "serve" in text and str(Path(workdir).resolve()) in text


def log_tail(workdir: str | os.PathLike[str], lines: int = 30) -> str:
    try:
        return "\n".join(log_path(workdir).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
