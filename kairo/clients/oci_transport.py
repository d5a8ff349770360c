"""How kairo talks to an OCI registry: oras-py's client with kairo's timeouts, credentials, errors and retries.

The transport half of `kairo.clients.oci` (use that module; this one holds no operation of its own):
connect (ping, pick the auth scheme the registry asks for, check the credentials before sending anything),
send blobs and manifests, and turn every failure into a `RegistryError` whose `exit_code` a step returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TypeVar
from urllib.parse import urljoin

import oras.provider
import oras.utils
import requests

from kairo import exitcodes
from kairo.contract import DOCKER_CONFIG
from kairo.oci import artifact as art
from kairo.oci.reference import Reference, ReferenceError, parse_reference

log = logging.getLogger("kairo.oci")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 300.0
MAX_WAIT = 30.0
MAX_MANIFEST_BYTES = 4 * 1024**2  # the distribution registry's own limit
MONOLITHIC_UPLOAD = 256 * 1024**2  # larger blobs go up in chunks (bodies are held in memory so a retry can resend)
UPLOAD_CHUNK = 64 * 1024**2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([art.MANIFEST_MEDIA_TYPE, art.INDEX_MEDIA_TYPE, DOCKER_MANIFEST, DOCKER_LIST])


class RegistryError(Exception):
    """A registry operation failed; `exit_code` says whether retrying can help (75) or the input is wrong (2)."""

    exit_code = exitcodes.TRANSIENT

    @property
    def transient(self) -> bool:
        return self.exit_code == exitcodes.TRANSIENT


class RegistryUnreachable(RegistryError):
    """No answer from the registry (connection refused, timed out, name not found)."""


class DigestMismatch(RegistryError):
    """What came back is not what its digest says: a broken transfer."""


class RegistryRejected(RegistryError):
    """The registry said no for a reason a retry will not change (a malformed request, TLS, an unsupported API)."""

    exit_code = exitcodes.FAILED


class BadReference(RegistryError):
    """The reference is not a valid `registry/repo[:tag][@digest]`, or names the wrong thing."""

    exit_code = exitcodes.BAD_INPUT


class CredentialsMissing(RegistryError):
    """The registry wants credentials and the secret has none for it (or is unreadable)."""

    exit_code = exitcodes.BAD_INPUT


class CredentialsRefused(RegistryError):
    """The registry refused the credentials, or refused this user this repository."""

    exit_code = exitcodes.BAD_INPUT


class NotFound(RegistryError):
    """No such repository, tag or digest."""

    exit_code = exitcodes.BAD_INPUT


class WrongArtifact(RegistryError):
    """The reference names something else than what was asked for (an image where an adapter was wanted…)."""

    exit_code = exitcodes.BAD_INPUT


class UnsafeContent(RegistryError):
    """Content that would write outside its folder, is too large, or is not what kairo can read."""

    exit_code = exitcodes.BAD_INPUT


def parse(ref: str | Reference) -> Reference:
    """A Reference, or BadReference naming the wrong part."""
    if isinstance(ref, Reference):
        return ref
    try:
        return parse_reference(ref)
    except ReferenceError as err:
        raise BadReference(f"'{ref}' is not an image reference: {err}") from None


def api_host(registry: str) -> str:
    """Where a registry's API answers (Docker Hub's is not docker.io)."""
    return "registry-1.docker.io" if registry == "docker.io" else registry


def _aliases(registry: str) -> set[str]:
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return {"docker.io", "index.docker.io", "registry-1.docker.io"}
    names = {registry}
    if registry.startswith("localhost"):
        names.add(registry.replace("localhost", "127.0.0.1", 1))
    elif registry.startswith("127.0.0.1"):
        names.add(registry.replace("127.0.0.1", "localhost", 1))
    return names


def read_credentials(auth_file: str | os.PathLike[str], registry: str) -> tuple[str, str] | None:
    """User and password for `registry` from a dockerconfigjson (or a folder holding `.dockerconfigjson`);
    None when the file has no entry for it. Errors name the file, never what is in it."""
    path = Path(auth_file)
    if path.is_dir():
        path = path / DOCKER_CONFIG
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CredentialsMissing(f"{path}: no such file — is the registry secret mounted?") from None
    except (OSError, ValueError) as err:
        raise CredentialsMissing(f"{path}: not a readable dockerconfigjson ({type(err).__name__})") from None
    auths = data.get("auths", data) if isinstance(data, dict) else {}
    wanted = _aliases(registry)
    for key, entry in (auths if isinstance(auths, dict) else {}).items():
        host = key.split("://", 1)[-1].split("/", 1)[0]
        if host not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        try:
            user, sep, password = base64.b64decode(entry.get("auth", ""), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise CredentialsMissing(f"{path}: the entry for {host} has no usable 'auth' (base64 of user:password)")
        return user, password
    return None


class _Session(requests.Session):
    """requests without a timeout can wait forever on a registry that accepted the connection and went quiet."""

    def request(self, method, url, *args, **kwargs):  # requests' own signature
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT, READ_TIMEOUT))
        return super().request(method, url, *args, **kwargs)


_SEND = oras.provider.Registry.do_request.__wrapped__  # oras-py's request without its ≈2 min retry loop


class Client(oras.provider.Registry):
    """oras-py's registry client, bound to one repository, with credentials sent up front."""

    def __init__(self, ref: Reference, plain_http: bool, basic: bool):
        super().__init__(hostname=api_host(ref.registry), insecure=plain_http, auth_backend="basic" if basic else "token")
        self.ref = ref
        self.send_basic = False

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
        headers = dict(headers or {})
        if self.send_basic:  # one request instead of a 401 and a second one (a body would go twice)
            headers.update(self.auth.get_auth_header())
        response = _SEND(self, url, method, data, headers, json, stream)
        if response.status_code == 401 and getattr(self.auth, "token", None):
            # oras-py reuses a token scoped to an earlier challenge (pull); a push needs a fresh one.
            self.auth.token = None
            response = _SEND(self, url, method, data, headers, json, stream)
        return response

    def url(self, kind: str, target: str = "") -> str:
        return f"{self.prefix}://{self.hostname}/v2/{self.ref.repository}/{kind}/{target}"

    # --- blobs and manifests ---

    def upload(self, blob: art.Blob) -> None:
        """Send one blob unless the repository has it already."""
        what = f"upload {blob.title or blob.media_type} to {self.ref.name}"
        head = self.do_request(self.url("blobs", blob.digest), "HEAD")
        if head.status_code == 200:
            return
        if head.status_code != 404:
            check(head, what)
        start = check(self.do_request(self.url("blobs", "uploads/"), "POST", headers={"Content-Length": "0"}), what)
        location = urljoin(f"{self.prefix}://{self.hostname}/", start.headers.get("Location", ""))
        data = blob.data
        if data is None and blob.size > MONOLITHIC_UPLOAD:
            with open(blob.path, "rb") as handle:
                offset = 0
                while chunk := handle.read(UPLOAD_CHUNK):
                    headers = {"Content-Type": "application/octet-stream",
                               "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                    patch = check(self.do_request(location, "PATCH", data=chunk, headers=headers), what)
                    location = urljoin(location, patch.headers.get("Location", location))
                    offset += len(chunk)
            data = b""
        elif data is None:
            data = blob.path.read_bytes()
        url = oras.utils.append_url_params(location, {"digest": blob.digest})
        check(self.do_request(url, "PUT", data=data, headers={"Content-Type": "application/octet-stream"}), what)

    def put_manifest(self, target: str, manifest: bytes, media_type: str) -> str:
        """Store manifest bytes under a tag (or digest); return their digest, checked against the registry's."""
        what = f"store the manifest as {self.ref.name}:{target}"
        response = check(self.do_request(self.url("manifests", target), "PUT", data=manifest,
                                         headers={"Content-Type": media_type}), what)
        digest = art.bytes_digest(manifest)
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise DigestMismatch(f"{what}: the registry stored {stored}, kairo sent {digest}")
        return digest

    def manifest(self, target: str) -> tuple[bytes, str]:
        """The manifest (or index) bytes for a tag or digest, and their media type; a digest is verified."""
        what = f"read {self.ref.name} at {target}"
        response = check(self.do_request(self.url("manifests", target), "GET", headers={"Accept": ACCEPT}), what)
        data = response.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise UnsafeContent(f"{what}: a manifest of {len(data)} bytes — refused (at most {MAX_MANIFEST_BYTES})")
        if target.startswith("sha256:") and art.bytes_digest(data) != target:
            raise DigestMismatch(f"{what}: the manifest's bytes do not match {target}")
        return data, response.headers.get("Content-Type", "").split(";")[0].strip()

    def head_digest(self, target: str) -> str:
        """The digest a tag points at (HEAD; GET and hash when the registry does not say)."""
        what = f"resolve {self.ref.name}:{target}"
        response = check(self.do_request(self.url("manifests", target), "HEAD", headers={"Accept": ACCEPT}), what)
        digest = response.headers.get("Docker-Content-Digest", "")
        return digest or art.bytes_digest(self.manifest(target)[0])

    def download(self, descriptor: dict, to: Path) -> Path:
        """Stream one blob to `to`, refusing more bytes than its descriptor says and a digest that differs."""
        digest, size = descriptor["digest"], int(descriptor.get("size", -1))
        what = f"download {digest} from {self.ref.name}"
        if not str(digest).startswith("sha256:"):
            raise UnsafeContent(f"{what}: only sha256 digests are read")
        sha, got = hashlib.sha256(), 0
        to.parent.mkdir(parents=True, exist_ok=True)
        with check(self.do_request(self.url("blobs", digest), "GET", stream=True), what) as response, \
                open(to, "wb") as out:
            for chunk in response.iter_content(1 << 20):
                got += len(chunk)
                if 0 <= size < got:
                    raise DigestMismatch(f"{what}: more than the {size} bytes its descriptor says")
                sha.update(chunk)
                out.write(chunk)
        if f"sha256:{sha.hexdigest()}" != digest or (size >= 0 and got != size):
            raise DigestMismatch(f"{what}: the bytes received ({got}) do not match the digest")
        return to

    def tags(self) -> list[str]:
        """Every tag of the repository (follows the registry's paging)."""
        url, found = self.url("tags", "list") + "?n=1000", []
        while url:
            response = check(self.do_request(url, "GET"), f"list the tags of {self.ref.name}")
            found += response.json().get("tags") or []
            following = response.links.get("next", {}).get("url")
            url = urljoin(url, following) if following else ""
        return found


def _no_config_files(*_args, **_kwargs) -> None:
    """Stands in for oras-py's `load_configs`: credentials come from the secret kairo was given, not from HOME."""


def connect(ref: Reference, auth_file: str | os.PathLike[str] | None, plain_http: bool) -> Client:
    """Ping the registry, pick the auth scheme it asks for, and check the credentials before anything is sent."""
    host = api_host(ref.registry)
    scheme = "http" if plain_http else "https"
    credentials = read_credentials(auth_file, ref.registry) if auth_file else None
    session = _Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # as oras-py: some registries misuse them
    try:
        ping = session.get(f"{scheme}://{host}/v2/", timeout=(CONNECT_TIMEOUT, 30))
    except requests.exceptions.SSLError as err:
        raise RegistryRejected(f"TLS with {host} failed ({type(err).__name__}); a registry served over plain "
                               "HTTP must be listed in registry.plainHttp of the cluster config") from None
    except requests.RequestException as err:
        raise RegistryUnreachable(f"registry {host} does not answer ({type(err).__name__}) — check the host and port, "
                                  "and that the registry can be reached from here") from None
    if ping.status_code >= 500:
        raise RegistryError(f"registry {host} answers HTTP {ping.status_code}")
    # The default (token) backend retries a Basic challenge for ≈2 min; an htpasswd registry wants Basic.
    basic = ping.headers.get("WWW-Authenticate", "").lower().startswith("basic")
    client = Client(ref, plain_http, basic)
    client.session = client.auth.session = session
    client.auth.load_configs = _no_config_files
    if credentials:
        client.auth.set_basic_auth(*credentials)
        client.send_basic = basic
    elif ping.status_code == 401 and basic:
        secret = f"{auth_file} has no entry for {ref.registry}" if auth_file else "no registry secret was given"
        raise CredentialsMissing(f"registry {host} needs credentials and {secret}")
    if ping.status_code == 401 and credentials:
        try:
            answer = client.do_request(f"{scheme}://{host}/v2/", "GET").status_code
        except ValueError:  # oras-py: the token service refused the credentials
            answer = 401
        if answer in (401, 403):
            raise CredentialsRefused(f"registry {host} refused the credentials for user '{credentials[0]}' "
                                     f"from {auth_file} — check the secret's user and password")
        if getattr(client.auth, "token", None):
            client.auth.token = None  # that token has no repository scope
    return client


def registry_answers(ref: str | Reference, *, plain_http: bool = False, timeout: float = 2.0) -> bool:
    """True when something answers HTTP at the registry of `ref` (one try, no retries: a quick probe)."""
    scheme = "http" if plain_http else "https"
    try:
        requests.get(f"{scheme}://{api_host(parse(ref).registry)}/v2/", timeout=timeout)
    except requests.RequestException:
        return False
    return True


def _errors(response: requests.Response) -> str:
    try:
        messages = [e.get("message", "") for e in response.json().get("errors", []) if isinstance(e, dict)]
    except (ValueError, AttributeError):
        messages = []
    text = "; ".join(m for m in messages if m)
    return f": {text[:300]}" if text else ""


def check(response: requests.Response, what: str) -> requests.Response:
    """Return a 2xx response; raise the RegistryError its status means otherwise."""
    code = response.status_code
    if code < 300:
        return response
    detail = _errors(response)
    if code in (401, 403):
        raise CredentialsRefused(f"{what}: access refused (HTTP {code}{detail}) — check the registry secret and "
                                 "that its user may read or write this repository")
    if code == 404:
        raise NotFound(f"{what}: not found (HTTP 404{detail})")
    if code == 429 or code >= 500:
        raise RegistryError(f"{what}: HTTP {code}{detail}")
    raise RegistryRejected(f"{what}: HTTP {code}{detail}")


@contextmanager
def talking(what: str) -> Iterator[None]:
    """Turn what requests and oras-py raise into RegistryErrors that say what was being done."""
    try:
        yield
    except RegistryError:
        raise
    except requests.RequestException as err:
        raise RegistryUnreachable(f"{what}: the registry stopped answering ({type(err).__name__})") from None
    except ValueError as err:  # oras-py reports refused authentication and odd answers as ValueError
        raise RegistryRejected(f"{what}: {err}") from None
    except SystemExit as err:  # some oras-py paths exit the process
        raise RegistryError(f"{what}: oras gave up ({err})") from None


T = TypeVar("T")


def retry(action: Callable[[], T], what: str, retries: int, wait: float) -> T:
    """Run `action`; on a transient RegistryError wait `wait`, then twice as long… at most `retries` more times."""
    for attempt in range(retries + 1):
        try:
            with talking(what):
                return action()
        except RegistryError as err:
            if not err.transient or attempt == retries:
                raise
            delay = min(wait * 2**attempt, MAX_WAIT)
            log.warning("%s — retrying in %.3g s (%d of %d)", err, delay, attempt + 1, retries)
            time.sleep(delay)
    raise AssertionError("the loop returns or raises")
