"""OCI registries: push and pull adapters, pull datasets and model artifacts, move tags.

Everything kairo does with a registry goes through this module (oras-py underneath, in its transport half
`oci_transport`; no other module imports `oras`). The calls:

- `push_adapter(adapter_dir, ref, access, *, annotations)` → `PushResult` (`digest`; `ref` =
  `registry/repo@sha256:…`; `tag`, the immutable `YYYYMMDD-<12 hex>`): the adapter as an image in Kaito's
  layout (`kairo.oci.artifact`: its files under `data/` in one reproducible layer). Only that tag is set: the moving
  tag (the one in `output.image`) is moved with `tag()` by deploy, once deployed.
- `write_local_layout(adapter_dir, folder, annotations)` → `PushResult`: the very manifest a push sends,
  in an OCI image layout on disk (`kairo run --local` when the registry does not answer); `ref` is
  `FOLDER@sha256:…`, which every pull below accepts.
- `pull_adapter(ref, dest_dir, …)` → `dest_dir`: by tag or digest, every blob verified, `dest_dir` replaced
  whole (temp folder, then rename). Reads an image in Kaito's layout (files under `/data`, as Kaito's puller
  takes them: kairo's pushes and Kaito's own) and the raw-file artifact of earlier kairo versions
  (`application/vnd.kairo.adapter.v1`); refuses anything else.
- `pull_dataset(ref, dest_dir, …)` → files: an ORAS artifact's files, or a Kaito-style container image's
  files under `/data` (its layers read, never run: `kairo.oci.layers`).
- `pull_model(ref, dest_dir, *, keep=None, …)` → files: the same for model weights: an ORAS artifact's files,
  or a Kaito model image's files under `/workspace/tfs/weights` (Kaito's link from there to
  `/workspace/weights` followed inside the image); `keep(name)` picks the files taken.
- `pull_artifact(ref, dest_dir, *, artifact_type=None, …)` → files: any ORAS artifact (adapters).
- `tag(ref_with_digest, new_tag, …)` → `registry/repo:new_tag@digest`; `resolve(ref, …)` → digest;
  `tags(ref, …)`; `registry_answers(ref, …)`.

Every call takes a `RegistryAccess` (`kairo.oci.access`: the credentials file, plain HTTP or not, retries),
built by `registry_access(ref, cluster, …)` — the one place the plain-HTTP rule is decided.

A registry `ref` is `registry/repo[:tag][@digest]`; a layout ref is `/path[@sha256:…]` or `/path:TAG`
(it starts with `/` or `.`). Credentials come only from the dockerconfigjson `auth_file` (the mounted
Kubernetes secret), never from `~/.docker/config.json`; without one, anonymous. Every failure is a
`RegistryError` whose `exit_code` a step returns as it is (2: fix the input; 75: try again). Transient
failures are retried on kairo's short schedule (`access.retry_wait`, then twice as long…), not oras-py's 2 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from kairo.atomic import staged_dir
from kairo.clients.oci_transport import (
    DOCKER_LIST,
    BadReference,
    CredentialsMissing,
    CredentialsRefused,
    DigestMismatch,
    NotFound,
    RegistryError,
    RegistryRejected,
    RegistryUnreachable,
    UnsafeContent,
    WrongArtifact,
    connect,
    parse,
    read_credentials,
    retry,
    talking,
)
from kairo.clients.oci_transport import registry_answers as _answers
from kairo.oci import artifact as art
from kairo.oci import layers
from kairo.oci.access import RegistryAccess, registry_access
from kairo.oci.reference import Reference

__all__ = [
    "PushResult", "push_adapter", "write_local_layout", "pull_adapter", "pull_dataset", "pull_model", "pull_artifact",
    "tag",
    "resolve", "tags", "registry_answers", "RegistryAccess", "registry_access", "read_credentials", "parse", "RegistryError", "BadReference",
    "CredentialsMissing", "CredentialsRefused", "DigestMismatch", "NotFound", "RegistryRejected",
    "RegistryUnreachable", "UnsafeContent", "WrongArtifact",
]

DEFAULT_MAX_BYTES = 20 * 1024**3
IMAGE_CONFIG_TYPES = frozenset({"application/vnd.oci.image.config.v1+json",
                                "application/vnd.docker.container.image.v1+json"})
IMAGE_LAYER_TYPES = frozenset({"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
                               "application/vnd.docker.image.rootfs.diff.tar.gzip"})
FOLDER_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"  # oras pushes a folder as one such layer
DATASET_FOLDER = "data"  # where Kaito's dataset images keep their files
MODEL_FOLDER = "workspace/tfs/weights"  # where Kaito's model images keep the weights (its tuning reads them there)
UNPACK = "io.deis.oras.content.unpack"
T = TypeVar("T")
ANONYMOUS = RegistryAccess()  # no credentials, TLS, kairo's default retries


@dataclass(frozen=True)
class PushResult:
    """Where the adapter went: its manifest digest, a reference by digest, its immutable tag."""

    digest: str
    ref: str
    tag: str
    location: str  # "registry", "layout" or "volume"
    notes: tuple[str, ...] = ()


# --- push -------------------------------------------------------------------------------------------------


def _describe(adapter_dir: str | os.PathLike[str], annotations: dict[str, str] | None, scratch: str) -> art.Artifact:
    try:
        return art.adapter_artifact(adapter_dir, annotations, scratch=scratch)
    except art.AdapterFolderError as err:
        raise UnsafeContent(str(err)) from None


def push_adapter(
    adapter_dir: str | os.PathLike[str], ref: str | Reference, access: RegistryAccess = ANONYMOUS, *,
    annotations: dict[str, str] | None = None,
) -> PushResult:
    """Push the adapter folder to the repository of `ref` as one image in Kaito's layout, tagged with its
    immutable tag.

    The credentials are checked before any blob is sent, so refused credentials leave nothing behind.
    """
    reference = parse(ref)
    if reference.digest:
        raise BadReference(f"'{ref}': push needs a repository (and maybe a tag), not a digest")
    with tempfile.TemporaryDirectory(prefix="kairo-push-") as scratch:
        artifact = _describe(adapter_dir, annotations, scratch)

        def attempt() -> None:
            client = connect(reference, access.auth_file, access.plain_http)
            for blob in (artifact.config, *artifact.layers):
                client.upload(blob)
            client.put_manifest(artifact.tag, artifact.manifest, art.MANIFEST_MEDIA_TYPE)

        retry(attempt, f"push to {reference.name}", access.retries, access.retry_wait)
    return PushResult(artifact.digest, f"{reference.name}@{artifact.digest}", artifact.tag, "registry",
                      artifact.notes)


def write_local_layout(
    adapter_dir: str | os.PathLike[str], folder: str | os.PathLike[str], annotations: dict[str, str] | None = None,
) -> PushResult:
    """Write the adapter's image (the manifest a push would send) into an OCI image layout at `folder`."""
    with tempfile.TemporaryDirectory(prefix="kairo-layout-") as scratch:
        artifact = _describe(adapter_dir, annotations, scratch)
        root = art.write_layout(artifact, folder).resolve()
    return PushResult(artifact.digest, f"{root}@{artifact.digest}", artifact.tag, "layout", artifact.notes)


