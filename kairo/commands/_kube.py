"""Options and lookups the commands that read the cluster share (status, history, rollback)."""

from __future__ import annotations

import argparse
from typing import Any


def add_kube_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workspace", metavar="WORKSPACE", help="the workspace's name")
    parser.add_argument("-n", "--namespace", default="default", help="the workspace's namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use (default: the current one)")


def api_from(args: argparse.Namespace) -> Any:
    """An API client for the cluster the flags name; KubeError with a readable message when there is none."""
    # Imported here, not at the top: `kairo validate` must work without the kubernetes client installed.
    from kairo.clients import kube

    return kube.api_client(args.kubeconfig, context=args.context)


def has_labels(obj: dict[str, Any], wanted: dict[str, str]) -> bool:
    """True when `obj` carries every label in `wanted` (selectors are also checked here: a server may ignore them)."""
    return wanted.items() <= (((obj.get("metadata") or {}).get("labels")) or {}).items()
