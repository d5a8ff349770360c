"""One small function per step template: image, command, args, mounts, resources, retries, outputs.

Each step runs `kairo-step NAME ARGS…` (docs/steps.md): parameters are substituted into `args`, never
into a shell. Flags whose value comes from another task are template inputs; an empty value means the
flag was not given (Argo cannot drop an argument at run time).

Where the pods run. Every step that mounts the work volume (a ReadWriteOnce PVC) runs on the GPU node
provision made — node affinity on the workspace's labels plus the GPU taint's toleration — so the
volume is created in that node's zone and never has to move between nodes. provision, smoke and
cleanup mount no work volume and run anywhere: cleanup must be able to run when no GPU node exists.
"""

from __future__ import annotations

import json

from hera.workflows import DAG, Artifact, Container, NoneArchiveStrategy, Parameter, Resource
from hera.workflows import models as m

from kairo import contract as c
from kairo.images import image_ref
from kairo.pipelines import distributed, pods
from kairo.pipelines.plan import Plan


def _step(plan: Plan, name: str, step: str, args: list[str], *, volumes: tuple[str, ...] = (),
          on_gpu_node: bool = False, gpus: bool = False, resources: m.ResourceRequirements | None = None,
          deadline: int | None = None, timeout: str | None = None, retry: m.RetryStrategy | None = None,
          service_account: str | None = None, inputs: tuple[str | Parameter, ...] = (), outputs: list | None = None,
          env: dict[str, str] | None = None) -> Container:
    """A container template running one kairo step, shaped the way every step is."""
    deadline = deadline or plan.cluster.timeouts.stepSeconds
    if gpus and plan.generic:  # sized at run time by the `workspace` task (podSpecPatch reads these)
        inputs = (*inputs, *pods.SIZE_INPUTS)
    return Container(
        name=name,
        image=image_ref(step, plan.cluster),
        image_pull_policy=plan.cluster.images.pullPolicy,
        command=["kairo-step", step],
        args=args,
        env=[m.EnvVar(name=k, value=v) for k, v in {"HOME": c.HOME, **(env or {})}.items()],
        inputs=[i if isinstance(i, Parameter) else Parameter(name=i) for i in inputs] or None,
        outputs=outputs or None,
        volume_mounts=pods.mounts(*volumes),
        resources=pods.gpu_resources(plan) if gpus else resources,
        security_context=pods.CONTAINER_SECURITY,
        affinity=pods.gpu_node_affinity(plan) if on_gpu_node else None,
        tolerations=pods.gpu_tolerations(plan) if on_gpu_node else None,
        pod_spec_patch=pods.gpu_pod_spec_patch(plan, with_gpus=gpus) if on_gpu_node else None,
        service_account_name=service_account,
        active_deadline_seconds=deadline,
        timeout=timeout or pods.pending_inclusive_timeout(plan, deadline),
        retry_strategy=retry,
    )


def _out(name: str, default: str | None = None, global_name: str | None = None) -> Parameter:
    """An output parameter read from the step's outputs folder (a default where the task may be skipped)."""
    return Parameter(name=name, value_from=m.ValueFrom(path=f"{c.OUTPUTS}/{name}", default=default),
                     global_name=global_name)


def _artifact(name: str) -> Artifact:
    """A small file shown in the Argo UI: not archived, so a .png or .json key opens in the browser."""
    return Artifact(name=name.replace(".", "-"), path=f"{c.OUTPUTS}/{name}", archive=NoneArchiveStrategy(),
                    optional=True)


def _flag(name: str, value: str | None) -> list[str]:
    return [name, value] if value else []


def _each(name: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (name, value)]


def _runtime(plan: Plan) -> list[str]:
    """deploy's and smoke's `--runtime`: the annotation's value, or the generic template's `runtime` parameter
    (a Workspace applied with kubectl carries its kaito.sh/runtime there, through the Sensor)."""
    if plan.generic:
        return ["--runtime", plan.runtime]
    return ["--runtime", "vllm"] if plan.runtime == "vllm" else []


def _who(plan: Plan) -> list[str]:
    return ["--workspace", plan.workspace, "--namespace", plan.namespace]


def _files(workdir: bool = True) -> list[str]:
    return (["--workdir", c.WORKDIR] if workdir else []) + ["--outputs", c.OUTPUTS]


