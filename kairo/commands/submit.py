"""`kairo submit FILE`: run a workspace's workflow on the cluster, through the Argo Server or the Kubernetes API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from kairo.commands.render import add_render_args, render
from kairo.problems import InvalidInput, Problem

# What a failure of these steps means, where Argo's own message ("timeout") says little.
HINTS = {
    "gpu-check": "no node could start a pod with train's GPUs, CPU and memory within timeouts.pendingSeconds; "
                 "check the GPU node pool (provision's log), the GPU quota, the workspace's labels and the GPU taint",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("submit", help="submit a workspace's workflow to Argo (and optionally wait for it)")
    add_render_args(parser, file_required=True)
    add_target_args(parser)
    parser.add_argument("--wait", action="store_true", help="follow the workflow; exit 1 naming the failed step")
    parser.add_argument("--poll-seconds", type=float, default=5, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", choices=["argo", "kubernetes"], default="argo",
                        help="the Argo Server API (token from ARGO_TOKEN), or create the objects with the Kubernetes "
                             "API (kubeconfig)")
    parser.add_argument("--argo-server", metavar="URL",
                        help="Argo Server URL (default: argo.server of the cluster config, else $ARGO_SERVER)")
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster, else $KUBECONFIG)")


class Target:
    """Where objects go: the Argo Server or the Kubernetes API, plus the Kubernetes API for PVCs/ConfigMaps."""

    def __init__(self, args: argparse.Namespace, server: str, ui: str = ""):
        from kairo.clients import argo

        self.args = args
        self.server = server
        self.ui = ui
        self._api: Any = None
        if args.via == "kubernetes":
            self.argo: Any = argo.KubernetesArgo(self.api())
        else:
            self.argo = argo.ArgoServer(server, os.environ.get("ARGO_TOKEN"))

    def api(self) -> Any:
        from kairo.clients import kube

        if self._api is None:
            try:
                self._api = kube.api_client(self.args.kubeconfig)
            except Exception as err:  # kubernetes' ConfigException: no kubeconfig and not in a pod
                raise kube.KubeError(f"no Kubernetes credentials ({err}) — pass --kubeconfig") from None
        return self._api

    def create_objects(self, objects: list[dict[str, Any]]) -> None:
        """The PVCs and ConfigMaps the workflow needs, with the Kubernetes API (the Argo Server cannot)."""
        if not objects:
            return
        from kairo.clients import argo, kube

        try:
            done = argo.create_objects(self.api(), objects)
        except kube.KubeError as err:
            names = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
            raise kube.KubeError(f"the workflow needs {names}, created with the Kubernetes API, which failed: {err}"
                                 " — create them first (`kairo render FILE | kubectl create -f -`)") from None
        for item in done:
            print(f"applied {item}")

    def link(self, kind: str, namespace: str, name: str) -> str:
        from kairo.clients import argo

        base = self.ui or self.server
        if base:
            return argo.ui_link(base, kind, namespace, name)
        command = "argo get" if kind == "Workflow" else "argo cron get"
        return f"(no Argo UI configured) {command} -n {namespace} {name}"


def argo_server(args: argparse.Namespace, cluster: Any) -> str:
    server = args.argo_server or cluster.argo.server or os.environ.get("ARGO_SERVER", "")
    if args.via == "argo" and not server:
        raise InvalidInput([Problem("--argo-server", "no Argo Server given — pass --argo-server URL, set argo.server "
                                                     "in the cluster config or $ARGO_SERVER, or use --via kubernetes")])
    return server


def send(args: argparse.Namespace, kind: str, create: Callable[[Any, dict[str, Any]], dict[str, Any]],
         **options: Any) -> tuple[Target, str, str]:
    """Render the workspace as `kind`, create the objects it needs, then `create(target.argo, the last object)`.

    Returns the target and the namespace and name the cluster gave the last object.
    """
    from kairo.commands._common import cluster_from

    cluster = cluster_from(args)
    objects = render(args, kind, **options)
    last, others = objects[-1], objects[:-1]
    target = Target(args, argo_server(args, cluster), cluster.argo.uiUrl)
    target.create_objects(others)
    saved = create(target.argo, last)
    return target, saved["metadata"].get("namespace") or last["metadata"]["namespace"], saved["metadata"]["name"]


def run(args: argparse.Namespace) -> int:
    from kairo.clients.argo import ArgoError, failed_steps, wait_for
    from kairo.clients.kube import KubeError

    try:
        target, namespace, name = send(args, "workflow", lambda argo, workflow: argo.create_workflow(workflow))
    except (ArgoError, KubeError) as err:
        print(f"kairo submit: {err}", file=sys.stderr)
        return 1
    print(f"workflow {namespace}/{name} submitted")
    print(target.link("Workflow", namespace, name))
    if not args.wait:
        return 0
    try:
        done = wait_for(lambda: target.argo.get_workflow(name, namespace),
                        lambda step, phase: print(f"  {step}: {phase}", flush=True), args.poll_seconds)
    except (ArgoError, KubeError) as err:
        print(f"kairo submit: {err}", file=sys.stderr)
        return 1
    phase = done.get("status", {}).get("phase")
    if phase == "Succeeded":
        print(f"workflow {name} succeeded")
        return 0
    failures = failed_steps(done)
    for failure in failures:
        hint = HINTS.get(failure.step)
        print(f"step {failure.step} failed: {failure.message}" + (f" — {hint}" if hint else ""), file=sys.stderr)
    if not failures:
        print(f"workflow {name} {phase}: {done.get('status', {}).get('message', '')}", file=sys.stderr)
    return 1
