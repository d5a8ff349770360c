"""Download a dataset file over HTTP(S): streamed to disk, retried, size-limited, hashed, SSRF-checked.

Redirects are followed here, not by a library, so that every hop is checked by `kairo.data.netguard`
and the connection goes to the very address that was checked (no second DNS lookup to rebind).
Memory stays at one chunk whatever the file size. Time is bounded too: `timeout` per read, `deadline` for
everything (timeouts.downloadSeconds), and `min_rate` over every `timeout` seconds of a transfer
(limits.minDownloadBytesPerSecond), so a server trickling a byte a second cannot hold the step for its hour.
Failures say whether a retry could help: `FetchError.transient` is true for timeouts, dropped connections, 5xx
and slow transfers after the retries ran out, and a passed deadline; false for 4xx, refused addresses, files
over the size limit and answers no server should send (`Content-Length: -5`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import math
import os
import random
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

from kairo.data.netguard import Refused, Resolver, resolve_checked, system_resolver
from kairo.progress import Progress

CHUNK = 1 << 20
REDIRECTS = frozenset({301, 302, 303, 307, 308})
LIMIT_SETTING = "limits.maxDatasetBytes in the cluster config"
RATE_SETTING = "limits.minDownloadBytesPerSecond in the cluster config"
DEADLINE_SETTING = "timeouts.downloadSeconds in the cluster config"
USER_AGENT = "kairo-download"
# Content types that name a text format, for a file whose URL and Content-Disposition say nothing.
TYPE_SUFFIXES = {"text/csv": ".csv", "application/csv": ".csv", "text/tab-separated-values": ".tsv",
                 "application/x-ndjson": ".jsonl", "application/jsonl": ".jsonl", "application/jsonlines": ".jsonl",
                 "application/x-jsonlines": ".jsonl"}


class FetchError(Exception):
    """A download that failed; `transient` says whether running the step again may succeed."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class _Retry(Exception):
    """One attempt failed in a way a later attempt may not (timeouts, 5xx, dropped connections)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Fetched:
    """A file on disk: where it came from (redacted), its size and sha256."""

    source: str
    path: Path
    size: int
    sha256: str
    running: object = None  # the caller's running hash, advanced by exactly this file's bytes
    name: str = ""  # the server's Content-Disposition filename, else the last URL's path (+ a suffix its type names)


def redact(url: str) -> str:
    """The URL as logs and errors show it: no user:password, no query (signed URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def human(size: int) -> str:
    """Bytes as a person reads them: 1.5 GiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address checked beforehand; Host header and TLS name stay the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float, tls: ssl.SSLContext | None):
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Fetcher:
    """How downloads behave: network rules, retries, timeouts. One per step run."""

    allow: Sequence[str] = ()
    local: bool = False
    resolver: Resolver = system_resolver
    retries: int = 4
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_redirects: int = 10
    tls: ssl.SSLContext | None = None
    progress_every: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = _log
    deadline: float | None = None  # time.monotonic() by which every download must be done (all attempts)
    deadline_seconds: float = 0.0  # what the deadline was set to, for messages
    min_rate: int = 0  # bytes a second, over every `timeout` seconds of a transfer; 0: no minimum

    def fetch(self, url: str, dest: Path, limit: int, running=None) -> Fetched:
        """Download `url` to `dest` (temp file, then rename), at most `limit` bytes; retried with backoff."""
        shown = redact(url)
        for attempt in range(self.retries + 1):
            self._check_deadline(shown)
            try:
                return self._attempt(url, dest, limit, running.copy() if running is not None else None)
            except _Retry as err:
                if attempt == self.retries:
                    raise FetchError(
                        f"{shown}: {err} — gave up after {attempt + 1} attempt{'s' if attempt else ''}; "
                        "the step can be run again",
                        transient=True,
                    ) from err
                wait = self._wait(attempt, err.retry_after)
                if self.deadline is not None and time.monotonic() + wait > self.deadline:
                    self._check_deadline(shown, f" ({err}; the next attempt would start after it)", force=True)
                self.log(f"{shown}: {err} — attempt {attempt + 2} of {self.retries + 1} in {wait:.1f} s")
                self.sleep(wait)
        raise AssertionError("unreachable")

    def _check_deadline(self, shown: str, why: str = "", force: bool = False) -> None:
        if self.deadline is not None and (force or time.monotonic() >= self.deadline):
            raise FetchError(f"{shown}: the download did not finish within {self.deadline_seconds:.0f} s "
                             f"({DEADLINE_SETTING}){why} — the step can be run again", transient=True)

    def _read_timeout(self) -> float:
        """The per-read timeout, shortened so that no read outlasts the deadline."""
        if self.deadline is None:
            return self.timeout
        return max(min(self.timeout, self.deadline - time.monotonic()), 0.001)

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        # Jitter keeps many pods that failed together from retrying together.
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def _attempt(self, url: str, dest: Path, limit: int, running) -> Fetched:
        original_host = urlsplit(url).hostname
        current, via = url, None
        for _hop in range(self.max_redirects + 1):
            conn, response = self._request(current, urlsplit(current).hostname == original_host, via)
            try:
                status = response.status
                if status in REDIRECTS:
                    current, via = self._redirect(current, response.getheader("Location")), current
                    continue
                if status in (408, 425, 429) or status >= 500:
                    raise _Retry(f"HTTP {status} {response.reason}", _retry_after(response.getheader("Retry-After")))
                if status >= 400:
                    hint = " (credentials?)" if status in (401, 403) else ""
                    raise FetchError(f"{redact(current)}: HTTP {status} {response.reason}{hint}", transient=False)
                if status >= 300 or status < 200:
                    raise FetchError(f"{redact(current)}: unexpected HTTP {status} {response.reason}", transient=False)
                return self._save(current, conn, response, dest, limit, running)
            finally:
                response.close()
                conn.close()
        raise FetchError(f"{redact(url)}: more than {self.max_redirects} redirects", transient=False)

    def _redirect(self, current: str, location: str | None) -> str:
        if not location:
            raise FetchError(f"{redact(current)}: a redirect without a Location header", transient=False)
        target = urljoin(current, location)
        if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
            raise FetchError(
                f"{redact(current)} redirects to {redact(target)}: from https to plain http is refused", transient=False
            )
        self.log(f"{redact(current)} redirects to {redact(target)}")
        return target

    def _request(
        self, url: str, send_auth: bool, via: str | None
    ) -> tuple[_PinnedConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        try:
            explicit_port = parts.port
        except ValueError as err:
            raise FetchError(f"{redact(url)}: not a valid port ({err})", transient=False) from err
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{redact(url)}: only http(s) URLs with a host are allowed", transient=False)
        try:
            addresses = resolve_checked(url, self.allow, self.local, self.resolver)
        except Refused as err:
            came = f" (redirected from {redact(via)})" if via else ""
            shown = dataclasses.replace(err.refusal, url=redact(url)).message()
            raise FetchError(f"refused{came}: {shown}", transient=False) from err
        except OSError as err:
            raise _Retry(f"cannot resolve '{parts.hostname}': {err}") from err
        tls = None
        if parts.scheme == "https":
            tls = self.tls or ssl.create_default_context()
        port = explicit_port or (443 if tls else 80)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
        if send_auth and parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # A URL pasted with its non-ASCII characters as they read (…/données/train.jsonl) is sent percent-encoded;
        # escapes already there and reserved characters stay as they are.
        target = quote(target, safe="/?#[]@!$&'()*+,;=:%~")
        last: Exception | None = None
        for address in addresses:
            conn = _PinnedConnection(parts.hostname, port, address, self._read_timeout(), tls)
            try:
                conn.request("GET", target, headers=headers)
                return conn, conn.getresponse()
            except ssl.SSLCertVerificationError as err:
                conn.close()
                raise FetchError(f"{redact(url)}: TLS certificate not trusted: {err.verify_message}", False) from err
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                last = err
                if isinstance(err, TimeoutError | socket.timeout):
                    self._check_deadline(redact(url))
        raise _Retry(f"cannot connect to {parts.hostname} ({', '.join(addresses)}): {_reason(last)}")

    def _save(self, url: str, conn: _PinnedConnection, response: http.client.HTTPResponse, dest: Path, limit: int,
              running) -> Fetched:
        shown = redact(url)
        length = _content_length(response.getheader("Content-Length"), shown)
        if length is not None and length > limit:
            raise FetchError(
                f"{shown} is {human(length)}, more than the {human(limit)} allowed ({LIMIT_SETTING})", transient=False
            )
        digest = hashlib.sha256()
        progress = Progress(length or limit, f"download {dest.name} (bytes)", every=self.progress_every)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.partial")
        size = 0
        rate = _RateCheck(self.min_rate, self.timeout)
        try:
            with open(partial, "wb") as out:
                while True:
                    if conn.sock is not None:
                        conn.sock.settimeout(self._read_timeout())
                    try:
                        chunk = response.read1(CHUNK)
                    except (OSError, http.client.HTTPException) as err:
                        if isinstance(err, TimeoutError | socket.timeout):
                            self._check_deadline(shown, f" ({human(size)} came)")
                        raise _Retry(f"the connection failed after {human(size)}: {_reason(err)}") from err
                    if not chunk:
                        break
                    size += len(chunk)
                    self._check_deadline(shown, f" ({human(size)} came)")
                    rate.update(size)
                    if size > limit:
                        raise FetchError(
                            f"{shown} is larger than the {human(limit)} allowed ({LIMIT_SETTING})", transient=False
                        )
                    digest.update(chunk)
                    if running is not None:
                        running.update(chunk)
                    out.write(chunk)
                    progress.update(size)
            if length is not None and size != length:
                raise _Retry(f"the connection closed after {size} of {length} bytes")
            os.chmod(partial, 0o644)
            os.replace(partial, dest)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if length is None:  # the total shown so far was the limit; the last report says what came
            progress.total = max(size, 1)
            progress.finish(human(size))
        name = _disposition_name(response.getheader("Content-Disposition")) or url_name(url)
        suffix = TYPE_SUFFIXES.get((response.getheader("Content-Type") or "").split(";")[0].strip().lower(), "")
        if suffix and not name.lower().endswith(suffix):
            name += suffix  # `…/export?id=7` served as text/csv: CSV has no magic bytes to tell it by
        return Fetched(shown, dest, size, digest.hexdigest(), running, name)


class _RateCheck:
    """Refuse a transfer slower than `min_rate` bytes a second over any `window` seconds (after the first)."""

    def __init__(self, min_rate: int, window: float):
        self.min_rate = min_rate
        self.window = window
        self.start = time.monotonic()
        self.start_size = 0

    def update(self, size: int) -> None:
        if self.min_rate <= 0:
            return
        elapsed = time.monotonic() - self.start
        if elapsed < self.window:
            return
        rate = (size - self.start_size) / elapsed
        if rate < self.min_rate:
            raise _Retry(f"the transfer ran at {human(int(rate))}/s over {elapsed:.0f} s, slower than the "
                         f"{human(self.min_rate)}/s minimum ({RATE_SETTING})")
        self.start, self.start_size = time.monotonic(), size


def copy_file(source: Path, dest: Path, limit: int, running=None, progress_every: float = 2.0) -> Fetched:
    """Copy a local file (a mounted volume, a pulled image) into the raw folder, hashed and size-limited."""
    size = source.stat().st_size
    if size > limit:
        raise FetchError(f"{source} is {human(size)}, more than the {human(limit)} allowed ({LIMIT_SETTING})", False)
    digest = hashlib.sha256()
    progress = Progress(size, f"copy {source.name} (bytes)", every=progress_every)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    done = 0
    try:
        with open(source, "rb") as src, open(partial, "wb") as out:
            while chunk := src.read(CHUNK):
                done += len(chunk)
                if done > limit:
                    raise FetchError(f"{source} grew past the {human(limit)} allowed ({LIMIT_SETTING})", False)
                digest.update(chunk)
                if running is not None:
                    running.update(chunk)
                out.write(chunk)
                progress.update(done)
        os.chmod(partial, 0o644)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    progress.finish(human(done))
    return Fetched(str(source), dest, done, digest.hexdigest(), running)


def hash_file(path: Path, running=None) -> Fetched:
    """Hash a file already in place (the raw folder an image was pulled into)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            digest.update(chunk)
            if running is not None:
                running.update(chunk)
    return Fetched(str(path), path, size, digest.hexdigest(), running)


# RFC 6266: filename*=charset'lang'percent-encoded wins over a plain filename=.
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([\w!#$&+.^`|~-]+)'[^']*'([^;\s]+)", re.IGNORECASE)
_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)


def _disposition_name(value: str | None) -> str:
    """The filename a Content-Disposition header gives; '' when none."""
    if not value:
        return ""
    star, plain = _FILENAME_STAR.search(value), _FILENAME.search(value)
    if star:
        try:
            name = unquote(star.group(2), encoding=star.group(1), errors="replace")
        except LookupError:  # an unknown charset
            name = unquote(star.group(2))
    elif plain:
        name = plain.group(1).replace('\\"', '"') if plain.group(1) is not None else plain.group(2)
    else:
        return ""
    return name.replace("\\", "/").rsplit("/", 1)[-1]  # a name, never a path


def url_name(url: str) -> str:
    """The last segment of a URL's path, unquoted: `…/train%20set.csv?download=true` → `train set.csv`."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def _content_length(value: str | None, shown: str) -> int | None:
    """The size a response promises; FetchError (not transient) for a value no server should send."""
    if value is None:
        return None
    values = {part.strip() for part in value.split(",")}  # a header sent twice reads "5, 5"
    if len(values) == 1 and (only := values.pop()).isascii() and only.isdigit():
        return int(only)
    raise FetchError(f"{shown}: the server sent 'Content-Length: {value[:40]}', which is not a size — a broken "
                     "answer from the server, not a network failure; retrying will not help (ask its owner)", False)


def _retry_after(value: str | None) -> float | None:
    try:
        wait = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: our own backoff is good enough
    return wait if wait is not None and math.isfinite(wait) else None  # nan, inf: our own backoff


def _reason(err: BaseException | None) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    text = str(err) or type(err).__name__
    return text