# --- where pulls read from: a registry, or a layout on disk -----------------------------------------------


class _LayoutSource:
    """An OCI image layout on disk, read like a registry (`oci_transport.Client` has the same two methods):
    `manifest(target)` by tag or digest, and `download(descriptor, to)`, verified."""

    def __init__(self, root: Path):
        if not (root / "oci-layout").is_file():
            raise NotFound(f"{root}: not an OCI image layout (no oci-layout file)")
        self.root = root
        self.label = str(root)

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not hexdigest.isalnum():
            raise UnsafeContent(f"{self.label}: '{digest}' is not a sha256 digest")
        path = self.root / "blobs" / "sha256" / hexdigest
        if not path.is_file():
            raise NotFound(f"{self.label}: blob {digest} is missing")
        return path

    def manifest(self, target: str) -> tuple[bytes, str]:
        digest = target
        if not target.startswith("sha256:"):
            index = json.loads((self.root / "index.json").read_text())
            named = [m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(art.REF_NAME) == target]
            if not named:
                raise NotFound(f"{self.label}: no manifest tagged '{target}'")
            digest = named[-1]["digest"]
        data = self._blob_path(digest).read_bytes()
        if art.bytes_digest(data) != digest:
            raise DigestMismatch(f"{self.label}: manifest {digest} does not match its bytes")
        return data, ""

    def download(self, descriptor: dict, to: Path) -> Path:
        source = self._blob_path(descriptor["digest"])
        to.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, to)
        if art.file_digest(to) != descriptor["digest"] or to.stat().st_size != int(descriptor.get("size", -1)):
            raise DigestMismatch(f"{self.label}: blob {descriptor['digest']} does not match its descriptor")
        return to


