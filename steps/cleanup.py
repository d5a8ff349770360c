"""cleanup: the workflow's onExit — release an ephemeral GPU node pool, and record how the run ended.

A pool or NodeClaim is deleted only when the workspace is ephemeral (`--ephemeral true`, from the
annotation kairo.sh/ephemeral-node), no inference Deployment of the workspace runs on it, and kairo made
it (the `kairo.sh_managed` tag / the `kairo.sh/managed` label). In the teardown workflow of a deleted
Workspace (`--workspace-deleted`) it first waits, bounded, for the inference Deployment the Workspace owned to
be garbage-collected. Locally it stops the server
`deploy --local` started (`kairo.local.server.stop`), unless `--keep-serving` (or KAIRO_KEEP_SERVING=1). Nothing to clean is never a
failure. Output: `outcome`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kairo import exitcodes, stepkit
from kairo.atomic import write_output
from kairo.problems import InvalidInput
from kairo.stepkit import StepFailed


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cleanup", description="Release an ephemeral GPU node pool; record the outcome.")
    p.add_argument("--workspace", required=True, help="Workspace name")
    p.add_argument("--namespace", default="default", help="Workspace namespace")
    p.add_argument("--workflow-status", default="", help="Argo's {{workflow.status}}")
    p.add_argument("--ephemeral", choices=["true", "false"], default="false",
                   help="Release the nodes (kairo.sh/ephemeral-node)")
    p.add_argument("--failures", default="", help="Argo's {{workflow.failures}} (JSON)")
    p.add_argument("--keep-serving", action="store_true",
                   help="Leave the local inference server running (or KAIRO_KEEP_SERVING=1)")
    p.add_argument("--workspace-deleted", action="store_true",
                   help="The Workspace object was deleted (the teardown workflow): first wait for Kubernetes to "
                        "remove the inference Deployment it owned")
    p.add_argument("--gc-wait-seconds", type=float, default=300.0,
                   help="With --workspace-deleted: how long the owned Deployment may take to go (then exit 75)")
    p.add_argument("--grace-seconds", type=float, default=10.0,
                   help="How long the local server may take to stop after SIGTERM before SIGKILL")
    stepkit.add_common_flags(p, workdir=True, outputs=True, cluster_config=True, local=True,
                             kubeconfig="kubeconfig file (default: KUBECONFIG, else in-cluster credentials, "
                                        "else ~/.kube/config)")
    p.set_defaults(kubeconfig=os.environ.get("KUBECONFIG") or None)  # KUBECONFIG before in-cluster credentials
    return p


log = stepkit.logger("cleanup")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    report_run(args.workflow_status, args.failures)
    code = exitcodes.OK
    if stepkit.is_local(args):
        keep = args.keep_serving or os.environ.get("KAIRO_KEEP_SERVING") == "1"
        outcome = stop_local_server(stepkit.workdir(args), keep, args.grace_seconds)
    else:
        try:
            outcome = release(args)
        except InvalidInput as err:
            outcome, code = f"could not read the cluster config: {err.render()}", exitcodes.BAD_INPUT
        except StepFailed as err:
            outcome, code = str(err), err.code
    log(outcome)
    write_output("outcome", outcome, stepkit.outputs(args))
    return code


def report_run(status: str, failures: str) -> None:
    """Say how the workflow ended, and which tasks failed with what message."""
    if status:
        log(f"workflow {status}")
    for line in describe_failures(failures):
        log(f"  {line}")


def describe_failures(failures: str) -> list[str]:
    """Argo's `workflow.failures` JSON as one line per failed task (the raw text when it is not JSON)."""
    if not failures.strip() or failures.strip() in ("null", "[]") or failures.startswith("{{"):
        return []  # none, or Argo had no failures to substitute
    try:
        items = json.loads(failures)
    except ValueError:
        return [failures.strip()[:500]]
    lines = []
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, dict):
            name = item.get("displayName") or item.get("templateName") or "?"
            lines.append(f"{name}: {item.get('phase', 'Failed')}: {item.get('message', '')}".rstrip(": "))
    return lines


# -- a cluster: the node pool or NodeClaims -------------------------------------------------------------


def release(args: argparse.Namespace) -> str:
    """Delete the workspace's kairo-made nodes when that is safe; say what was done, or why not."""
    if args.ephemeral != "true":
        return "kept the GPU nodes: the workspace is not ephemeral (annotation kairo.sh/ephemeral-node)"
    from kairo.clients import kube
    from kairo.clients.azure import ArmError
    from kairo.cluster import load_cluster_config

    cluster = load_cluster_config(args.cluster_config)
    kind = cluster.provisioner.kind
    if kind == "existing":
        return "nothing to release: the existing provisioner never creates nodes"
    try:
        api = kube.api_client(args.kubeconfig)
        if args.workspace_deleted:
            _wait_for_owned_deployments(api, args.workspace, args.namespace, args.gc_wait_seconds)
        serving = _serving_deployment(api, args.workspace, args.namespace)
        if serving:
            return f"kept the GPU nodes: inference Deployment {args.namespace}/{serving} runs on them"
        if kind == "azure":
            return _release_pool(cluster, args.workspace, args.namespace)
        return _release_nodeclaims(api, args.workspace, args.namespace)
    except (ArmError, kube.KubeError) as err:
        raise StepFailed(f"could not release the GPU nodes: {err}",
                         exitcodes.TRANSIENT if err.transient else exitcodes.BAD_INPUT) from None


