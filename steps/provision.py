"""provision: make the workspace's GPU nodes exist, then wait until they are Ready with GPUs allocatable.

How nodes appear is the cluster's choice (`provisioner.kind` in the cluster config): an AKS agent pool
(`azure`), Karpenter NodeClaims (`karpenter`), or nodes already there (`existing`, never creates anything).
With `--local` (or KAIRO_LOCAL=1) it reports this machine's devices and checks the preset fits on them.
Outputs: `nodes` (comma-separated), `node-pool` (pool or NodeClaim names, or empty), `provisioner`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kairo import exitcodes, stepkit
from kairo.atomic import write_output
from kairo.stepkit import StepFailed


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="provision", description="Make the workspace's GPU nodes exist and wait for them.")
    p.add_argument("--workspace", required=True, help="Workspace name")
    p.add_argument("--namespace", default="default", help="Workspace namespace")
    p.add_argument("--preset", required=True, help="Model preset (what the nodes must hold)")
    p.add_argument("--method", required=True, choices=["lora", "qlora"], help="Tuning method")
    p.add_argument("--instance-type", default="", help="GPU machine size (resource.instanceType)")
    p.add_argument("--count", type=int, default=1, help="Number of GPU nodes (resource.count)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="A label the GPU nodes carry (resource.labelSelector.matchLabels); repeatable, or several "
                        "as KEY=VALUE,KEY=VALUE")
    p.add_argument("--preferred-node", action="append", default=[], metavar="NODE",
                   help="An existing node to use (resource.preferredNodes); repeatable")
    p.add_argument("--ephemeral", choices=["true", "false"], default="false",
                   help="The node is released when the run ends (kairo.sh/ephemeral-node); cleanup acts on it")
    stepkit.add_common_flags(p, local="Check this machine instead of a cluster (or KAIRO_LOCAL=1)", workdir=True,
                             outputs=True, cluster_config=True,
                             kubeconfig="kubeconfig file (default: KUBECONFIG, else in-cluster credentials, "
                                        "else ~/.kube/config)")
    p.set_defaults(kubeconfig=os.environ.get("KUBECONFIG") or None)  # KUBECONFIG before in-cluster credentials
    return p


class NotReady(Exception):
    """The nodes did not become usable in time (a retry later may find them)."""


class Refused(Exception):
    """The request cannot be met as written: the user must change something."""


log = stepkit.logger("provision")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    # The generic template passes the labelSelector as one KEY=VALUE,KEY=VALUE value (label values hold no comma).
    args.label = [pair for value in args.label for pair in value.split(",") if pair]
    return stepkit.run_step("provision", provision, args)


def provision(args: argparse.Namespace) -> int:
    preset = stepkit.preset(args.preset)
    if args.count < 1:
        raise StepFailed(f"--count {args.count} — resource.count must be at least 1")
    if stepkit.is_local(args):
        return provision_local(preset, args)
    return provision_cluster(preset, args)


def provision_local(preset: Any, args: argparse.Namespace) -> int:
    """Report this machine's devices and refuse, with the numbers, when the preset cannot train here."""
    from kairo.machine import fit_problem, this_machine

    machine = this_machine()
    log(f"local: {machine.describe()}")
    problem = fit_problem(machine, preset, args.method)
    if problem:
        log(f"local: {problem}")
        return exitcodes.BAD_INPUT
    log(f"local: {preset.name} with {args.method} fits on this machine")
    _outputs(stepkit.outputs(args), [socket.gethostname()], "", "local")
    return exitcodes.OK


def provision_cluster(preset: Any, args: argparse.Namespace) -> int:
    from kairo.clients import kube
    from kairo.clients.azure import ArmError
    from kairo.cluster import load_cluster_config
    from kairo.manifests.nodes import NodeRequest, PoolConflict, parse_labels

    cluster = load_cluster_config(args.cluster_config)
    kind = cluster.provisioner.kind
    try:
        # Empty values are what a template passes for "none": skip them rather than fail on them.
        request = NodeRequest(args.workspace, args.namespace, args.instance_type, args.count,
                              parse_labels([x for x in args.label if x]), tuple(x for x in args.preferred_node if x))
    except ValueError as err:
        log(str(err))
        return exitcodes.BAD_INPUT
    try:
        if kind != "existing" and not request.instance_type:
            raise Refused(f"resource.instanceType is empty — the {kind} provisioner needs a GPU machine size "
                          "(`kairo instance-types` lists them)")
        if kind != "existing" and request.catalogue_entry is None:
            log(f"instance type {request.instance_type} is not in kairo's catalogue: expecting 1 GPU per node")
        api = kube.api_client(args.kubeconfig)
        if kind == "azure":
            nodes, pool = _azure(api, request, cluster)
        elif kind == "karpenter":
            nodes, pool = _karpenter(api, request, cluster, preset)
        else:
            nodes, pool = _existing(api, request, cluster, preset, args.method), ""
    except (Refused, PoolConflict) as err:
        log(str(err))
        return exitcodes.BAD_INPUT
    except NotReady as err:
        log(str(err))
        return exitcodes.TRANSIENT
    except ArmError as err:
        log(f"azure: {err}")
        return exitcodes.TRANSIENT if err.transient else exitcodes.BAD_INPUT
    except kube.KubeError as err:
        log(f"kubernetes: {err}")
        return exitcodes.TRANSIENT if err.transient else exitcodes.BAD_INPUT
    log(f"ready: {', '.join(nodes)}")
    _outputs(stepkit.outputs(args), nodes, pool, kind)
    return exitcodes.OK


