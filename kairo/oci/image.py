"""The adapter's image layer and image config, in Kaito's layout, byte for byte reproducible.

Kaito's adapter puller (kaito-project/kaito `pkg/workspace/image/puller.sh`) copies an image with skopeo,
untars every layer and moves the layer's `data/` folder to `/mnt/adapter/<name>`; its pusher (`pusher.sh`)
makes one tar of `data/adapter_config.json` and `data/adapter_model.safetensors`, takes the sha256 of that tar
as the diff ID, gzips it, and writes an image config holding only `rootfs.diff_ids` (no `os`, no
`architecture`: the image stays platform-independent). kairo writes the same, with the adapter's other files
(kairo.json, the tokenizer) beside them in `data/`, where Kaito and vLLM ignore what they do not know.

Reproducible: entries sorted by name, every mtime 0, uid/gid 0 with no user names, mode 0644 for files and
0755 for folders, and a gzip stream without a timestamp or file name — so the same files always give the same
layer digest, diff ID and config, whatever the folder's times or owner. Pure: writes only to the stream given.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

IMAGE_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
DATA_FOLDER = "data"  # the folder Kaito's puller takes (puller.sh `relocate`)
FILE_MODE, DIR_MODE = 0o644, 0o755
GZIP_LEVEL = 9  # what Kaito's pusher uses (`gzip -9`)


@dataclass(frozen=True)
class Layer:
    """What a written layer is: the digest and size of the gzip bytes, and the diff ID of the tar inside."""

    digest: str
    size: int
    diff_id: str


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it on its way to `sink` (if any)."""

    def __init__(self, sink: BinaryIO | None = None):
        self.sha = hashlib.sha256()
        self.size = 0
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        if self.sink is not None:
            self.sink.write(view)
        return len(view)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


def _info(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    info.mode = DIR_MODE if kind == tarfile.DIRTYPE else FILE_MODE
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _folders(names: Sequence[str]) -> list[str]:
    """Every folder the files need, `data` first: `data/sub/x` needs `data` and `data/sub`."""
    folders = {DATA_FOLDER}
    for name in names:
        parts = name.split("/")[:-1]
        folders.update("/".join([DATA_FOLDER, *parts[:depth]]) for depth in range(1, len(parts) + 1))
    return sorted(folders)


def write_layer(files: Sequence[tuple[str, Path]], out: BinaryIO) -> Layer:
    """Write the tar+gzip layer holding `files` (name relative to `data/` → file on disk) to `out`.

    Names are sorted here, so the caller's order does not matter; the bytes depend only on names and contents.
    """
    ordered = sorted(files)
    packed = _Hashing(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=GZIP_LEVEL, mtime=0) as zipped:
        plain = _Hashing(zipped)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for folder in _folders([name for name, _ in ordered]):
                archive.addfile(_info(f"{folder}/", tarfile.DIRTYPE))
            for name, path in ordered:
                with open(path, "rb") as handle:
                    archive.addfile(_info(f"{DATA_FOLDER}/{name}", tarfile.REGTYPE, path.stat().st_size), handle)
    return Layer(packed.digest, packed.size, plain.digest)


def layer_digest(files: Sequence[tuple[str, Path]]) -> Layer:
    """The layer `write_layer` would write, measured without keeping its bytes."""
    return write_layer(files, _Hashing())


def image_config(layer: Layer) -> dict:
    """The image config Kaito's pusher writes (`mkconfig`): the layer's diff ID, and nothing that names a platform."""
    return {"rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}
