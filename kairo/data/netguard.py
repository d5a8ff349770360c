"""Dataset URLs must not reach inside the cluster or the cloud (SSRF), unless an operator allows it.

Checked twice: at validation on the literal host (`check_literal`), and at download time on every
address the host resolves to, again after every redirect (`resolve_checked`). The downloader then
connects to an address it checked, never resolving the name a second time, so a DNS answer that
changes between the check and the connection (DNS rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.google",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
# Besides what ipaddress calls private/loopback/link-local: carrier-grade NAT, where some clouds keep
# their metadata service (Alibaba's 100.100.100.200).
_EXTRA_BLOCKED = (ipaddress.ip_network("100.64.0.0/10"),)
# IPv6 prefixes that carry an IPv4 address inside: NAT64 (64:ff9b::/96) reaches the IPv4 address in its
# last 32 bits, so 64:ff9b::a00:5 is 10.0.0.5 seen through a translator.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
ALLOW_SETTING = "network.allow in the cluster config"

Resolver = Callable[[str], list[str]]


@dataclass(frozen=True)
class Refusal:
    """Why a URL may not be fetched: the host, the address it reached, the kind of address."""

    url: str
    host: str
    address: str
    kind: str

    def message(self) -> str:
        via = f" resolves to {self.address}," if self.address and self.address != self.host else " is"
        local = " (local runs: `kairo run --local` allows loopback)" if self.kind == "loopback" else ""
        return (
            f"'{self.url}'{via} a {self.kind} address — dataset URLs may not reach inside the cluster or the "
            f"cloud; an operator can allow '{self.host}' or its network with {ALLOW_SETTING}{local}"
        )


def system_resolver(host: str) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def address_kind(address: str) -> str | None:
    """The kind of a non-public address ('loopback', 'private', …), or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if str(ip) == "169.254.169.254" or str(ip) == "fd00:ec2::254":
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or any(ip in net for net in _EXTRA_BLOCKED):
        return "private"
    if ip.is_reserved:
        return "reserved"
    return None


def _allowed(host: str, address: str, allow: Iterable[str], local: bool) -> bool:
    for entry in allow:
        if "/" in entry:
            try:
                if ipaddress.ip_address(address.split("%", 1)[0]) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif entry.lower() in (host.lower(), address):
            return True
    # A name (metadata.google.internal) is not an address: only a literal loopback address is let through locally.
    return local and _is_ip(address) and address_kind(address) == "loopback"


def _host_kind(host: str) -> str | None:
    lowered = host.lower().rstrip(".")
    if lowered in METADATA_HOSTS:
        return "cloud metadata"
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return "loopback"
    return None


def check_literal(url: str, allow: Iterable[str] = (), local: bool = False) -> Refusal | None:
    """Refuse a URL whose host is literally a non-public address or a metadata/local name (no DNS)."""
    host = urlsplit(url).hostname or ""
    allow = list(allow)
    kind = _host_kind(host)
    if kind:
        address = "127.0.0.1" if kind == "loopback" else host
        if _allowed(host, address, allow, local):
            return None
        return Refusal(url, host, "", kind)
    address = numeric_ipv4(host) or host
    try:
        kind = address_kind(address)
    except ValueError:
        return None  # a name: checked again after resolution
    if kind and not _allowed(host, address, allow, local):
        return Refusal(url, host, address, kind)
    return None


def numeric_ipv4(host: str) -> str | None:
    """The IPv4 address a numeric host means to the resolver (`2130706433`, `0x7f.1`, `0177.0.0.1`), or None.

    getaddrinfo reads such hosts as inet_aton does — decimal, octal or hex parts, one to four of them — without
    any DNS, so they are literals too and are judged before a download, at validation.
    """
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host) or not host[0].isdigit():
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None


class Refused(Exception):
    """A URL the network rules do not let a download reach; the message says which setting opens it."""

    def __init__(self, refusal: Refusal):
        self.refusal = refusal
        super().__init__(refusal.message())


def resolve_checked(
    url: str, allow: Iterable[str] = (), local: bool = False, resolver: Resolver = system_resolver
) -> list[str]:
    """The addresses a download may connect to for `url`, every one checked; raises Refused.

    A name is resolved once, here; connect to one of the returned addresses, not to the name. Every
    address must pass: a name with one public and one private address is refused, since which of them
    a connection reaches is not ours to choose. Resolution failures (OSError) reach the caller.
    """
    allow = list(allow)
    refusal = check_literal(url, allow, local)
    if refusal:
        raise Refused(refusal)
    host = urlsplit(url).hostname or ""
    if _is_ip(host):
        return [host]
    addresses = resolver(host)
    if not addresses:
        raise OSError(f"the name '{host}' resolved to no address")
    for address in addresses:
        kind = address_kind(address)
        if kind and not _allowed(host, address, allow, local):
            raise Refused(Refusal(url, host, address, kind))
    return list(addresses)


def check_resolved(
    url: str, allow: Iterable[str] = (), local: bool = False, resolver: Resolver = system_resolver
) -> Refusal | None:
    """Refuse a URL when its host, or any address it resolves to, is not public (and not allowed)."""
    try:
        resolve_checked(url, allow, local, resolver)
    except Refused as err:
        return err.refusal
    except OSError:
        return None  # the download itself reports that the name does not resolve
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False