def _optional(name: str) -> Parameter:
    """An input a task may leave out: empty then, which the step reads as not given."""
    return Parameter(name=name, default="")


# -- the steps ------------------------------------------------------------------------------------------


def workspace(plan: Plan) -> Container:
    """The generic template's first task: the Workspace object read and validated (source=resource), the pods sized.

    A bad Workspace gets its problems in its own status and the run stops here with exit 2, before any
    GPU node is asked for. Its outputs `gpus`, `cpu`, `memory` size train, evaluate and gpu-check.
    """
    args = [*_who(plan), "--source", plan.source, "--preset", plan.preset, "--method", plan.method,
            "--instance-type", plan.instance_type, "--gpus", plan.gpus, "--cpu", plan.cpu, "--memory", plan.memory,
            *_runtime(plan), "--workflow", "{{workflow.name}}", *_files(workdir=False)]
    return _step(plan, "workspace", "workspace", args, resources=pods.small("100m", "256Mi"), deadline=300,
                 retry=pods.network_retry(limit=3), service_account=c.SA_DEPLOY,
                 outputs=[_out(name) for name in pods.SIZE_INPUTS])


def workspace_status(plan: Plan) -> Container:
    """Writes the run's progress into the Workspace object's status (Kaito's conditions); a no-op without one.

    One template for every event; each task passes its `event` and what that event reports. The step
    never fails the run over a status it could not write (it logs and exits 0), and the tasks carry
    continueOn as well, so not even a pod that cannot start does (tuning.py).
    """
    args = [*_who(plan), "--event", "{{inputs.parameters.event}}", "--workflow", "{{workflow.name}}",
            "--message", "{{inputs.parameters.message}}",
            "--adapter-digest", "{{inputs.parameters.adapter-digest}}", "--endpoint", "{{inputs.parameters.endpoint}}",
            "--workflow-status", "{{inputs.parameters.workflow-status}}", "--failures", "{{inputs.parameters.failures}}"]
    inputs = ("event", *(_optional(n) for n in ("message", "adapter-digest", "endpoint", "workflow-status",
                                                "failures")))
    return _step(plan, "workspace-status", "workspace-status", args, resources=pods.small("100m", "256Mi"),
                 deadline=300, service_account=c.SA_DEPLOY, inputs=inputs)



def provision(plan: Plan) -> Container:
    cluster = plan.cluster
    args = [*_who(plan), "--preset", plan.preset, "--method", plan.method,
            *_flag("--instance-type", plan.instance_type),
            "--count", plan.count, *_each("--label", plan.labels), *_each("--preferred-node", plan.preferred_nodes),
            "--ephemeral", plan.ephemeral, *_files(workdir=False)]
    return _step(plan, "provision", "provision", args, resources=pods.small("100m", "256Mi"),
                 deadline=cluster.provisioner.nodeReadyTimeoutSeconds + cluster.timeouts.stepSeconds,
                 retry=pods.network_retry(), service_account=c.SA_PROVISION,
                 outputs=[_out("nodes"), _out("node-pool"), _out("provisioner")])


def gpu_check(plan: Plan) -> Container:
    """A pod shaped exactly like train's that only reports the GPUs it got: the bound on Pending.

    Argo's template `timeout` counts Pending time but also run time, so on train itself it cannot say
    "no GPU within pendingSeconds" without also cutting a 40-hour training short. This pod asks for the
    same GPUs, CPU and memory on the same nodes and exits in seconds; its `timeout` is exactly
    `cluster.timeouts.pendingSeconds`. When no node can take it, it fails after that long with Argo's
    "exceeded its deadline", the DAG stops before train, and onExit `cleanup` still releases the node pool.
    Image pulls count as Pending too, so the budget must cover pulling the step image. It has no
    retryStrategy on purpose: Argo checks a template's timeout against a Pending node, and with retries
    that node is the retry parent, which is Running while its pod waits.
    """
    args = ["--local", *_who(plan), "--preset", plan.preset, "--method", plan.method, *_files(workdir=False)]
    return _step(plan, "gpu-check", "provision", args, on_gpu_node=True, gpus=True, deadline=300,
                 timeout=f"{plan.cluster.timeouts.pendingSeconds}s")


