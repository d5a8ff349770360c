"""What the step templates need to know, for one workspace or as parameters of the generic template.

One builder makes both shapes. A `Plan` holds every value a template puts in its args, mounts or
scheduling: for a Workflow they are the workspace's own values (literal, so `kairo render` reads as
what will run); for the generic WorkflowTemplate `kairo-tuning` they are `{{workflow.parameters.…}}`
references, declared by `GENERIC_PARAMETERS`, so `argo submit --from workflowtemplate/kairo-tuning
-p …` works without kairo installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kairo.cluster import ClusterConfig
from kairo.oci.access import registry_access
from kairo.oci.reference import ReferenceError, parse_reference
from kairo.presets import Preset
from kairo.sizing import train_pod_size
from kairo.spec import Workspace
from kairo.training.config import DEFAULT_TEMPLATES

# Above either bound the dataset URLs leave the Workflow for a ConfigMap it mounts (etcd keeps objects
# under ~1.5 MiB, and Argo copies the spec into every status update).
URLS_INLINE_MAX = 20
URLS_INLINE_MAX_CHARS = 4096


@dataclass(frozen=True)
class Param:
    """A parameter of the generic WorkflowTemplate."""

    name: str
    description: str
    default: str | None = None  # None: required

    @property
    def ref(self) -> str:
        return "{{workflow.parameters." + self.name + "}}"


# The generic template's sizing parameters: computed by the `workspace` step (kairo.sizing) unless given.
AUTO = "auto"
SOURCES = ("parameters", "resource")

GENERIC_PARAMETERS: tuple[Param, ...] = (
    Param("workspace", "Workspace name: names the node labels, the inference Deployment and its Service"),
    Param("preset", "Base model preset (`kairo presets`), e.g. phi-3-mini-4k-instruct"),
    Param("method", "lora or qlora", "qlora"),
    Param("dataset-urls", "http(s) URLs of the dataset files (parquet, jsonl, json, csv), separated by spaces", ""),
    Param("dataset-image", "An OCI image or artifact holding the dataset under /data (instead of dataset-urls)", ""),
    Param("output-image", "Where the adapter is pushed, e.g. myregistry.azurecr.io/adapters/phi-3:1"),
    Param("instance-type", "GPU machine size to provision, e.g. Standard_NC24ads_A100_v4", ""),
    Param("gpus", "GPUs the train pod requests; auto: all GPUs of the instance type", AUTO),
    Param("cpu", "CPU request of the train pod; auto: the preset's, held under the instance type's", AUTO),
    Param("memory", "Memory request of the train pod; auto: the preset's, held under the instance type's", AUTO),
    Param("count", "GPU nodes; tuning runs on one", "1"),
    Param("labels", "Labels the GPU nodes carry, KEY=VALUE[,KEY=VALUE] (the workspace's labelSelector)"),
    Param("config", "ConfigMap holding training_config.yaml: qlora-params-template, lora-params-template "
                    "(match the method) or your own", "qlora-params-template"),
    Param("push-secret", "dockerconfigjson Secret allowed to push output-image (optional: may not exist)",
          "kairo-push"),
    Param("pull-secret", "dockerconfigjson Secret to pull dataset-image (optional: may not exist)", "kairo-pull"),
    Param("model-access-secret", "Secret with a Hugging Face token, key 'token' (optional: may not exist)",
          "kairo-model-access"),
    Param("model-image", "An ORAS artifact of model files or a Kaito model image (weights under "
                         "/workspace/tfs/weights), instead of the preset's source", ""),
    Param("model-pull-secret", "dockerconfigjson Secret to pull model-image (optional: may not exist)",
          "kairo-model-pull"),
    Param("force", "Train even when the dataset digest equals the deployed adapter's: true or false", "false"),
    Param("ephemeral", "Release the GPU node pool when the run ends: true or false", "false"),
    Param("eval-margin", "How much lower the new eval loss must be to replace the deployed adapter", "0"),
    Param("source", "Where the workspace comes from: parameters (these, as given) or resource (the Workspace object "
                    "named `workspace` is read and validated first, and sizes the train pod; what the Sensor passes)",
          "parameters"),
    Param("runtime", "Kaito's kaito.sh/runtime annotation: vllm deploys vLLM's OpenAI server (and smoke asks the OpenAI "
                     "API only); transformers or empty, kairo's server", ""),
)
GENERIC = {p.name: p for p in GENERIC_PARAMETERS}

# The generic inference template `kairo-inference`: what an inference Workspace says, as parameters.
GENERIC_INFERENCE_PARAMETERS: tuple[Param, ...] = (
    GENERIC["workspace"],
    Param("preset", "Base model preset to serve (`kairo presets`), e.g. phi-3-mini-4k-instruct"),
    Param("adapters", "The adapters, as Kaito's inference.adapters in JSON: "
                      '[{"source": {"name": "a", "image": "myacr.azurecr.io/adapters/a:1"}, "strength": "0.5"}]', "[]"),
    GENERIC["instance-type"], GENERIC["gpus"], GENERIC["cpu"], GENERIC["memory"],
    Param("count", "GPU nodes; an inference workspace is served on one", "1"),
    GENERIC["labels"], GENERIC["model-access-secret"], GENERIC["model-image"], GENERIC["model-pull-secret"],
    Param("adapter-pull-secret", "dockerconfigjson Secret the pull task pulls the adapter images with (optional: may "
                                 "not exist; the inference pod uses each adapter's own imagePullSecrets)",
          "kairo-adapter-pull"),
    GENERIC["ephemeral"], GENERIC["source"], GENERIC["runtime"],
)


@dataclass(frozen=True)
class Secrets:
    """Names of the Kubernetes Secrets the run mounts (never their values)."""

    push: str | None = None  # tuning.output.imagePushSecret
    pull: str | None = None  # first of tuning.input.imagePullSecrets
    model: str | None = None  # tuning.preset.presetOptions.modelAccessSecret
    model_pull: str | None = None  # first of tuning.preset.presetOptions.imagePullSecrets
    api_key: str | None = None  # kairo.sh/api-key-secret
    optional: bool = False  # the generic template mounts conventional names that may not exist


@dataclass(frozen=True)
class PlannedAdapter:
    """One adapter an inference workspace serves: pulled from an image, or copied from its volume."""

    name: str
    image: str = ""
    volume: dict[str, Any] | None = None
    strength: str = ""  # '' when the workspace gives none
    pull_secret: str = ""  # the first of source.imagePullSecrets
    plain_http: bool = False


@dataclass(frozen=True)
class Plan:
    """Every value the templates use, literal (one workspace) or parameter references (generic)."""

    cluster: ClusterConfig
    generic: bool
    workspace: str
    namespace: str
    preset: str
    method: str
    instance_type: str
    count: str
    labels: list[str]  # KEY=VALUE items, one flag each
    match_expressions: list[dict[str, Any]]  # node affinity terms (labelSelector.matchExpressions)
    preferred_nodes: list[str]
    ephemeral: str
    eval_margin: str
    force: bool | str
    config_map: str  # the tuning ConfigMap mounted at /etc/kairo/training
    dataset_urls: list[str] = field(default_factory=list)
    urls_config_map: str | None = None  # set when the URLs live in a ConfigMap
    urls_secret: str | None = None  # tuning.input.urlsSecret: the URLs live in the user's Secret (key urls.txt)
    dataset_image: str | None = None
    input_volume: dict[str, Any] | None = None
    model_image: str | None = None
    output_image: str | None = None
    output_volume: dict[str, Any] | None = None
    moving_tag: str | None = None
    plain_http: bool = False
    secrets: Secrets = field(default_factory=Secrets)
    gpus: str = "1"
    cpu: str = "4"
    memory: str = "32Gi"
    work_volume_size: str = "100Gi"
    serve_replicas: str = "1"
    source: str = ""  # generic: parameters or resource (the `workspace` task reads the Workspace object)
    inference: bool = False  # an inference workspace: adapters pulled and served, nothing tuned
    adapters: tuple[PlannedAdapter, ...] = ()
    max_model_len: str = ""  # inference.config's vllm.max-model-len
    runtime: str = ""  # the kaito.sh/runtime annotation: "vllm" deploys vLLM's OpenAI server
    adapters_json: str = ""  # generic inference: the `adapters` parameter, pulled by one task
    adapter_pull_secret: str = ""  # generic inference: the Secret that task pulls with

    @property
    def several_nodes(self) -> bool:
        """A rendered workspace with resource.count > 1: train spans the nodes (the generic template runs on one)."""
        return not self.generic and self.count.isdigit() and int(self.count) > 1

    @property
    def title(self) -> str:
        if self.inference:
            return f"Serve {self.preset} with {len(self.adapters)} adapter(s) for {self.workspace}"
        return f"Tune {self.preset} ({self.method}) for {self.workspace}"


def workspace_plan(
    ws: Workspace,
    cluster: ClusterConfig,
    *,
    namespace: str | None = None,
    config_name: str | None = None,
    force: bool = False,
) -> Plan:
    """The plan for one validated workspace: its own values, filled in."""
    assert ws.tuning is not None and ws.tuning.input is not None and ws.tuning.output is not None
    tuning, preset = ws.tuning, ws.preset
    source, dest = tuning.input, tuning.output
    options = tuning.preset.presetOptions if tuning.preset else None
    selector = ws.resource.labelSelector
    urls = list(source.urls)
    urls_config_map = None
    if len(urls) > URLS_INLINE_MAX or sum(len(u) + 1 for u in urls) > URLS_INLINE_MAX_CHARS:
        urls_config_map = urls_config_map_name(ws.name)
    size = train_pod_size(preset, ws.instance_type)
    return Plan(
        cluster=cluster,
        generic=False,
        workspace=ws.name,
        namespace=namespace or ws.metadata.namespace or cluster.argo.namespace,
        preset=preset.name,
        method=ws.method,
        instance_type=ws.resource.instanceType or "",
        count=str(ws.node_count),
        labels=[f"{k}={v}" for k, v in (selector.matchLabels.items() if selector else [])],
        match_expressions=[e.model_dump() for e in (selector.matchExpressions if selector else [])],
        preferred_nodes=list(ws.resource.preferredNodes),
        ephemeral="true" if ws.ephemeral_node else "false",
        eval_margin=ws.annotation("kairo.sh/eval-margin"),
        force=force,
        config_map=config_name or tuning.config or DEFAULT_TEMPLATES[ws.method],
        dataset_urls=[] if urls_config_map else urls,
        urls_config_map=urls_config_map,
        urls_secret=source.urlsSecret,
        dataset_image=source.image,
        input_volume=source.volumeSource,
        model_image=options.image if options else None,
        output_image=dest.image,
        output_volume=dest.volumeSource,
        moving_tag=_tag_of(dest.image),
        plain_http=registry_access(dest.image, cluster).plain_http if dest.image else False,
        secrets=Secrets(
            push=dest.imagePushSecret,
            pull=source.imagePullSecrets[0] if source.imagePullSecrets else None,
            model=options.modelAccessSecret if options else None,
            model_pull=options.imagePullSecrets[0] if options and options.imagePullSecrets else None,
            api_key=ws.annotation("kairo.sh/api-key-secret") or None,
        ),
        gpus=str(size.gpus),
        cpu=size.cpu,
        memory=size.memory,
        work_volume_size=ws.annotation("kairo.sh/work-volume-size") or work_volume_size(preset),
        serve_replicas=ws.annotation("kairo.sh/serve-replicas"),
        runtime=ws.metadata.annotations.get("kaito.sh/runtime", ""),
    )


# Inference nodes are sized as for LoRA training: the bf16 weights on the GPUs, with room to spare.
INFERENCE_SIZING_METHOD = "lora"


def inference_plan(ws: Workspace, cluster: ClusterConfig, *, namespace: str | None = None,
                   max_model_len: int | None = None) -> Plan:
    """The plan for one validated inference workspace: preset, adapters, the GPU node they are served on."""
    assert ws.inference is not None
    preset, options = ws.preset, ws.preset_options
    selector = ws.resource.labelSelector
    adapters = tuple(
        PlannedAdapter(
            name=a.source.name or "", image=a.source.image or "", volume=a.source.volumeSource,
            strength=a.strength or "",
            pull_secret=a.source.imagePullSecrets[0] if a.source.imagePullSecrets else "",
            plain_http=registry_access(a.source.image, cluster).plain_http if a.source.image else False)
        for a in ws.inference.adapters if a.source is not None)
    return Plan(
        cluster=cluster,
        generic=False,
        workspace=ws.name,
        namespace=namespace or ws.metadata.namespace or cluster.argo.namespace,
        preset=preset.name,
        method=INFERENCE_SIZING_METHOD,
        instance_type=ws.resource.instanceType or "",
        count="1",
        labels=[f"{k}={v}" for k, v in (selector.matchLabels.items() if selector else [])],
        match_expressions=[e.model_dump() for e in (selector.matchExpressions if selector else [])],
        preferred_nodes=list(ws.resource.preferredNodes),
        ephemeral="true" if ws.ephemeral_node else "false",
        eval_margin="0",
        force=False,
        config_map="",
        model_image=options.image,
        secrets=Secrets(
            model=options.modelAccessSecret,
            model_pull=options.imagePullSecrets[0] if options.imagePullSecrets else None,
            api_key=ws.annotation("kairo.sh/api-key-secret") or None,
        ),
        work_volume_size=ws.annotation("kairo.sh/work-volume-size") or work_volume_size(preset),
        serve_replicas=ws.annotation("kairo.sh/serve-replicas"),
        runtime=ws.metadata.annotations.get("kaito.sh/runtime", ""),
        inference=True,
        adapters=adapters,
        max_model_len=str(max_model_len or ""),
    )


def generic_plan(cluster: ClusterConfig) -> Plan:
    """The plan of the generic template: every workspace value is a workflow parameter."""
    p = {name: param.ref for name, param in GENERIC.items()}
    return Plan(
        cluster=cluster,
        generic=True,
        workspace=p["workspace"],
        namespace="{{workflow.namespace}}",  # the workspace lives where its workflow runs
        preset=p["preset"],
        method=p["method"],
        instance_type=p["instance-type"],
        count=p["count"],
        labels=[p["labels"]],  # one flag; the step splits KEY=VALUE pairs on commas
        match_expressions=[],
        preferred_nodes=[],
        ephemeral=p["ephemeral"],
        eval_margin=p["eval-margin"],
        force=p["force"],
        config_map=p["config"],
        dataset_urls=[p["dataset-urls"]],  # one flag; the step splits URLs on whitespace
        dataset_image=p["dataset-image"],
        model_image=p["model-image"],
        output_image=p["output-image"],
        secrets=Secrets(push=p["push-secret"], pull=p["pull-secret"], model=p["model-access-secret"],
                        model_pull=p["model-pull-secret"], optional=True),
        gpus=p["gpus"],
        cpu=p["cpu"],
        memory=p["memory"],
        # A volume claim's size cannot be a parameter (Argo's CRD checks it is a quantity): size for the largest preset.
        work_volume_size=largest_work_volume_size(),
        source=p["source"],
        runtime=p["runtime"],
    )


def generic_inference_plan(cluster: ClusterConfig) -> Plan:
    """The plan of the generic inference template: every inference workspace value is a workflow parameter."""
    p = {param.name: param.ref for param in GENERIC_INFERENCE_PARAMETERS}
    return Plan(
        cluster=cluster, generic=True, workspace=p["workspace"], namespace="{{workflow.namespace}}",
        preset=p["preset"], method=INFERENCE_SIZING_METHOD, instance_type=p["instance-type"], count=p["count"],
        labels=[p["labels"]], match_expressions=[], preferred_nodes=[], ephemeral=p["ephemeral"], eval_margin="0",
        force=False, config_map="", model_image=p["model-image"],
        secrets=Secrets(model=p["model-access-secret"], model_pull=p["model-pull-secret"], optional=True),
        gpus=p["gpus"], cpu=p["cpu"], memory=p["memory"], work_volume_size=largest_work_volume_size(),
        source=p["source"], inference=True, adapters_json=p["adapters"], adapter_pull_secret=p["adapter-pull-secret"],
        runtime=p["runtime"],
    )


def urls_config_map_name(workspace: str) -> str:
    return f"kairo-{workspace}-dataset-urls"[:253]


def training_config_map_name(workspace: str) -> str:
    return f"kairo-{workspace}-training"[:253]


def work_volume_size(preset: Preset) -> str:
    """The work volume: the weights (bf16, 2 bytes a parameter) with room to spare, plus data and checkpoints."""
    weights_gib = preset.parameters_billion * 2
    return f"{max(30, int(math.ceil((weights_gib * 1.25 + 20) / 10) * 10))}Gi"


def largest_work_volume_size() -> str:
    from kairo.presets import all_presets

    sizes = [work_volume_size(p) for p in all_presets().values() if p.supports_tuning]
    return max(sizes, key=lambda s: int(s[:-2]))


def _tag_of(image: str | None) -> str | None:
    if not image:
        return None
    try:
        return parse_reference(image).tag
    except ReferenceError:  # a placeholder the user was warned about
        return None
