"""The train task of a run on several nodes: an Argo `resource` template creating a JobSet or a Kubeflow TrainJob.

kairo launches nothing across nodes itself. With `resource.count: N` (N > 1) the train task creates, owned by
the workflow (`setOwnerReference`: deleted with it), one of two engines' objects and waits on its status:

- **JobSet** (kubernetes-sigs/jobset, `training.engine: jobset`, the default): one replicated Job of N
  indexed pods (`completionMode: Indexed`, `restartPolicy: Never`, `backoffLimit: 0`), a headless Service
  (`network.enableDNSHostnames`; the subdomain is the JobSet's name), and in each pod
  `torchrun --nnodes=N --node-rank=$(JOB_COMPLETION_INDEX) --rdzv-endpoint=<jobset>-node-0-0.<jobset>:PORT`
  running the same `kairo.steps.train` arguments as the one-node step. The JobSet's name is generated
  (`generateName`: one per run, although the workflow keeps the old one until its TTL), so the pods read it
  from the label JobSet puts on them, and Kubernetes expands `$(VAR)` in the arguments — no shell.
  `failurePolicy.maxRestarts` recreates the whole set when a pod fails; train's `--resume auto` then continues
  from the last checkpoint on the shared work volume. Argo matches `status.terminalState` (`Completed` or
  `Failed`): its conditions cannot match inside the status' `conditions` list.
- **TrainJob** (Kubeflow Trainer, `training.engine: trainjob`, on the ClusterTrainingRuntime
  `training.runtime`): the runtime injects `PET_NNODES`, `PET_NPROC_PER_NODE`, `PET_NODE_RANK`,
  `PET_MASTER_ADDR` and `PET_MASTER_PORT`, which torchrun reads for its flags, so the command is plain
  `torchrun -m kairo.steps.train …`. The TrainJob's status holds only conditions, so the task is a small DAG:
  `create` makes the TrainJob (its generated name is the output), `wait` merge-patches a label onto the JobSet
  the TrainJob made under the same name and waits on that JobSet's `status.terminalState`.

The work volume. Every node mounts the run's work volume (the model, the data, checkpoints, the adapter),
so a run on several nodes makes it `ReadWriteMany` of the class `storage.readWriteManyClassName`
(`kairo validate` refuses count > 1 without one). Only rank 0 writes checkpoints and the adapter (the
Trainer's `save_on_each_node` is off), and every rank reads the checkpoint it resumes from. The other
choice — rank 0 writing to a volume of its own and copying out — was not taken: a restarted set would then
need the copy back before every rank could resume, and the other steps read the same volume anyway.
"""

from __future__ import annotations

from typing import Any

import yaml
from hera.workflows import DAG, Parameter, Resource
from hera.workflows import models as m

from kairo import contract as c
from kairo.images import image_ref
from kairo.pipelines import pods
from kairo.pipelines.plan import Plan

JOBSET_API = "jobset.x-k8s.io/v1alpha2"
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
REPLICATED_JOB = "node"  # pods are <jobset>-node-<job>-<index>; the Trainer runtimes name theirs `node` too
CONTAINER = "node"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
WORK_CLAIM = "{{workflow.name}}-work"  # Argo names a volumeClaimTemplates PVC <workflow>-<claim>
SUCCEEDED = "status.terminalState == Completed"
FAILED = "status.terminalState == Failed"
TRAIN_MODULE = ["-m", "kairo.steps.train"]
VOLUMES = ("cluster-config", "tmp", "training-config")


def train_template(plan: Plan, args: list[str], env: dict[str, str]) -> Resource | DAG:
    """The train task's template for `plan` on several nodes, by the cluster's engine."""
    if plan.cluster.training.engine == "trainjob":
        return _trainjob_dag(plan, args, env)
    return Resource(
        name="train", action="create", set_owner_reference=True, manifest=_yaml(jobset(plan, args, env)),
        success_condition=SUCCEEDED, failure_condition=FAILED,
        active_deadline_seconds=plan.cluster.timeouts.trainSeconds + plan.cluster.timeouts.pendingSeconds,
    )


# -- JobSet ---------------------------------------------------------------------------------------------


