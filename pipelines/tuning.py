"""The tuning DAG, and the one builder that wraps it as a Workflow, a WorkflowTemplate or a CronWorkflow.

    provision ──► deployed ──► download ─┐
         ├──────► fetch-model ───────────┼──► train ──► evaluate ──► push ──► deploy ──► smoke
         └──────► gpu-check ─────────────┘   (when the data changed)  (when evaluate says deploy)
    onExit: cleanup

provision comes first because the steps that share the work volume run on the node it makes (see
templates.py); on an `existing` node it returns at once, so the rest starts in parallel right away.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, Parameter, Task, Workflow
from hera.workflows import models as m
from kairo.pipelines import pods, templates
from kairo.pipelines.plan import GENERIC_PARAMETERS, Plan

STEPS = ("provision", "deployed", "download", "fetch-model", "gpu-check", "train", "evaluate", "push", "deploy",
         "smoke", "cleanup")


def tuning_dag(plan: Plan) -> DAG:
    """The tasks and their arrows; each template is built by its function in templates.py."""
    made = {name: getattr(templates, name.replace("-", "_"))(plan) for name in STEPS}

    def task(name: str, when: str | None = None, **arguments: str) -> Task:
        args = {k.replace("_", "-"): v for k, v in arguments.items()}
        return made[name](name=name, when=when, **({"arguments": args} if args else {}))

    with DAG(name="tuning") as dag:
        provision, deployed, fetch_model, gpu_check = (task(n) for n in ("provision", "deployed", "fetch-model",
                                                                         "gpu-check"))
        download = task("download", previous_digest=out(deployed, "dataset-digest"))
        new_data = f"'{out(download, 'unchanged')}' == 'false'"  # download honours --force
        train = task("train", when=new_data)
        evaluate = task("evaluate", when=new_data, deployed=out(deployed, "adapter-ref"))
        better = f"'{out(evaluate, 'decision')}' == 'deploy'"
        push = task("push", when=better, dataset_digest=out(download, "digest"))
        deploy = task("deploy", when=better, adapter_ref=out(push, "ref"), dataset_digest=out(download, "digest"),
                      eval_loss=out(evaluate, "new-loss"))
        smoke = task("smoke", when=better, url=out(deploy, "service-url"))

        provision >> [deployed, fetch_model, gpu_check]
        deployed >> download
        [download, fetch_model, gpu_check] >> train >> evaluate >> push >> deploy >> smoke
    return dag


def out(task: Task, name: str) -> str:
    """`{{tasks.T.outputs.parameters.NAME}}`, checked against the task's template by Hera."""
    return str(task.get_parameter(name).value)


def build(plan: Plan, kind: type[Workflow], pod_labels: dict[str, str], **fields: Any) -> dict[str, Any]:
    """The manifest of `kind` (Workflow, WorkflowTemplate or CronWorkflow) running the tuning DAG."""
    cluster = plan.cluster
    repository = cluster.argo.artifactRepositoryRef
    with kind(
        entrypoint="tuning",
        on_exit="cleanup",
        arguments=[Parameter(name=p.name, description=p.description, **({} if p.default is None else {"value": p.default}))
                   for p in GENERIC_PARAMETERS] if plan.generic else None,
        service_account_name=cluster.argo.serviceAccount,
        security_context=pods.POD_SECURITY,
        volumes=pods.volumes(plan),
        volume_claim_templates=[pods.work_volume_claim(plan)],
        # Keep failed pods for their logs; the work volume is kept on failure too (Argo's default), so a
        # retried run resumes training from its checkpoints.
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_success=2 * 86400, seconds_after_failure=7 * 86400),
        # Two runs of one workspace would fight over its node, Deployment and moving tag.
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=f"kairo-tuning-{plan.workspace}")]),
        pod_metadata=m.Metadata(labels=pod_labels),
        artifact_repository_ref=m.ArtifactRepositoryRef(key=repository) if repository else None,
        **fields,
    ) as workflow:
        tuning_dag(plan)
    manifest = workflow.to_dict()
    spec = manifest["spec"].get("workflowSpec", manifest["spec"])
    spec["templates"].sort(key=lambda t: t["name"] != "tuning")  # the DAG first: it is what a reader wants
    return manifest
