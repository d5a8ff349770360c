"""How a step's pod is shaped: mounts, security, GPU scheduling, retries and deadlines.

Paths, users and security contexts come from `kairo.contract` (the steps read the same module); flags
follow docs/steps.md. Everything here is plain Hera models, so a template function in templates.py only
says which of these its step needs.
"""

from __future__ import annotations

import json
from typing import Any

from hera.workflows import models as m

from kairo import contract as c
from kairo import exitcodes
from kairo.pipelines.plan import Plan
from kairo.spec.inference import MAX_ADAPTERS

# -- volumes --------------------------------------------------------------------------------------------


def volumes(plan: Plan) -> list[m.Volume]:
    """The workflow's volumes: config, secrets and the workspace's own input/output volumes."""
    found = [
        # Optional: without the chart's ConfigMap the steps use the cluster config's defaults.
        m.Volume(name="cluster-config", config_map=m.ConfigMapVolumeSource(name=c.CLUSTER_CONFIG_MAP, optional=True)),
        # The root filesystem is read-only: /tmp (outputs, temporary files, HOME) is this emptyDir.
        m.Volume(name="tmp", empty_dir=m.EmptyDirVolumeSource()),
    ]
    if plan.config_map:  # an inference workspace trains nothing
        found.append(m.Volume(name="training-config", config_map=m.ConfigMapVolumeSource(name=plan.config_map)))
    if plan.urls_config_map:
        found.append(m.Volume(name="dataset-urls", config_map=m.ConfigMapVolumeSource(name=plan.urls_config_map)))
    elif plan.urls_secret:  # signed URLs are credentials: read from the user's Secret, never written in the Workflow
        found.append(m.Volume(name="dataset-urls", secret=m.SecretVolumeSource(
            secret_name=plan.urls_secret, default_mode=0o440)))
    s = plan.secrets
    for name, secret in (("push-secret", s.push), ("pull-secret", s.pull), ("model-secret", s.model),
                         ("model-pull-secret", s.model_pull), ("api-key", s.api_key)):
        if secret:
            # 0440 with fsGroup: readable by the step's user and group only.
            found.append(m.Volume(name=name, secret=m.SecretVolumeSource(
                secret_name=secret, optional=s.optional or None, default_mode=0o440)))
    if plan.input_volume:
        found.append(m.Volume.model_validate({"name": "input", **plan.input_volume}))
    if plan.output_volume:
        found.append(m.Volume.model_validate({"name": "output", **plan.output_volume}))
    if plan.adapter_pull_secret:  # the generic template's conventional name: optional
        found.append(m.Volume(name="adapter-pull-secret", secret=m.SecretVolumeSource(
            secret_name=plan.adapter_pull_secret, optional=True, default_mode=0o440)))
    for i, adapter in enumerate(plan.adapters):
        if adapter.volume:
            found.append(m.Volume.model_validate({"name": adapter_volume(i), **adapter.volume}))
        if adapter.pull_secret:
            found.append(m.Volume(name=adapter_pull_secret(i), secret=m.SecretVolumeSource(
                secret_name=adapter.pull_secret, default_mode=0o440)))
    return found


def adapter_volume(index: int) -> str:
    """The volume of an inference workspace's adapter `index` that lives on a volume."""
    return f"adapter-{index}"


def adapter_pull_secret(index: int) -> str:
    """The pull secret of adapter `index`: its pull task mounts it where every step finds one (PULL_SECRET_DIR)."""
    return f"adapter-{index}-pull-secret"


def work_volume_claim(plan: Plan) -> m.PersistentVolumeClaim:
    """The work volume every step shares: one per run, sized from the preset.

    A run on several nodes mounts it on each (pipelines/distributed.py): ReadWriteMany, of the cluster's class for it.
    """
    storage = plan.cluster.storage
    shared = plan.several_nodes
    return m.PersistentVolumeClaim(
        metadata=m.ObjectMeta(name="work"),
        spec=m.PersistentVolumeClaimSpec(
            access_modes=["ReadWriteMany" if shared else "ReadWriteOnce"],
            storage_class_name=(storage.readWriteManyClassName if shared else storage.storageClassName) or None,
            resources=m.VolumeResourceRequirements(requests={"storage": plan.work_volume_size}),
        ),
    )


