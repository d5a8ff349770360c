"""`kairo validate FILE…`: check workspace files; every problem at once, exit 0 valid, 2 invalid."""

from __future__ import annotations

import argparse
import sys

from kairo.commands._common import add_workspace_args, cluster_from, print_json
from kairo.problems import InvalidInput
from kairo.sizing import gpu_layout
from kairo.spec import Workspace, check_workspace, read_workspace_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("validate", help="check workspace files and report every problem")
    add_workspace_args(parser, many=True)
    parser.add_argument("--local", action="store_true", help="judge as `kairo run --local` would (loopback allowed)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cluster = cluster_from(args, local=True) if args.local else cluster_from(args)
    results = []
    for path in args.file:
        try:
            wfile = read_workspace_file(path)
            checked = check_workspace(wfile.workspace, cluster, args.config, wfile.others)
            problems = checked.problems
            training = how_it_trains(checked.workspace, cluster.training.engine) if checked.ok else ""
        except InvalidInput as err:
            problems, training = err.problems + err.warnings, ""
        errors = [p for p in problems if p.severity == "error"]
        results.append((path, errors, [p for p in problems if p.severity == "warning"], training))
    if args.json:
        print_json([
            {"file": path, "valid": not errors,
             "errors": [{"path": p.path, "message": p.message} for p in errors],
             "warnings": [{"path": p.path, "message": p.message} for p in warnings],
             **({"training": training} if training else {})}
            for path, errors, warnings, training in results
        ])
    for path, errors, warnings, training in results:
        for warning in warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        if errors:
            print(f"{path}: {len(errors)} problem{'s' if len(errors) != 1 else ''}", file=sys.stderr)
            for problem in errors:
                print(f"  - {problem}", file=sys.stderr)
        elif not args.json:
            print(f"{path}: valid" + (f"; training: {training}" if training else ""))
    return 2 if any(errors for _, errors, _, _ in results) else 0


def how_it_trains(ws: Workspace | None, engine: str) -> str:
    """What the train step will do with the model on the instance type's GPUs, and across nodes, in a line."""
    if ws is None or ws.tuning is None or ws.instance_type is None:
        return ""
    gpu = ws.instance_type.gpu
    said = gpu_layout(ws.preset, ws.method, gpu.memory_gib, gpu.count).describe()
    if ws.node_count > 1:
        said += f"; on {ws.node_count} nodes, one {'JobSet' if engine == 'jobset' else 'Kubeflow TrainJob'}"
    return said
