"""The kairo adapter as an OCI artifact: media types, annotations, the manifest and the OCI image layout.

Pure and offline: nothing here talks to a registry (that is `kairo.clients.oci`). Everything that goes
into the manifest comes from the adapter folder itself — `created` is read from `kairo.json`, written at
training time — so the same adapter always gives the same manifest bytes and therefore the same digest.

`kairo.json` keys read here (snake_case; camelCase is accepted too): `created` (RFC 3339),
`base_model`, `preset`, `method`, `dataset_digest`, `source` (a URL for `org.opencontainers.image.source`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kairo.atomic import write_bytes, write_text

ARTIFACT_TYPE = "application/vnd.kairo.adapter.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
# OCI 1.1: an artifact with its own artifactType carries the empty JSON object as its config.
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
BASE_MODEL = "kairo.sh/base-model"
PRESET = "kairo.sh/preset"
METHOD = "kairo.sh/method"
DATASET_DIGEST = "kairo.sh/dataset-digest"

_MEDIA = "application/vnd.kairo.adapter"
CONFIG_MEDIA_TYPE = f"{_MEDIA}.config.v1+json"
WEIGHTS_MEDIA_TYPE = f"{_MEDIA}.weights.v1+safetensors"
METADATA_MEDIA_TYPE = f"{_MEDIA}.metadata.v1+json"
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
})
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterFolderError(ValueError):
    """The adapter folder is not a kairo adapter (missing file, unreadable kairo.json…)."""


def media_type_for(name: str) -> str:
    """The layer media type of one adapter file, chosen by its name."""
    base = name.rsplit("/", 1)[-1]
    if base == "adapter_config.json":
        return CONFIG_MEDIA_TYPE
    if base == "kairo.json":
        return METADATA_MEDIA_TYPE
    if base.endswith(".safetensors"):
        return WEIGHTS_MEDIA_TYPE
    suffix = "+json" if base.endswith(".json") else ""
    if base in TOKENIZER_FILES:
        return f"{_MEDIA}.tokenizer.v1{suffix}"
    return f"{_MEDIA}.file.v1{suffix}"


def file_digest(path: Path) -> str:
    """`sha256:…` of a file, read in chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def bytes_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical_json(value: object) -> bytes:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    """One blob of the artifact: a file of the adapter (`path`) or bytes held here (`data`)."""

    media_type: str
    digest: str
    size: int
    title: str = ""
    path: Path | None = None
    data: bytes | None = None

    def descriptor(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.title:
            out["annotations"] = {TITLE: self.title}
        return out


EMPTY_CONFIG = Blob(EMPTY_CONFIG_MEDIA_TYPE, bytes_digest(EMPTY_JSON), len(EMPTY_JSON), data=EMPTY_JSON)


@dataclass(frozen=True)
class Artifact:
    """An adapter ready to push: its files as layers, the manifest bytes and their digest."""

    manifest: bytes
    digest: str
    layers: tuple[Blob, ...]
    config: Blob
    created: str
    annotations: dict[str, str]
    notes: tuple[str, ...] = field(default=())

    @property
    def tag(self) -> str:
        """The immutable tag: `YYYYMMDD-<12 hex of the digest>`, the date from `created`."""
        return immutable_tag(self.created, self.digest)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def manifest_blob(self) -> Blob:
        return Blob(MANIFEST_MEDIA_TYPE, self.digest, len(self.manifest), data=self.manifest)


def immutable_tag(created: str, digest: str) -> str:
    """`YYYYMMDD-<first 12 hex digits>`: sorts by date, and names exactly one manifest."""
    when = parse_time(created)
    return f"{when:%Y%m%d}-{digest.split(':', 1)[-1][:12]}"


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as an aware datetime in UTC."""
    when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def adapter_files(adapter_dir: Path) -> list[Path]:
    """The files that make up the adapter, sorted by path; hidden files (temp files, .DS_Store) are left out."""
    files = []
    for path in sorted(adapter_dir.rglob("*")):
        relative = path.relative_to(adapter_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_symlink():
            raise AdapterFolderError(f"{path}: a link — an adapter folder holds plain files only")
        if path.is_file():
            files.append(path)
    return files


def _info(adapter_dir: Path) -> dict:
    path = adapter_dir / "kairo.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AdapterFolderError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise AdapterFolderError(f"{path}: must hold a JSON object, not {type(data).__name__}")
    return data


def _pick(info: dict, *keys: str) -> str:
    for key in keys:
        value = info.get(key)
        if value not in (None, ""):
            return str(value)
    return ""


def adapter_annotations(adapter_dir: Path, extra: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Manifest annotations from `kairo.json` (and `extra`, which wins), plus notes about what was assumed."""
    info = _info(adapter_dir)
    notes = []
    created = _pick(info, "created", "created_at", "createdAt")
    if not created:
        # Deterministic still: the file's time does not change when the same folder is pushed again.
        anchor = adapter_dir / ("kairo.json" if (adapter_dir / "kairo.json").exists() else "adapter_config.json")
        created = datetime.fromtimestamp(int(anchor.stat().st_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        notes.append(f"kairo.json has no 'created': using the time of {anchor.name}, {created}")
    annotations = {
        CREATED: created,
        SOURCE: _pick(info, "source"),
        BASE_MODEL: _pick(info, "base_model", "baseModel"),
        PRESET: _pick(info, "preset"),
        METHOD: _pick(info, "method"),
        DATASET_DIGEST: _pick(info, "dataset_digest", "datasetDigest"),
    }
    annotations.update(extra or {})
    try:
        parse_time(annotations[CREATED])
    except ValueError as err:
        raise AdapterFolderError(
            f"{CREATED}: '{annotations[CREATED]}' is not an RFC 3339 time (e.g. 2025-01-31T12:00:00Z)") from err
    return {k: v for k, v in annotations.items() if v}, notes


def adapter_artifact(adapter_dir: str | os.PathLike[str], annotations: dict[str, str] | None = None) -> Artifact:
    """Describe the adapter folder as one OCI artifact (files as layers, sorted by path); nothing is sent."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise AdapterFolderError(f"{folder}: no adapter folder here (train writes it to <workdir>/adapter/)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise AdapterFolderError(f"{folder}: {', '.join(missing)} missing — a PEFT adapter saved as safetensors "
                                 "has adapter_config.json and adapter_model.safetensors")
    merged, notes = adapter_annotations(folder, annotations)
    if not (folder / "kairo.json").exists():
        notes.append("no kairo.json beside the adapter: base model, preset and dataset annotations are missing")
    layers = tuple(
        Blob(media_type_for(rel), file_digest(path), path.stat().st_size, title=rel, path=path)
        for path in adapter_files(folder)
        for rel in [path.relative_to(folder).as_posix()]
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": EMPTY_CONFIG.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
        "annotations": merged,
    }
    data = canonical_json(manifest)
    return Artifact(data, bytes_digest(data), layers, EMPTY_CONFIG, merged[CREATED], merged, tuple(notes))


def write_layout(artifact: Artifact, folder: str | os.PathLike[str]) -> Path:
    """Add the artifact to an OCI image layout at `folder` (blobs, `index.json`, `oci-layout`), tagged `artifact.tag`.

    Blobs are written temp-then-rename and `index.json` last, so a reader never sees a manifest whose blobs
    are missing. An existing layout keeps its other manifests; an entry with the same tag is replaced.
    """
    root = Path(folder)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (*artifact.layers, artifact.config, artifact.manifest_blob()):
        target = blobs / blob.digest.split(":", 1)[1]
        if target.exists() and target.stat().st_size == blob.size:
            continue
        if blob.data is not None:
            write_bytes(target, blob.data)
        else:
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(blob.path, partial)
            os.chmod(partial, 0o644)
            os.replace(partial, target)
    write_text(root / "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}))
    index_path = root / "index.json"
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
    entries = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != artifact.tag]
    entries.append({"mediaType": MANIFEST_MEDIA_TYPE, "artifactType": ARTIFACT_TYPE, "digest": artifact.digest,
                    "size": len(artifact.manifest), "annotations": {REF_NAME: artifact.tag}})
    index["manifests"] = entries
    write_text(index_path, json.dumps(index, indent=2))
    return root


def copy_adapter(artifact: Artifact, folder: str | os.PathLike[str]) -> Path:
    """Copy the artifact's files into `folder` (which must not exist yet or is replaced by the caller)."""
    target = Path(folder)
    for layer in artifact.layers:
        dest = target / layer.title
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layer.path, dest)
        os.chmod(dest, 0o644)
    return target


def tag_in_layout(folder: str | os.PathLike[str], digest: str, tag: str) -> None:
    """Name the manifest `digest` of the layout at `folder` also `tag` (an entry of `index.json` moves)."""
    index_path = Path(folder) / "index.json"
    index = json.loads(index_path.read_text())
    entries = index.get("manifests", [])
    match = next((m for m in entries if m.get("digest") == digest), None)
    if match is None:
        raise AdapterFolderError(f"{folder}: no manifest {digest} in index.json")
    entry = {**match, "annotations": {**(match.get("annotations") or {}), REF_NAME: tag}}
    kept = [m for m in entries if (m.get("annotations") or {}).get(REF_NAME) != tag]
    index["manifests"] = [*kept, entry]
    write_text(index_path, json.dumps(index, indent=2))