def mounts(*names: str) -> list[m.VolumeMount]:
    """Mounts by volume name; every step also reads the cluster config and writes to /tmp."""
    table = {
        "adapter-pull-secret": m.VolumeMount(name="adapter-pull-secret", mount_path=c.PULL_SECRET_DIR, read_only=True),
        **{adapter_volume(i): m.VolumeMount(name=adapter_volume(i), mount_path=c.ADAPTER_SOURCE_PATH, read_only=True)
           for i in range(MAX_ADAPTERS)},
        **{adapter_pull_secret(i): m.VolumeMount(name=adapter_pull_secret(i), mount_path=c.PULL_SECRET_DIR,
                                                 read_only=True) for i in range(MAX_ADAPTERS)},
        "work": m.VolumeMount(name="work", mount_path=c.WORKDIR),
        "training-config": m.VolumeMount(name="training-config", mount_path=c.TRAINING_DIR, read_only=True),
        "dataset-urls": m.VolumeMount(name="dataset-urls", mount_path=c.URLS_DIR, read_only=True),
        "push-secret": m.VolumeMount(name="push-secret", mount_path=c.PUSH_SECRET_DIR, read_only=True),
        "pull-secret": m.VolumeMount(name="pull-secret", mount_path=c.PULL_SECRET_DIR, read_only=True),
        "model-secret": m.VolumeMount(name="model-secret", mount_path=c.MODEL_TOKEN_DIR, read_only=True),
        "model-pull-secret": m.VolumeMount(name="model-pull-secret", mount_path=c.MODEL_PULL_SECRET_DIR,
                                           read_only=True),
        "api-key": m.VolumeMount(name="api-key", mount_path=c.API_KEY_DIR, read_only=True),
        "input": m.VolumeMount(name="input", mount_path=c.INPUT_PATH, read_only=True),
        "output": m.VolumeMount(name="output", mount_path=c.OUTPUT_PATH),
    }
    cluster = m.VolumeMount(name="cluster-config", mount_path=c.CLUSTER_CONFIG_PATH, sub_path="cluster.yaml",
                            read_only=True)
    return [cluster, m.VolumeMount(name="tmp", mount_path=c.TMP), *(table[n] for n in names)]


# -- security -------------------------------------------------------------------------------------------

POD_SECURITY = m.PodSecurityContext.model_validate(c.POD_SECURITY)
CONTAINER_SECURITY = m.SecurityContext.model_validate(c.CONTAINER_SECURITY)

# -- resources ------------------------------------------------------------------------------------------


def small(cpu: str, memory: str) -> m.ResourceRequirements:
    """Requests for a step that does not need a GPU; memory is also its limit (no silent swap of the node)."""
    return m.ResourceRequirements(
        requests={"cpu": cpu, "memory": memory},
        limits={"memory": memory},
    )


# The generic template's GPU pods take their size as inputs, from the `workspace` task.
SIZE_INPUTS = ("gpus", "cpu", "memory")


def gpu_resources(plan: Plan) -> m.ResourceRequirements | None:
    """All GPUs of the instance type, CPU and memory from the preset (generic template: set by podSpecPatch)."""
    if plan.generic:
        return None
    return m.ResourceRequirements(
        requests={"nvidia.com/gpu": plan.gpus, "cpu": plan.cpu,
                  "memory": plan.memory},
        limits={"nvidia.com/gpu": plan.gpus},
    )


# -- placement on the GPU nodes ---------------------------------------------------------------------------


def gpu_node_affinity(plan: Plan) -> m.Affinity | None:
    """Required node affinity on the workspace's labelSelector (matchLabels and matchExpressions)."""
    if plan.generic:
        return None  # a map cannot be a parameter: the generic template patches nodeSelector instead
    expressions = [m.NodeSelectorRequirement(key=k, operator="In", values=[v])
                   for k, v in (label.split("=", 1) for label in plan.labels)]
    expressions += [m.NodeSelectorRequirement(key=e["key"], operator=e["operator"], values=e.get("values") or None)
                    for e in plan.match_expressions]
    if not expressions:
        return None
    return m.Affinity(node_affinity=m.NodeAffinity(
        required_during_scheduling_ignored_during_execution=m.NodeSelector(
            node_selector_terms=[m.NodeSelectorTerm(match_expressions=expressions)])))


