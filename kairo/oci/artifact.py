"""The kairo adapter as an OCI image in Kaito's layout: annotations, the manifest and the OCI image layout.

The image (what `kairo-step push` sends, what Kaito's adapter puller unpacks): an OCI image manifest whose
config is an image config with `rootfs.diff_ids`, one reproducible tar+gzip layer holding the adapter's files
under `data/` (`kairo.oci.image`), Kaito's annotation `sh.kaito.model.name` (the preset, as Kaito's tuning
sets it) and kairo's provenance annotations. No `artifactType` and no index: Kaito's README asks for neither.

Earlier kairo versions pushed an ORAS artifact of raw files (`ARTIFACT_TYPE`, one layer per file named by its
title); `kairo.clients.oci` still reads those.

Pure and offline: nothing here talks to a registry (that is `kairo.clients.oci`). Everything that goes
into the manifest comes from the adapter folder itself — `created` is read from `kairo.json`, written at
training time — so the same adapter always gives the same layer, config and manifest bytes and therefore the
same digests.

`kairo.json` keys read here (snake_case; camelCase is accepted too): `created` (RFC 3339),
`base_model`, `preset`, `method`, `dataset_digest`, `source` (a URL for `org.opencontainers.image.source`),
`vllm_loadable` (what `kairo.training.vllm` found when train saved the adapter).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kairo.atomic import write_bytes, write_text
from kairo.oci import image

ARTIFACT_TYPE = "application/vnd.kairo.adapter.v1"  # the layout of earlier kairo versions, still read
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"
KAITO_MODEL_NAME = "sh.kaito.model.name"  # Kaito's tuning pusher sets it to the preset's name
BASE_MODEL = "kairo.sh/base-model"
PRESET = "kairo.sh/preset"
METHOD = "kairo.sh/method"
DATASET_DIGEST = "kairo.sh/dataset-digest"
VLLM_LOADABLE = "kairo.sh/vllm-loadable"

REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterFolderError(ValueError):
    """The adapter folder is not a kairo adapter (missing file, unreadable kairo.json…)."""


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
    """One blob of the image: bytes held here (`data`) or a file written beside (`path`)."""

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


@dataclass(frozen=True)
class Artifact:
    """An adapter ready to push: its one layer, its image config, the manifest bytes and their digest."""

    manifest: bytes
    digest: str
    layers: tuple[Blob, ...]
    config: Blob
    created: str
    annotations: dict[str, str]
    files: tuple[tuple[str, Path], ...]  # the adapter's files: name relative to the folder (and to data/) → path
    diff_id: str = ""
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
        VLLM_LOADABLE: _pick(info, "vllm_loadable", "vllmLoadable").lower(),
        KAITO_MODEL_NAME: _pick(info, "preset"),
    }
    annotations.update(extra or {})
    try:
        parse_time(annotations[CREATED])
    except ValueError as err:
        raise AdapterFolderError(
            f"{CREATED}: '{annotations[CREATED]}' is not an RFC 3339 time (e.g. 2025-01-31T12:00:00Z)") from err
    return {k: v for k, v in annotations.items() if v}, notes


def adapter_artifact(adapter_dir: str | os.PathLike[str], annotations: dict[str, str] | None = None, *,
                     scratch: str | os.PathLike[str] | None = None) -> Artifact:
    """Describe the adapter folder as one OCI image in Kaito's layout; nothing is sent.

    The layer is written into the folder `scratch` when given (a file the caller removes with the folder),
    else held in memory. The preset annotation `kairo.sh/preset` (from kairo.json or `annotations`) names
    the image's model for Kaito too (`sh.kaito.model.name`) unless `annotations` sets that one itself.
    """
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise AdapterFolderError(f"{folder}: no adapter folder here (train writes it to <workdir>/adapter/)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise AdapterFolderError(f"{folder}: {', '.join(missing)} missing — a PEFT adapter saved as safetensors "
                                 "has adapter_config.json and adapter_model.safetensors")
    extra = dict(annotations or {})
    if PRESET in extra and KAITO_MODEL_NAME not in extra:
        extra[KAITO_MODEL_NAME] = extra[PRESET]
    merged, notes = adapter_annotations(folder, extra)
    if not (folder / "kairo.json").exists():
        notes.append("no kairo.json beside the adapter: base model, preset and dataset annotations are missing")
    files = tuple((path.relative_to(folder).as_posix(), path) for path in adapter_files(folder))
    if scratch is None:
        buffer = io.BytesIO()
        written = image.write_layer(files, buffer)
        layer = Blob(image.LAYER_MEDIA_TYPE, written.digest, written.size, data=buffer.getvalue())
    else:
        path = Path(scratch) / "layer.tar.gz"
        with open(path, "wb") as out:
            written = image.write_layer(files, out)
        layer = Blob(image.LAYER_MEDIA_TYPE, written.digest, written.size, path=path)
    config_bytes = canonical_json(image.image_config(written))
    config = Blob(image.IMAGE_CONFIG_MEDIA_TYPE, bytes_digest(config_bytes), len(config_bytes), data=config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": merged,
    }
    data = canonical_json(manifest)
    return Artifact(data, bytes_digest(data), (layer,), config, merged[CREATED], merged, files, written.diff_id,
                    tuple(notes))


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
    entries.append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": artifact.digest,
                    "size": len(artifact.manifest), "annotations": {REF_NAME: artifact.tag}})
    index["manifests"] = entries
    write_text(index_path, json.dumps(index, indent=2))
    return root


def copy_adapter(artifact: Artifact, folder: str | os.PathLike[str]) -> Path:
    """Copy the artifact's files into `folder` (which must not exist yet or is replaced by the caller)."""
    target = Path(folder)
    for name, path in artifact.files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
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