def jobset(plan: Plan, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The JobSet: N indexed pods of the train step under torchrun, restarted together from the last checkpoint."""
    nodes, port = int(plan.count), plan.cluster.training.rendezvousPort
    coordinator = f"$(JOBSET_NAME)-{REPLICATED_JOB}-0-0.$(JOBSET_NAME):{port}"
    command = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={plan.gpus}",
               "--node-rank=$(JOB_COMPLETION_INDEX)", "--rdzv-backend=c10d", f"--rdzv-endpoint={coordinator}",
               "--rdzv-id=$(JOBSET_NAME)", "--max-restarts=0", *TRAIN_MODULE]
    downward = [
        {"name": "JOBSET_NAME", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOBSET_NAME_LABEL}']"}}},
        {"name": "JOB_COMPLETION_INDEX",
         "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
    ]
    container = {**_container(plan, env, downward), "command": command, "args": args}
    return {
        "apiVersion": JOBSET_API,
        "kind": "JobSet",
        "metadata": {"generateName": _name_prefix(plan), "labels": _labels(plan)},
        "spec": {
            "network": {"enableDNSHostnames": True},  # the subdomain is the JobSet's name
            "failurePolicy": {"maxRestarts": plan.cluster.training.maxRestarts},
            "successPolicy": {"operator": "All"},
            "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {
                "metadata": {"labels": _labels(plan)},
                "spec": {
                    "parallelism": nodes, "completions": nodes, "completionMode": "Indexed",
                    "backoffLimit": 0,  # a failed pod fails its Job; the JobSet restarts the set
                    "activeDeadlineSeconds": plan.cluster.timeouts.trainSeconds,
                    "template": {"metadata": {"labels": _labels(plan)}, "spec": _pod(plan, container)},
                },
            }}],
        },
    }


# -- Kubeflow Trainer -----------------------------------------------------------------------------------


def trainjob(plan: Plan, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The TrainJob on the cluster's runtime: torchrun takes nodes, rank and master from the PET_* variables."""
    resources = _dump(pods.gpu_resources(plan)) or {}
    container = _container(plan, env, [])
    patch_container = {k: container[k] for k in ("name", "volumeMounts", "securityContext")}
    pod = _pod(plan, patch_container)
    allowed = ("affinity", "tolerations", "volumes", "securityContext", "serviceAccountName", "containers")
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": {"generateName": _name_prefix(plan), "labels": _labels(plan)},
        "spec": {
            "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                           "name": plan.cluster.training.runtime},
            "trainer": {
                "image": container["image"], "command": ["torchrun", *TRAIN_MODULE], "args": args,
                "env": container["env"], "numNodes": int(plan.count), "numProcPerNode": int(plan.gpus),
                **({"resourcesPerNode": resources} if resources else {}),
            },
            "runtimePatches": [{"manager": "kairo.sh/tuning", "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": REPLICATED_JOB, "template": {"spec": {"template": {"spec": {
                    k: v for k, v in pod.items() if k in allowed}}}}}],
            }}}}],
        },
    }


def _trainjob_dag(plan: Plan, args: list[str], env: dict[str, str]) -> DAG:
    """create the TrainJob (its generated name the output), then wait on the JobSet of that name."""
    create = Resource(
        name="train-create", action="create", set_owner_reference=True, manifest=_yaml(trainjob(plan, args, env)),
        outputs=[Parameter(name="name", value_from=m.ValueFrom(json_path="{.metadata.name}"))],
    )
    label = {"apiVersion": JOBSET_API, "kind": "JobSet", "metadata": {
        "name": "{{inputs.parameters.name}}", "labels": {"kairo.sh/waited-by": "{{workflow.name}}"}}}
    wait = Resource(
        name="train-wait", action="patch", merge_strategy="merge", manifest=_yaml(label),
        inputs=[Parameter(name="name")], success_condition=SUCCEEDED, failure_condition=FAILED,
        active_deadline_seconds=plan.cluster.timeouts.trainSeconds + plan.cluster.timeouts.pendingSeconds,
        # the Trainer controller makes the JobSet a moment after the TrainJob: until then the patch finds nothing
        retry_strategy=m.RetryStrategy(limit=5, retry_policy="Always", backoff=m.Backoff(duration="10s", factor=2)),
    )
    with DAG(name="train") as dag:
        made = create(name="create")
        made >> wait(name="wait", arguments={"name": str(made.get_parameter("name").value)})
    return dag


# -- shared parts ---------------------------------------------------------------------------------------


def _container(plan: Plan, env: dict[str, str], downward: list[dict[str, Any]]) -> dict[str, Any]:
    mounts = pods.mounts("work", "training-config")
    resources = _dump(pods.gpu_resources(plan))
    return {
        "name": CONTAINER,
        "image": image_ref("train", plan.cluster),
        "imagePullPolicy": plan.cluster.images.pullPolicy,
        "env": [{"name": k, "value": v} for k, v in {"HOME": c.HOME, **env}.items()] + downward,
        "volumeMounts": [_dump(v) for v in mounts],
        "securityContext": dict(c.CONTAINER_SECURITY),
        **({"resources": resources} if resources else {}),
    }


def _pod(plan: Plan, container: dict[str, Any]) -> dict[str, Any]:
    volumes = [_dump(v) for v in pods.volumes(plan) if v.name in VOLUMES]
    volumes.append({"name": "work", "persistentVolumeClaim": {"claimName": WORK_CLAIM}})
    affinity = _dump(pods.gpu_node_affinity(plan))
    return {
        "restartPolicy": "Never",
        "serviceAccountName": plan.cluster.argo.serviceAccount,
        "securityContext": dict(c.POD_SECURITY),
        **({"affinity": affinity} if affinity else {}),
        "tolerations": [_dump(t) for t in pods.gpu_tolerations(plan)],
        "volumes": volumes,
        "containers": [container],
    }


def _labels(plan: Plan) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": "kairo", "kairo.sh/workspace": plan.workspace,
            "kairo.sh/workflow": "{{workflow.name}}"}


def _name_prefix(plan: Plan) -> str:
    # pods' host names are <name>-node-0-<i> (≤ 63): a 40-character prefix and 5 generated characters leave room
    return f"{plan.workspace[:39].rstrip('-')}-"


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json") if model is not None else None


def _yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=1000)
