"""OCI references (`registry/repo:tag@digest`), parsed the way container tools read them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-f0-9]+)$")
# The OCI image spec's registered algorithms and the length of their hex encoding.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
DEFAULT_REGISTRY = "docker.io"


class ReferenceError(ValueError):
    """A string that is not an OCI reference; the message says which part is wrong."""


@dataclass(frozen=True)
class Reference:
    """A parsed OCI reference. `tag` and `digest` may both be set; a pull prefers the digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def target(self) -> str:
        """What a registry API call names: the digest when known, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, digest)


def _looks_like_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse `text`; raise ReferenceError naming the bad part."""
    if not text or text != text.strip() or " " in text:
        raise ReferenceError("a reference has no spaces and is not empty")
    if "://" in text:
        raise ReferenceError("a reference has no scheme (drop 'https://')")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        _check_digest(digest)
    registry, path = DEFAULT_REGISTRY, rest
    first, _, remainder = rest.partition("/")
    if remainder and _looks_like_host(first):
        registry, path = first, remainder
        if not _HOST.match(registry):
            raise ReferenceError(f"'{registry}' is not a registry host name")
        port = registry.rpartition(":")[2] if ":" in registry else ""
        if port and not 1 <= int(port) <= 65535:
            raise ReferenceError(f"port {port} of '{registry}' is not a port (1 to 65535)")
    tag = None
    last_slash = path.rfind("/")
    if ":" in path[last_slash + 1 :]:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ReferenceError(f"'{tag}' is not a tag (letters, digits, '_', '.', '-', at most 128)")
    if not _PATH.match(path):
        if _PATH.match(path.lower()):
            raise ReferenceError(f"repository '{path}' must be lowercase")
        raise ReferenceError(f"'{path}' is not a repository path (lowercase letters, digits, '.', '_', '-', '/')")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return Reference(registry, path, tag, digest)


def _check_digest(digest: str) -> None:
    match = _DIGEST.match(digest)
    if not match:
        raise ReferenceError(f"'{digest}' is not a digest (algorithm:lowercase hex, e.g. sha256:…)")
    algorithm, hex_part = match.groups()
    want = DIGEST_HEX_LENGTHS.get(algorithm)
    if want is None:
        raise ReferenceError(f"'{algorithm}' is not a digest algorithm registries accept — use sha256 (or sha512)")
    if len(hex_part) != want:
        raise ReferenceError(f"a {algorithm} digest has {want} hex digits, this one {len(hex_part)}")


def looks_like_placeholder(text: str) -> bool:
    """True for template text such as `ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1`."""
    return bool(re.search(r"[A-Z]{2,}_[A-Z_]+", text)) or "<" in text or "${" in text


def is_loopback_registry(host: str) -> bool:
    """A registry on this machine: 127.x, localhost or [::1], with or without a port."""
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    return name in ("localhost", "::1") or name.startswith("127.")
