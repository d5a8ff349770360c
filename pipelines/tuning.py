"""The tuning DAG, and the one builder that wraps it as a Workflow, a WorkflowTemplate or a CronWorkflow.

  (workspace) ──► started
       └──► provision ──► resource-ready
                ├──► deployed ──► download ─┐
                ├──► fetch-model ───────────┼──► train ──► evaluate ──► push ──► deploy ──► smoke ──► inference-ready
                └──► gpu-check ─────────────┘   (when the data changed)  (when evaluate says deploy)
  onExit (on-exit): cleanup, finished        (started, resource-ready, inference-ready, finished: the `report` DAG)

provision comes first because the steps that share the work volume run on the node it makes (see
templates.py); on an `existing` node it returns at once, so the rest starts in parallel right away.
`workspace` is the generic template's first task only: it reads and validates the Workspace object when
the run came from one (the Sensor's `source=resource`) and sizes the GPU pods. started, resource-ready,
inference-ready and finished write the Workspace's status (a no-op without a Workspace object).

A status report that cannot be written must not fail the run, and the step exiting 0 on API errors is not
enough: a pod that cannot start fails its task too. Argo decides a DAG's phase from its leaf tasks
(`assessDAGPhase` in workflow/controller/dag.go): a failed leaf fails the DAG unless the task's `continueOn`
covers it, and three of the reports are leaves. But a DAG whose tasks use `depends` may not give any task
`continueOn` (workflow/validate/validate.go, "cannot use 'continueOn' when using 'depends'"; the CRDs say it
again as a CEL rule), and a `depends` clause on `.Failed`/`.Errored` only helps a task that has dependents.
So each report is a task of the small DAG template `report`: one task, no `depends`, with `continueOn` —
legal there, and that DAG's phase is Succeeded whatever its one task did.

The exit handler is a DAG of two tasks rather than one step doing both: cleanup releases nodes as
kairo-provision, the status is written as kairo-deploy, and steps do not import each other.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, Container, Parameter, Task, Workflow
from hera.workflows import models as m

from kairo.pipelines import pods, templates
from kairo.pipelines.plan import GENERIC_PARAMETERS, Plan

STEPS = ("workspace", "provision", "deployed", "download", "fetch-model", "gpu-check", "train", "evaluate", "push",
         "deploy", "smoke", "cleanup", "workspace-status")
EXIT_HANDLER = "on-exit"
REPORT = "report"
# Inside `report` only: a status that could not be written does not fail the run (see the docstring).
REPORT_CONTINUES = m.ContinueOn(failed=True, error=True)
REPORT_INPUTS = ("message", "adapter-digest", "endpoint", "workflow-status", "failures")


def report_dag(made: dict[str, Container]) -> DAG:
    """`report`: writes one status event; its one task's continueOn keeps a failed write from failing the run."""
    inputs = [Parameter(name="event"), *(Parameter(name=n, default="") for n in REPORT_INPUTS)]
    with DAG(name=REPORT, inputs=inputs) as dag:
        made["workspace-status"](name="write", continue_on=REPORT_CONTINUES, arguments={
            n: "{{inputs.parameters." + n + "}}" for n in ("event", *REPORT_INPUTS)})
    return dag


def tuning_dag(plan: Plan, made: dict[str, Container], report: DAG) -> DAG:
    """The tasks and their arrows; each template is built by its function in templates.py."""
    task, status = _task_makers(made, report)
    with DAG(name="tuning") as dag:
        size: dict[str, str] = {}
        if plan.generic:
            workspace = task("workspace")
            size = {name: out(workspace, name) for name in pods.SIZE_INPUTS}
        started = status("started")
        provision, deployed, fetch_model = (task(n) for n in ("provision", "deployed", "fetch-model"))
        resource_ready = status("resource-ready", message=f"GPU nodes ready: {out(provision, 'nodes')}")
        gpu_check = task("gpu-check", **size)
        download = task("download", previous_digest=out(deployed, "dataset-digest"))
        new_data = f"'{out(download, 'unchanged')}' == 'false'"  # download honours --force
        train = task("train", when=new_data, **size)
        evaluate = task("evaluate", when=new_data, deployed=out(deployed, "adapter-ref"), **size)
        better = f"'{out(evaluate, 'decision')}' == 'deploy'"
        push = task("push", when=better, dataset_digest=out(download, "digest"))
        deploy = task("deploy", when=better, adapter_ref=out(push, "ref"),
                      adapter_tag=out(push, "tag"), dataset_digest=out(download, "digest"),
                      eval_loss=out(evaluate, "new-loss"))
        smoke = task("smoke", when=better, url=out(deploy, "service-url"))
        inference_ready = status("inference-ready", when=better, adapter_digest=out(push, "digest"),
                                 endpoint=out(deploy, "service-url"))

        if plan.generic:
            workspace >> [started, provision]
        provision >> [resource_ready, deployed, fetch_model, gpu_check]
        deployed >> download
        [download, fetch_model, gpu_check] >> train >> evaluate >> push >> deploy >> smoke >> inference_ready
    return dag


