"""The inference deployment as plain data: the Deployment and Service of a workspace, the record of
what is deployed (kept on the Service's annotations), and the Workspace status conditions.

Everything here is pure — dicts in, dicts out — so it is tested by value; `kairo.clients` sends it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kairo import contract
from kairo.cluster import ClusterConfig
from kairo.images import image_ref
from kairo.manifests.adapters import (
    ADAPTERS_KEY,
    ADAPTERS_MOUNT,
    DeclaredAdapter,
    build_adapters_configmap,
    configmap_name,
)
from kairo.presets import get_preset

SERVE_PORT = 5000  # the serve container's port; the Service maps port 80 onto it (Kaito's endpoint)
SERVICE_PORT = 80
ADAPTERS_DIR = "/adapters"
CACHE_DIR = "/kairo/cache"
API_KEY_ENV = "KAIRO_API_KEY"
HISTORY_LIMIT = 20  # entries kept in the history annotation (annotations share a 256 KiB budget)

# Annotations on the Service: what is deployed now, and what was before.
ADAPTER_REF = "kairo.sh/adapter-ref"
ADAPTER_DIGEST = "kairo.sh/adapter-digest"
DATASET_DIGEST = "kairo.sh/dataset-digest"
EVAL_LOSS = "kairo.sh/eval-loss"
DEPLOYED_AT = "kairo.sh/deployed-at"
HISTORY = "kairo.sh/history"
RECORD_KEYS = (ADAPTER_REF, ADAPTER_DIGEST, DATASET_DIGEST, EVAL_LOSS, DEPLOYED_AT, HISTORY)
# Annotation on the Deployment: the inputs it was built from, so `kairo rollback` can rebuild it.
DEPLOY_SPEC = "kairo.sh/deploy-spec"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the deployment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferenceSpec:
    """Everything the inference Deployment of one workspace is built from."""

    workspace: str
    namespace: str
    preset: str
    adapter_ref: str  # registry/repo@sha256:… — the init container pulls exactly this
    gpus: int = 1  # nvidia.com/gpu per replica; 0 runs on CPU
    node_labels: dict[str, str] = field(default_factory=dict)  # the workspace's resource.labelSelector
    instance_type: str = ""
    replicas: int = 1
    api_key_secret: str = ""  # Secret whose key 'api-key' the server requires as a bearer token
    pull_secret: str = ""  # dockerconfigjson Secret the init container pulls the adapter with
    plain_http: bool = False  # the adapter's registry is reached over plain HTTP
    # Resolved from the cluster config when deployed and kept, so a rollback from a laptop rebuilds the
    # same pods whatever config the laptop has. Empty means the default cluster config's value.
    serve_image: str = ""
    pull_image: str = ""
    pull_policy: str = ""
    gpu_taint: dict[str, str] = field(default_factory=dict)
    progress_deadline_seconds: int = 0
    # An inference workspace's adapters, served by name instead of the one tuned adapter: each {"name", "ref"}
    # (an image, pulled by digest by its own init container, as Kaito gives each its puller) or {"name",
    # "volume"} (a VolumeSource mounted at /adapters/NAME, as Kaito mounts it), with an optional "pull_secret".
    adapters: list[dict[str, Any]] = field(default_factory=list)
    strengths: dict[str, str] = field(default_factory=dict)  # NAME → weight in the combined adapter
    max_model_len: int = 0  # 0: the preset's context length
    runtime: str = ""  # "" kairo's server; "vllm" vLLM's OpenAI server (kaito.sh/runtime: vllm)
    lora_ranks: dict[str, int] = field(default_factory=dict)  # with vllm: each served adapter's LoRA rank
    vllm_image: str = ""

    def __post_init__(self) -> None:
        defaults = _cluster_values(ClusterConfig())
        for name, value in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)

    @classmethod
    def for_cluster(cls, cluster: ClusterConfig, **fields: Any) -> InferenceSpec:
        """A spec whose images, pull policy, GPU taint and rollout deadline come from `cluster`."""
        return cls(**{**_cluster_values(cluster), **fields})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> InferenceSpec:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_adapter(self, adapter_ref: str) -> InferenceSpec:
        return dataclasses.replace(self, adapter_ref=adapter_ref)

    def adapter_set(self) -> str:
        """An inference workspace's adapters and strengths as the history keeps them (JSON; '' for the tuned one)."""
        if not self.adapters:
            return ""
        return json.dumps({"adapters": self.adapters, "strengths": self.strengths}, sort_keys=True,
                          separators=(",", ":"))

    def with_adapter_set(self, text: str) -> InferenceSpec:
        """This spec serving the adapters and strengths `adapter_set` wrote (what a rollback goes back to)."""
        data = json.loads(text)
        return dataclasses.replace(self, adapters=list(data["adapters"]), strengths=dict(data.get("strengths") or {}))


