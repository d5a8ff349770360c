"""Workspace objects (`kaito.sh`) in the cluster: find one, write its status back.

The resource exists only where the chart installed kairo's CRD (or Kaito's own): everything here
answers None rather than failing when it is not there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from kairo.clients import kube

# Served versions, the stored one first; a cluster may serve only one of them.
VERSIONS = ("kaito.sh/v1beta1", "kaito.sh/v1alpha1")
KIND = "Workspace"


def get_workspace(api: client.ApiClient, name: str, namespace: str) -> dict[str, Any] | None:
    """The Workspace object called `name`, or None when there is none (or no Workspace resource at all)."""
    for version in VERSIONS:
        found = kube.get(api, version, KIND, name, namespace)
        if found is not None:
            found.setdefault("apiVersion", version)
            found.setdefault("kind", KIND)
            return found
    return None


def update_status(
    api: client.ApiClient, name: str, namespace: str, change: Callable[[dict[str, Any]], dict[str, Any]],
    attempts: int = 5,
) -> dict[str, Any] | None:
    """Merge-patch the status subresource with `change(workspace)`; None when the Workspace does not exist.

    The patch carries the resourceVersion it was computed from, so a concurrent writer makes the server
    answer 409 and the patch is computed again from the fresh object instead of overwriting it.
    """
    for attempt in range(attempts):
        workspace = get_workspace(api, name, namespace)
        if workspace is None:
            return None
        patch: dict[str, Any] = {"status": change(workspace)}
        version = (workspace.get("metadata") or {}).get("resourceVersion")
        if version:
            patch["metadata"] = {"resourceVersion": version}
        try:
            return kube.merge_patch(api, workspace["apiVersion"], KIND, name, patch, namespace, subresource="status")
        except kube.KubeError as err:
            if err.status != 409 or attempt == attempts - 1:
                raise
    return None
