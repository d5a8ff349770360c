"""How kairo reaches one registry — its credentials file, plain HTTP or TLS, the retry schedule — decided once.

Every registry call of `kairo.clients.oci` takes a `RegistryAccess`; `registry_access(ref, cluster, …)` is the
one place that builds it, so the plain-HTTP rule (the cluster config's `registry.plainHttp`, or a loopback
registry in a local run) and the retries (`registry.retries`) are decided the same way by every step and
command. Pure: no network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kairo.oci.reference import Reference, ReferenceError, is_loopback_registry, parse_reference

if TYPE_CHECKING:
    from kairo.cluster import ClusterConfig


@dataclass(frozen=True)
class RegistryAccess:
    """Credentials, scheme and patience for one registry."""

    auth_file: str | None = None  # a mounted dockerconfigjson (or a folder holding one); None: anonymous
    plain_http: bool = False  # http:// instead of https://
    retries: int = 3  # attempts after the first on a transient failure
    retry_wait: float = 1.0  # seconds before the first retry; each next one waits twice as long

    def with_auth(self, auth_file: str | os.PathLike[str] | None) -> RegistryAccess:
        """The same access with other credentials (a tag move pushes with the push secret, say)."""
        return replace(self, auth_file=str(auth_file) if auth_file else None)


def is_plain_http(host: str, cluster: ClusterConfig | None = None, *, local: bool = False) -> bool:
    """True when `host` is reached over plain HTTP: listed in `registry.plainHttp` of the cluster config, or —
    in local mode only (`kairo run --local`, `cluster.local`) — a registry on this machine's loopback
    (127.0.0.1, localhost, [::1]), since a registry started for a laptop run has no TLS."""
    if cluster is not None and cluster.registry_is_plain_http(host):
        return True
    if not (local or (cluster is not None and cluster.local)):
        return False
    return is_loopback_registry(host)


def registry_access(ref: str | Reference | None, cluster: ClusterConfig | None = None, *,
                    auth_file: str | os.PathLike[str] | None = None, local: bool = False,
                    plain_http: bool = False, retries: int | None = None, retry_wait: float = 1.0) -> RegistryAccess:
    """The access for the registry of `ref`, by kairo's one rule.

    `plain_http=True` (a step's `--plain-http`) forces plain HTTP; otherwise `is_plain_http` decides from the
    cluster config and `local`. An OCI layout on disk (`/path…`, `./path…`) or no reference needs no scheme.
    """
    host = ""
    if ref is not None and not (isinstance(ref, str) and ref.startswith(("/", "."))):
        try:
            host = (ref if isinstance(ref, Reference) else parse_reference(ref)).registry
        except ReferenceError:
            host = ""  # the client refuses the reference itself, naming the bad part
    plain = plain_http or (bool(host) and is_plain_http(host, cluster, local=local))
    if retries is None:  # a step's own --retries wins over the cluster config's registry.retries
        retries = cluster.registry.retries if cluster is not None else RegistryAccess.retries
    return RegistryAccess(str(auth_file) if auth_file else None, plain, retries, retry_wait)
