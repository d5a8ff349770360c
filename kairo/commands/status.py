"""`kairo status WORKSPACE`: the columns Kaito's `kubectl get workspace` shows, plus the run behind them.

`NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE`, read from the Workspace object's
status when the workspace is a resource in the cluster; otherwise derived from the latest kairo
workflow for the workspace (its provision, deploy and smoke steps) and the inference Deployment.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from kairo.cluster import ClusterConfig
from kairo.commands._common import add_cluster_config, cluster_from, print_json, table
from kairo.commands._kube import add_kube_args, api_from, has_labels
from kairo.manifests.conditions import CONDITION_TYPES, condition_status
from kairo.manifests.inference import ADAPTER_REF, DEPLOY_SPEC, InferenceSpec, service_url

COLUMNS = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
FINISHED = ("Succeeded", "Failed", "Error")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("status", help="show a workspace as `kubectl get workspace` does, with its workflow")
    add_kube_args(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table", help="table, or JSON for scripts")
    add_cluster_config(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kairo.clients import kube

    cluster = cluster_from(args)
    try:
        api = api_from(args)
        found = gather(api, args.workspace, args.namespace, cluster)
    except kube.KubeError as err:
        print(f"kairo status: {err}", file=sys.stderr)
        return 1
    if not any(found[k] for k in ("workspace", "workflow", "deployment", "service")):
        print(f"kairo status: nothing found for workspace '{args.workspace}' in namespace '{args.namespace}': "
              "no Workspace object, no kairo workflow, no inference Deployment", file=sys.stderr)
        return 1
    view = describe(args.workspace, args.namespace, found, cluster, datetime.now(UTC))
    if args.output == "json":
        print_json(view)
        return 0
    print(table([[view["name"], view["instance"], view["resourceReady"], view["inferenceReady"],
                  view["workspaceReady"], view["age"]]], COLUMNS))
    if view["workflow"]:
        flow = view["workflow"]
        print(f"\nworkflow:  {flow['name']} ({flow['phase'] or 'Pending'})")
        if flow["url"]:
            print(f"argo ui:   {flow['url']}")
    if view["endpoint"]:
        print(f"endpoint:  {view['endpoint']}")
    if view["adapter"]:
        print(f"adapter:   {view['adapter']}")
    return 0


def gather(api: Any, name: str, namespace: str, cluster: ClusterConfig) -> dict[str, Any]:
    """The objects the status is read from; each None when the cluster has none."""
    from kairo.clients import kube
    from kairo.clients.workspaces import get_workspace

    return {
        "workspace": get_workspace(api, name, namespace),
        "workflow": latest_workflow(api, name, namespace, cluster),
        "deployment": kube.get(api, "apps/v1", "Deployment", name, namespace),
        "service": kube.get(api, "v1", "Service", name, namespace),
    }


def latest_workflow(api: Any, name: str, namespace: str, cluster: ClusterConfig) -> dict[str, Any] | None:
    """The newest Argo Workflow labelled `kairo.sh/workspace=NAME`, in the workspace's or Argo's namespace."""
    from kairo.clients import kube

    found = []
    for where in dict.fromkeys([namespace, cluster.argo.namespace]):
        try:
            items = kube.list_objects(api, "argoproj.io/v1alpha1", "Workflow", where, f"kairo.sh/workspace={name}")
        except kube.KubeError as err:
            if err.status in (403, 404):
                continue  # no Argo here, or no right to look in that namespace
            raise
        for item in items:
            labels = (item.get("metadata") or {}).get("labels") or {}
            # Workflows in Argo's namespace name the workspace's namespace; others are a namesake's.
            if has_labels(item, {"kairo.sh/workspace": name}) and labels.get("kairo.sh/namespace", namespace) == namespace:
                found.append(item)
    found.sort(key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp") or ""))
    return found[-1] if found else None


def describe(
    name: str, namespace: str, found: dict[str, Any], cluster: ClusterConfig, now: datetime
) -> dict[str, Any]:
    """The row and details `kairo status` shows, from the gathered objects."""
    workspace, workflow, deployment, service = (found[k] for k in ("workspace", "workflow", "deployment", "service"))
    status = (workspace or {}).get("status") or {}
    derived = _derived(workflow, deployment)
    ready = {kind: condition_status(status, kind) or derived[kind] for kind in CONDITION_TYPES}
    created = _first(_meta(workspace).get("creationTimestamp"), _meta(workflow).get("creationTimestamp"),
                     _meta(deployment).get("creationTimestamp"))
    flow = None
    flow_name = _first(_meta(workflow).get("name"), status.get("workflow"))
    if flow_name:
        flow_ns = _meta(workflow).get("namespace") or cluster.argo.namespace
        base = (cluster.argo.uiUrl or cluster.argo.server).rstrip("/")
        flow = {"name": flow_name, "namespace": flow_ns, "phase": ((workflow or {}).get("status") or {}).get("phase", ""),
                "url": f"{base}/workflows/{flow_ns}/{flow_name}" if base else ""}
    annotations = _meta(service).get("annotations") or {}
    return {
        "name": name,
        "namespace": namespace,
        "instance": _first((workspace or {}).get("resource", {}).get("instanceType"), _parameter(workflow, "instance-type"),
                           _deployed_instance(deployment)),
        "resourceReady": ready["ResourceReady"],
        "inferenceReady": ready["InferenceReady"],
        "workspaceReady": ready["WorkspaceSucceeded"],
        "age": _age(created, now),
        "created": created,
        "source": "workspace" if status.get("conditions") else "workflow" if workflow else "deployment",
        "conditions": status.get("conditions") or [],
        "workflow": flow,
        "endpoint": _first(status.get("endpoint"), service_url(name, namespace) if service else ""),
        "adapter": _first(annotations.get(ADAPTER_REF), status.get("adapterDigest")),
    }


def _derived(workflow: dict[str, Any] | None, deployment: dict[str, Any] | None) -> dict[str, str]:
    """Kaito's three conditions read off a workflow's steps and the Deployment's availability."""
    phase = ((workflow or {}).get("status") or {}).get("phase", "")
    finished = phase in FINISHED
    provision, deploy, smoke = (_step_phase(workflow, s) for s in ("provision", "deploy", "smoke"))
    available = ((deployment or {}).get("status") or {}).get("availableReplicas") or 0
    resource = _tri(provision) if provision else ("True" if available else "Unknown")
    if deployment is not None and available:
        inference = "False" if "False" in (_tri(deploy), _tri(smoke)) else "True"
    elif deployment is not None:
        inference = "False" if finished or "False" in (_tri(deploy), _tri(smoke)) else "Unknown"
    else:
        inference = "False" if finished else "Unknown"
    workspace = {"Succeeded": "True", "Failed": "False", "Error": "False"}.get(phase, "Unknown")
    return {"ResourceReady": resource, "InferenceReady": inference, "WorkspaceSucceeded": workspace}