def _outputs(folder: Path, nodes: list[str] | tuple[str, ...], pool: str, provisioner: str) -> None:
    write_output("nodes", ",".join(nodes), folder)
    write_output("node-pool", pool, folder)
    write_output("provisioner", provisioner, folder)


# -- the three provisioners ---------------------------------------------------------------------------


def _azure(api: Any, request: Any, cluster: Any) -> tuple[tuple[str, ...], str]:
    """An AKS agent pool of the workspace's own: created, reused, or scaled; then its nodes waited for."""
    from kairo.clients.azure import AgentPools
    from kairo.manifests.nodes import agent_pool_body, agent_pool_name, plan_pool

    pools = AgentPools(cluster.provisioner.azure)
    name = agent_pool_name(request.namespace, request.workspace)
    body = agent_pool_body(request, cluster.provisioner.gpuTaint)
    plan = plan_pool(name, pools.get(name), body, pools.where)
    log(f"azure: {plan.describe(name)} ({request.instance_type} × {request.count}) in {pools.where}")
    if plan.action == "busy":
        raise NotReady(f"agent pool '{name}' is still {plan.changes[0]} from an earlier attempt — the workflow "
                       "retries once Azure has finished")
    if plan.action in ("create", "update"):
        pools.put(name, body)
        log(f"azure: agent pool '{name}' is provisioned")
    nodes = _wait_for_nodes(api, request.node_labels, request.count, request.gpus_per_node,
                            cluster.provisioner.nodeReadyTimeoutSeconds, f"of agent pool '{name}'")
    return nodes, name


def _karpenter(api: Any, request: Any, cluster: Any, preset: Any) -> tuple[tuple[str, ...], str]:
    """One NodeClaim per node (kept when it already asks for the same machine); then the nodes waited for."""
    from kairo.clients import kube
    from kairo.manifests.nodes import (
        carries,
        nodeclaim_instance_types,
        nodeclaim_is_managed,
        nodeclaim_manifest,
        nodeclaim_problems,
        nodeclaim_requests,
        selector,
    )

    settings = cluster.provisioner
    requests = nodeclaim_requests(preset, request.gpus_per_node)
    wanted = [nodeclaim_manifest(request, i, settings.karpenter.nodeClassRef, settings.gpuTaint, requests)
              for i in range(request.count)]
    names = [claim["metadata"]["name"] for claim in wanted]
    for claim in wanted:
        name = claim["metadata"]["name"]
        existing = kube.get(api, "karpenter.sh/v1", "NodeClaim", name)
        if existing is None:
            kube.create(api, claim)
            log(f"karpenter: created NodeClaim {name} ({request.instance_type})")
            continue
        if not nodeclaim_is_managed(existing):
            raise Refused(f"NodeClaim {name} exists but kairo did not create it: kairo will not use it — delete it "
                          "(kubectl delete nodeclaim …) or run this workspace under another name")
        have = nodeclaim_instance_types(existing)
        if [t.lower() for t in have] != [request.instance_type.lower()]:
            raise Refused(f"NodeClaim {name} asks for {', '.join(have) or 'any instance type'}, but "
                          f"resource.instanceType is {request.instance_type}: a NodeClaim cannot change its machine "
                          f"— delete it (kubectl delete nodeclaim {name}) and run again")
        log(f"karpenter: NodeClaim {name} already asks for {request.instance_type}: reusing it")
    mine = [c for c in kube.list_objects(api, "karpenter.sh/v1", "NodeClaim", label_selector=selector(request.node_labels))
            if carries(c, request.node_labels) and nodeclaim_is_managed(c)]
    for claim in mine:
        if claim["metadata"]["name"] not in names:  # resource.count went down since an earlier run
            kube.delete(api, "karpenter.sh/v1", "NodeClaim", claim["metadata"]["name"])
            log(f"karpenter: deleted NodeClaim {claim['metadata']['name']} (resource.count is {request.count})")

    def claim_trouble() -> list[str]:
        return nodeclaim_problems([c for c in (kube.get(api, "karpenter.sh/v1", "NodeClaim", n) for n in names) if c])

    nodes = _wait_for_nodes(api, request.node_labels, request.count, request.gpus_per_node,
                            settings.nodeReadyTimeoutSeconds, f"labelled {selector(request.node_labels)}",
                            claim_trouble)
    return nodes, ",".join(names)


