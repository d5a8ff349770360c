"""Which adapters a workspace serves, declared in a small ConfigMap its Deployment mounts by name.

Changing the ConfigMap rolls nothing: the kubelet rewrites the mounted file in place (a new `..data`
folder, then one symlink swapped), and the server watches it, pulls the newly named adapter by digest,
loads it beside the running one and switches to it (`kairo.serving.switching`). A pod that restarts reads
the same file, so what is declared is what runs. Locally, `deploy --local` writes the same document to
`state/adapters.json`.

The document (the ConfigMap's one key):

    {"adapters": [{"name": "phi3", "ref": "registry/repo@sha256:…", "digest": "sha256:…"}]}

An entry names a registry reference or an OCI layout on disk (`ref`), or a folder holding the PEFT files
(`path`, local runs); `digest` defaults to the reference's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ADAPTERS_KEY = "adapters.json"
ADAPTERS_MOUNT = "/etc/kairo/adapters"  # the serve container reads ADAPTERS_MOUNT/ADAPTERS_KEY


@dataclass(frozen=True)
class DeclaredAdapter:
    """One served adapter as the ConfigMap declares it."""

    name: str
    ref: str = ""
    path: str = ""
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest and "@sha256:" in self.ref:
            object.__setattr__(self, "digest", self.ref.rsplit("@", 1)[1])

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("name", self.name), ("ref", self.ref), ("path", self.path),
                                  ("digest", self.digest)) if v}


class BadDeclaration(ValueError):
    """The adapters document cannot be read; the message says what is wrong with it."""


def adapters_document(adapters: list[DeclaredAdapter]) -> str:
    """The document declaring `adapters`, the first the default; stable text, so an unchanged one compares equal."""
    return json.dumps({"adapters": [a.to_dict() for a in adapters]}, indent=2, sort_keys=True) + "\n"


def read_adapters_document(text: str) -> list[DeclaredAdapter]:
    """The adapters `text` declares; BadDeclaration when it is not such a document."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise BadDeclaration(f"not JSON: {err}") from err
    entries = data.get("adapters") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise BadDeclaration('expected {"adapters": [{"name": …, "ref": …}, …]}')
    out: list[DeclaredAdapter] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise BadDeclaration(f"adapters[{i}]: needs a name")
        if bool(entry.get("ref")) == bool(entry.get("path")):
            raise BadDeclaration(f"adapters[{i}] ({entry['name']}): give either ref or path")
        out.append(DeclaredAdapter(**{k: str(v) for k, v in entry.items() if k in ("name", "ref", "path", "digest")}))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise BadDeclaration(f"a name is declared twice: {names}")
    return out


def configmap_name(workspace: str) -> str:
    return f"{workspace}-adapters"


def build_adapters_configmap(workspace: str, namespace: str, adapters: list[DeclaredAdapter],
                             labels: dict[str, str], owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ConfigMap declaring what `workspace` serves."""
    meta: dict[str, Any] = {"name": configmap_name(workspace), "namespace": namespace, "labels": dict(labels)}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {ADAPTERS_KEY: adapters_document(adapters)}}


def declared_in(configmap: dict[str, Any] | None) -> list[DeclaredAdapter]:
    """What a ConfigMap read back from the cluster declares (nothing when it is missing or unreadable)."""
    text = ((configmap or {}).get("data") or {}).get(ADAPTERS_KEY)
    if not text:
        return []
    try:
        return read_adapters_document(text)
    except BadDeclaration:
        return []
