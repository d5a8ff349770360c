"""Which adapters a workspace serves, declared in a small ConfigMap its Deployment mounts by name.

Changing the ConfigMap rolls nothing: the kubelet rewrites the mounted file in place (a new `..data`
folder, then one symlink swapped), and the server watches it, pulls the newly named adapter by digest,
loads it beside the running one and switches to it (`kairo.serving.switching`). A pod that restarts reads
the same file, so what is declared is what runs. Locally, `deploy --local` writes the same document to
`state/adapters.json`.

The document (the ConfigMap's one key):

    {"adapters": [{"name": "phi3", "ref": "registry/repo@sha256:…", "digest": "sha256:…"}]}

An entry names a registry reference or an OCI layout on disk (`ref`), or a folder holding the PEFT files
(`path`, local runs); `digest` defaults to the reference's. `strength` (0 to 1, Kaito's `adapters[].strength`)
weighs the adapter into `combined_adapter`: when any entry has one the server serves that combination too (an
entry without one weighs 1.0), and a new strength or a new digest of a weighed adapter makes it again, in place.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kairo.spec.inference import COMBINED_ADAPTER  # the name the server gives the combination

ADAPTERS_KEY = "adapters.json"
ADAPTERS_MOUNT = "/etc/kairo/adapters"  # the serve container reads ADAPTERS_MOUNT/ADAPTERS_KEY


@dataclass(frozen=True)
class DeclaredAdapter:
    """One served adapter as the ConfigMap declares it."""

    name: str
    ref: str = ""
    path: str = ""
    digest: str = ""
    strength: float | None = None  # its weight in combined_adapter (None: 1.0, or no combination when none has one)

    def __post_init__(self) -> None:
        if not self.digest and "@sha256:" in self.ref:
            object.__setattr__(self, "digest", self.ref.rsplit("@", 1)[1])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in (("name", self.name), ("ref", self.ref), ("path", self.path),
                                                 ("digest", self.digest)) if v}
        if self.strength is not None:
            out["strength"] = self.strength
        return out


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
        strength = entry.get("strength")
        if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int | float)
                                     or not 0 <= strength <= 1):
            raise BadDeclaration(f"adapters[{i}] ({entry['name']}): strength {strength!r} — a number from 0 to 1")
        out.append(DeclaredAdapter(**{k: str(v) for k, v in entry.items() if k in ("name", "ref", "path", "digest")},
                                   strength=None if strength is None else float(strength)))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise BadDeclaration(f"a name is declared twice: {names}")
    return out


def weights_of(adapters: list[DeclaredAdapter]) -> dict[str, float]:
    """Each adapter's weight in combined_adapter; empty (no combination) when none is given a strength."""
    if all(a.strength is None for a in adapters):
        return {}
    return {a.name: 1.0 if a.strength is None else a.strength for a in adapters}


def combination_digest(parts: dict[str, tuple[str, float]]) -> str:
    """What identifies combined_adapter's weights (name → the adapter's digest, its weight): the server reports it
    as the combination's digest on /health, and deploy waits for it after a strength or digest changed. An adapter
    without a digest (a folder) is named by its name only: the combination follows its weight, not its files."""
    canonical = json.dumps(sorted([n, d, float(w)] for n, (d, w) in parts.items()), separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def served_digests(adapters: list[DeclaredAdapter]) -> dict[str, str]:
    """What a server serving `adapters` reports on /health: each name's digest, and with strengths the
    combination's (`combination_digest`)."""
    out = {a.name: a.digest for a in adapters}
    weights = weights_of(adapters)
    if weights:
        out[COMBINED_ADAPTER] = combination_digest({n: (out[n], w) for n, w in weights.items()})
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
