"""`kairo-step workspace-status`: write the run's progress into the Workspace object's status.

Called by the pipelines as a small task: `--event started` first, `resource-ready` after provision,
`inference-ready` after deploy and smoke, `finished` in onExit (with `{{workflow.status}}` and
`{{workflow.failures}}`). Sets Kaito's conditions ResourceReady / InferenceReady / WorkspaceSucceeded
(reason, message, lastTransitionTime, observedGeneration), `state`, `workflow`, `adapterDigest` and
`endpoint`; a failure sets the failed step's condition False with its message. When the workspace is
not a resource in the cluster (`kairo submit`, `argo submit`) there is nothing to update and it exits 0.

RBAC in the workspace's namespace: get on kaito.sh workspaces, patch on workspaces/status — nothing else.
"""

from __future__ import annotations

import argparse
import sys

from kairo import exitcodes
from kairo.conditions import EVENTS


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kairo-step workspace-status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True, help="the Workspace object's name")
    parser.add_argument("--namespace", default="default", help="its namespace")
    parser.add_argument("--event", required=True, choices=EVENTS, help="what just happened in the workflow")
    parser.add_argument("--workflow", default="", help="the workflow's name ({{workflow.name}})")
    parser.add_argument("--workflow-status", default="", help="finished: {{workflow.status}} (Succeeded, Failed, Error)")
    parser.add_argument("--failures", default="", help="finished: {{workflow.failures}}, Argo's JSON list of failed nodes")
    parser.add_argument("--message", default="", help="a message for the condition instead of the default one")
    parser.add_argument("--adapter-digest", default="", help="inference-ready: the deployed adapter's digest")
    parser.add_argument("--endpoint", default="", help="inference-ready: the service URL")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster credentials, else KUBECONFIG)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.event == "finished" and not args.workflow_status:
        print("workspace-status: --event finished needs --workflow-status ({{workflow.status}})", file=sys.stderr)
        return exitcodes.BAD_INPUT
    from kairo.clients import kube
    from kairo.clients.workspaces import update_status
    from kairo.conditions import status_patch
    from kairo.inference import now_rfc3339

    def change(workspace: dict) -> dict:
        return status_patch(
            workspace.get("status"), args.event, now_rfc3339(),
            generation=(workspace.get("metadata") or {}).get("generation"),
            workflow=args.workflow, workflow_status=args.workflow_status, failures=args.failures,
            message=args.message, adapter_digest=args.adapter_digest, endpoint=args.endpoint,
        )

    try:
        updated = update_status(kube.api_client(args.kubeconfig), args.workspace, args.namespace, change)
    except kube.KubeError as err:
        print(f"workspace-status: cannot update {args.namespace}/{args.workspace}: {err}", file=sys.stderr)
        return exitcodes.TRANSIENT if err.transient else exitcodes.FAILED
    if updated is None:
        print(f"workspace-status: no Workspace object {args.namespace}/{args.workspace} in the cluster; "
              "nothing to update", file=sys.stderr)
        return exitcodes.OK
    summary = ", ".join(f"{c.get('type')}={c.get('status')}" for c in (updated.get("status") or {}).get("conditions", []))
    print(f"workspace-status: {args.namespace}/{args.workspace} after {args.event}: {summary}", file=sys.stderr)
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