def deployed(plan: Plan) -> Container:
    return _step(plan, "deployed", "deployed", [*_who(plan), *_files()], volumes=("work",), on_gpu_node=True,
                 resources=pods.small("100m", "256Mi"), retry=pods.network_retry(), service_account=c.SA_DEPLOY,
                 outputs=[_out("adapter-ref"), _out("dataset-digest"), _out("eval-loss")])


def download(plan: Plan) -> Container:
    volumes = ["work", "training-config"]
    if plan.urls_config_map or plan.urls_secret:
        source = ["--urls-file", c.URLS_FILE]
        volumes.append("dataset-urls")
    elif plan.input_volume:
        source = ["--volume-path", c.INPUT_PATH]
        volumes.append("input")
    else:  # the generic template passes both; the empty one counts as not given
        source = [*_each("--url", plan.dataset_urls), *_flag("--image", plan.dataset_image)]
    if (plan.dataset_image or plan.generic) and plan.secrets.pull:
        source += ["--pull-secret-file", c.PULL_SECRET_FILE]
        volumes.append("pull-secret")
    force = [f"--force={plan.force}"] if plan.generic else (["--force"] if plan.force else [])
    args = [*source, "--config", c.TRAINING_CONFIG, "--previous-digest", "{{inputs.parameters.previous-digest}}",
            *force, *_files()]
    return _step(plan, "download", "download", args, volumes=tuple(volumes), on_gpu_node=True,
                 resources=pods.small("2", "8Gi"), retry=pods.network_retry(), inputs=("previous-digest",),
                 outputs=[_out("rows", global_name="dataset-rows"), _out("eval-rows"), _out("dropped"),
                          _out("digest", global_name="dataset-digest"), _out("tokens"), _out("unchanged")])


def fetch_model(plan: Plan) -> Container:
    volumes = ["work"]
    args = ["--preset", plan.preset, *_flag("--image", plan.model_image)]
    if plan.secrets.model_pull:
        args += ["--pull-secret-file", c.MODEL_PULL_SECRET_FILE]
        volumes.append("model-pull-secret")
    if plan.secrets.model:
        args += ["--token-file", c.MODEL_TOKEN_DIR]
        volumes.append("model-secret")
    return _step(plan, "fetch-model", "fetch-model", [*args, *_files()], volumes=tuple(volumes), on_gpu_node=True,
                 resources=pods.small("1", "4Gi"), retry=pods.network_retry(), env=_hf_cache(),
                 outputs=[_out("model-dir"), _out("revision")])


def train(plan: Plan) -> Container | Resource | DAG:
    """QLoRA/LoRA on all the node's GPUs; retried only when the node goes away, resuming from a checkpoint.

    On several nodes (`resource.count` > 1) a resource template creating a JobSet or a TrainJob instead
    (distributed.py): the same arguments, under torchrun on every node.
    """
    args = ["--preset", plan.preset, "--method", plan.method, "--config", c.TRAINING_CONFIG, "--resume", "auto",
            *_files()]
    if plan.several_nodes:
        return distributed.train_template(plan, args, _hf_cache())
    return _step(plan, "train", "train", args, volumes=("work", "training-config"), on_gpu_node=True, gpus=True,
                 deadline=plan.cluster.timeouts.trainSeconds, retry=pods.node_loss_retry(), env=_hf_cache(),
                 outputs=[_out("train-loss", ""), _out("eval-loss", ""), _out("steps", ""),
                          _artifact("metrics.json"), _artifact("loss.png")])


def evaluate(plan: Plan) -> Container:
    """The new adapter against the deployed one on the held-out split; `decision` gates push and deploy."""
    # The training config too, so the loss is measured with training's quantization and max_length.
    volumes = ["work", "training-config"]
    args = ["--preset", plan.preset, "--method", plan.method, "--config", c.TRAINING_CONFIG,
            "--deployed", "{{inputs.parameters.deployed}}", "--margin", plan.eval_margin]
    if plan.secrets.push:  # the deployed adapter lives where new ones are pushed
        args += ["--pull-secret-file", c.PUSH_SECRET_FILE]
        volumes.append("push-secret")
    return _step(plan, "evaluate", "evaluate", [*args, *_files()], volumes=tuple(volumes), on_gpu_node=True,
                 gpus=True, retry=pods.node_loss_retry(limit=3), env=_hf_cache(), inputs=("deployed",),
                 outputs=[_out("decision", "keep"), _out("new-loss", ""), _out("old-loss", ""),
                          _out("message", "", global_name="evaluation"), _artifact("eval.json")])


