"""`kairo-step deployed`: what is deployed now for the workspace, for `evaluate` and `download` to compare with.

Reads the record `deploy` keeps on the workspace's Service annotations (locally: `state/deployed.json`).
Outputs `adapter-ref`, `dataset-digest`, `eval-loss` — each empty when nothing is deployed, which the
pipelines read as "first deployment".

RBAC in the workspace's namespace: services get.
"""

from __future__ import annotations

import argparse
import sys

from kairo import exitcodes, stepkit


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step deployed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, help="workspace name (its Service has the same name)")
    parser.add_argument("--namespace", default="default", help="namespace of the workspace")
    stepkit.add_common_flags(parser, kubeconfig=True, outputs=True,
                             workdir="work volume (local mode; default: $KAIRO_WORKDIR or /kairo/work)",
                             local="read state/deployed.json instead of the cluster")
    return parser


log = stepkit.logger("deployed")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from kairo.atomic import write_output
    from kairo.manifests.inference import DeployedAdapter

    current: DeployedAdapter | None
    if stepkit.is_local(args):
        from kairo.local import server as local_server

        record = local_server.read_deployed(stepkit.workdir(args))
        current = DeployedAdapter.from_dict(record["current"]) if record and record.get("current") else None
    else:
        from kairo.clients import kube
        from kairo.clients.rollout import current_record

        try:
            current, _ = current_record(kube.api_client(args.kubeconfig), args.workspace, args.namespace)
        except kube.KubeError as err:
            log(str(err))
            return exitcodes.TRANSIENT if err.transient else exitcodes.FAILED
    outputs = stepkit.outputs(args)
    write_output("adapter-ref", current.ref if current else "", outputs)
    write_output("dataset-digest", current.dataset_digest if current else "", outputs)
    write_output("eval-loss", current.eval_loss if current else "", outputs)
    if current:
        log(f"{args.workspace} serves {current.ref} (since {current.deployed_at or '?'})")
    else:
        log(f"nothing deployed for {args.workspace} yet")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
