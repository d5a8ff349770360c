"""`kairo-step deployed`: what is deployed now for the workspace, for `evaluate` and `download` to compare with.

Reads the record `deploy` keeps on the workspace's Service annotations (locally: `state/deployed.json`).
Outputs `adapter-ref`, `dataset-digest`, `eval-loss` — each empty when nothing is deployed, which the
pipelines read as "first deployment".

RBAC in the workspace's namespace: services get.
"""

from __future__ import annotations

import argparse
import os
import sys

from kairo import exitcodes


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step deployed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, help="workspace name (its Service has the same name)")
    parser.add_argument("--namespace", default="default", help="namespace of the workspace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials, else KUBECONFIG)")
    parser.add_argument("--outputs", help="folder for output parameters (default: $KAIRO_OUTPUTS or /tmp/outputs)")
    parser.add_argument("--workdir", help="work volume (local mode; default: $KAIRO_WORKDIR or /kairo/work)")
    parser.add_argument("--local", action="store_true", help="read state/deployed.json instead of the cluster")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from kairo.atomic import write_output
    from kairo.inference import DeployedAdapter

    current: DeployedAdapter | None
    if args.local or os.environ.get("KAIRO_LOCAL") == "1":
        from kairo import local_server

        record = local_server.read_deployed(args.workdir or os.environ.get("KAIRO_WORKDIR") or "/kairo/work")
        current = DeployedAdapter.from_dict(record["current"]) if record and record.get("current") else None
    else:
        from kairo.clients import kube
        from kairo.clients.rollout import current_record

        try:
            current, _ = current_record(kube.api_client(args.kubeconfig), args.workspace, args.namespace)
        except kube.KubeError as err:
            print(f"deployed: {err}", file=sys.stderr)
            return exitcodes.TRANSIENT if err.transient else exitcodes.FAILED
    write_output("adapter-ref", current.ref if current else "", args.outputs)
    write_output("dataset-digest", current.dataset_digest if current else "", args.outputs)
    write_output("eval-loss", current.eval_loss if current else "", args.outputs)
    if current:
        print(f"deployed: {args.workspace} serves {current.ref} (since {current.deployed_at or '?'})", file=sys.stderr)
    else:
        print(f"deployed: nothing deployed for {args.workspace} yet", file=sys.stderr)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