def push(plan: Plan) -> Container:
    volumes = ["work"]
    if plan.output_volume:
        args = ["--volume-path", c.OUTPUT_PATH]
        volumes.append("output")
    else:
        args = ["--image", plan.output_image or ""]
        if plan.secrets.push:
            args += ["--push-secret-file", c.PUSH_SECRET_FILE]
            volumes.append("push-secret")
        args += ["--plain-http"] if plan.plain_http else []
        args += _each("--annotation", [f"kairo.sh/workspace={plan.workspace}", f"kairo.sh/preset={plan.preset}",
                                       f"kairo.sh/method={plan.method}",
                                       "kairo.sh/dataset-digest={{inputs.parameters.dataset-digest}}"])
    return _step(plan, "push", "push", [*args, *_files()], volumes=tuple(volumes), on_gpu_node=True,
                 resources=pods.small("500m", "1Gi"), retry=pods.network_retry(), inputs=("dataset-digest",),
                 outputs=[_out("digest", "", global_name="adapter-digest"),
                          _out("ref", "", global_name="adapter-ref"), _out("tag", "")])


def deploy(plan: Plan) -> Container:
    """The inference Deployment and Service; its pods land on the GPU nodes too (deploy passes the labels)."""
    rollout = plan.cluster.timeouts.rolloutSeconds
    args = [*_who(plan), "--preset", plan.preset, "--adapter-ref", "{{inputs.parameters.adapter-ref}}",
            "--adapter-tag", "{{inputs.parameters.adapter-tag}}",
            *_flag("--instance-type", plan.instance_type),
            *_each("--label", plan.labels), "--dataset-digest", "{{inputs.parameters.dataset-digest}}",
            "--eval-loss", "{{inputs.parameters.eval-loss}}", "--replicas", plan.serve_replicas,
            "--workflow", "{{workflow.name}}", *_flag("--moving-tag", plan.moving_tag),
            *_flag("--api-key-secret", plan.secrets.api_key),
            *_runtime(plan),
            # the inference pod mounts this Secret: only one the workspace names, not the generic template's guess
            *_flag("--pull-secret", None if plan.secrets.optional else plan.secrets.push),
            "--timeout", str(rollout)]
    volumes = ["work"]
    if plan.secrets.push:  # moving the tag is a push to output.image's repository
        args += ["--push-secret-file", c.PUSH_SECRET_FILE]
        volumes.append("push-secret")
    if plan.secrets.api_key:  # a local run's server requires the key too (the Deployment mounts the Secret)
        args += ["--api-key-file", c.API_KEY_FILE]
        volumes.append("api-key")
    args += _files()
    return _step(plan, "deploy", "deploy", args, volumes=tuple(volumes), on_gpu_node=True,
                 resources=pods.small("100m", "256Mi"), deadline=rollout + 600, retry=pods.network_retry(limit=2),
                 service_account=c.SA_DEPLOY, inputs=("adapter-ref", "adapter-tag", "dataset-digest", "eval-loss"),
                 outputs=[_out("service-url", "", global_name="service-url")])


def pull_adapter(plan: Plan, index: int) -> Container:
    """One adapter of an inference workspace onto the work volume: pulled from its image (the digest it resolved
    to is its output, so the Deployment pins it), or copied from its volume and checked to be a PEFT adapter."""
    adapter = plan.adapters[index]
    volumes = ["work"]
    if adapter.volume:
        source = c.ADAPTER_SOURCE_PATH
        volumes.append(pods.adapter_volume(index))
    else:
        source = adapter.image
    args = [source, f"{c.ADAPTERS_DIR}/{adapter.name}"]
    if adapter.pull_secret:
        args += ["--pull-secret-file", c.PULL_SECRET_FILE]
        volumes.append(pods.adapter_pull_secret(index))
    args += ["--plain-http"] if adapter.plain_http else []
    return _step(plan, f"pull-adapter-{index}", "pull-adapter", [*args, "--outputs", c.OUTPUTS],
                 volumes=tuple(volumes), on_gpu_node=True, resources=pods.small("500m", "1Gi"),
                 retry=pods.network_retry(), outputs=[_out("digest", ""), _out("ref", ""), _out("refs", "{}")])


