"""Sending workflows to a cluster: through the Argo Server API (Hera's WorkflowsService) or the Kubernetes API.

Manifests are built elsewhere as plain dicts (kairo.pipelines); this module only sends them and reads
back their status. The Argo token is passed to Hera and never logged, printed or put in an error.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from kairo.clients import kube

ARGO_API_VERSION = "argoproj.io/v1alpha1"
DONE_PHASES = ("Succeeded", "Failed", "Error")
MANAGED_BY = ("app.kubernetes.io/managed-by", "kairo")


class ArgoError(Exception):
    """The Argo Server refused or could not be reached; `status` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def server_url(value: str) -> str:
    """An Argo Server address as `argo` takes it (`host:port`, https unless ARGO_SECURE=false) or a full URL."""
    value = value.strip()
    if not re.match(r"^https?://", value):
        scheme = "http" if os.environ.get("ARGO_SECURE", "true").lower() == "false" else "https"
        value = f"{scheme}://{value}"
    return value.rstrip("/") + "/"  # a trailing slash keeps a path prefix (…/argo/) when Hera joins URLs


class ArgoServer:
    """The Argo Server API, through Hera's WorkflowsService."""

    def __init__(self, url: str, token: str | None = None, verify: bool | None = None):
        from hera.workflows import WorkflowsService

        if verify is None:
            verify = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "false").lower() != "true"
        self.url = server_url(url)
        self._service = WorkflowsService(host=self.url, token=token or None, verify_ssl=verify)

    def create_workflow(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v1/workflows/{namespace}; the created Workflow (with its generated name)."""
        from hera.workflows.models import Workflow, WorkflowCreateRequest

        request = WorkflowCreateRequest(workflow=Workflow.model_validate(manifest))
        created = self._call(self._service.create_workflow, request, namespace=_namespace(manifest))
        return _plain(created)

    def get_workflow(self, name: str, namespace: str) -> dict[str, Any]:
        return _plain(self._call(self._service.get_workflow, name, namespace=namespace))

    def apply_cron_workflow(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the CronWorkflow, or replace the one of that name (POST, then PUT on 409)."""
        from hera.workflows.models import CreateCronWorkflowRequest, CronWorkflow, UpdateCronWorkflowRequest

        namespace, name = _namespace(manifest), manifest["metadata"]["name"]
        try:
            request = CreateCronWorkflowRequest(cron_workflow=CronWorkflow.model_validate(manifest))
            return _plain(self._call(self._service.create_cron_workflow, request, namespace=namespace))
        except ArgoError as err:
            if err.status != 409:
                raise
        current = _plain(self._call(self._service.get_cron_workflow, name, namespace=namespace))
        updated = {**manifest, "metadata": {**manifest["metadata"],
                                            "resourceVersion": current["metadata"].get("resourceVersion")}}
        request = UpdateCronWorkflowRequest(cron_workflow=CronWorkflow.model_validate(updated))
        return _plain(self._call(self._service.update_cron_workflow, name, request, namespace=namespace))

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from hera.exceptions import HeraException

        try:
            with warnings.catch_warnings():  # Hera 7.1 calls pydantic's deprecated .json(); nothing for users to fix
                warnings.simplefilter("ignore", DeprecationWarning)
                return method(*args, **kwargs)
        except HeraException as err:
            status = int(getattr(err, "status_code", 0) or _status_in(str(err)))
            raise ArgoError(f"Argo Server at {self.url}: {err}", status) from None
        except requests.RequestException as err:
            raise ArgoError(f"cannot reach the Argo Server at {self.url}: {type(err).__name__}") from None


class KubernetesArgo:
    """Argo objects created directly with the Kubernetes API (no Argo Server needed)."""

    def __init__(self, api: Any):
        self.api = api

    def create_workflow(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Workflow, naming it from its generateName here (as the API server would)."""
        meta = manifest["metadata"]
        if not meta.get("name"):
            suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            manifest = {**manifest, "metadata": {**meta, "name": meta.get("generateName", "kairo-") + suffix}}
        return kube.create(self.api, manifest)

    def get_workflow(self, name: str, namespace: str) -> dict[str, Any]:
        found = kube.get(self.api, ARGO_API_VERSION, "Workflow", name, namespace)
        if found is None:
            raise ArgoError(f"workflow {namespace}/{name} is gone", 404)
        return found

    def apply_cron_workflow(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return kube.apply(self.api, manifest)


def create_objects(api: Any, objects: list[dict[str, Any]]) -> list[str]:
    """Create the objects a workflow needs (PVCs, ConfigMaps); what already exists is left alone.

    kairo's own ConfigMaps (a URL list, a training config) are applied every time so they hold what this
    run reads; the user's documents are only created when missing — never changed, never deleted.
    Returns what was created or updated, as `Kind/name`.
    """
    done = []
    for obj in objects:
        meta = obj["metadata"]
        ours = (meta.get("labels") or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]
        exists = kube.get(api, obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")) is not None
        if ours or not exists:
            kube.apply(api, obj)
            done.append(f"{obj['kind']}/{meta['name']}")
    return done


@dataclass(frozen=True)
class StepFailure:
    step: str
    message: str


def failed_steps(workflow: dict[str, Any]) -> list[StepFailure]:
    """The steps that failed, by their DAG task name, with Argo's message (retries counted once)."""
    found: dict[str, str] = {}
    for node in ((workflow.get("status") or {}).get("nodes") or {}).values():
        if node.get("type") != "Pod" or node.get("phase") not in ("Failed", "Error"):
            continue
        step = re.sub(r"\(\d+\)$", "", node.get("displayName", node.get("name", "?")))
        found[step] = node.get("message", "")  # the last attempt's message wins
    return [StepFailure(step, message) for step, message in found.items()]


def step_phases(workflow: dict[str, Any]) -> dict[str, str]:
    """The phase of each DAG task (its latest attempt)."""
    phases = {}
    for node in ((workflow.get("status") or {}).get("nodes") or {}).values():
        if node.get("type") in ("Pod", "Skipped", "Retry"):
            phases[re.sub(r"\(\d+\)$", "", node.get("displayName", ""))] = node.get("phase", "")
    return phases


def wait_for(get: Callable[[], dict[str, Any]], on_change: Callable[[str, str], None] | None = None,
             poll_seconds: float = 5, timeout_seconds: float | None = None) -> dict[str, Any]:
    """Poll a workflow until it finishes; `on_change(step, phase)` hears every step's progress."""
    seen: dict[str, str] = {}
    started = time.monotonic()
    while True:
        workflow = get()
        for step, phase in step_phases(workflow).items():
            if seen.get(step) != phase and on_change is not None:
                on_change(step, phase)
            seen[step] = phase
        if (workflow.get("status") or {}).get("phase") in DONE_PHASES:
            return workflow
        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            raise ArgoError(f"workflow {workflow['metadata'].get('name')} still running after {timeout_seconds:g}s")
        time.sleep(poll_seconds)


def ui_link(base: str, kind: str, namespace: str, name: str) -> str:
    """The Argo UI page of a workflow or CronWorkflow."""
    section = {"Workflow": "workflows", "CronWorkflow": "cron-workflows"}[kind]
    return f"{server_url(base)}{section}/{namespace}/{name}"


def _namespace(manifest: dict[str, Any]) -> str:
    return manifest["metadata"].get("namespace") or "default"


def _plain(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _status_in(message: str) -> int:
    match = re.search(r"status code (\d{3})", message)
    return int(match.group(1)) if match else 0