def _existing(api: Any, request: Any, cluster: Any, preset: Any, method: str) -> tuple[str, ...]:
    """Nodes already in the cluster: they must exist, hold the preset, be Ready and offer the GPUs."""
    from kairo.clients import kube
    from kairo.manifests.nodes import carries, node_memory_problem, selector

    labels = request.labels
    if request.preferred_nodes:
        candidates = []
        for name in request.preferred_nodes:
            node = kube.get(api, "v1", "Node", name)
            if node is None:
                raise Refused(f"resource.preferredNodes: node '{name}' does not exist in the cluster")
            if not carries(node, labels):
                raise Refused(f"resource.preferredNodes: node '{name}' lacks the labels {selector(labels)} that the "
                              f"workspace's pods select on — kubectl label node {name} "
                              + " ".join(f"{k}={v}" for k, v in sorted(labels.items())))
            candidates.append(node)
        described = f"among {', '.join(request.preferred_nodes)}"
    elif labels:
        candidates = [n for n in kube.list_objects(api, "v1", "Node", label_selector=selector(labels))
                      if carries(n, labels)]
        described = f"labelled {selector(labels)}"
        if not candidates:
            raise Refused(f"no node carries the labels {selector(labels)} (resource.labelSelector) — the existing "
                          "provisioner creates nothing: label GPU nodes (kubectl label node NODE "
                          + " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
                          + "), or use the azure or karpenter provisioner")
    else:
        raise Refused("resource.labelSelector.matchLabels is empty and there are no resource.preferredNodes — with "
                      "the existing provisioner kairo needs labels (or names) that pick the GPU nodes")
    checked = [(node["metadata"]["name"], node_memory_problem(node, preset, method)) for node in candidates]
    names = {name for name, problem in checked if problem is None}
    if len(names) < request.count:
        raise Refused("; ".join(problem for _, problem in checked if problem))

    def fetch() -> list[dict[str, Any]]:
        if request.preferred_nodes:
            found = (kube.get(api, "v1", "Node", name) for name in sorted(names))
            return [n for n in found if n is not None]
        return [n for n in kube.list_objects(api, "v1", "Node", label_selector=selector(labels))
                if n["metadata"]["name"] in names]

    return _wait_for_nodes(api, labels, request.count, request.gpus_per_node,
                           cluster.provisioner.nodeReadyTimeoutSeconds, described, fetch=fetch)


# -- waiting ------------------------------------------------------------------------------------------


def _wait_for_nodes(api: Any, labels: dict[str, str], count: int, gpus: int, timeout: float, described: str,
                    trouble: Any = None, fetch: Any = None) -> tuple[str, ...]:
    """Poll the nodes until `count` are Ready with `gpus` GPUs each; NotReady saying what is missing on timeout."""
    from kairo.clients import kube
    from kairo.manifests.nodes import carries, judge_nodes, selector
    from kairo.progress import Progress

    progress = Progress(count, "nodes ready")
    deadline = time.monotonic() + timeout
    interval = min(5.0, max(0.05, timeout / 20))
    missing = ""
    while True:
        try:
            if fetch is not None:
                nodes = fetch()
            else:
                nodes = [n for n in kube.list_objects(api, "v1", "Node", label_selector=selector(labels))
                         if carries(n, labels)]
            verdict = judge_nodes(nodes, count, gpus, described)
            missing = verdict.missing
            progress.update(len(verdict.usable), missing)
            if verdict.done:
                progress.finish()
                return verdict.usable
        except kube.KubeError as err:
            if not err.transient:
                raise
            missing = f"the Kubernetes API did not answer: {err}"
        if time.monotonic() >= deadline:
            extra = trouble() if trouble is not None else []
            details = "; ".join([missing, *extra])
            raise NotReady(f"gave up waiting for {count} GPU node{'s' if count != 1 else ''} after {timeout:g} s "
                           f"(provisioner.nodeReadyTimeoutSeconds): {details}")
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