def _is_layout(ref: str | Reference) -> bool:
    return isinstance(ref, str) and ref.startswith(("/", "."))


def _layout_ref(ref: str) -> tuple[Path, str]:
    if "@" in ref:
        path, _, digest = ref.partition("@")
        return Path(path), digest
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, _, tag_name = last.partition(":")
        return Path(f"{head}/{name}" if head else name), tag_name
    raise BadReference(f"'{ref}': a layout reference names a digest (PATH@sha256:…) or a tag (PATH:TAG)")


def _pulling(ref: str | Reference, access: RegistryAccess, body: Callable[[object, str, str], T]) -> T:
    """Run `body(source, target, label)` against a layout, or against the registry with retries."""
    if _is_layout(ref):
        root, target = _layout_ref(ref)
        with talking(f"read {ref}"):
            return body(_LayoutSource(root), target, str(ref))
    reference = parse(ref)
    return retry(lambda: body(connect(reference, access.auth_file, access.plain_http), reference.target,
                              str(reference)), f"pull {reference}", access.retries, access.retry_wait)


def _manifest(source, target: str, label: str) -> dict:
    """The image or artifact manifest `target` names; for an index, the linux/amd64 entry (or its only one)."""
    data, _media_type = source.manifest(target)
    manifest = json.loads(data)
    if manifest.get("mediaType") in (art.INDEX_MEDIA_TYPE, DOCKER_LIST) or "manifests" in manifest:
        entries = manifest.get("manifests") or []
        amd64 = [m for m in entries if (m.get("platform") or {}).get("os") == "linux"
                 and (m.get("platform") or {}).get("architecture") == "amd64"]
        chosen = amd64 or (entries if len(entries) == 1 else [])
        if not chosen:
            raise WrongArtifact(f"{label}: an index without a linux/amd64 entry — name one manifest by digest")
        return _manifest(source, chosen[0]["digest"], label)
    if "layers" not in manifest:
        raise WrongArtifact(f"{label}: not an OCI or Docker v2 image manifest")
    return manifest


def _kind(manifest: dict) -> str:
    config_type = (manifest.get("config") or {}).get("mediaType", "")
    if config_type in IMAGE_CONFIG_TYPES:
        return "a container image"
    return f"an artifact of type '{manifest.get('artifactType') or config_type or 'unknown'}'"


# --- pulls ------------------------------------------------------------------------------------------------


def _safe_title(title: str, label: str) -> str:
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts or title.startswith("\\") or "\x00" in title:
        raise UnsafeContent(f"{label}: a layer named '{title}' — refused, names must be relative paths without '..'")
    return path.as_posix()


