"""The public builders: a Workflow for one workspace, the generic WorkflowTemplate, and what `kairo render` prints."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hera.workflows import Workflow, WorkflowTemplate
from hera.workflows import models as m

from kairo.argo import refuse
from kairo.cluster import ClusterConfig
from kairo.pipelines.inference import build_inference
from kairo.pipelines.plan import (
    Plan,
    generic_inference_plan,
    generic_plan,
    inference_plan,
    training_config_map_name,
    workspace_plan,
)
from kairo.pipelines.tuning import build
from kairo.problems import InvalidInput, Problem
from kairo.spec import Workspace, WorkspaceFile
from kairo.spec.inference import check_inference_config
from kairo.spec.rules import urls_size_problem
from kairo.training.config import training_config_text

TEMPLATE_NAME = "kairo-tuning"
INFERENCE_TEMPLATE_NAME = "kairo-inference"
KINDS = ("workflow", "workflowtemplate", "cronworkflow")


def build_workflow(
    workspace: Workspace,
    cluster: ClusterConfig,
    *,
    config_name: str | None = None,
    force: bool = False,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Workflow that tunes, pushes and serves one validated workspace, as a manifest dict.

    `config_name` names the ConfigMap holding training_config.yaml (default: tuning.config, else the
    method's Kaito template); `force` trains even when the dataset is unchanged; `namespace` overrides
    where it runs (default: the workspace's namespace, else the cluster config's Argo namespace).
    """
    if workspace.is_inference:
        return build_inference_workflow(workspace, cluster, namespace=namespace)
    plan = workspace_plan(workspace, cluster, namespace=namespace, config_name=config_name, force=force)
    labels = workspace_labels(plan)
    return build(
        plan, Workflow, labels,
        generate_name=f"{workspace.name[:56]}-",
        namespace=plan.namespace,
        labels=labels,
        annotations={"workflows.argoproj.io/title": plan.title,
                     "workflows.argoproj.io/description": _description(plan)},
    )


def build_inference_workflow(workspace: Workspace, cluster: ClusterConfig, *, namespace: str | None = None,
                             max_model_len: int | None = None) -> dict[str, Any]:
    """The Workflow that serves one validated inference workspace: its preset with its adapters."""
    plan = inference_plan(workspace, cluster, namespace=namespace, max_model_len=max_model_len)
    labels = workspace_labels(plan)
    return build_inference(
        plan, Workflow, labels,
        generate_name=f"{workspace.name[:56]}-",
        namespace=plan.namespace,
        labels=labels,
        annotations={"workflows.argoproj.io/title": plan.title,
                     "workflows.argoproj.io/description": _description(plan)},
    )


def build_workflow_template(cluster: ClusterConfig) -> dict[str, Any]:
    """The generic WorkflowTemplate `kairo-tuning`: every workspace value is a parameter.

    `argo submit --from workflowtemplate/kairo-tuning -p workspace=… -p preset=… -p labels=app=x
    -p dataset-urls=… -p output-image=…` runs it without kairo installed.
    """
    plan = generic_plan(cluster)
    template = build(
        plan, WorkflowTemplate, {"app.kubernetes.io/managed-by": "kairo"},
        name=TEMPLATE_NAME,
        labels={"app.kubernetes.io/managed-by": "kairo", "app.kubernetes.io/part-of": "kairo"},
        annotations={"workflows.argoproj.io/title": "Tune an LLM preset with LoRA/QLoRA, push and serve the adapter",
                     "workflows.argoproj.io/description": "kairo's tuning DAG; parameters mirror a Kaito Workspace"},
        # Workflows made from the template carry the workspace's labels, computed from its parameters.
        workflow_metadata=m.WorkflowMetadata(
            labels={"app.kubernetes.io/managed-by": "kairo"},
            labels_from={key: m.LabelValueFrom(expression=expression) for key, expression in (
                ("kairo.sh/workspace", "workflow.parameters.workspace"),
                ("kairo.sh/namespace", "workflow.namespace"),  # the workspace lives where its workflow runs
                ("kairo.sh/preset", "workflow.parameters.preset"),
                ("kairo.sh/method", "workflow.parameters.method"))}),
    )
    refuse([template])  # what Argo would refuse never leaves kairo (kairo.argo.check)
    return template


def build_inference_workflow_template(cluster: ClusterConfig) -> dict[str, Any]:
    """The generic WorkflowTemplate `kairo-inference`: an inference workspace's values as parameters.

    `argo submit --from workflowtemplate/kairo-inference -p workspace=… -p preset=… -p labels=app=x
    -p adapters='[{"source": {"name": "a", "image": "…"}}]'` runs it; the Sensor submits it for an applied
    inference Workspace with `-p source=resource`.
    """
    plan = generic_inference_plan(cluster)
    template = build_inference(
        plan, WorkflowTemplate, {"app.kubernetes.io/managed-by": "kairo"},
        name=INFERENCE_TEMPLATE_NAME,
        labels={"app.kubernetes.io/managed-by": "kairo", "app.kubernetes.io/part-of": "kairo"},
        annotations={"workflows.argoproj.io/title": "Serve an LLM preset with LoRA adapters, as a Kaito inference "
                                                    "Workspace says",
                     "workflows.argoproj.io/description": "kairo's inference DAG; parameters mirror a Kaito "
                                                          "inference Workspace"},
        workflow_metadata=m.WorkflowMetadata(
            labels={"app.kubernetes.io/managed-by": "kairo"},
            labels_from={key: m.LabelValueFrom(expression=expression) for key, expression in (
                ("kairo.sh/workspace", "workflow.parameters.workspace"),
                ("kairo.sh/namespace", "workflow.namespace"),
                ("kairo.sh/preset", "workflow.parameters.preset"))}),
    )
    refuse([template])
    return template