def adapter_set_digest(text: str) -> str:
    """What names an inference workspace's adapter set in the history (`kairo history`, `rollback --to`)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _cluster_values(cluster: ClusterConfig) -> dict[str, Any]:
    taint = cluster.provisioner.gpuTaint
    return {
        "serve_image": image_ref("serve", cluster),
        "pull_image": image_ref("pull-adapter", cluster),
        "vllm_image": cluster.images.vllm,
        "pull_policy": cluster.images.pullPolicy,
        "gpu_taint": {"key": taint.key, "value": taint.value, "effect": taint.effect},
        # Kubernetes' own default is 600 s; a large model may take longer to download and load.
        "progress_deadline_seconds": max(600, cluster.timeouts.rolloutSeconds),
    }


def adapter_digest(ref: str) -> str:
    """The `sha256:…` part of a reference, or '' when it names no digest."""
    return ref.rsplit("@", 1)[1] if "@" in ref else ""


def selector_labels(workspace: str) -> dict[str, str]:
    """Labels the Service selects pods by; a Deployment's selector is immutable, so these never change."""
    return {"kairo.sh/workspace": workspace, "app.kubernetes.io/component": "inference"}


def labels(spec: InferenceSpec) -> dict[str, str]:
    return {
        **selector_labels(spec.workspace),
        "kairo.sh/preset": spec.preset,
        "app.kubernetes.io/name": "kairo-inference",
        "app.kubernetes.io/instance": spec.workspace,
        "app.kubernetes.io/part-of": "kairo",
        "app.kubernetes.io/managed-by": "kairo",
    }


def owner_reference(workspace: dict[str, Any] | None) -> dict[str, Any] | None:
    """An ownerReference to a Workspace object, so Kubernetes deletes the inference with it."""
    meta = (workspace or {}).get("metadata") or {}
    if not meta.get("uid") or not meta.get("name"):
        return None
    return {
        "apiVersion": workspace["apiVersion"], "kind": "Workspace", "name": meta["name"], "uid": meta["uid"],
        # Not blocking: that would need update rights on workspaces/finalizers, which deploy has no use for.
        "controller": True, "blockOwnerDeletion": False,
    }