def _step_phase(workflow: dict[str, Any] | None, step: str) -> str:
    nodes = [n for n in (((workflow or {}).get("status") or {}).get("nodes") or {}).values()
             if isinstance(n, dict) and n.get("displayName") == step]
    # A retried step has a Retry node summing up its attempts; otherwise the latest attempt speaks.
    nodes.sort(key=lambda n: (n.get("type") == "Retry", str(n.get("startedAt") or "")))
    return nodes[-1].get("phase", "") if nodes else ""


def _tri(phase: str) -> str:
    return {"Succeeded": "True", "Failed": "False", "Error": "False"}.get(phase, "Unknown")


def _parameter(workflow: dict[str, Any] | None, name: str) -> str:
    for param in (((workflow or {}).get("spec") or {}).get("arguments") or {}).get("parameters") or []:
        if param.get("name") == name:
            return str(param.get("value") or "")
    return ""


def _deployed_instance(deployment: dict[str, Any] | None) -> str:
    text = (_meta(deployment).get("annotations") or {}).get(DEPLOY_SPEC)
    return InferenceSpec.from_json(text).instance_type if text else ""


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def _first(*values: Any) -> str:
    return next((str(v) for v in values if v), "")


def _age(created: str, now: datetime) -> str:
    """An age the way kubectl prints it: 45s, 7m, 5h, 3d."""
    if not created:
        return ""
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(int((now - then).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