def workspace_labels(plan: Plan) -> dict[str, str]:
    """Labels of the workflow and its pods; `kairo status` finds a workspace's runs by workspace and namespace
    (a workflow may run in Argo's namespace, away from its workspace)."""
    method = {} if plan.inference else {"kairo.sh/method": plan.method}  # an inference run tunes nothing
    return {"kairo.sh/workspace": plan.workspace, "kairo.sh/namespace": plan.namespace, "kairo.sh/preset": plan.preset,
            **method, "app.kubernetes.io/managed-by": "kairo"}


def render_objects(
    wfile: WorkspaceFile,
    workspace: Workspace,
    cluster: ClusterConfig,
    kind: str = "workflow",
    schedule: str | None = None,
    *,
    timezone: str | None = None,
    config_file: str | Path | None = None,
    force: bool = False,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """What `kairo render` prints, in the order `kubectl create -f -` needs them.

    First the file's other documents (PVCs…), then the ConfigMaps the workflow mounts (a long URL list,
    a training config given with --config), then the Workflow, CronWorkflow or WorkflowTemplate.
    """
    if kind not in KINDS:
        raise InvalidInput([Problem("--kind", f"'{kind}' — allowed: {', '.join(KINDS)}")])
    if kind == "workflowtemplate":
        return [build_workflow_template(cluster)]
    target = namespace or workspace.metadata.namespace or cluster.argo.namespace
    objects = [_in_namespace(doc, target) for doc in wfile.others]
    if workspace.is_inference:
        return _inference_objects(wfile, workspace, cluster, objects, kind, config_file, target)
    config_name = None
    if config_file is not None:
        config_name = training_config_map_name(workspace.name)
        text = training_config_text(config_file, workspace.tuning.config if workspace.tuning else None)
        objects.append(_config_map(config_name, target, {"training_config.yaml": text}))
    plan = workspace_plan(workspace, cluster, namespace=target, config_name=config_name, force=force)
    if plan.urls_config_map:
        urls = workspace.tuning.input.urls  # type: ignore[union-attr]
        too_long = urls_size_problem(urls)  # the rule validate applies too
        if too_long:
            raise InvalidInput([too_long])
        text = "\n".join(urls) + "\n"
        objects.append(_config_map(plan.urls_config_map, target, {"urls.txt": text}))
    if kind == "cronworkflow":
        from kairo.pipelines.cron import build_cron_workflow

        if not schedule:
            raise InvalidInput([Problem("--schedule", "a CronWorkflow needs a schedule, e.g. --schedule '0 3 * * 1'")])
        objects.append(build_cron_workflow(workspace, cluster, schedule, timezone, config_name=config_name,
                                           force=force, namespace=target))
    else:
        objects.append(build_workflow(workspace, cluster, config_name=config_name, force=force, namespace=target))
    # render, submit and schedule all come here: what a cluster would refuse is refused before it is printed or sent.
    refuse(objects)
    return objects


def _inference_objects(wfile: WorkspaceFile, workspace: Workspace, cluster: ClusterConfig,
                       objects: list[dict[str, Any]], kind: str, config_file: str | Path | None,
                       namespace: str) -> list[dict[str, Any]]:
    """An inference workspace's objects: the file's other documents, then its Workflow."""
    if config_file is not None:
        raise InvalidInput([Problem("--config", "is a training config; an inference workspace names its "
                                                "inference_config.yaml ConfigMap in inference.config")])
    if kind == "cronworkflow":
        raise InvalidInput([Problem("--kind", "cronworkflow retrains on a schedule; an inference workspace "
                                              "trains nothing — render it as a workflow")])
    max_model_len, problems = check_inference_config(workspace, workspace.preset, wfile.others)
    if any(p.severity == "error" for p in problems):
        raise InvalidInput(problems, wfile.source)
    objects.append(build_inference_workflow(workspace, cluster, namespace=namespace, max_model_len=max_model_len))
    refuse(objects)
    return objects


def _in_namespace(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The user's document, placed in the workflow's namespace when it names none (so the workflow finds it)."""
    doc = copy.deepcopy(doc)
    doc.setdefault("metadata", {}).setdefault("namespace", namespace)
    return doc


def _config_map(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "kairo"}},
            "data": data}




def _description(plan: Plan) -> str:
    if plan.inference:
        names = ", ".join(a.name for a in plan.adapters) or "no adapters"
        return f"{plan.preset} with {names}, on {plan.instance_type or 'existing GPU nodes'}"
    target = plan.output_image or "a volume"
    return f"{plan.method} on {plan.instance_type or 'existing GPU nodes'}, adapter to {target}"