def exit_dag(made: dict[str, Container], report: DAG) -> DAG:
    """The exit handler: release the nodes and write how the run ended, side by side, whatever happened."""
    task, status = _task_makers(made, report)
    ended = {"workflow_status": "{{workflow.status}}", "failures": "{{workflow.failures}}"}
    with DAG(name=EXIT_HANDLER) as dag:
        task("cleanup", **ended)
        status("finished", **ended)
    return dag


def _task_makers(made: dict[str, Container], report: DAG) -> tuple[Any, Any]:
    """`task(name, when, **arguments)` for a step, `status(event, when, **arguments)` for a status report."""

    def task(name: str, when: str | None = None, **arguments: str) -> Task:
        args = {k.replace("_", "-"): v for k, v in arguments.items()}
        return made[name](name=name, when=when, **({"arguments": args} if args else {}))

    def status(event: str, when: str | None = None, **arguments: str) -> Task:
        args = {"event": event, **{k.replace("_", "-"): v for k, v in arguments.items()}}
        return report(name=event, when=when, arguments=args)

    return task, status


def out(task: Task, name: str) -> str:
    """`{{tasks.T.outputs.parameters.NAME}}`, checked against the task's template by Hera."""
    return str(task.get_parameter(name).value)


def workflow_settings(plan: Plan, generic_parameters: Any, pod_labels: dict[str, str]) -> dict[str, Any]:
    """What every kairo workflow (tuning or inference, any kind) sets besides its entrypoint and DAG."""
    repository = plan.cluster.argo.artifactRepositoryRef
    return dict(
        on_exit=EXIT_HANDLER,
        arguments=[Parameter(name=p.name, description=p.description, **({} if p.default is None else {"value": p.default}))
                   for p in generic_parameters] if plan.generic else None,
        service_account_name=plan.cluster.argo.serviceAccount,
        security_context=pods.POD_SECURITY,
        volumes=pods.volumes(plan),
        volume_claim_templates=[pods.work_volume_claim(plan)],
        # Keep failed pods for their logs; the work volume is kept on failure too (Argo's default), so a
        # retried run resumes training from its checkpoints.
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=2 * 86400, seconds_after_failure=7 * 86400),
        # Two runs of one workspace (tuning or inference, the same mutex) would fight over its node,
        # Deployment and moving tag.
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=f"kairo-tuning-{plan.workspace}")]),
        pod_metadata=m.Metadata(labels=pod_labels),
        artifact_repository_ref=m.ArtifactRepositoryRef(key=repository) if repository else None,
    )


def build(plan: Plan, kind: type[Workflow], pod_labels: dict[str, str], **fields: Any) -> dict[str, Any]:
    """The manifest of `kind` (Workflow, WorkflowTemplate or CronWorkflow) running the tuning DAG."""
    with kind(entrypoint="tuning", **workflow_settings(plan, GENERIC_PARAMETERS, pod_labels), **fields) as workflow:
        made = {name: getattr(templates, name.replace("-", "_"))(plan) for name in STEPS
                if plan.generic or name != "workspace"}
        report = report_dag(made)
        tuning_dag(plan, made, report)
        exit_dag(made, report)
    manifest = workflow.to_dict()
    spec = manifest["spec"].get("workflowSpec", manifest["spec"])
    # The DAGs first: they are what a reader wants.
    spec["templates"].sort(key=lambda t: (t["name"] != "tuning", t["name"] != EXIT_HANDLER, t["name"] != REPORT))
    return manifest
