"""The inference DAG: an inference Workspace's preset served with its adapters, and its Workflow.

  (workspace) ──► started
       └──► provision ──► resource-ready
                ├──► fetch-model ──────┐
                ├──► pull-adapter-0 ───┼──► deploy ──► smoke ──► inference-ready
                └──► pull-adapter-N ───┘
  onExit (on-exit): cleanup, finished

The generic template `kairo-inference` (what the Argo Events Sensor submits for an applied inference Workspace)
takes the adapters as one parameter, Kaito's `inference.adapters` in JSON: one task, pull-adapters, pulls every
image adapter and pins its digest, and deploy mounts the volume adapters into the inference pod as they are.

The shorter sibling of the tuning DAG (tuning.py), with the same status reports (the `report` DAG writes
ResourceReady, InferenceReady and WorkspaceSucceeded, so `kubectl get workspace` shows Kaito's columns), the
same exit handler and the same templates for the steps both share. Each adapter has its own pull task, as
Kaito gives each image adapter its own puller init container (pkg/workspace/inference/preset_inferences.go):
an image is pulled and its digest pinned, a volume's folder is copied and checked, all before the Deployment
is touched — a wrong reference fails the run here, not in a crash-looping pod.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, Container, Workflow

from kairo.pipelines import templates
from kairo.pipelines.plan import GENERIC_INFERENCE_PARAMETERS, Plan
from kairo.pipelines.tuning import (
    EXIT_HANDLER,
    REPORT,
    _task_makers,
    exit_dag,
    out,
    report_dag,
    workflow_settings,
)

ENTRYPOINT = "inference"
STEPS = ("workspace", "provision", "fetch-model", "smoke", "cleanup", "workspace-status")


def inference_dag(plan: Plan, made: dict[str, Container], report: DAG) -> DAG:
    """The tasks and their arrows; the pull tasks are one per adapter."""
    task, status = _task_makers(made, report)
    with DAG(name=ENTRYPOINT) as dag:
        if plan.generic:
            workspace = task("workspace")
        started = status("started")
        provision, fetch_model = task("provision"), task("fetch-model")
        resource_ready = status("resource-ready", message=f"GPU nodes ready: {out(provision, 'nodes')}")
        if plan.generic:  # the adapters are a parameter: one task pulls them all
            pulls = [task("pull-adapters")]
            deploy = task("deploy", pinned=out(pulls[0], "refs"))
            digests = out(pulls[0], "refs")
        else:
            pulls = [made[f"pull-adapter-{i}"](name=f"pull-adapter-{i}") for i in range(len(plan.adapters))]
            image_pulls = [(i, pull, a) for i, (pull, a) in enumerate(zip(pulls, plan.adapters, strict=True))
                           if not a.volume]
            deploy = task("deploy", **{f"adapter_{i}": out(pull, "ref") for i, pull, _ in image_pulls})
            digests = " ".join(f"{a.name}@{out(pull, 'digest')}" for _, pull, a in image_pulls)
        smoke = task("smoke", url=out(deploy, "service-url"))
        inference_ready = status("inference-ready", adapter_digest=digests, endpoint=out(deploy, "service-url"))

        if plan.generic:
            workspace >> [started, provision]
        provision >> [resource_ready, fetch_model, *pulls]
        [fetch_model, *pulls] >> deploy >> smoke >> inference_ready
    return dag


def build_inference(plan: Plan, kind: type[Workflow], pod_labels: dict[str, str], **fields: Any) -> dict[str, Any]:
    """The manifest of `kind` running the inference DAG (tuning.build's sibling: the same workflow settings)."""
    with kind(entrypoint=ENTRYPOINT, **workflow_settings(plan, GENERIC_INFERENCE_PARAMETERS, pod_labels),
              **fields) as workflow:
        made = {name: getattr(templates, name.replace("-", "_"))(plan) for name in STEPS
                if plan.generic or name != "workspace"}
        made["deploy"] = templates.serve_adapters(plan)
        made.update({f"pull-adapter-{i}": templates.pull_adapter(plan, i) for i in range(len(plan.adapters))})
        if plan.generic:
            made["pull-adapters"] = templates.pull_adapters(plan)
        report = report_dag(made)
        inference_dag(plan, made, report)
        exit_dag(made, report)
    manifest = workflow.to_dict()
    spec = manifest["spec"].get("workflowSpec", manifest["spec"])
    spec["templates"].sort(key=lambda t: (t["name"] != ENTRYPOINT, t["name"] != EXIT_HANDLER, t["name"] != REPORT))
    return manifest
