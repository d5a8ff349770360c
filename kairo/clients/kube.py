"""Thin Kubernetes access: a client, and a few calls that send manifests built elsewhere as plain data.

Manifest builders stay pure (dict in, dict out) and are tested by value; these senders are tested
against KMock's KubernetesEmulator with the official `kubernetes` client.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "kairo"


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    plural: str
    namespaced: bool


# The kinds kairo reads or writes. Others can be added here; unknown kinds are refused clearly.
KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "Pod"): Kind("pods", True),
    ("v1", "Service"): Kind("services", True),
    ("v1", "ConfigMap"): Kind("configmaps", True),
    ("v1", "Secret"): Kind("secrets", True),
    ("v1", "PersistentVolumeClaim"): Kind("persistentvolumeclaims", True),
    ("v1", "ServiceAccount"): Kind("serviceaccounts", True),
    ("v1", "Event"): Kind("events", True),
    ("v1", "Node"): Kind("nodes", False),
    ("v1", "Namespace"): Kind("namespaces", False),
    ("apps/v1", "Deployment"): Kind("deployments", True),
    ("apps/v1", "ReplicaSet"): Kind("replicasets", True),
    ("argoproj.io/v1alpha1", "Workflow"): Kind("workflows", True),
    ("argoproj.io/v1alpha1", "WorkflowTemplate"): Kind("workflowtemplates", True),
    ("argoproj.io/v1alpha1", "CronWorkflow"): Kind("cronworkflows", True),
    ("karpenter.sh/v1", "NodeClaim"): Kind("nodeclaims", False),
    ("kaito.sh/v1alpha1", "Workspace"): Kind("workspaces", True),
    ("kaito.sh/v1beta1", "Workspace"): Kind("workspaces", True),
    ("rbac.authorization.k8s.io/v1", "Role"): Kind("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Kind("rolebindings", True),
}


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500


def api_client(kubeconfig: str | None = None, host: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client: in-cluster credentials when in a pod, else the kubeconfig (or an explicit host)."""
    if host:
        configuration = client.Configuration()
        configuration.host = host
        return client.ApiClient(configuration)
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (config.ConfigException, OSError) as err:
        raise KubeError(f"cannot load the kubeconfig ({kubeconfig or 'KUBECONFIG or ~/.kube/config'}): {err}") from None
    return client.ApiClient(configuration)


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise KubeError(f"kairo does not know where {api_version} {kind} lives in the API") from None


def object_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a collection (name None) or an object."""
    info = kind_of(api_version, kind)
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if info.namespaced:
        base += f"/namespaces/{namespace or 'default'}"
    base += f"/{info.plural}"
    return f"{base}/{name}" if name else base


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    timeout: float = 30,
) -> dict[str, Any]:
    """One API call; the JSON answer as a dict; KubeError with the server's message on failure."""
    params = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    try:
        response = api.call_api(*params, _request_timeout=timeout)
        response.read()
    except ApiException as err:
        raise _error(err) from None
    except Exception as err:  # urllib3 connection errors and the like
        raise KubeError(f"cannot reach the Kubernetes API: {err}") from None
    if response.status >= 400:
        raise _error(ApiException(http_resp=response))
    text = response.data.decode() if response.data else ""
    return json.loads(text) if text else {}


def _error(err: ApiException) -> KubeError:
    message, reason = str(err.reason or ""), ""
    try:
        body = json.loads(err.body or "{}")
        message = body.get("message") or message
        reason = body.get("reason", "")
    except (TypeError, ValueError):
        pass
    return KubeError(f"Kubernetes API {err.status}: {message}", int(err.status or 0), reason)


def apply(api: client.ApiClient, manifest: dict[str, Any], force: bool = True) -> dict[str, Any]:
    """Server-side apply `manifest` (create or update); applying the same manifest twice changes nothing."""
    meta = manifest["metadata"]
    path = object_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
    query = [("fieldManager", FIELD_MANAGER)] + ([("force", "true")] if force else [])
    return request(api, "PATCH", path, manifest, query, "application/apply-patch+yaml")


def get(api: client.ApiClient, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
    """The object, or None when it does not exist."""
    try:
        return request(api, "GET", object_path(api_version, kind, namespace, name))
    except KubeError as err:
        if err.not_found:
            return None
        raise


def list_objects(
    api: client.ApiClient, api_version: str, kind: str, namespace: str | None = None, label_selector: str = "",
    field_selector: str = "",
) -> list[dict[str, Any]]:
    query = [("labelSelector", label_selector)] if label_selector else []
    query += [("fieldSelector", field_selector)] if field_selector else []
    return request(api, "GET", object_path(api_version, kind, namespace), query=query).get("items", [])


def create(api: client.ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    return request(api, "POST", object_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace")), manifest)


def create_if_missing(api: client.ApiClient, manifest: dict[str, Any]) -> bool:
    """Create `manifest` unless an object of that name exists; True when created. Never changes an existing one."""
    meta = manifest["metadata"]
    if get(api, manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace")) is not None:
        return False
    create(api, manifest)
    return True


def merge_patch(
    api: client.ApiClient, api_version: str, kind: str, name: str, patch: dict[str, Any],
    namespace: str | None = None, subresource: str = "",
) -> dict[str, Any]:
    """A JSON merge patch (optionally on a subresource such as `status`)."""
    path = object_path(api_version, kind, namespace, name) + (f"/{subresource}" if subresource else "")
    return request(api, "PATCH", path, patch, content_type="application/merge-patch+json")


def delete(api: client.ApiClient, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
    """Delete the object; False when it was already gone."""
    try:
        request(api, "DELETE", object_path(api_version, kind, namespace, name))
        return True
    except KubeError as err:
        if err.not_found:
            return False
        raise
