"""`kairo render FILE`: the objects a workspace runs as, ready for `argo submit -` or `kubectl create -f -`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from kairo.commands._common import add_cluster_config, cluster_from, load_from_args
from kairo.problems import InvalidInput, Problem

KINDS = ("workflow", "workflowtemplate", "cronworkflow")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "render", help="print the Workflow (or WorkflowTemplate, CronWorkflow) a workspace runs as",
        description="Print the objects in the order `kubectl create -f -` needs them: the file's other documents "
                    "(PVCs…), the ConfigMaps the workflow mounts, then the Workflow.",
    )
    add_render_args(parser)
    parser.add_argument("--kind", choices=KINDS, default="workflow",
                        help="workflowtemplate prints the generic template kairo-tuning (with no FILE: it takes none)")
    parser.add_argument("--template", choices=["tuning", "inference"], default="tuning",
                        help="with --kind workflowtemplate: kairo-tuning, or kairo-inference (inference workspaces)")
    parser.add_argument("--schedule", metavar="CRON", help="with --kind cronworkflow: when to retrain, e.g. '0 3 * * 1'")
    parser.add_argument("--timezone", metavar="TZ", help="time zone of the schedule, e.g. Europe/Paris")
    parser.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml", help="output format")
    parser.add_argument("--local", action="store_true",
                        help="judge and render as `kairo run --local` does (loopback data and registries allowed)")
    parser.set_defaults(func=run)


def add_render_args(parser: argparse.ArgumentParser, file_required: bool = False) -> None:
    """FILE, --config, --cluster-config, --namespace and --force: what render, submit and schedule share."""
    parser.add_argument("file", nargs=None if file_required else "?", metavar="FILE",
                        help="a Kaito Workspace YAML file (several documents allowed)")
    parser.add_argument("--config", metavar="FILE",
                        help="training_config.yaml to use instead of tuning.config (shipped as a ConfigMap)")
    add_cluster_config(parser)
    parser.add_argument("--namespace", "-n", metavar="NS",
                        help="where the workflow runs and serves (default: the workspace's, else argo.namespace)")
    parser.add_argument("--force", action="store_true", help="train even when the dataset has not changed")


def run(args: argparse.Namespace) -> int:
    objects = render(args, args.kind, schedule=args.schedule, timezone=args.timezone)
    sys.stdout.write(dump(objects, args.output))
    return 0


def render(args: argparse.Namespace, kind: str, schedule: str | None = None,
           timezone: str | None = None) -> list[dict[str, Any]]:
    """The objects for the workspace named on the command line (the generic template needs none)."""
    from kairo.pipelines import build_inference_workflow_template, build_workflow_template, render_objects

    cluster = cluster_from(args, local=True) if getattr(args, "local", False) else cluster_from(args)
    if args.file is None:
        if kind != "workflowtemplate":
            raise InvalidInput([Problem("FILE", "a workspace file is needed (only --kind workflowtemplate has none)")])
        if getattr(args, "template", "tuning") == "inference":
            return [build_inference_workflow_template(cluster)]
        return [build_workflow_template(cluster)]
    if kind == "workflowtemplate":  # the generic template holds no workspace's values: never drop FILE silently
        raise InvalidInput([Problem("FILE", f"{args.file}: --kind workflowtemplate renders the generic template "
                                            "kairo-tuning, which takes every workspace's values as parameters at "
                                            "submit time — leave FILE out, or render FILE as a workflow (the "
                                            "default) or a cronworkflow")])
    workspace, wfile, _ = load_from_args(args, cluster)
    if kind == "cronworkflow" and not schedule:
        raise InvalidInput([Problem("--schedule", "a CronWorkflow needs a schedule, e.g. --schedule '0 3 * * 1'")])
    return render_objects(wfile, workspace, cluster, kind, schedule, timezone=timezone, config_file=args.config,
                          force=args.force, namespace=args.namespace)


def dump(objects: list[dict[str, Any]], output: str = "yaml") -> str:
    """A YAML stream, or JSON (one object, or a v1 List that kubectl reads)."""
    if output == "json":
        data = objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump_all(objects, sort_keys=False, width=120)
