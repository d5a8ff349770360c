"""Options and helpers several subcommands share."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kairo.cluster import ClusterConfig, load_cluster_config
from kairo.problems import Problem
from kairo.spec import Checked, Workspace, WorkspaceFile, load_workspace


def add_cluster_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster-config", metavar="FILE", help="cluster-wide settings (provisioner, registries, images…)"
    )


def add_workspace_args(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """FILE (a workspace YAML, several documents allowed), --config and --cluster-config."""
    parser.add_argument("file", nargs="+" if many else None, metavar="FILE", help="a Kaito Workspace YAML file")
    parser.add_argument(
        "--config", metavar="FILE", help="training_config.yaml (or its ConfigMap) to use instead of tuning.config"
    )
    add_cluster_config(parser)


def cluster_from(args: argparse.Namespace, **overrides: Any) -> ClusterConfig:
    cluster = load_cluster_config(getattr(args, "cluster_config", None))
    return cluster.model_copy(update=overrides) if overrides else cluster


def load_from_args(
    args: argparse.Namespace, cluster: ClusterConfig | None = None
) -> tuple[Workspace, WorkspaceFile, Checked]:
    """The validated workspace named on the command line; warnings go to stderr."""
    cluster = cluster or cluster_from(args)
    workspace, wfile, checked = load_workspace(args.file, cluster, getattr(args, "config", None))
    print_warnings(checked.warnings, wfile.source)
    return workspace, wfile, checked


def print_warnings(warnings: list[Problem], source: str) -> None:
    for warning in warnings:
        print(f"{source}: warning: {warning}", file=sys.stderr)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain, aligned text table (what kubectl prints)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
