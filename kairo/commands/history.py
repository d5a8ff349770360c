"""`kairo history WORKSPACE`: the adapters deployed for a workspace, newest first, with their eval figures.

Read from the record `deploy` keeps on the workspace's Service (locally: `state/deployed.json` in
the run's work folder). `kairo rollback WORKSPACE --to DIGEST|TAG` goes back to any of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kairo.commands._common import print_json, table
from kairo.commands._kube import add_kube_args, api_from
from kairo.manifests.inference import DeployedAdapter

COLUMNS = ["", "DEPLOYED", "DIGEST", "TAG", "EVAL LOSS", "DATASET", "WORKFLOW", "NOTE"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("history", help="list the adapters deployed for a workspace, with their eval loss")
    add_kube_args(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table", help="table, or JSON for scripts")
    parser.add_argument("--local", action="store_true", help="read a local run's record (`kairo run --local`)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="with --local: the run directory (`kairo run --workdir`) or its work folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.local:
        from kairo.local import server as local_server

        if not args.workdir:
            print("kairo history: --local needs --workdir DIR (the folder `kairo run --local` used)", file=sys.stderr)
            return 2
        workdir = Path(args.workdir)
        if not local_server.deployed_path(workdir).exists() and (workdir / "volumes" / "work").is_dir():
            workdir = workdir / "volumes" / "work"  # the run directory: the record is on its work volume
        record = local_server.read_deployed(workdir) or {}
        history = [DeployedAdapter.from_dict(e) for e in record.get("history", []) if isinstance(e, dict)]
    else:
        from kairo.clients import kube
        from kairo.clients.rollout import current_record

        try:
            _, history = current_record(api_from(args), args.workspace, args.namespace)
        except kube.KubeError as err:
            print(f"kairo history: {err}", file=sys.stderr)
            return 1
    if args.output == "json":
        print_json([e.to_dict() for e in history])
        return 0
    if not history:
        print(f"kairo history: nothing deployed for workspace '{args.workspace}' in namespace '{args.namespace}' yet",
              file=sys.stderr)
        return 0
    rows = [["*" if i == 0 else "", e.deployed_at, short(e.digest), e.tag, e.eval_loss or "-", short(e.dataset_digest),
             e.workflow, e.note] for i, e in enumerate(history)]
    print(table(rows, COLUMNS))
    return 0


def short(digest: str) -> str:
    """`sha256:` and the first 12 hex digits: enough to name an adapter to `kairo rollback --to`."""
    return digest[: len("sha256:") + 12] if digest else ""
