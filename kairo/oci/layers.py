"""Read container image layers without running anything, and take the files under one folder.

The folder is `/data` for Kaito's dataset images and `/workspace/tfs/weights` for its model images.

Layers are tar archives (plain or gzip), applied in order as a container runtime would: a later file
replaces an earlier one, `.wh.NAME` deletes NAME from the layers below, and `.wh..wh..opq` empties a folder
of what the layers below put there. Only entries under the chosen folder are kept; nothing outside it is
ever written. Refused, with the layer and the entry named:

- an entry with an absolute name, or one with `..` in it (anywhere in the image);
- a symbolic or hard link under the folder that points outside it (followed through other links too),
  and a write through a link;
- devices and pipes under the folder;
- names under the folder no file system takes: a part longer than 255 bytes, a path deeper than `MAX_DEPTH`
  or longer than `MAX_PATH_BYTES`;
- more than `max_bytes` under the folder, every entry counting its 512-byte header besides its content (so
  200,000 empty files count 100 MB, not nothing), and more than `max_entries` entries in all the layers.

The folder itself must be a folder, unless the caller asks to follow a link there (`follow_link`): Kaito's
model images link /workspace/tfs/weights → /workspace/weights, and the files are taken from where the
link leads, resolved inside the image as a container would see it (never above the image root).

Links that stay inside are written as plain copies of what they point at, so the result holds only
regular files and folders (mode 0644 / 0755, whatever the layer said).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_LINK_HOPS = 40
HEADER_BYTES = 512  # a tar entry's header: what an empty file, a folder or a link costs at least
MAX_ENTRIES = 100_000
MAX_NAME_BYTES = 255  # NAME_MAX on Linux file systems
MAX_DEPTH = 64
MAX_PATH_BYTES = 3072  # under PATH_MAX (4096), leaving room for where the folder is written

Parts = tuple[str, ...]


class UnsafeLayer(ValueError):
    """A layer that would reach outside the folder taken, or holds something that is not a file."""


class LayerTooLarge(ValueError):
    """The files under the folder add up to more than the limit."""


class TooManyEntries(UnsafeLayer):
    """More entries in the layers than anything kairo pulls would hold (a fixed bound, not a size setting)."""


@dataclass
class _Entry:
    kind: str  # "dir", "file" or "symlink"
    layer: int = -1
    member: tarfile.TarInfo | None = None
    target: str = ""  # a symlink's target, as written in the layer


def _parts(name: str, where: str) -> Parts:
    if name.startswith("/"):
        raise UnsafeLayer(f"{where}: '{name}' is an absolute path — layer entries are relative to the image root")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayer(f"{where}: '{name}' climbs out with '..'")
    return parts


def _under(path: Parts, folder: Parts) -> bool:
    return path[: len(folder)] == folder


class _Tree:
    """The merged view of the folder after each layer: path parts → entry."""

    def __init__(self, folder: Parts, max_bytes: int, keep: Callable[[str], bool] | None = None,
                 followed: bool = False):
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self.followed = followed  # the folder is where links lead in the final image; earlier layers may differ
        self.taken = 0
        self.entries: dict[Parts, _Entry] = {}

    def kept(self, path: Parts) -> bool:
        """Whether the caller wants the file at `path` (asked by its name relative to the folder)."""
        return self.keep is None or self.keep("/".join(path[len(self.folder):]))

    def remove(self, path: Parts, keep_self: bool = False) -> None:
        for key in [k for k in self.entries if k[: len(path)] == path and (not keep_self or k != path)]:
            del self.entries[key]

    def whiteout(self, path: Parts) -> None:
        """Apply `.wh.NAME` (deletes NAME) or `.wh..wh..opq` (empties the folder holding it)."""
        parent, name = path[:-1], path[-1]
        if name == OPAQUE:
            if _under(parent, self.folder):
                self.remove(parent, keep_self=True)
            elif _under(self.folder, parent):
                self.entries.clear()  # an ancestor of the folder was made opaque
            return
        gone = (*parent, name[len(WHITEOUT):])
        if _under(gone, self.folder) or _under(self.folder, gone):
            self.remove(gone)

    def add(self, path: Parts, entry: _Entry, where: str) -> None:
        for depth in range(len(self.folder) + 1, len(path)):
            above = self.entries.get(path[:depth])
            if above is not None and above.kind == "symlink":
                raise UnsafeLayer(f"{where}: '{'/'.join(path)}' is written through the link "
                                  f"'{'/'.join(path[:depth])}' — refused, it could lead anywhere")
            if above is None or above.kind == "file":
                # A file replaced by a folder, or a folder made by an entry inside it: recorded, so that a later
                # layer's file at its path replaces everything in it.
                self.entries[path[:depth]] = _Entry("dir")
        existing = self.entries.get(path)
        if existing is not None and not (existing.kind == "dir" and entry.kind == "dir"):
            self.remove(path)
        if entry.kind != "file" or self.kept(path):
            self.taken += HEADER_BYTES + (entry.member.size if entry.kind == "file" else 0)
            if self.taken > self.max_bytes:
                raise LayerTooLarge(f"{where}: the files under /{'/'.join(self.folder)} exceed "
                                    f"{self.max_bytes} bytes (each entry counts its {HEADER_BYTES}-byte header) "
                                    "— refused")
        if existing is None or existing.kind != "dir" or entry.kind != "dir":
            self.entries[path] = entry

    def resolve(self, path: Parts, where: str) -> Parts:
        """Follow links from `path` to what it finally names, refusing any step outside the folder."""
        def link_at(current: Parts) -> str | None:
            entry = self.entries.get(current)
            return entry.target if entry is not None and entry.kind == "symlink" else None

        return _walk(path, link_at, where, inside=self.folder)


def _walk(path: Parts, link_at: Callable[[Parts], str | None], where: str, inside: Parts | None = None) -> Parts:
    """Follow the links along `path` (`link_at(parts)`: a link's target, or None) to what it finally names.

    Absolute targets start again at the image root; `..` never climbs above it. With `inside`, every step
    must stay in that folder (or on the way down to it).
    """
    pending = list(path)
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if not done:
                raise UnsafeLayer(f"{where}: a link climbs above the image root")
            done.pop()
            continue
        done.append(part)
        current = tuple(done)
        if inside is not None and not (_under(current, inside) or _under(inside, current)):
            raise UnsafeLayer(f"{where}: a link leads to '/{'/'.join(current)}', outside "
                              f"/{'/'.join(inside)} — refused")
        target = link_at(current)
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise UnsafeLayer(f"{where}: links loop (more than {MAX_LINK_HOPS} hops)")
            done = [] if target.startswith("/") else done[:-1]
            pending = [p for p in target.split("/") if p not in ("", ".")] + pending
    return tuple(done)


def _check_link_target(tree: _Tree, path: Parts, target: str, where: str) -> None:
    """Refuse a symlink whose target, read as written, already points outside the folder."""
    base = () if target.startswith("/") else path[:-1]
    resolved: list[str] = list(base)
    for part in (p for p in target.split("/") if p not in ("", ".")):
        if part == "..":
            if not resolved:
                raise UnsafeLayer(f"{where}: the link '{'/'.join(path)}' → '{target}' climbs above the image root")
            resolved.pop()
        else:
            resolved.append(part)
    if not _under(tuple(resolved), tree.folder):
        raise UnsafeLayer(f"{where}: the link '{'/'.join(path)}' → '{target}' points outside "
                          f"/{'/'.join(tree.folder)} — refused")


Named = list[tuple[tarfile.TarInfo, Parts]]


def _image_links(layers: Sequence[Named]) -> dict[Parts, str]:
    """The symbolic links anywhere in the merged image (path → target), whiteouts and replacements applied."""
    links: dict[Parts, str] = {}
    for named in layers:
        for _member, path in named:
            if path and path[-1].startswith(WHITEOUT):
                parent, name = path[:-1], path[-1]
                gone = parent if name == OPAQUE else (*parent, name[len(WHITEOUT):])
                for key in [k for k in links if _under(k, gone) and not (name == OPAQUE and k == parent)]:
                    del links[key]
        for member, path in named:
            if not path or path[-1].startswith(WHITEOUT):
                continue
            for depth in range(1, len(path)):  # an entry inside makes every folder above it a folder
                links.pop(path[:depth], None)
            if member.issym():
                links[path] = member.linkname
            else:
                links.pop(path, None)
    return links


def _follow(links: dict[Parts, str], folder: Parts) -> Parts:
    """Where `folder` leads in the image when the links along it are followed."""
    found = _walk(folder, links.get, f"/{'/'.join(folder)}")
    if not found:
        raise UnsafeLayer(f"/{'/'.join(folder)}: a link leads to the image root — refused, only a folder in it is taken")
    return found


def _apply_layer(tree: _Tree, index: int, named: Named, label: str) -> None:
    # Whiteouts delete from the layers below only, so they go first.
    for _member, path in named:
        if path and path[-1].startswith(WHITEOUT):
            tree.whiteout(path)
    for member, path in named:
        if not path or path[-1].startswith(WHITEOUT) or not _under(path, tree.folder):
            continue
        where = f"{label}: '{member.name}'"
        _check_name(path[len(tree.folder):], where)
        if path == tree.folder:
            if not member.isdir() and not tree.followed:
                raise UnsafeLayer(f"{where}: /{'/'.join(path)} itself must be a folder, not a link or a file")
            continue
        if member.isdir():
            tree.add(path, _Entry("dir"), where)
        elif member.isreg():
            tree.add(path, _Entry("file", index, member), where)
        elif member.issym():
            _check_link_target(tree, path, member.linkname, where)
            tree.add(path, _Entry("symlink", target=member.linkname), where)
        elif member.islnk():
            source = _parts(member.linkname, where)
            if not _under(source, tree.folder):
                raise UnsafeLayer(f"{where}: a hard link to '{member.linkname}', outside "
                                  f"/{'/'.join(tree.folder)} — refused")
            original = tree.entries.get(source)
            if original is None or original.kind != "file":
                raise UnsafeLayer(f"{where}: a hard link to '{member.linkname}', which is not a file in the image")
            tree.add(path, _Entry("file", original.layer, original.member), where)
        else:
            raise UnsafeLayer(f"{where}: a device or pipe — only files, folders and links are taken")


def _check_name(relative: Parts, where: str) -> None:
    """Refuse a path under the folder that no file system would take (ENAMETOOLONG), or absurdly deep."""
    if len(relative) > MAX_DEPTH:
        raise UnsafeLayer(f"{where}: {len(relative)} folders deep — more than the {MAX_DEPTH} taken")
    encoded = [part.encode("utf-8", "surrogateescape") for part in relative]
    longest = max(encoded, key=len, default=b"")
    if len(longest) > MAX_NAME_BYTES:
        raise UnsafeLayer(f"{where}: a name of {len(longest)} bytes — longer than the {MAX_NAME_BYTES} a file "
                          "system allows")
    if sum(len(part) + 1 for part in encoded) > MAX_PATH_BYTES:
        raise UnsafeLayer(f"{where}: a path longer than {MAX_PATH_BYTES} bytes — refused")


def _members(archive: tarfile.TarFile, label: str, seen: int, max_entries: int) -> Named:
    """The entries of one layer, read one at a time so that a layer of a million entries stops at the limit."""
    named: Named = []
    while (member := archive.next()) is not None:
        if seen + len(named) >= max_entries:
            raise TooManyEntries(f"{label}: more than {max_entries:,} entries in the image's layers — refused (a "
                                 "dataset, model or adapter image holds a few thousand files at most)")
        named.append((member, _parts(member.name, label)))
    return named


def extract(
    layers: Sequence[str | os.PathLike[str]], dest: str | os.PathLike[str], *, folder: str = "data",
    max_bytes: int = 20 * 1024**3, labels: Sequence[str] | None = None, follow_link: bool = False,
    keep: Callable[[str], bool] | None = None, max_entries: int = MAX_ENTRIES,
) -> list[Path]:
    """Apply `layers` (tar or tar+gzip files, lowest first) and write the files under `/folder` into `dest`.

    `folder=""` takes the whole archive (an ORAS folder layer). `follow_link`: a link at the folder (or above
    it) is followed inside the image instead of refused. `keep(name)`, given a file's path relative to the
    folder, picks the files written; the others are neither written nor counted against `max_bytes`.
    `max_entries` bounds the entries of all the layers together. Returns the files written, sorted. Raises
    UnsafeLayer or LayerTooLarge before anything is written when a layer is refused.
    """
    folder_parts = _parts(folder, "folder")
    labels = list(labels or [f"layer {i + 1}" for i in range(len(layers))])
    archives = []
    try:
        named_layers: list[Named] = []
        for index, layer in enumerate(layers):
            try:
                archive = tarfile.open(layer, mode="r:*")
            except tarfile.TarError as err:
                raise UnsafeLayer(f"{labels[index]}: not a tar or tar+gzip layer ({err})") from err
            archives.append(archive)
            try:
                named_layers.append(_members(archive, labels[index], sum(map(len, named_layers)), max_entries))
            except tarfile.TarError as err:
                raise UnsafeLayer(f"{labels[index]}: a damaged tar layer ({err})") from err
        if follow_link and folder_parts:
            folder_parts = _follow(_image_links(named_layers), folder_parts)
        tree = _Tree(folder_parts, max_bytes, keep, followed=follow_link)
        for index, named in enumerate(named_layers):
            _apply_layer(tree, index, named, labels[index])
        return _write(tree, archives, Path(dest), labels)
    finally:
        for archive in archives:
            archive.close()


def _write(tree: _Tree, archives: list[tarfile.TarFile], dest: Path, labels: list[str]) -> list[Path]:
    # Resolve every link first: nothing is written when one of them is refused.
    plan: list[tuple[Parts, _Entry]] = []
    for path, entry in sorted(tree.entries.items()):
        where = f"'/{'/'.join(path)}'"
        if entry.kind == "symlink":
            final = tree.resolve(path, where)
            target = tree.entries.get(final)
            if target is None and final == tree.folder:
                raise UnsafeLayer(f"{where}: a link to the folder '{entry.target}' — only links to files are taken")
            if target is None:
                raise UnsafeLayer(f"{where}: a link to '{entry.target}', which does not exist in the image")
            if target.kind != "file":
                raise UnsafeLayer(f"{where}: a link to the folder '{entry.target}' — only links to files are taken")
            entry = target
        if entry.kind == "file" and not tree.kept(path):
            continue
        plan.append((path, entry))
    written = 0
    files = []
    dest.mkdir(parents=True, exist_ok=True)
    # Read each layer front to back (a gzip stream is slow to seek backwards).
    for path, entry in sorted(plan, key=lambda item: (item[1].layer, item[1].member.offset if item[1].member else 0)):
        target = dest.joinpath(*path[len(tree.folder):]) if len(path) > len(tree.folder) else dest
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            continue
        written += HEADER_BYTES + entry.member.size
        if written > tree.max_bytes:
            raise LayerTooLarge(f"the files under /{'/'.join(tree.folder)} (links copied) exceed {tree.max_bytes} bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = archives[entry.layer].extractfile(entry.member)
        if source is None:
            raise UnsafeLayer(f"{labels[entry.layer]}: '{entry.member.name}' has no content")
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        os.chmod(target, 0o644)
        files.append(target)
    return sorted(files)
