"""Azure Resource Manager access for AKS agent pools — the only module that imports the Azure SDK.

Bodies go in and come out as plain ARM JSON (camelCase under `properties`), built by `kairo.manifests.nodes`.
Credentials come from `DefaultAzureCredential`, so workload identity works in a pod unchanged. Every
failure becomes an `ArmError` that says in words what happened, with ARM's code, and whether a retry
may help (`transient`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlparse

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import RetryPolicy
from azure.core.polling import LROPoller

from kairo.cluster import AzureSettings

# Longest Retry-After the SDK may sleep through inside one step; beyond it the step fails as transient
# and the workflow's own retry (with its backoff) tries again later.
MAX_RETRY_AFTER_SECONDS = 60

THROTTLED = {"TooManyRequests", "SubscriptionRequestsThrottled", "ResourceGroupRequestsThrottled",
             "ResourceCollectionRequestsThrottled"}
NO_CAPACITY = {"AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest",
               "OverconstrainedZonalAllocationRequest", "AllocationFailedVMSeriesNotAvailable"}
NOT_IN_REGION = {"SkuNotAvailable", "VMSizeNotSupported", "InvalidVMSize", "SkuNotAvailableInZone",
                 "VMSizeNotAvailable"}
QUOTA = {"QuotaExceeded", "InsufficientVCPUQuota", "ErrCode_InsufficientVCPUQuota", "OperationNotAllowedQuota"}
SERVER_SIDE = {"InternalServerError", "InternalOperationError", "ServiceUnavailable", "GatewayTimeout",
               "RequestTimeout", "Conflict", "AnotherOperationInProgress", "OperationPreempted"}
NO_ACCESS = {"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
             "LinkedAuthorizationFailed"}
NOT_FOUND = {"ResourceNotFound", "ResourceGroupNotFound", "SubscriptionNotFound", "NotFound"}


class ArmError(Exception):
    """An Azure Resource Manager call failed; `transient` says whether trying again later may succeed."""

    def __init__(self, message: str, code: str = "", status: int = 0, transient: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


def explain(code: str, message: str, status: int, retry_after: float | None, where: str) -> ArmError:
    """ARM's error code and message, in words that say what happened and what to do."""
    message = " ".join(message.split())  # ARM messages span lines
    tag = f"(ARM {code or 'error'}, HTTP {status})" if status else f"(ARM {code or 'error'})"
    lowered = message.lower()
    if code in THROTTLED or status == 429:
        wait = f"; it asked to wait {retry_after:g} s before trying again" if retry_after is not None else ""
        return ArmError(f"Azure Resource Manager is throttling requests{wait} {tag}: {message}",
                        code, status, True, retry_after)
    if code in QUOTA or "quota" in lowered:
        return ArmError(f"the subscription's vCPU quota is too small for this pool {tag}: {message} — request "
                        "more quota for the VM family in the cluster's region (Azure portal → Quotas), or choose a "
                        "smaller resource.instanceType", code, status, False)
    if code in NOT_IN_REGION or "not available in" in lowered:
        return ArmError(f"this VM size is not offered where the cluster runs {tag}: {message} — choose another "
                        "resource.instanceType (`kairo instance-types` lists them) or a cluster in another region",
                        code, status, False)
    if code in NO_CAPACITY:
        return ArmError(f"Azure has no capacity for this VM size right now {tag}: {message} — the workflow "
                        "retries; if it keeps failing, choose another resource.instanceType", code, status, True)
    if code in NO_ACCESS or status in (401, 403):
        return ArmError(f"the identity kairo runs as may not manage agent pools of {where} {tag}: {message} — "
                        "grant it 'Azure Kubernetes Service Contributor' on the cluster (in the cluster: the "
                        "workload identity of the kairo-provision ServiceAccount)", code, status, False)
    if code in NOT_FOUND and status == 404:
        return ArmError(f"{where} was not found {tag}: {message} — check provisioner.azure (subscriptionId, "
                        "resourceGroup, clusterName) in the cluster config", code, status, False)
    transient = code in SERVER_SIDE or status == 0 or status == 408 or status == 409 or status >= 500
    return ArmError(f"Azure Resource Manager refused the request {tag}: {message}", code, status, transient)


class _BoundedRetry(RetryPolicy):
    """Honour Retry-After as the SDK does, but give up at once when ARM asks for a long wait."""

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        after = self.get_retry_after(response)
        if after is not None and after > MAX_RETRY_AFTER_SECONDS:
            return False
        return super().is_retry(settings, response)