def _metadata(spec: InferenceSpec, owner: dict[str, Any] | None, annotations: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": spec.workspace, "namespace": spec.namespace, "labels": labels(spec)}
    if annotations:
        meta["annotations"] = annotations
    if owner:
        meta["ownerReferences"] = [owner]
    return meta


def _served(spec: InferenceSpec) -> list[dict[str, Any]]:
    """What the pod of an inference workspace serves: its adapters."""
    return spec.adapters


def _puller(spec: InferenceSpec, index: int, adapter: dict[str, Any],
            volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """The init container pulling one image adapter by digest into /adapters/NAME (its secret joins `volumes`)."""
    args = [adapter["ref"], f"{ADAPTERS_DIR}/{adapter['name']}"]
    mounts = [{"name": "adapters", "mountPath": ADAPTERS_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    if adapter.get("pull_secret"):
        secret = f"pull-secret-{index}"
        args += ["--pull-secret-file", contract.PULL_SECRET_FILE]
        volumes.append({"name": secret, "secret": {"secretName": adapter["pull_secret"], "items": [
            {"key": contract.DOCKER_CONFIG, "path": contract.DOCKER_CONFIG}]}})
        mounts.append({"name": secret, "mountPath": contract.PULL_SECRET_DIR, "readOnly": True})
    if spec.plain_http or adapter.get("plain_http"):
        args.append("--plain-http")
    return {
        "name": f"pull-adapter-{index}",
        "image": spec.pull_image,
        "imagePullPolicy": spec.pull_policy,
        "command": ["kairo-step", "pull-adapter"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def build_deployment(spec: InferenceSpec, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The inference Deployment: the serve container, serving what its adapters ConfigMap declares — the tuned
    adapter, or an inference workspace's adapters — or, where they cannot switch in place (`switches_in_place`),
    an inference workspace's adapters pulled by digest by an init container each, and vLLM's.

    A declared image adapter is named only in the ConfigMap (mounted by name), never in the pod template: a new
    digest, or an adapter added or removed, changes the ConfigMap and the server switches in place, and the
    template — so the pods — change only with the base model, the image, the resources (or a volume adapter).
    """
    if spec.runtime == "vllm":
        return _vllm_deployment(spec, owner)
    if spec.adapters and not switches_in_place(spec):
        return _pulled_adapters_deployment(spec, owner)
    if spec.adapters:
        return _declared_adapters_deployment(spec, owner)
    volumes: list[dict[str, Any]] = [
        {"name": "adapters", "configMap": {"name": configmap_name(spec.workspace)}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    # Not a subPath mount: the kubelet updates only a whole ConfigMap volume in place.
    mounts = [{"name": "adapters", "mountPath": ADAPTERS_MOUNT, "readOnly": True},
              {"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    args = ["--preset", spec.preset, "--adapters-file", f"{ADAPTERS_MOUNT}/{ADAPTERS_KEY}"]
    if spec.pull_secret:  # the server pulls each declared adapter by digest itself, at start and at a switch
        args += ["--pull-secret-file", contract.PULL_SECRET_FILE]
        volumes.append({"name": "pull-secret", "secret": {
            "secretName": spec.pull_secret, "items": [{"key": contract.DOCKER_CONFIG, "path": contract.DOCKER_CONFIG}]}})
        mounts.append({"name": "pull-secret", "mountPath": contract.PULL_SECRET_DIR, "readOnly": True})
    if spec.plain_http:
        args.append("--plain-http")
    if spec.max_model_len:
        args += ["--max-model-len", str(spec.max_model_len)]
    return _deployment(spec, owner, _serve_container(spec, args, mounts), volumes, [])


def _declared_adapters_deployment(spec: InferenceSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
    """An inference workspace's Deployment whose adapters switch in place: the server reads them from the adapters
    ConfigMap and pulls each image adapter by digest itself (at start, and when the ConfigMap names another), with
    the one pull secret and scheme they share; a volume adapter is mounted as Kaito mounts it, at /adapters/NAME,
    and declared by that path (a volume is part of the pod: adding or removing one rolls it)."""
    volumes: list[dict[str, Any]] = [
        {"name": "adapters-declared", "configMap": {"name": configmap_name(spec.workspace)}},
        {"name": "adapters", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    # Not a subPath mount: the kubelet updates only a whole ConfigMap volume in place.
    mounts = [{"name": "adapters-declared", "mountPath": ADAPTERS_MOUNT, "readOnly": True},
              {"name": "adapters", "mountPath": ADAPTERS_DIR, "readOnly": True},
              {"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    # numbered among the volume adapters only, so adding an image adapter leaves the volumes (and the pods) alone
    for i, adapter in enumerate(a for a in spec.adapters if a.get("volume")):
        volumes.append({"name": f"adapter-volume-{i}", **adapter["volume"]})
        mounts.append({"name": f"adapter-volume-{i}", "mountPath": f"{ADAPTERS_DIR}/{adapter['name']}",
                       "readOnly": True})
    args = ["--preset", spec.preset, "--adapters-file", f"{ADAPTERS_MOUNT}/{ADAPTERS_KEY}"]
    secret, plain_http = _shared_pull(spec)
    if secret:
        args += ["--pull-secret-file", contract.PULL_SECRET_FILE]
        volumes.append({"name": "pull-secret", "secret": {
            "secretName": secret, "items": [{"key": contract.DOCKER_CONFIG, "path": contract.DOCKER_CONFIG}]}})
        mounts.append({"name": "pull-secret", "mountPath": contract.PULL_SECRET_DIR, "readOnly": True})
    if plain_http:
        args.append("--plain-http")
    if spec.max_model_len:
        args += ["--max-model-len", str(spec.max_model_len)]
    if spec.strengths:  # the combination is served from start or not at all: adding or dropping strengths rolls
        args += ["--combination-type", "svd"]
    return _deployment(spec, owner, _serve_container(spec, args, mounts), volumes, [])


def _shared_pull(spec: InferenceSpec) -> tuple[str, bool]:
    """The pull secret and plain-HTTP answer an inference workspace's image adapters share (the server pulls
    every one with the same credentials file and scheme)."""
    secrets, schemes = _image_pulls(spec)
    return next(iter(secrets), spec.pull_secret), spec.plain_http or True in schemes


def _image_pulls(spec: InferenceSpec) -> tuple[set[str], set[bool]]:
    """The pull secrets an inference workspace's image adapters name, and whether each is reached over plain HTTP."""
    images = [a for a in spec.adapters if a.get("ref")]
    return {a.get("pull_secret") or "" for a in images} - {""}, {bool(a.get("plain_http")) for a in images}


def _pulled_adapters_deployment(spec: InferenceSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
    """An inference workspace's Deployment when its adapters cannot switch in place (`switches_in_place`): each
    image adapter pulled by its own init container, each volume adapter mounted as Kaito mounts it; a change of
    adapters rolls the pods."""
    volumes: list[dict[str, Any]] = [
        {"name": "adapters", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    served = _served(spec)
    pullers = [_puller(spec, i, a, volumes) for i, a in enumerate(served) if a.get("ref")]
    serve_mounts = [{"name": "adapters", "mountPath": ADAPTERS_DIR, "readOnly": True},
                    {"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    for i, adapter in enumerate(served):
        if adapter.get("volume"):  # mounted where the server reads it, inside the adapters folder
            volumes.append({"name": f"adapter-{i}", **adapter["volume"]})
            serve_mounts.append({"name": f"adapter-{i}", "mountPath": f"{ADAPTERS_DIR}/{adapter['name']}",
                                 "readOnly": True})
    serve_args = ["--preset", spec.preset]
    for adapter in served:
        serve_args += ["--adapter", f"{adapter['name']}={ADAPTERS_DIR}/{adapter['name']}"]
    for name, weight in sorted(spec.strengths.items()):
        serve_args += ["--strength", f"{name}={weight}"]
    if spec.max_model_len:
        serve_args += ["--max-model-len", str(spec.max_model_len)]
    return _deployment(spec, owner, _serve_container(spec, serve_args, serve_mounts), volumes, pullers)


def _vllm_deployment(spec: InferenceSpec, owner: dict[str, Any] | None) -> dict[str, Any]:
    """vLLM's OpenAI server on the same port and Service, the tuned adapter pulled by digest as its LoRA module
    (an inference workspace's image adapters each by its own puller); see kairo.manifests.vllm."""
    from kairo.manifests import vllm

    volumes: list[dict[str, Any]] = [{"name": "adapters", "emptyDir": {}}, {"name": "cache", "emptyDir": {}},
                                     {"name": "tmp", "emptyDir": {}}]
    served = spec.adapters or [{"name": spec.workspace, "ref": spec.adapter_ref, "pull_secret": spec.pull_secret}]
    pullers = [_puller(spec, i, a, volumes) for i, a in enumerate(served) if a.get("ref")]
    mounts = [{"name": "adapters", "mountPath": ADAPTERS_DIR, "readOnly": True},
              {"name": "cache", "mountPath": CACHE_DIR}, {"name": "tmp", "mountPath": "/tmp"}]
    for i, adapter in enumerate(served):
        if adapter.get("volume"):
            volumes.append({"name": f"adapter-{i}", **adapter["volume"]})
            mounts.append({"name": f"adapter-{i}", "mountPath": f"{ADAPTERS_DIR}/{adapter['name']}", "readOnly": True})
    modules = [vllm.LoraModule(a["name"], f"{ADAPTERS_DIR}/{a['name']}", spec.lora_ranks.get(a["name"], 16))
               for a in served]
    preset = get_preset(spec.preset)
    hub = preset.source.huggingface
    args = vllm.server_args(hub.repo if hub else spec.preset, hub.revision if hub else "", spec.preset, SERVE_PORT,
                            modules, spec.max_model_len)
    serve = _serve_container(spec, [], mounts)
    serve.update(image=spec.vllm_image, command=["python3", "-m", "vllm.entrypoints.openai.api_server"], args=args,
                 **vllm.probes())
    if spec.api_key_secret:  # vLLM reads its key from VLLM_API_KEY
        serve["env"].append({"name": "VLLM_API_KEY", "valueFrom": {
            "secretKeyRef": {"name": spec.api_key_secret, "key": contract.API_KEY_SECRET_KEY}}})
    return _deployment(spec, owner, serve, volumes, pullers)


def _serve_container(spec: InferenceSpec, args: list[str], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    env = [
        {"name": "HOME", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "KAIRO_CACHE", "value": f"{CACHE_DIR}/kairo"},
    ]
    if spec.api_key_secret:
        env.append({"name": API_KEY_ENV, "valueFrom": {
            "secretKeyRef": {"name": spec.api_key_secret, "key": contract.API_KEY_SECRET_KEY}}})
    return {
        "name": "serve",
        "image": spec.serve_image,
        "imagePullPolicy": spec.pull_policy,
        "command": ["kairo-step", "serve"],
        "args": [*args, "--host", "0.0.0.0", "--port", str(SERVE_PORT)],  # every address of the pod: the Service reaches it there
        "ports": [{"name": "http", "containerPort": SERVE_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(spec),
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                           "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        # /health answers while the model loads, so a slow load is never mistaken for a hung server.
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _deployment(spec: InferenceSpec, owner: dict[str, Any] | None, serve: dict[str, Any],
                volumes: list[dict[str, Any]], init: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment around the serving container: placement, tolerations, the rollout strategy."""
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(contract.POD_SECURITY),
        **({"initContainers": init} if init else {}),
        "containers": [serve],
        "volumes": volumes,
    }
    affinity = _node_affinity(spec.node_labels)
    if affinity:
        pod["affinity"] = affinity
    if spec.gpus > 0:
        taint = spec.gpu_taint
        pod["tolerations"] = [
            {"key": taint["key"], "operator": "Equal", "value": taint["value"], "effect": taint["effect"]},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, owner, {DEPLOY_SPEC: spec.to_json(), ADAPTER_REF: spec.adapter_ref}),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": spec.progress_deadline_seconds,
            "selector": {"matchLabels": selector_labels(spec.workspace)},
            # GPU nodes are provisioned to fit: a surge pod would wait for a GPU that never comes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": labels(spec)}, "spec": pod},
        },
    }


def switches_in_place(spec: InferenceSpec) -> bool:
    """Whether the workspace's adapters are declared in its ConfigMap, so that its servers switch to new ones in
    place: kairo's server (the transformers runtime) does for the tuned adapter and for an inference workspace's,
    with two exceptions that are real reasons to roll the pods, whose template then names the adapters:

    - vLLM (`kaito.sh/runtime: vllm`) reads `--lora-modules` at start only; see kairo.manifests.vllm, "Why an
      adapter change rolls vLLM's pods".
    - Image adapters that need different pull secrets, or some plain HTTP and some TLS: the server pulls them
      all with one credentials file and one scheme.

    Strengths switch in place too: the ConfigMap carries each adapter's strength, and the server makes
    `combined_adapter` again beside the old one when a strength or a weighed adapter's digest changes
    (kairo.serving.switching). Whether there is a combination at all is in the template (`--combination-type`):
    the default model depends on it, so giving the first strength or dropping the last rolls the pods.
    """
    if spec.runtime == "vllm":
        return False
    if not spec.adapters:
        return True
    secrets, schemes = _image_pulls(spec)
    return len(secrets) <= 1 and len(schemes) <= 1


def declared_adapters(spec: InferenceSpec) -> list[DeclaredAdapter]:
    """What the adapters ConfigMap of `spec` declares: the tuned adapter under the workspace's name, or each of an
    inference workspace's (an image by its pinned reference, a volume by where the pod mounts it)."""
    if not spec.adapters:
        return [DeclaredAdapter(spec.workspace, ref=spec.adapter_ref)]

    def strength(name: str) -> float | None:
        return float(spec.strengths[name]) if name in spec.strengths else None

    return [DeclaredAdapter(a["name"], ref=a["ref"], strength=strength(a["name"])) if a.get("ref") else
            DeclaredAdapter(a["name"], path=f"{ADAPTERS_DIR}/{a['name']}", strength=strength(a["name"]))
            for a in spec.adapters]


def build_adapters(spec: InferenceSpec, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ConfigMap declaring the adapters `spec` serves (what the Deployment mounts by name)."""
    return build_adapters_configmap(spec.workspace, spec.namespace, declared_adapters(spec), labels(spec), owner)


def pod_template_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether applying `after` over `before` rolls the pods (a new Deployment does, of course)."""
    if before is None:
        return True
    return ((before.get("spec") or {}).get("template") != after["spec"]["template"]
            or (before.get("spec") or {}).get("replicas") != after["spec"]["replicas"])


def layout_changes(live: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """Whether the Deployment in the cluster was laid out otherwise than `after` (init containers, each container's
    image and arguments, the volumes' names — fields the API server does not default), as one an earlier kairo
    made: pullers and `--adapter` arguments where the adapters now are in the ConfigMap. Applying `after` rolls
    its pods even when the previous spec, built again today, gives the same template."""
    if live is None:
        return False

    def layout(deployment: dict[str, Any]) -> Any:
        pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
        return ([(c.get("name"), c.get("image"), c.get("args")) for c in pod.get("initContainers") or []],
                [(c.get("name"), c.get("image"), c.get("args")) for c in pod.get("containers") or []],
                sorted(v.get("name", "") for v in pod.get("volumes") or []))

    return layout(live) != layout(after)


def build_service(
    spec: InferenceSpec, owner: dict[str, Any] | None = None, record: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Service named after the workspace on port 80, carrying the record of the deployed adapter."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, owner, dict(record or {})),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.workspace),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": SERVE_PORT, "protocol": "TCP"}],
        },
    }


def service_url(workspace: str, namespace: str) -> str:
    return f"http://{workspace}.{namespace}.svc.cluster.local"


def _resources(spec: InferenceSpec) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    preset = get_preset(spec.preset)
    if preset.tuning is not None:  # the train pod's size also holds the model for inference
        requests = {"cpu": preset.tuning.resources.cpu, "memory": preset.tuning.resources.memory}
        limits = {"memory": preset.tuning.resources.memory}
    if spec.gpus > 0:
        requests["nvidia.com/gpu"] = spec.gpus
        limits["nvidia.com/gpu"] = spec.gpus
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _node_affinity(node_labels: dict[str, str]) -> dict[str, Any] | None:
    if not node_labels:
        return None
    expressions = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(node_labels.items())]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}}


def _container_security() -> dict[str, Any]:
    return json.loads(json.dumps(contract.CONTAINER_SECURITY))  # a copy: callers may patch their manifest


# -- rollout -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands, read from its status the way `kubectl rollout status` does."""

    done: bool
    failed: bool
    message: str


def rollout_state(deployment: dict[str, Any]) -> Rollout:
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return Rollout(False, False, "waiting for the Deployment controller to see the new spec")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return Rollout(False, True, f"the rollout made no progress: {condition.get('message', '')}".strip())
    updated = status.get("updatedReplicas") or 0
    current = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < wanted:
        return Rollout(False, False, f"{updated} of {wanted} replicas updated")
    if current > updated:
        return Rollout(False, False, f"{current - updated} old replicas still terminating")
    if available < updated:
        return Rollout(False, False, f"{available} of {updated} updated replicas available")
    return Rollout(True, False, f"{available} of {wanted} replicas available")


# -- the record of what is deployed ----------------------------------------------------------------------


@dataclass(frozen=True)
class DeployedAdapter:
    """One adapter as deployed: what `kairo history` lists and `kairo rollback` goes back to."""

    ref: str
    digest: str = ""
    tag: str = ""
    dataset_digest: str = ""
    eval_loss: str = ""
    deployed_at: str = ""
    workflow: str = ""
    note: str = ""
    adapters: str = ""  # an inference workspace's adapter set (InferenceSpec.adapter_set), what rollback restores

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployedAdapter:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: str(v) for k, v in data.items() if k in known and v is not None})


def record_annotations(current: DeployedAdapter, previous: list[DeployedAdapter]) -> dict[str, str]:
    """The Service annotations recording `current`, with it on top of the bounded history."""
    return {
        ADAPTER_REF: current.ref,
        ADAPTER_DIGEST: current.digest,
        DATASET_DIGEST: current.dataset_digest,
        EVAL_LOSS: current.eval_loss,
        DEPLOYED_AT: current.deployed_at,
        HISTORY: json.dumps([e.to_dict() for e in with_entry(previous, current)], separators=(",", ":")),
    }


def with_entry(history: list[DeployedAdapter], current: DeployedAdapter) -> list[DeployedAdapter]:
    """`current` on top of `history`; deploying the adapter on top again replaces that entry."""
    rest = history[1:] if history and history[0].digest == current.digest and current.digest else history
    return [current, *rest][:HISTORY_LIMIT]


def read_record(annotations: dict[str, str] | None) -> tuple[DeployedAdapter | None, list[DeployedAdapter]]:
    """What the annotations say is deployed now (None when nothing), and the history, newest first."""
    annotations = annotations or {}
    try:
        raw = json.loads(annotations.get(HISTORY) or "[]")
    except ValueError:
        raw = []  # a hand-edited annotation must not break deploys: the history starts again
    history = [DeployedAdapter.from_dict(e) for e in raw if isinstance(e, dict) and e.get("ref")]
    ref = annotations.get(ADAPTER_REF, "")
    if not ref:
        return None, history
    current = DeployedAdapter(
        ref=ref, digest=annotations.get(ADAPTER_DIGEST, "") or adapter_digest(ref),
        dataset_digest=annotations.get(DATASET_DIGEST, ""), eval_loss=annotations.get(EVAL_LOSS, ""),
        deployed_at=annotations.get(DEPLOYED_AT, ""),
    )
    if history and history[0].ref == ref:
        current = history[0]
    return current, history


class NotInHistory(LookupError):
    """A rollback target that names no deployed adapter."""


def find_in_history(history: list[DeployedAdapter], target: str) -> DeployedAdapter:
    """The history entry `target` names: a digest (with or without `sha256:`, or a unique prefix) or a tag."""
    wanted = target.strip()
    for entry in history:
        if wanted and wanted in (entry.tag, entry.digest, entry.ref):
            return entry
    hexpart = wanted.removeprefix("sha256:").lower()
    # An immutable tag is `YYYYMMDD-<short digest>`: its digest part finds the entry even if no tag was kept.
    dated = re.fullmatch(r"\d{8}-([0-9a-f]{7,64})", hexpart)
    if dated:
        hexpart = dated.group(1)
    if re.fullmatch(r"[0-9a-f]{7,64}", hexpart):
        hits = {e.digest: e for e in history if e.digest.removeprefix("sha256:").startswith(hexpart)}
        if len(hits) == 1:
            return next(iter(hits.values()))
        if len(hits) > 1:
            raise NotInHistory(f"'{target}' matches {len(hits)} deployed adapters; give more of the digest")
    known = ", ".join(e.tag or e.digest[:19] for e in history) or "nothing deployed yet"
    raise NotInHistory(f"'{target}' names no deployed adapter — known: {known}")