def gpu_tolerations(plan: Plan) -> list[m.Toleration]:
    taint = plan.cluster.provisioner.gpuTaint
    return [m.Toleration(key=taint.key, operator="Equal", value=taint.value, effect=taint.effect)]


def gpu_pod_spec_patch(plan: Plan, with_gpus: bool) -> str | None:
    """The generic template's way to set what a parameter cannot fill in a typed field.

    Resource quantities and the node selector map are not strings in Argo's schema, so the generic
    template patches the pod instead (`podSpecPatch` is a string, substituted at run time). The GPUs,
    CPU and memory are the template's inputs `gpus`, `cpu`, `memory`: the `workspace` task's outputs. The node
    selector comes from the `labels` parameter (KEY=VALUE,KEY=VALUE) turned into a JSON object by an
    Argo expression (expr-lang's `replace`; Argo ≥ 3.6).
    """
    if not plan.generic:
        return None
    selector = ("{{='{\"' + replace(replace(workflow.parameters.labels, '=', '\":\"'), ',', '\",\"') + '\"}' }}")
    patch: dict[str, Any] = {"nodeSelector": "@SELECTOR@"}
    if with_gpus:  # sized by the `workspace` task, passed in as inputs (SIZE_INPUTS)
        gpus = "{{inputs.parameters.gpus}}"
        patch["containers"] = [{"name": "main", "resources": {
            "requests": {"nvidia.com/gpu": gpus, "cpu": "{{inputs.parameters.cpu}}",
                         "memory": "{{inputs.parameters.memory}}"},
            "limits": {"nvidia.com/gpu": gpus}}}]
    return json.dumps(patch, separators=(",", ":")).replace('"@SELECTOR@"', selector)


# -- retries --------------------------------------------------------------------------------------------


def network_retry(limit: int = 4) -> m.RetryStrategy:
    """Network steps: retry anything but bad input, backing off 15 s, 30 s, 60 s, 120 s.

    No `backoff.cap`: Argo 3.6 does not know the field, and these limits never reach a cap worth having.
    """
    return m.RetryStrategy(
        limit=limit,
        retry_policy="Always",
        expression=exitcodes.RETRY_UNLESS_BAD_INPUT,
        backoff=m.Backoff(duration="15s", factor=2),
    )


# Spot preemption and node loss. Argo reports a deleted pod as Error, but a spot node's shutdown as
# Failed with one of these messages (argo-workflows#9880), so the expression reads the message too.
NODE_LOSS_MESSAGES = "(?i)pod deleted|imminent node shutdown|evicted|preempt|node (lost|shutdown|not ready)"


def node_loss_retry(limit: int = 5) -> m.RetryStrategy:
    """GPU steps: retry pod loss, eviction, preemption and transient errors — never bad input or a crash.

    A retried train resumes from its last checkpoint on the work volume (`--resume auto`).
    """
    expression = (
        f"asInt(lastRetry.exitCode) != {exitcodes.BAD_INPUT} && (lastRetry.status == 'Error'"
        f" || asInt(lastRetry.exitCode) == {exitcodes.TRANSIENT} || lastRetry.message matches '{NODE_LOSS_MESSAGES}')"
    )
    return m.RetryStrategy(
        limit=limit,
        retry_policy="Always",
        expression=expression,
        backoff=m.Backoff(duration="30s", factor=2),  # 30 s … 8 min over five retries
    )


def pending_inclusive_timeout(plan: Plan, active_seconds: int) -> str:
    """A template timeout counting Pending too: the step's own run time plus the pending budget.

    `activeDeadlineSeconds` only counts once the pod runs; Argo's template `timeout` counts from the
    node's start. Argo fails a node still Pending past it (a missing node, image or Secret) only when
    the template has no retries — a retry parent is Running — which is why the GPU bound lives on
    gpu-check (templates.py); elsewhere it caps the step's total time.
    """
    return f"{plan.cluster.timeouts.pendingSeconds + active_seconds}s"