def _install(dest_dir: str | os.PathLike[str], fill: Callable[[Path, Path], list[Path]]) -> list[Path]:
    """Fill a temp folder beside `dest_dir` (`fill(staged, scratch)`) and let it replace `dest_dir` whole."""
    dest = Path(dest_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", suffix=".download", dir=dest.parent) as scratch:
        with staged_dir(dest) as staged:
            written = fill(staged, Path(scratch))
            relative = [path.relative_to(staged) for path in written]
    return sorted(dest / rel for rel in relative)


def _pull_files(source, manifest: dict, dest_dir, label: str, max_bytes: int,
                keep: Callable[[str], bool] | None = None) -> list[Path]:
    """An ORAS artifact's layers as files named by their titles; a folder layer is unpacked safely.

    A file layer whose title `keep` refuses is not downloaded; a folder layer's files are judged one by one.
    """
    descriptors = [d for d in manifest.get("layers") or [] if keep is None or _is_folder_layer(d)
                   or keep(_safe_title((d.get("annotations") or {}).get(art.TITLE, ""), label))]
    total = sum(int(d.get("size", 0)) for d in descriptors)
    if total > max_bytes:
        raise UnsafeContent(f"{label}: {total} bytes — more than the limit of {max_bytes}")

    def fill(staged: Path, scratch: Path) -> list[Path]:
        written: list[Path] = []
        seen: set[str] = set()
        for number, descriptor in enumerate(descriptors, 1):
            notes = descriptor.get("annotations") or {}
            title = _safe_title(notes.get(art.TITLE, ""), f"{label} layer {number}")
            if title in seen:
                raise UnsafeContent(f"{label}: two layers are named '{title}'")
            seen.add(title)
            if _is_folder_layer(descriptor):
                archive = source.download(descriptor, scratch / f"layer-{number}")
                try:
                    written += layers.extract([archive], staged, folder="", max_bytes=max_bytes,
                                              labels=[f"{label} layer '{title}'"], keep=keep)
                except (layers.UnsafeLayer, layers.LayerTooLarge) as err:
                    raise UnsafeContent(str(err)) from None
            else:
                written.append(source.download(descriptor, staged / title))
        return written

    return _install(dest_dir, fill)


def _is_folder_layer(descriptor: dict) -> bool:
    notes = descriptor.get("annotations") or {}
    return notes.get(UNPACK) == "true" or descriptor.get("mediaType") == FOLDER_LAYER_TYPE


def pull_artifact(
    ref: str | Reference, dest_dir: str | os.PathLike[str], access: RegistryAccess = ANONYMOUS, *,
    artifact_type: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Path]:
    """Pull an ORAS artifact's files into `dest_dir` (replaced whole); refuse another `artifact_type` if given."""

    def body(source, target: str, label: str) -> list[Path]:
        manifest = _manifest(source, target, label)
        found = manifest.get("artifactType") or (manifest.get("config") or {}).get("mediaType", "")
        if artifact_type and found != artifact_type:
            raise WrongArtifact(f"{label} is {_kind(manifest)}, not '{artifact_type}'")
        return _pull_files(source, manifest, dest_dir, label, max_bytes)

    return _pulling(ref, access, body)


def pull_adapter(
    ref: str | Reference, dest_dir: str | os.PathLike[str], access: RegistryAccess = ANONYMOUS, *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Pull an adapter (by tag or digest) into `dest_dir`, replaced whole; anything else is refused.

    Two layouts are read: an image in Kaito's layout — the files under `/data` of its layers, as Kaito's
    puller takes them (what kairo pushes, and what Kaito's tuning pushes) — and the ORAS artifact of raw
    files (`application/vnd.kairo.adapter.v1`) that earlier kairo versions pushed.
    """

    def body(source, target: str, label: str) -> Path:
        manifest = _manifest(source, target, label)
        if manifest.get("artifactType") == art.ARTIFACT_TYPE:
            _pull_files(source, manifest, dest_dir, label, max_bytes)
        elif (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIG_TYPES:
            _pull_image_folder(source, manifest, dest_dir, label, max_bytes, ADAPTER_IMAGE)
        else:
            raise WrongArtifact(f"{label} is {_kind(manifest)} — an adapter is an image with its PEFT files under "
                                f"/data (Kaito's layout, what `kairo-step push` makes) or a kairo adapter artifact "
                                f"({art.ARTIFACT_TYPE}, pushed by earlier kairo versions)")
        return Path(dest_dir)

    return _pulling(ref, access, body)


@dataclass(frozen=True)
class _ImageFolder:
    """What a pull takes from a container image: the folder, and how it says what is missing or too large."""

    folder: str
    holds: str  # "a Kaito dataset image", "a Kaito model image"
    limit: str  # the setting that sets max_bytes, for the refusal
    follow_link: bool = False
    required: tuple[str, ...] = ()  # files the folder must hold, else the image is refused


DATASET_IMAGE = _ImageFolder(DATASET_FOLDER, "a Kaito dataset image", "limits.maxDatasetBytes in the cluster config")
ADAPTER_IMAGE = _ImageFolder(DATASET_FOLDER, "an adapter image in Kaito's layout", "an adapter is at most 20 GiB",
                             required=art.REQUIRED_FILES)
MODEL_IMAGE = _ImageFolder(MODEL_FOLDER, "a Kaito model image", "fetch-model sizes it from the preset's "
                           "parameter count", follow_link=True)


def _pull_image_folder(source, manifest: dict, dest_dir, label: str, max_bytes: int, image: _ImageFolder,
                       keep: Callable[[str], bool] | None = None) -> list[Path]:
    """A container image's files under `image.folder`: layers downloaded and verified, then applied without running."""
    descriptors = manifest.get("layers") or []
    for number, descriptor in enumerate(descriptors, 1):
        if descriptor.get("mediaType") not in IMAGE_LAYER_TYPES:
            raise UnsafeContent(f"{label} layer {number}: media type '{descriptor.get('mediaType')}' — kairo reads "
                                "tar and tar+gzip layers (not zstd, not foreign layers)")
    total = sum(int(d.get("size", 0)) for d in descriptors)
    if total > max_bytes:
        raise UnsafeContent(f"{label}: layers of {total} bytes — more than the limit of {max_bytes} ({image.limit})")
    left_out: set[str] = set()

    def taken(name: str) -> bool:
        if keep is None or keep(name):
            return True
        left_out.add(name)
        return False

    def fill(staged: Path, scratch: Path) -> list[Path]:
        archives = [source.download(d, scratch / f"layer-{n}") for n, d in enumerate(descriptors, 1)]
        names = [f"{label} layer {n} ({d['digest'][:19]}…)" for n, d in enumerate(descriptors, 1)]
        try:
            files = layers.extract(archives, staged, folder=image.folder, max_bytes=max_bytes, labels=names,
                                   follow_link=image.follow_link, keep=taken)
        except layers.UnsafeLayer as err:
            raise UnsafeContent(str(err)) from None
        except layers.LayerTooLarge as err:
            raise UnsafeContent(f"{err} ({image.limit})") from None
        missing = [name for name in image.required if not (staged / name).is_file()]
        if not files and not left_out and not image.required:
            raise UnsafeContent(f"{label}: the image has no files under /{image.folder} — {image.holds} keeps "
                                "them there")
        if missing:
            raise WrongArtifact(f"{label}: no {', '.join(f'/{image.folder}/{n}' for n in missing)} in the image — "
                                f"{image.holds} holds {' and '.join(image.required)} under /{image.folder}")
        return files

    return _install(dest_dir, fill)


def _pull_files_or_image(ref: str | Reference, dest_dir, image: _ImageFolder, keep: Callable[[str], bool] | None,
                         access: RegistryAccess, max_bytes: int) -> list[Path]:
    """An ORAS artifact's files (layers with titles), or a container image's files under `image.folder`."""

    def body(source, target: str, label: str) -> list[Path]:
        manifest = _manifest(source, target, label)
        descriptors = manifest.get("layers") or []
        if any(art.TITLE in (d.get("annotations") or {}) for d in descriptors):
            return _pull_files(source, manifest, dest_dir, label, max_bytes, keep)
        if (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIG_TYPES:
            return _pull_image_folder(source, manifest, dest_dir, label, max_bytes, image, keep)
        raise WrongArtifact(f"{label} is {_kind(manifest)} with unnamed layers: neither an ORAS artifact of files "
                            f"nor a container image with files under /{image.folder}")

    return _pulling(ref, access, body)


def pull_dataset(
    ref: str | Reference, dest_dir: str | os.PathLike[str], access: RegistryAccess = ANONYMOUS, *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Path]:
    """Pull a dataset into `dest_dir` (replaced whole): an ORAS artifact's files, or an image's files under /data."""
    return _pull_files_or_image(ref, dest_dir, DATASET_IMAGE, None, access, max_bytes)


def pull_model(
    ref: str | Reference, dest_dir: str | os.PathLike[str], access: RegistryAccess = ANONYMOUS, *,
    keep: Callable[[str], bool] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Path]:
    """Pull model weights into `dest_dir` (replaced whole): an ORAS artifact's files, or a Kaito model image's
    files under /workspace/tfs/weights, where Kaito's tuning reads them (its link to /workspace/weights is
    followed inside the image). `keep(name)` — a path relative to that folder or the artifact — picks the files
    taken; the others are not downloaded (artifact layers) or not written (image files)."""
    return _pull_files_or_image(ref, dest_dir, MODEL_IMAGE, keep, access, max_bytes)


# --- tags -------------------------------------------------------------------------------------------------


def tag(ref_with_digest: str | Reference, new_tag: str, access: RegistryAccess = ANONYMOUS) -> str:
    """Point `new_tag` at the manifest `ref_with_digest` names (the moving tag); return `repo:new_tag@digest`."""
    if _is_layout(ref_with_digest):
        root, digest = _layout_ref(str(ref_with_digest))
        with talking(f"tag {ref_with_digest}"):
            _LayoutSource(root).manifest(digest)
            art.tag_in_layout(root, digest, new_tag)
        return f"{root}:{new_tag}@{digest}"
    reference = parse(ref_with_digest)
    if not reference.digest:
        raise BadReference(f"'{ref_with_digest}': name the manifest by digest (repo@sha256:…) to tag it")
    parse(f"{reference.name}:{new_tag}")  # refuses a malformed tag, naming it

    def attempt() -> None:
        client = connect(reference, access.auth_file, access.plain_http)
        data, media_type = client.manifest(reference.digest)
        client.put_manifest(new_tag, data, json.loads(data).get("mediaType") or media_type or art.MANIFEST_MEDIA_TYPE)

    retry(attempt, f"tag {reference.name}:{new_tag}", access.retries, access.retry_wait)
    return str(Reference(reference.registry, reference.repository, new_tag, reference.digest))


def resolve(ref: str | Reference, access: RegistryAccess = ANONYMOUS) -> str:
    """The manifest digest `ref` names (a ref with a digest names that digest; nothing is asked)."""
    if _is_layout(ref):
        root, target = _layout_ref(str(ref))
        with talking(f"resolve {ref}"):
            return art.bytes_digest(_LayoutSource(root).manifest(target)[0])
    reference = parse(ref)
    if reference.digest:
        return reference.digest
    return retry(lambda: connect(reference, access.auth_file, access.plain_http).head_digest(reference.target),
                 f"resolve {reference}", access.retries, access.retry_wait)


def tags(ref: str | Reference, access: RegistryAccess = ANONYMOUS) -> list[str]:
    """Every tag of the repository `ref` names (empty when the repository does not exist yet)."""
    reference = parse(ref)

    def attempt() -> list[str]:
        try:
            return connect(reference, access.auth_file, access.plain_http).tags()
        except NotFound:
            return []

    return retry(attempt, f"list the tags of {reference.name}", access.retries, access.retry_wait)


def registry_answers(ref: str | Reference, access: RegistryAccess = ANONYMOUS, *, timeout: float = 2.0) -> bool:
    """True when something answers HTTP at the registry of `ref` (one try, no retries: a quick probe)."""
    return _answers(ref, plain_http=access.plain_http, timeout=timeout)