def default_credential() -> Any:
    """Azure credentials as the pod (workload identity), the environment or the developer's login provide."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


class AgentPools:
    """The agent pools of one AKS cluster (`provisioner.azure` in the cluster config)."""

    def __init__(self, settings: AzureSettings, credential: Any = None, retries: int = 3,
                 polling_interval: float = 15.0):
        from azure.mgmt.containerservice import ContainerServiceClient

        missing = [k for k in ("subscriptionId", "resourceGroup", "clusterName") if not getattr(settings, k)]
        if missing:
            raise ArmError(f"provisioner.azure.{missing[0]} is empty — the azure provisioner needs subscriptionId, "
                           "resourceGroup and clusterName in the cluster config")
        endpoint = settings.armEndpoint.rstrip("/")
        self._options = _transport_options(endpoint)
        self.settings = settings
        self.where = f"AKS cluster '{settings.clusterName}' (resource group {settings.resourceGroup})"
        self.client = ContainerServiceClient(
            credential or default_credential(),
            settings.subscriptionId,
            base_url=endpoint,
            credential_scopes=[f"{_audience(endpoint)}/.default"],
            retry_policy=_BoundedRetry(retry_total=retries),
            polling_interval=polling_interval,
        )

    def get(self, name: str) -> dict[str, Any] | None:
        """The pool as ARM JSON, or None when there is none of that name."""
        with self._errors():
            try:
                pool = self.client.agent_pools.get(self.settings.resourceGroup, self.settings.clusterName, name,
                                                   **self._options)
            except ResourceNotFoundError:
                return None
        return pool.as_dict()

    def put(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create or update the pool and wait until ARM says the operation finished."""
        with self._errors():
            poller = self.client.agent_pools.begin_create_or_update(
                self.settings.resourceGroup, self.settings.clusterName, name, body, **self._options
            )
            return self._finish(poller, f"creating or updating agent pool '{name}'").as_dict()

    def delete(self, name: str) -> bool:
        """Delete the pool and wait until it is gone; False when there was none."""
        if self.get(name) is None:
            return False
        with self._errors():
            poller = self.client.agent_pools.begin_delete(
                self.settings.resourceGroup, self.settings.clusterName, name, **self._options
            )
            self._finish(poller, f"deleting agent pool '{name}'")
        return True

    def _finish(self, poller: LROPoller, what: str) -> Any:
        timeout = self.settings.operationTimeoutSeconds
        poller.wait(timeout)  # raises what the polling thread raised
        if not poller.done():
            raise ArmError(
                f"{what} in {self.where} did not finish within {timeout} s (status: {poller.status()}) — "
                "Azure may still be working on it; the workflow retries, or raise "
                "provisioner.azure.operationTimeoutSeconds", "OperationTimedOut", 0, True,
            )
        return poller.result()

    def _errors(self) -> _Translate:
        return _Translate(self.where)


class _Translate:
    """Turn the SDK's exceptions into ArmError, with words and ARM's code."""

    def __init__(self, where: str):
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, err: BaseException | None, tb: Any) -> bool:
        if err is None or isinstance(err, ArmError):
            return False
        if isinstance(err, ClientAuthenticationError) and getattr(err, "response", None) is None:
            raise ArmError(
                "no Azure credential: DefaultAzureCredential found none it could use — in the cluster, give the "
                "kairo-provision ServiceAccount a workload identity (annotation azure.workload.identity/client-id, "
                f"pod label azure.workload.identity/use=true); details: {_first_line(err)}"
            ) from None
        if isinstance(err, HttpResponseError):
            raise _from_response(err, self.where) from None
        if isinstance(err, (ServiceRequestError, ServiceResponseError)):
            raise ArmError(f"cannot reach Azure Resource Manager: {_first_line(err)}", transient=True) from None
        return False


def _from_response(err: HttpResponseError, where: str) -> ArmError:
    code = getattr(err.error, "code", None) or ""
    message = getattr(err.error, "message", None) or err.reason or str(err)
    status = int(getattr(err, "status_code", None) or 0)
    response = getattr(err, "response", None)
    retry_after = None
    if response is not None:
        raw = response.headers.get("Retry-After")
        if raw is not None and re.fullmatch(r"\d+(\.\d+)?", raw.strip()):
            retry_after = float(raw)
    body = _json_body(response)
    if body.get("status") in ("Failed", "Canceled"):  # a long-running operation ended badly: its own error
        failure = body.get("error") or {}
        code, message = failure.get("code", code), failure.get("message", message)
        status = 0
    return explain(str(code), str(message), status, retry_after, where)


def _json_body(response: Any) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except (ValueError, TypeError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _audience(endpoint: str) -> str:
    """The token audience of an ARM endpoint (public, sovereign clouds, or a test server)."""
    parsed = urlparse(endpoint)
    return f"{parsed.scheme}://{parsed.netloc}"


def _transport_options(endpoint: str) -> dict[str, Any]:
    """Per-call options: plain http only for a loopback test server, never a token over http elsewhere."""
    parsed = urlparse(endpoint)
    if parsed.scheme == "https":
        return {}
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme == "http" and loopback:
        return {"enforce_https": False}  # the SDK only takes it per call (it covers the polling requests)
    raise ArmError(f"provisioner.azure.armEndpoint '{endpoint}' — only https is allowed "
                   "(plain http only for a server on 127.0.0.1, in tests)")
