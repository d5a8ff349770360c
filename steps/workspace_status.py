"""`kairo-step workspace-status`: write the run's progress into the Workspace object's status.

Called by the pipelines as a small task: `--event started` first, `resource-ready` after provision,
`inference-ready` after deploy and smoke, `finished` in onExit (with `{{workflow.status}}` and
`{{workflow.failures}}`). Sets Kaito's conditions ResourceReady / InferenceReady / WorkspaceSucceeded
(reason, message, lastTransitionTime, observedGeneration), `state`, `workflow`, `adapterDigest` and
`endpoint`; a failure sets the failed step's condition False with its message. When the workspace is
not a resource in the cluster (`kairo submit`, `argo submit`) there is nothing to update and it exits 0;
so it does in a local run (`--local`, KAIRO_LOCAL=1).

A status is a report, not part of the work: this step never fails the run because the status could not
be written. The API not answering is retried for a while (`--retries`), then it, like a refusal (RBAC, a
conflict that does not settle), is logged and the step exits 0. Only a template mistake (`finished`
without `--workflow-status`) exits 2.

RBAC in the workspace's namespace: get on kaito.sh workspaces, patch on workspaces/status — nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time

from kairo import exitcodes, stepkit
from kairo.manifests.conditions import EVENTS


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
    parser.add_argument("--retries", type=int, default=4, help="tries again this often when the API does not answer")
    parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds before the first retry, then doubling")
    stepkit.add_common_flags(parser, kubeconfig=True, local="a local run: nothing to update (or KAIRO_LOCAL=1)")
    return parser


log = stepkit.logger("workspace-status")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.event == "finished" and not args.workflow_status:
        log("--event finished needs --workflow-status ({{workflow.status}})")
        return exitcodes.BAD_INPUT
    if stepkit.is_local(args):
        log("a local run has no Workspace object; nothing to update")
        return exitcodes.OK
    from kairo.clients import kube
    from kairo.clients.workspaces import update_status
    from kairo.manifests.conditions import status_patch
    from kairo.manifests.inference import now_rfc3339

    def change(workspace: dict) -> dict:
        return status_patch(
            workspace.get("status"), args.event, now_rfc3339(),
            generation=(workspace.get("metadata") or {}).get("generation"),
            workflow=args.workflow, workflow_status=args.workflow_status, failures=args.failures,
            message=args.message, adapter_digest=args.adapter_digest, endpoint=args.endpoint,
        )

    where = f"{args.namespace}/{args.workspace}"
    wait = args.retry_wait
    for attempt in range(args.retries + 1):
        try:
            updated = update_status(kube.api_client(args.kubeconfig), args.workspace, args.namespace, change)
            break
        except kube.KubeError as err:
            if err.transient and attempt < args.retries:
                log(f"{where}: {err}; trying again in {wait:g}s")
                time.sleep(wait)
                wait *= 2
                continue
            log(f"the status of {where} was not written ({err}); the run goes on without it")
            return exitcodes.OK
    if updated is None:
        log(f"no Workspace object {where} in the cluster; nothing to update")
        return exitcodes.OK
    summary = ", ".join(f"{c.get('type')}={c.get('status')}" for c in (updated.get("status") or {}).get("conditions", []))
    log(f"{where} after {args.event}: {summary}")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