def _serving_deployment(api: Any, workspace: str, namespace: str) -> str:
    """The name of the workspace's inference Deployment when it has replicas, else empty."""
    from kairo.clients import kube
    from kairo.manifests.nodes import WORKSPACE_LABEL, carries

    labels = {WORKSPACE_LABEL: workspace}
    for deployment in kube.list_objects(api, "apps/v1", "Deployment", namespace, f"{WORKSPACE_LABEL}={workspace}"):
        replicas = (deployment.get("spec") or {}).get("replicas", 1)
        if carries(deployment, labels) and (replicas or 0) > 0:
            return deployment["metadata"]["name"]
    return ""


def _wait_for_owned_deployments(api: Any, workspace: str, namespace: str, seconds: float) -> None:
    """Wait until no Deployment owned by the deleted Workspace is left; StepFailed (75) after `seconds`.

    Kubernetes removes what a deleted object owned in the background, so the teardown workflow can start
    while the inference Deployment is still there and would keep the nodes. A Deployment the Workspace
    does not own (deployed when there was no Workspace object) never goes: it is not waited for, and the
    nodes it runs on are kept.
    """
    import time

    from kairo.clients import kube
    from kairo.manifests.nodes import WORKSPACE_LABEL

    deadline = time.monotonic() + seconds
    while True:
        owned = [d["metadata"]["name"] for d in kube.list_objects(api, "apps/v1", "Deployment", namespace,
                                                                  f"{WORKSPACE_LABEL}={workspace}")
                 if _owned_by_workspace(d, workspace)]
        if not owned:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepFailed(f"kept the GPU nodes for now: Deployment {namespace}/{', '.join(owned)} still exists "
                                f"{seconds:g}s after its Workspace was deleted (garbage collection is behind; "
                                "a retry looks again)", exitcodes.TRANSIENT)
        log(f"waiting for Kubernetes to remove Deployment {namespace}/{', '.join(owned)} (owned by the deleted "
            f"Workspace; {left:.0f}s left)")
        time.sleep(min(2.0, max(left, 0.05)))


def _owned_by_workspace(obj: dict[str, Any], workspace: str) -> bool:
    return any(ref.get("kind") == "Workspace" and ref.get("name") == workspace
               for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _release_pool(cluster: Any, workspace: str, namespace: str) -> str:
    from kairo.clients.azure import AgentPools
    from kairo.manifests.nodes import MANAGED_TAG, agent_pool_name, pool_is_managed

    pools = AgentPools(cluster.provisioner.azure)
    name = agent_pool_name(namespace, workspace)
    pool = pools.get(name)
    if pool is None:
        return f"nothing to release: {pools.where} has no agent pool '{name}'"
    if not pool_is_managed(pool):
        return f"kept agent pool '{name}': kairo did not create it (no tag {MANAGED_TAG}=true)"
    log(f"deleting agent pool '{name}' of {pools.where}")
    pools.delete(name)
    return f"released agent pool '{name}' of {pools.where}"


def _release_nodeclaims(api: Any, workspace: str, namespace: str) -> str:
    from kairo.clients import kube
    from kairo.manifests.nodes import (
        NAMESPACE_LABEL,
        WORKSPACE_LABEL,
        carries,
        nodeclaim_is_managed,
        selector,
    )

    labels = {WORKSPACE_LABEL: workspace, NAMESPACE_LABEL: namespace}
    claims = [c for c in kube.list_objects(api, "karpenter.sh/v1", "NodeClaim", label_selector=selector(labels))
              if carries(c, labels)]
    if not claims:
        return f"nothing to release: no NodeClaim of workspace {namespace}/{workspace}"
    released, kept = [], []
    for claim in claims:
        name = claim["metadata"]["name"]
        if nodeclaim_is_managed(claim):
            kube.delete(api, "karpenter.sh/v1", "NodeClaim", name)
            released.append(name)
        else:
            kept.append(name)
    parts = [f"released NodeClaim{'s' if len(released) != 1 else ''} {', '.join(released)}"] if released else []
    if kept:
        parts.append(f"kept {', '.join(kept)}: kairo did not create {'them' if len(kept) > 1 else 'it'}")
    return "; ".join(parts)


# -- this machine: the local inference server -----------------------------------------------------------


def stop_local_server(workdir: Path, keep: bool, grace: float) -> str:
    """Stop the server `deploy --local` started (kairo.local.server.stop: SIGTERM, then SIGKILL after `grace` s)."""
    from kairo.local import server as local_server

    pid = local_server.server_pid(workdir)
    if pid is None:
        return "nothing to clean: no local inference server was started"
    if keep and local_server.alive(pid):
        return f"left the inference server running (pid {pid}, --keep-serving); stop it with: kill {pid}"
    if local_server.stop(workdir, grace):
        return f"stopped the local inference server (pid {pid})"
    return f"nothing to clean: the inference server (pid {pid}) was no longer running"


if __name__ == "__main__":
    sys.exit(main())
