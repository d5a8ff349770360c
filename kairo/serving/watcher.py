"""Watch the adapters file (the mounted ConfigMap) and switch when what it declares changes.

The kubelet updates a ConfigMap volume by writing a new `..data` folder and swapping one symlink, so the
file is never seen half written; reading it by its path again (not holding it open, not watching its
inode) sees the new version. It is read every `watch_interval_s`: inotify would miss the swap of a
symlink in the folder above, and polling a file of a few hundred bytes costs nothing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from kairo.problems import InvalidInput
from kairo.serving.options import adapters_from_file
from kairo.serving.switching import Switchboard, SwitchFailed

log = logging.getLogger("kairo.serve")


class AdaptersFileWatcher:
    """A thread applying the adapters file to the switchboard each time its content changes."""

    def __init__(self, path: Path, switchboard: Switchboard, interval_s: float = 1.0):
        self.path = path
        self.switchboard = switchboard
        self.interval_s = interval_s
        self._seen: str | None = None  # the first read applies the file: it may have changed while the model loaded
        # what the file declared last (at first, what it declared when the server started: a name dropped while
        # the model loaded must go too); a name it drops stops being served
        self._names = {a.name for a in switchboard.config.adapters if a.from_file}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kairo-adapters-watch", daemon=True)

    def start(self) -> AdaptersFileWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None  # between the kubelet's steps, or removed: keep serving what runs

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            text = self._read()
            if text is None or text == self._seen:
                continue
            self._seen = text
            self.check_now()

    def check_now(self) -> None:
        """Apply the file as it is now; a bad file or a failed switch is logged and reported, never raised."""
        try:
            declared = adapters_from_file(self.path)
        except InvalidInput as err:
            self.switchboard.status.error = "; ".join(str(p) for p in err.problems)
            log.error("the adapters file cannot be read, nothing switched: %s", self.switchboard.status.error)
            return
        names = {a.name for a in declared}
        # --adapter flags may serve other names beside the file's: only a name the file itself dropped goes
        dropped = self._names - names
        self._names = names
        try:
            switched = self.switchboard.apply(declared, dropped)
        except SwitchFailed as err:
            log.error("switch failed, the adapter serving before keeps serving: %s", err)
            return
        if switched:
            log.info("serving now: %s", ", ".join(f"{a.name} {a.digest}".strip() for a in declared))
