"""The Workspace as pydantic models: Kaito's fields, kairo's annotations, and conveniences for validated code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from kairo.presets import (
    InstanceType,
    Method,
    Preset,
    all_instance_types,
    find_preset,
)

API_VERSIONS = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
KIND = "Workspace"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


# -- kairo's own per-workspace choices, as annotations ------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    key: str
    help: str
    default: str
    pattern: str  # a regex the value must match
    allowed: str  # words for the error message


ANNOTATIONS = {
    a.key: a
    for a in (
        Annotation("kairo.sh/ephemeral-node", "Release the GPU node pool when the run ends", "false",
                   r"true|false", "'true' or 'false'"),
        Annotation("kairo.sh/eval-margin", "How much lower the new eval loss must be to replace the deployed adapter",
                   "0", r"\d+(\.\d+)?", "a number ≥ 0, e.g. '0.01'"),
        Annotation("kairo.sh/work-volume-size", "Size of the work volume (default from the preset)", "",
                   r"\d+(\.\d+)?(Ki|Mi|Gi|Ti)", "a Kubernetes quantity such as '200Gi'"),
        Annotation("kairo.sh/serve-replicas", "Replicas of the inference Deployment", "1", r"[1-9]\d{0,2}",
                   "a whole number from 1 to 999"),
        Annotation("kairo.sh/api-key-secret", "Secret (key 'api-key') whose value the inference server requires",
                   "", r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", "a Secret name"),
    )
}


# -- structure ------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectMeta(_Model):
    name: str | None = Field(None, description="Workspace name: a DNS-1123 label (lowercase, digits, '-', ≤ 63)")
    namespace: str | None = Field(None, description="Namespace the workflow runs and serves in; default: the cluster "
                                                     "config's argo.namespace ('argo')")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels, copied onto the workflow")
    annotations: dict[str, str] = Field(default_factory=dict, description="kairo.sh/… keys hold kairo's choices")
    # Set by the API server; accepted so that `kubectl get workspace -o yaml` output validates.
    generateName: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    managedFields: list[dict[str, Any]] | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    selfLink: str | None = None


class LabelSelectorRequirement(_Model):
    key: str = Field(description="A node label key")
    operator: str = Field(description="In, NotIn, Exists or DoesNotExist")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn")


class LabelSelector(_Model):
    matchLabels: dict[str, str] = Field(default_factory=dict, description="Labels GPU nodes must carry")
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list,
                                                             description="Label rules GPU nodes must meet")


class Resource(_Model):
    instanceType: str | None = Field(None, description="GPU machine size, e.g. Standard_NC6s_v3")
    count: int | None = Field(None, description="GPU nodes; above 1 the run spans them (JobSet or Kubeflow Trainer)")
    labelSelector: LabelSelector | None = Field(None, description="Labels the GPU nodes carry (required)")
    preferredNodes: list[str] = Field(default_factory=list, description="Deprecated in Kaito; existing nodes to use")


class PresetOptions(_Model):
    image: str | None = Field(None, description="An ORAS artifact of model files, or a Kaito model image (weights under /workspace/tfs/weights), instead of the hub")
    imagePullSecrets: list[str] = Field(default_factory=list, description="Secrets for pulling presetOptions.image")
    modelAccessSecret: str | None = Field(None, description="Secret holding a Hugging Face token (key 'token')")
    modelWeightsPVC: str | None = Field(None, description="Kaito: inference only; refused for tuning")
    modelWeightsSubPath: str | None = Field(None, description="Kaito: inference only; refused for tuning")


class PresetSpec(_Model):
    name: str | None = Field(None, description="A preset name (`kairo presets`)")
    accessMode: str | None = Field(None, description="Deprecated in Kaito: public or private")
    presetOptions: PresetOptions | None = Field(None, description="Where the weights come from, and secrets")


class DataSource(_Model):
    name: str | None = Field(None, description="A name for the dataset (DNS-1123 subdomain)")
    urls: list[str] = Field(default_factory=list, description="http(s) URLs of parquet/jsonl/json/csv files")
    urlsSecret: str | None = Field(None, description="kairo: a Secret whose key urls.txt lists the URLs, one a line "
                                                     "(signed URLs stay out of the Workflow)")
    image: str | None = Field(None, description="An image or ORAS artifact whose files lie under /data")
    imagePullSecrets: list[str] = Field(default_factory=list, description="Secrets for pulling input.image")
    volumeSource: dict[str, Any] | None = Field(None, description="A Kubernetes VolumeSource holding the data")


class DataDestination(_Model):
    image: str | None = Field(None, description="Where the adapter is pushed, as an OCI artifact")
    imagePushSecret: str | None = Field(None, description="A dockerconfigjson Secret allowed to push there")
    volumeSource: dict[str, Any] | None = Field(None, description="A Kubernetes VolumeSource the adapter is copied to")


class TuningSpec(_Model):
    preset: PresetSpec | None = Field(None, description="The base model to tune")
    # Any case in the file, as Kaito's examples write it; so the CRD keeps a plain string (the API server must
    # take `QLoRA`), and kairo reads it as the Method it means.
    method: Annotated[Method | None, WithJsonSchema({"type": "string"})] = Field(None, description="lora or qlora")
    config: str | None = Field(None, description="ConfigMap holding training_config.yaml; default per method")
    input: DataSource | None = Field(None, description="The dataset: exactly one of urls, image, volumeSource")
    output: DataDestination | None = Field(None, description="Where the adapter goes: image or volumeSource")

    @field_validator("method", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """Kaito's own examples write `method: qlora` and `QLoRA`: read once here, lower-case from then on."""
        return value.lower() if isinstance(value, str) else value


