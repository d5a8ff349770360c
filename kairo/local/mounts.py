"""Volumes and paths for local runs: what a pod would mount becomes a folder under the run directory.

A PVC from `volumeClaimTemplates` or a `persistentVolumeClaim` is a folder that lives as long as the run
directory (`<run dir>/volumes/pvc/NAME` for a claim NAME, unless `kairo run --pvc NAME=DIR` maps it onto
a folder of the user's); an emptyDir is a folder per task; a ConfigMap or Secret becomes files written from the objects
the runner knows (the workspace file's own documents, the chart's defaults, secrets the user mapped).
Absolute paths in a task's args and env that fall under a mount are rewritten to the local folder.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairo.atomic import write_bytes


class Unsupported(ValueError):
    """A workflow feature the local runner does not run; the message says what and where."""


@dataclass
class LocalObjects:
    """ConfigMaps, Secrets and PersistentVolumeClaims a local run can mount, by name."""

    configmaps: dict[str, dict[str, str]]
    secrets: dict[str, Path]  # name -> a folder holding the secret's files
    claims: dict[str, Path] = field(default_factory=dict)  # name -> the folder it stands for (`kairo run --pvc`)

    @classmethod
    def from_documents(cls, documents: list[dict[str, Any]], secrets: dict[str, Path] | None = None,
                       claims: dict[str, Path] | None = None) -> LocalObjects:
        configmaps: dict[str, dict[str, str]] = {}
        found_secrets: dict[str, Path] = dict(secrets or {})
        for doc in documents:
            name = (doc.get("metadata") or {}).get("name", "")
            if doc.get("kind") == "ConfigMap":
                data = dict(doc.get("data") or {})
                for key, value in (doc.get("binaryData") or {}).items():
                    data[key] = base64.b64decode(value).decode()
                configmaps[name] = data
        return cls(configmaps, found_secrets, dict(claims or {}))


@dataclass(frozen=True)
class Mount:
    container_path: str
    local_path: Path


class PathMap:
    """Container paths → local paths, longest prefix first."""

    def __init__(self, mounts: list[Mount]):
        self.mounts = sorted(mounts, key=lambda m: len(m.container_path), reverse=True)

    def local(self, path: str) -> str | None:
        for mount in self.mounts:
            prefix = mount.container_path.rstrip("/")
            if path == prefix:
                return str(mount.local_path)
            if path.startswith(prefix + "/"):
                return str(mount.local_path / path[len(prefix) + 1 :])
        return None

    def rewrite(self, value: str) -> str:
        """Rewrite `value` when it is (or ends in `=`) a container path under a mount."""
        if value.startswith("/"):
            return self.local(value) or value
        if value.startswith("--") and "=" in value:
            flag, _, rest = value.partition("=")
            mapped = self.local(rest) if rest.startswith("/") else None
            return f"{flag}={mapped}" if mapped else value
        return value


def volume_folder(
    volume: dict[str, Any], run_dir: Path, task_dir: Path, objects: LocalObjects, where: str
) -> Path:
    """The local folder that stands for one pod volume (created and filled as needed)."""
    name = volume["name"]
    kinds = [k for k in volume if k != "name"]
    kind = kinds[0] if len(kinds) == 1 else ""
    spec = volume.get(kind) or {}
    if kind == "persistentVolumeClaim":
        # a claim the user mapped onto a folder of theirs, else one of the run directory's
        folder = objects.claims.get(spec["claimName"]) or run_dir / "volumes" / "pvc" / spec["claimName"]
    elif kind == "emptyDir":
        folder = task_dir / "emptydir" / name
    elif kind == "configMap":
        folder = task_dir / "configmap" / name
        data = objects.configmaps.get(spec.get("name", ""))
        if data is None and not spec.get("optional"):
            raise Unsupported(f"{where}: ConfigMap '{spec.get('name')}' is not known here — put it in the workspace "
                              "file (a ConfigMap document) or pass it with --config")
        _write_items(folder, data or {}, spec.get("items"))
    elif kind == "secret":
        folder = task_dir / "secret" / name
        source = objects.secrets.get(spec.get("secretName", ""))
        if source is None and not spec.get("optional"):
            raise Unsupported(f"{where}: Secret '{spec.get('secretName')}' is not known here — map it with "
                              f"--secret {spec.get('secretName')}=FOLDER")
        data = {p.name: p.read_text() for p in source.iterdir() if p.is_file()} if source else {}
        _write_items(folder, data, spec.get("items"))
    else:
        raise Unsupported(f"{where}: volume '{name}' of type {kind or kinds} cannot be mounted on this machine — "
                          "locally only persistentVolumeClaim, emptyDir, configMap and secret volumes work")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_items(folder: Path, data: dict[str, str], items: list[dict[str, Any]] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {i["key"]: i.get("path", i["key"]) for i in items} if items else {k: k for k in data}
    for key, path in chosen.items():
        if key in data:
            write_bytes(folder / path, data[key].encode(), 0o600)