def pull_adapters(plan: Plan) -> Container:
    """The generic inference template's one pull task: every image adapter of the `adapters` parameter onto the
    work volume, each pinned by the digest its tag named (output `refs`); volume adapters are mounted into the
    inference pod as they are (a template cannot mount volumes a parameter names)."""
    args = ["--adapters-json", plan.adapters_json, "--into", c.ADAPTERS_DIR, "--pull-secret-file", c.PULL_SECRET_FILE,
            "--outputs", c.OUTPUTS]
    return _step(plan, "pull-adapters", "pull-adapter", args, volumes=("work", "adapter-pull-secret"),
                 on_gpu_node=True, resources=pods.small("500m", "1Gi"), retry=pods.network_retry(),
                 outputs=[_out("digest", ""), _out("ref", ""), _out("refs", "{}")])


def serve_adapters(plan: Plan) -> Container:
    """deploy for an inference workspace: the preset with each pulled adapter (and their weighted combination)."""
    rollout = plan.cluster.timeouts.rolloutSeconds
    served = []
    for i, adapter in enumerate(plan.adapters):
        if adapter.volume:  # the inference pod mounts the same volume, as Kaito's does
            served += ["--adapter-volume", f"{adapter.name}={json.dumps(adapter.volume, sort_keys=True)}"]
        else:
            served += ["--adapter", f"{adapter.name}={{{{inputs.parameters.adapter-{i}}}}}"]
            served += _flag("--adapter-pull-secret", adapter.pull_secret and f"{adapter.name}={adapter.pull_secret}")
        served += _flag("--strength", adapter.strength and f"{adapter.name}={adapter.strength}")
    if plan.generic:  # the adapters as the parameter gives them, pinned by what pull-adapters resolved
        served = ["--adapters-json", plan.adapters_json, "--pinned", "{{inputs.parameters.pinned}}"]
    args = [*_who(plan), "--preset", plan.preset, *served, *_flag("--instance-type", plan.instance_type),
            *_each("--label", plan.labels), "--replicas", plan.serve_replicas, "--workflow", "{{workflow.name}}",
            *_flag("--max-model-len", plan.max_model_len), *_flag("--api-key-secret", plan.secrets.api_key),
            *_runtime(plan), "--timeout", str(rollout), *_files()]
    inputs = ("pinned",) if plan.generic else tuple(f"adapter-{i}" for i, a in enumerate(plan.adapters) if not a.volume)
    return _step(plan, "deploy", "deploy", args, volumes=("work",), on_gpu_node=True,
                 resources=pods.small("100m", "256Mi"), deadline=rollout + 600, retry=pods.network_retry(limit=2),
                 service_account=c.SA_DEPLOY, inputs=inputs, outputs=[_out("service-url", "", global_name="service-url")])


def smoke(plan: Plan) -> Container:
    volumes = ("api-key",) if plan.secrets.api_key else ()
    args = ["--url", "{{inputs.parameters.url}}", *_flag("--api-key-file", plan.secrets.api_key and c.API_KEY_FILE)]
    if plan.generic:  # smoke reads the parameter: vllm means --openai-only
        args += _runtime(plan)
    elif plan.runtime == "vllm":  # vLLM serves no Kaito /chat
        args.append("--openai-only")
    return _step(plan, "smoke", "smoke", args, volumes=volumes, resources=pods.small("100m", "256Mi"),
                 retry=pods.network_retry(limit=3), inputs=("url",))


def cleanup(plan: Plan) -> Container:
    """In the exit handler: release an ephemeral node pool and record the outcome, whatever happened.

    `{{workflow.status}}` and `{{workflow.failures}}` exist only in the exit handler: its DAG passes them in.
    """
    args = [*_who(plan), "--workflow-status", "{{inputs.parameters.workflow-status}}", "--ephemeral", plan.ephemeral,
            "--failures", "{{inputs.parameters.failures}}", *_files(workdir=False)]
    return _step(plan, "cleanup", "cleanup", args, resources=pods.small("100m", "256Mi"),
                 retry=pods.network_retry(), service_account=c.SA_PROVISION, inputs=("workflow-status", "failures"),
                 outputs=[_out("outcome", "")])


def _hf_cache() -> dict[str, str]:
    # Non-root users have no writable home in the images: keep Hugging Face caches on the work volume.
    return {"HF_HOME": f"{c.WORKDIR}/.cache/huggingface"}