class AdapterSpec(_Model):
    """One of `inference.adapters`: Kaito's AdapterSpec (api/v1beta1/workspace_types.go:152-159)."""

    source: DataSource | None = Field(None, description="The adapter: name, and image or volumeSource (no URLs)")
    # A string in Kaito too ("language agnostic"); a bare YAML number is refused as the API server refuses it.
    strength: str | None = Field(None, description="Weight in the combined adapter, a number from 0 to 1 as a "
                                                   "string; default '1.0'")


class InferenceSpec(_Model):
    """Kaito's inference section (api/v1beta1/workspace_types.go:128-150): a preset, its adapters, a config."""

    preset: PresetSpec | None = Field(None, description="The base model to serve")
    template: dict[str, Any] | None = Field(None, description="Kaito: a custom pod template; refused (kairo serves "
                                                              "presets)")
    config: str | None = Field(None, description="ConfigMap holding inference_config.yaml (Kaito's)")
    adapters: list[AdapterSpec] = Field(default_factory=list, description="LoRA adapters served by name, at most 10")


class Workspace(_Model):
    """A Kaito Workspace with a tuning or an inference section, as the user wrote it (after validation: trustworthy)."""

    apiVersion: str | None = Field(None, description="kaito.sh/v1alpha1 or kaito.sh/v1beta1")
    kind: str | None = Field(None, description="Workspace")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Name, namespace, labels, annotations")
    resource: Resource = Field(default_factory=Resource, description="The GPU node the tuning runs on")
    tuning: TuningSpec | None = Field(None, description="What to tune, on what data, and where the adapter goes")
    inference: InferenceSpec | None = Field(None, description="A preset served with adapters (instead of tuning)")
    status: dict[str, Any] | None = Field(None, description="Written by the workflow; ignored on input")

    # -- conveniences for code that runs after validation --

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def method(self) -> Method:
        assert self.tuning is not None and self.tuning.method is not None, "validated workspaces name a method"
        return self.tuning.method

    @property
    def is_inference(self) -> bool:
        """An inference workspace: it serves a preset with adapters instead of tuning one."""
        return self.inference is not None and self.tuning is None

    @property
    def preset_spec(self) -> PresetSpec | None:
        """The preset section of whichever section the workspace has."""
        section = self.inference if self.is_inference else self.tuning
        return section.preset if section is not None else None

    @property
    def preset_options(self) -> PresetOptions:
        spec = self.preset_spec
        return (spec.presetOptions if spec else None) or PresetOptions()

    @cached_property
    def preset(self) -> Preset:
        spec = self.preset_spec
        assert spec is not None
        preset = find_preset(spec.name or "")
        assert preset is not None, "validated workspaces name a known preset"
        return preset

    @cached_property
    def instance_type(self) -> InstanceType | None:
        name = self.resource.instanceType
        if not name:
            return None
        return _instance_types_by_lower().get(name.lower())

    @property
    def node_count(self) -> int:
        return self.resource.count or 1

    @property
    def gpu_count(self) -> int:
        """GPUs the train pod requests: all GPUs of the instance type (1 when unknown)."""
        return self.instance_type.gpu.count if self.instance_type else 1

    def annotation(self, key: str) -> str:
        """A kairo.sh/… annotation's value, or its default."""
        return self.metadata.annotations.get(key, ANNOTATIONS[key].default)

    @property
    def ephemeral_node(self) -> bool:
        return self.annotation("kairo.sh/ephemeral-node") == "true"

    def to_manifest(self) -> dict[str, Any]:
        """The workspace as a Kubernetes object (what the user wrote, without server-set fields)."""
        data = self.model_dump(exclude_none=True, exclude={"status"}, exclude_defaults=False)
        meta = data.get("metadata", {})
        for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"):
            meta.pop(key, None)
        return data


@cache
def _instance_types_by_lower() -> dict[str, InstanceType]:
    return {name.lower(): t for name, t in all_instance_types().items()}




def iter_fields(model: type[BaseModel] = Workspace, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every field path of the spec with its FieldInfo (for the README reference and the CRD)."""
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, info
        annotation = info.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from iter_fields(candidate, path)
