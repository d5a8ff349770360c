"""The Workspace spec: Kaito's `Workspace` with a `tuning:` section, parsed, defaulted and validated.

Files are accepted as Kaito users write them (`kaito.sh/v1alpha1` and `v1beta1`, several YAML
documents per file). Validation reports every problem at once, each with its path, the value and
what is allowed; structure comes from the pydantic models below, the rules from `_Rules`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kairo.cluster import ClusterConfig
from kairo.netguard import check_literal
from kairo.presets import (
    METHODS,
    InstanceType,
    Preset,
    all_instance_types,
    all_presets,
    find_preset,
    fitting_instance_types,
    unknown_name_message,
)
from kairo.problems import InvalidInput, Problem, path_of, show
from kairo.reference import Reference, ReferenceError, looks_like_placeholder, parse_reference
from kairo.training_config import (
    DEFAULT_TEMPLATES,
    TrainingConfig,
    parse_training_config,
    resolve_training_config,
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
    namespace: str | None = Field(None, description="Namespace; default 'default'")
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
    count: int | None = Field(None, description="GPU nodes; tuning runs on exactly one")
    labelSelector: LabelSelector | None = Field(None, description="Labels the GPU nodes carry (required)")
    preferredNodes: list[str] = Field(default_factory=list, description="Deprecated in Kaito; existing nodes to use")


class PresetOptions(_Model):
    image: str | None = Field(None, description="An OCI reference holding the model weights instead of the hub")
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
    image: str | None = Field(None, description="An image or ORAS artifact whose files lie under /data")
    imagePullSecrets: list[str] = Field(default_factory=list, description="Secrets for pulling input.image")
    volumeSource: dict[str, Any] | None = Field(None, description="A Kubernetes VolumeSource holding the data")


class DataDestination(_Model):
    image: str | None = Field(None, description="Where the adapter is pushed, as an OCI artifact")
    imagePushSecret: str | None = Field(None, description="A dockerconfigjson Secret allowed to push there")
    volumeSource: dict[str, Any] | None = Field(None, description="A Kubernetes VolumeSource the adapter is copied to")


class TuningSpec(_Model):
    preset: PresetSpec | None = Field(None, description="The base model to tune")
    method: str | None = Field(None, description="lora or qlora")
    config: str | None = Field(None, description="ConfigMap holding training_config.yaml; default per method")
    input: DataSource | None = Field(None, description="The dataset: exactly one of urls, image, volumeSource")
    output: DataDestination | None = Field(None, description="Where the adapter goes: image or volumeSource")


class Workspace(_Model):
    """A Kaito Workspace with a tuning section, as the user wrote it (after validation: trustworthy)."""

    apiVersion: str | None = Field(None, description="kaito.sh/v1alpha1 or kaito.sh/v1beta1")
    kind: str | None = Field(None, description="Workspace")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Name, namespace, labels, annotations")
    resource: Resource = Field(default_factory=Resource, description="The GPU node the tuning runs on")
    tuning: TuningSpec | None = Field(None, description="What to tune, on what data, and where the adapter goes")
    inference: dict[str, Any] | None = Field(None, description="Kaito's inference section: refused (kairo tunes)")
    status: dict[str, Any] | None = Field(None, description="Written by the workflow; ignored on input")

    # -- conveniences for code that runs after validation --

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def method(self) -> str:
        assert self.tuning is not None
        return (self.tuning.method or "").lower()

    @cached_property
    def preset(self) -> Preset:
        assert self.tuning is not None and self.tuning.preset is not None
        preset = find_preset(self.tuning.preset.name or "")
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


@cache
def _volume_schema_validator() -> Any:
    import jsonschema

    schema = json.loads((Path(__file__).parent / "schemas" / "volume-source.json").read_text())
    return jsonschema.Draft202012Validator(schema)


# -- reading files --------------------------------------------------------------------------------------


@dataclass
class WorkspaceFile:
    """A file's Workspace document and the Kubernetes objects beside it (PVCs, ConfigMaps…)."""

    source: str
    workspace: dict[str, Any]
    others: list[dict[str, Any]] = field(default_factory=list)

    def other(self, kind: str, name: str) -> dict[str, Any] | None:
        for doc in self.others:
            if doc.get("kind") == kind and (doc.get("metadata") or {}).get("name") == name:
                return doc
        return None


def read_workspace_file(path: str | Path) -> WorkspaceFile:
    """Read a (multi-document) YAML file and pick its one Workspace; InvalidInput otherwise."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InvalidInput([Problem("", f"cannot read the file: {err.strerror}")], source) from err
    return parse_workspace_text(text, source)


def parse_workspace_text(text: str, source: str = "<stdin>") -> WorkspaceFile:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidInput([Problem("", f"not valid YAML: {err}")], source) from err
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            problems.append(Problem(f"document {i + 1}", f"expected a mapping (a Kubernetes object), got {show(doc)}"))
    if problems:
        raise InvalidInput(problems, source)
    workspaces = [d for d in docs if d.get("kind") == KIND]
    if len(workspaces) != 1:
        kinds = ", ".join(str(d.get("kind")) for d in docs) or "nothing"
        raise InvalidInput(
            [Problem("", f"expected exactly one document of kind Workspace, found {len(workspaces)} (documents: {kinds})")],
            source,
        )
    others = [d for d in docs if d is not workspaces[0]]
    for i, doc in enumerate(others):
        problems += _check_other_object(doc, i)
    if problems:
        raise InvalidInput(problems, source)
    return WorkspaceFile(source, workspaces[0], others)


def _check_other_object(doc: dict[str, Any], index: int) -> list[Problem]:
    """The documents beside the Workspace must be valid Kubernetes objects."""
    kind = doc.get("kind")
    where = f"{kind or 'document'} '{(doc.get('metadata') or {}).get('name', '?')}'"
    problems = []
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str):
            problems.append(Problem(where, f"{key} is missing"))
    if not isinstance((doc.get("metadata") or {}).get("name"), str):
        problems.append(Problem(where, "metadata.name is missing"))
    if problems:
        return problems
    try:
        import kubernetes_validate
    except ImportError:  # only the CLI's extra installs the schemas; steps never read such files
        return []
    try:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    except kubernetes_validate.ValidationError as err:
        return [Problem(f"{where}.{'.'.join(str(p) for p in err.path)}".rstrip("."), err.message)]
    except kubernetes_validate.SchemaNotFoundError:
        return []  # custom resources: not ours to judge
    return []


# -- validation -----------------------------------------------------------------------------------------


@dataclass
class Checked:
    """The outcome of validating a Workspace: the typed object (when usable) and every problem."""

    workspace: Workspace | None
    problems: list[Problem]
    training_config: TrainingConfig | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_workspace(
    data: dict[str, Any],
    cluster: ClusterConfig | None = None,
    config_file: str | Path | None = None,
    others: list[dict[str, Any]] | None = None,
) -> Checked:
    """Validate a Workspace mapping: every problem, not just the first."""
    cluster = cluster or ClusterConfig()
    problems: list[Problem] = []
    data = _as_kubernetes_reads_it(json.loads(json.dumps(data, default=str)))  # a private copy we may prune
    problems += _misplaced_volume_keys(data)
    workspace, structural, pruned = _parse_structure(data)
    problems += structural
    if workspace is None:
        return Checked(None, problems)
    rules = _Rules(workspace, cluster, pruned)
    problems += rules.run()
    training_config = None
    if workspace.tuning and rules.method_ok:
        training_config, config_problems = _check_training_config(workspace, config_file, others or [])
        problems += config_problems
    return Checked(workspace, problems, training_config)


def load_workspace(
    path: str | Path, cluster: ClusterConfig | None = None, config_file: str | Path | None = None
) -> tuple[Workspace, WorkspaceFile, Checked]:
    """Read and validate a workspace file; InvalidInput with every problem when it is not valid."""
    wfile = read_workspace_file(path)
    checked = check_workspace(wfile.workspace, cluster, config_file, wfile.others)
    if not checked.ok or checked.workspace is None:
        raise InvalidInput(checked.problems, wfile.source)
    return checked.workspace, wfile, checked


# Kaito's Go types leave these strings `omitempty`: an empty string there is the field left out.
_EMPTY_IS_UNSET = (
    ("resource", "instanceType"),
    ("tuning", "config"),
    ("tuning", "preset", "presetOptions", "image"),
    ("tuning", "preset", "presetOptions", "modelAccessSecret"),
    ("tuning", "preset", "presetOptions", "modelWeightsPVC"),
    ("tuning", "preset", "presetOptions", "modelWeightsSubPath"),
    ("tuning", "input", "name"),
    ("tuning", "input", "image"),
    ("tuning", "output", "image"),
    ("tuning", "output", "imagePushSecret"),
)


def _as_kubernetes_reads_it(data: Any) -> Any:
    """Drop what the API server and Kaito read as "not given": null values, and '' in Kaito's omitempty strings.

    `imagePullSecrets:` with its entries commented out is null in YAML and an empty list to Kubernetes.
    """
    def without_nulls(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_nulls(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [without_nulls(v) for v in node]
        return node

    data = without_nulls(data)
    for path in _EMPTY_IS_UNSET:
        node = data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) == "":
            del node[path[-1]]
    return data


def _misplaced_volume_keys(data: dict[str, Any]) -> list[Problem]:
    problems = []
    tuning = data.get("tuning")
    if not isinstance(tuning, dict):
        return problems
    for side in ("input", "output"):
        section = tuning.get(side)
        if isinstance(section, dict) and "volume" in section:
            problems.append(
                Problem(
                    f"tuning.{side}.volume",
                    "unknown field — Kaito's field is 'volumeSource' (a Kubernetes VolumeSource, e.g. "
                    "volumeSource: {persistentVolumeClaim: {claimName: my-data}})",
                )
            )
            section.setdefault("volumeSource", section.pop("volume"))
    return problems


def _parse_structure(data: dict[str, Any]) -> tuple[Workspace | None, list[Problem], set[str]]:
    """Validate the shape; prune what is wrong so the rules can still judge the rest."""
    problems: list[Problem] = []
    pruned: set[str] = set()
    for _ in range(5):
        try:
            return Workspace.model_validate(data), problems, pruned
        except ValidationError as err:
            for e in err.errors(include_url=False):
                loc = tuple(e["loc"])
                path = path_of(loc)
                if path in pruned:
                    continue
                problems.append(Problem(path, _structural_message(e)))
                pruned.add(path)
                _delete(data, loc)
    return None, problems, pruned


def _structural_message(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and tuple(error["loc"]) == ("resource", "partition"):
        return ("GPU partitioning (MIG or accelerator slices) is not supported for tuning, as in Kaito — remove "
                "it; tuning uses all GPUs of the instance type")
    if kind == "extra_forbidden":
        model = _model_at(tuple(error["loc"])[:-1])
        allowed = f" — allowed here: {', '.join(model.model_fields)}" if model else ""
        return f"unknown field{allowed} (see the Workspace reference in the README)"
    expected = error["msg"].replace("Input should be", "should be")
    value = error.get("input")
    if kind == "string_type" and isinstance(value, bool | int | float):
        expected += " — put it in quotes: YAML reads a bare true, yes, on or 1.0 as a boolean or a number"
    return f"{show(value)} — {expected}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec model that a location points into (for listing the fields it allows)."""
    model: type[BaseModel] | None = Workspace
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        candidates = [c for c in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(c, type)]
        model = next((c for c in candidates if issubclass(c, BaseModel)), None)
        if model is None:
            for c in candidates:  # list[Model]
                inner = [a for a in getattr(c, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
                model = inner[0] if inner else model
    return model


def _delete(data: Any, loc: tuple[Any, ...]) -> None:
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    try:
        del node[loc[-1]]
    except (KeyError, IndexError, TypeError):
        pass


def _label_key_ok(key: str) -> bool:
    """A Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters."""
    name = key.rsplit("/", 1)[-1]
    prefix = key[: -len(name) - 1] if "/" in key else ""
    return bool(LABEL_NAME.match(name)) and len(name) <= 63 and (not prefix or bool(DNS1123_SUBDOMAIN.match(prefix)))


class _Rules:
    """The rules a valid tuning Workspace obeys; each adds Problems, none stops the others."""

    def __init__(self, ws: Workspace, cluster: ClusterConfig, pruned: set[str]):
        self.ws, self.cluster, self.pruned = ws, cluster, pruned
        self.problems: list[Problem] = []
        self.method_ok = False

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    def missing(self, path: str, what: str) -> None:
        if path not in self.pruned:
            self.error(path, f"is required — {what}")

    def run(self) -> list[Problem]:
        self.no_templates()
        self.kind_and_version()
        self.metadata()
        self.resource()
        self.tuning()
        return self.problems

    def no_templates(self) -> None:
        """Values reach Argo, which would substitute `{{…}}` in them (and the run would use something else)."""
        def walk(value: Any, path: str) -> None:
            if isinstance(value, str) and "{{" in value:
                self.error(path, f"{show(value)} holds '{{{{', which Argo would read as a template — "
                                 "percent-encode it in a URL (%7B%7B), or rename")
            elif isinstance(value, dict):
                for key, item in value.items():
                    walk(item, f"{path}.{key}" if path else str(key))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, f"{path}[{i}]")

        walk(self.ws.model_dump(exclude={"status"}, exclude_none=True), "")

    def kind_and_version(self) -> None:
        ws = self.ws
        if ws.apiVersion not in API_VERSIONS:
            self.error("apiVersion", f"{show(ws.apiVersion)} — allowed: {', '.join(API_VERSIONS)}")
        if ws.kind != KIND:
            self.error("kind", f"{show(ws.kind)} — must be Workspace")
        if ws.inference is not None and ws.tuning is not None:
            self.error("inference", "a workspace has inference or tuning, not both (Kaito refuses both too) — "
                                    "remove inference: kairo runs the tuning section and serves its adapter itself")
        elif ws.inference is not None:
            self.error("inference", "kairo runs tuning workspaces; an inference-only workspace belongs to Kaito "
                                    "itself")

    def metadata(self) -> None:
        meta = self.ws.metadata
        if meta.name is None:
            self.missing("metadata.name", "the workspace's name")
        elif not DNS1123_LABEL.match(meta.name) or len(meta.name) > 63:
            self.error("metadata.name", f"{show(meta.name)} — must be a DNS-1123 label: lowercase letters, digits "
                                        "and '-', starting and ending with a letter or digit, at most 63 characters")
        if meta.namespace is not None and (not DNS1123_LABEL.match(meta.namespace) or len(meta.namespace) > 63):
            self.error("metadata.namespace", f"{show(meta.namespace)} — must be a DNS-1123 label")
        for key, value in meta.labels.items():
            self._label(f"metadata.labels[{key}]", key, value)
        for key, value in meta.annotations.items():
            if not key.startswith("kairo.sh/"):
                continue
            spec = ANNOTATIONS.get(key)
            path = f"metadata.annotations[{key}]"
            if spec is None:
                self.error(path, unknown_name_message("kairo annotation", key, list(ANNOTATIONS)))
            elif not re.fullmatch(spec.pattern, value):
                self.error(path, f"{show(value)} — must be {spec.allowed}")

    def _label(self, path: str, key: str, value: str) -> None:
        if not _label_key_ok(key):
            self.error(path, f"label key {show(key)} — must be [prefix/]name, name ≤ 63 characters of letters, "
                             "digits, '-', '_', '.'")
        if len(value) > 63 or not LABEL_VALUE.match(value):
            self.error(path, f"label value {show(value)} — at most 63 letters, digits, '-', '_', '.', "
                             "starting and ending with a letter or digit")

    def resource(self) -> None:
        res = self.ws.resource
        if res.count is not None:
            if res.count < 1:
                self.error("resource.count", f"{res.count} — must be at least 1")
            elif res.count > 1 and self.ws.tuning is not None:
                self.error("resource.count", f"{res.count} — tuning runs on one node and uses all GPUs of the "
                                             "instance type; set count to 1 (or leave it out)")
        if res.labelSelector is None:
            self.missing("resource.labelSelector", "the labels GPU nodes carry, e.g. matchLabels: {app: tuning}")
        else:
            for key, value in res.labelSelector.matchLabels.items():
                self._label(f"resource.labelSelector.matchLabels[{key}]", key, value)
            for i, expr in enumerate(res.labelSelector.matchExpressions):
                self._requirement(f"resource.labelSelector.matchExpressions[{i}]", expr)
        if res.preferredNodes:
            self.warn("resource.preferredNodes", "deprecated in Kaito; kairo's 'existing' provisioner still "
                                                 "uses these nodes first")
        if res.instanceType is None:
            if self.cluster.provisioner.kind != "existing":
                self.missing("resource.instanceType",
                             f"the {self.cluster.provisioner.kind} provisioner needs a GPU machine size to create")
        elif self.ws.instance_type is None:
            self.error("resource.instanceType",
                       unknown_name_message("instance type", res.instanceType, list(all_instance_types()))
                       + " (see `kairo instance-types`)")

    def _requirement(self, path: str, expr: LabelSelectorRequirement) -> None:
        """A label selector requirement as Kubernetes accepts it in a pod's node affinity."""
        if expr.operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            self.error(f"{path}.operator", f"{show(expr.operator)} — allowed: In, NotIn, Exists, DoesNotExist")
        elif expr.operator in ("In", "NotIn") and not expr.values:
            self.error(f"{path}.values", f"is required with operator {expr.operator} — list the label values "
                                         f"that key '{expr.key}' may{' not' if expr.operator == 'NotIn' else ''} "
                                         "have")
        elif expr.operator in ("Exists", "DoesNotExist") and expr.values:
            self.error(f"{path}.values", f"{show(expr.values)} — must be empty with operator {expr.operator}")
        if not _label_key_ok(expr.key):
            self.error(f"{path}.key", f"label key {show(expr.key)} — must be [prefix/]name, name ≤ 63 characters "
                                      "of letters, digits, '-', '_', '.'")

    def tuning(self) -> None:
        tuning = self.ws.tuning
        if tuning is None:
            if self.ws.inference is None:
                self.missing("tuning", "kairo runs the tuning section: preset, method, input, output")
            return
        preset = self.preset(tuning)
        self.method(tuning, preset)
        if tuning.config is not None and not DNS1123_SUBDOMAIN.match(tuning.config):
            self.error("tuning.config", f"{show(tuning.config)} — must be the name of a ConfigMap in the "
                                        "workspace's namespace (DNS-1123); pass a local file with --config")
        self.input(tuning.input)
        self.output(tuning.output)
        if preset is not None and self.method_ok:
            self.gpu_fit(preset, tuning.method.lower())  # type: ignore[union-attr]

    def preset(self, tuning: TuningSpec) -> Preset | None:
        if tuning.preset is None or tuning.preset.name is None:
            self.missing("tuning.preset" if tuning.preset is None else "tuning.preset.name",
                         "the base model, e.g. preset: {name: phi-3-mini-4k-instruct} (`kairo presets`)")
            return None
        presets = all_presets()
        name = tuning.preset.name
        preset = find_preset(name)
        if preset is None:
            self.error("tuning.preset.name", unknown_name_message("preset", name, list(presets))
                       + " (`kairo presets` lists them with their Hugging Face repos)")
            return None
        if preset.name != name:
            self.warn("tuning.preset.name", f"{show(name)} is the Hugging Face repo of preset '{preset.name}' — "
                                            f"kairo tunes that preset (revision {preset.revision[:12]})")
        if not preset.supports_tuning:
            self.error("tuning.preset.name", f"'{name}' cannot be tuned — presets that can: "
                       + ", ".join(n for n, p in presets.items() if p.supports_tuning))
            return None
        options = tuning.preset.presetOptions or PresetOptions()
        if tuning.preset.accessMode not in (None, "public", "private"):
            self.error("tuning.preset.accessMode", f"{show(tuning.preset.accessMode)} — allowed: public, private")
        if preset.gated and not options.modelAccessSecret and not options.image:
            self.error("tuning.preset.presetOptions.modelAccessSecret",
                       f"is required — '{preset.name}' is gated on Hugging Face: name a Secret holding your hub "
                       "token (key HF_TOKEN, as Kaito's, or token)")
        for key in ("modelAccessSecret",):
            value = getattr(options, key)
            if value is not None and not DNS1123_SUBDOMAIN.match(value):
                self.error(f"tuning.preset.presetOptions.{key}", f"{show(value)} — must be a Secret name (DNS-1123)")
        if options.modelWeightsPVC is not None:
            self.error("tuning.preset.presetOptions.modelWeightsPVC", f"{show(options.modelWeightsPVC)} — only for "
                       "inference workspaces (as in Kaito); tuning fetches the preset's weights itself: remove it")
        if options.image is not None:
            self._reference("tuning.preset.presetOptions.image", options.image)
        self._secret_names("tuning.preset.presetOptions.imagePullSecrets", options.imagePullSecrets)
        return preset

    def method(self, tuning: TuningSpec, preset: Preset | None) -> None:
        if tuning.method is None:
            self.missing("tuning.method", "lora or qlora")
            return
        method = tuning.method.lower()
        if method not in METHODS:
            self.error("tuning.method", f"{show(tuning.method)} — allowed: lora, qlora")
            return
        if preset is not None and preset.tuning is not None and method not in preset.tuning.methods:
            self.error("tuning.method", f"'{method}' — preset '{preset.name}' supports "
                                        f"{', '.join(preset.tuning.methods)}")
            return
        self.method_ok = True

    def input(self, source: DataSource | None) -> None:
        if source is None:
            self.missing("tuning.input", "the dataset: urls, image or volumeSource")
            return
        given = [k for k, v in (("urls", source.urls), ("image", source.image), ("volumeSource", source.volumeSource))
                 if v]
        if len(given) != 1 and not self.pruned & {f"tuning.input.{k}" for k in ("urls", "image", "volumeSource")}:
            self.error("tuning.input", f"exactly one of urls, image, volumeSource is allowed — found "
                                       f"{', '.join(given) if given else 'none'}")
        for i, url in enumerate(source.urls):
            self._url(f"tuning.input.urls[{i}]", url)
        if source.image is not None:
            self._reference("tuning.input.image", source.image)
        self._secret_names("tuning.input.imagePullSecrets", source.imagePullSecrets)
        if source.imagePullSecrets and not source.image:
            self.warn("tuning.input.imagePullSecrets", "only used with tuning.input.image")
        if source.volumeSource is not None:
            self._volume("tuning.input.volumeSource", source.volumeSource)
        if source.name is not None and not DNS1123_SUBDOMAIN.match(source.name):
            self.error("tuning.input.name", f"{show(source.name)} — must be a DNS-1123 subdomain")

    def _url(self, path: str, url: str) -> None:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.error(path, f"{show(url)} — only http(s) URLs with a host are allowed")
            return
        refusal = check_literal(url, self.cluster.network.allow, self.cluster.local)
        if refusal:
            self.error(path, refusal.message())

    def output(self, dest: DataDestination | None) -> None:
        if dest is None:
            self.missing("tuning.output", "where the adapter goes: image (+ imagePushSecret) or volumeSource")
            return
        given = [k for k, v in (("image", dest.image), ("volumeSource", dest.volumeSource)) if v]
        if len(given) != 1 and not self.pruned & {f"tuning.output.{k}" for k in ("image", "volumeSource")}:
            self.error("tuning.output", f"exactly one of image, volumeSource is allowed — found "
                                        f"{', '.join(given) if given else 'none'}")
        if dest.image:
            ref = self._reference("tuning.output.image", dest.image)
            host = ref.registry if ref else dest.image.split("/", 1)[0]
            if not dest.imagePushSecret and not self.cluster.registry_is_anonymous(host) and not self.cluster.local:
                self.error("tuning.output.imagePushSecret",
                           f"is required to push to '{host}' — name a dockerconfigjson Secret, or list the "
                           "registry under registry.anonymous in the cluster config")
        secret = dest.imagePushSecret
        if secret is not None and not DNS1123_SUBDOMAIN.match(secret):
            if looks_like_placeholder(secret):
                self.warn("tuning.output.imagePushSecret", f"{show(secret)} looks like a placeholder — replace it "
                                                          "with the name of a dockerconfigjson Secret")
            else:
                self.error("tuning.output.imagePushSecret", f"{show(secret)} — must be a Secret name (DNS-1123)")
        if dest.volumeSource is not None:
            self._volume("tuning.output.volumeSource", dest.volumeSource)

    def _reference(self, path: str, text: str) -> Reference | None:
        try:
            return parse_reference(text)
        except ReferenceError as err:
            if looks_like_placeholder(text):
                self.warn(path, f"{show(text)} looks like a placeholder — replace it before submitting")
            else:
                self.error(path, f"{show(text)} — not an OCI reference: {err}")
            return None

    def _secret_names(self, path: str, names: list[str]) -> None:
        for i, name in enumerate(names):
            if DNS1123_SUBDOMAIN.match(name):
                continue
            if looks_like_placeholder(name):  # as Kaito's examples write them: IMAGE_PULL_SECRETS_HERE
                self.warn(f"{path}[{i}]", f"{show(name)} looks like a placeholder — replace it with the name of a "
                                          "dockerconfigjson Secret")
            else:
                self.error(f"{path}[{i}]", f"{show(name)} — must be a Secret name (DNS-1123)")

    def _volume(self, path: str, volume: dict[str, Any]) -> None:
        errors = sorted(_volume_schema_validator().iter_errors(volume), key=lambda e: list(e.absolute_path))
        for err in errors:
            where = path_of((path, *err.absolute_path)) if err.absolute_path else path
            self.error(where, f"not a valid Kubernetes VolumeSource: {err.message}")
        kinds = [k for k in volume]
        if not errors and len(kinds) != 1:
            self.error(path, f"a VolumeSource names exactly one volume type (persistentVolumeClaim, azureFile, "
                             f"csi, emptyDir…) — found {', '.join(kinds) if kinds else 'none'}")

    def gpu_fit(self, preset: Preset, method: str) -> None:
        itype = self.ws.instance_type
        if itype is None or preset.tuning is None:
            return
        need = preset.memory_needed_gib(method)
        have = itype.total_gpu_memory_gib
        per_gpu = preset.tuning.min_gpu_memory_gib
        if have >= need and itype.gpu.memory_gib >= per_gpu:
            return
        fits = fitting_instance_types(preset, method, cloud=itype.cloud)
        suggestion = ", ".join(f"{t.name} ({t.gpu.count}× {t.gpu.model} {t.gpu.memory_gib:g} GiB)" for t in fits)
        if have < need:
            why = (f"'{preset.name}' with {method} needs {need:g} GiB of GPU memory; {itype.name} has "
                   f"{itype.gpu.count}× {itype.gpu.model} with {itype.gpu.memory_gib:g} GiB = {have:g} GiB")
        else:
            why = (f"'{preset.name}' with {method} needs at least {per_gpu:g} GiB on each GPU; {itype.name}'s "
                   f"{itype.gpu.model} has {itype.gpu.memory_gib:g} GiB")
        other = "qlora" if method == "lora" else None
        hint = f"; or use method qlora ({preset.memory_needed_gib('qlora'):g} GiB)" if other and itype.holds(
            preset, "qlora") else ""
        self.error("resource.instanceType", f"{why} — instance types that fit: {suggestion or 'none'}{hint}")


def _check_training_config(
    ws: Workspace, config_file: str | Path | None, others: list[dict[str, Any]]
) -> tuple[TrainingConfig | None, list[Problem]]:
    """Parse the tuning config this workspace will use, when it can be seen from here."""
    assert ws.tuning is not None
    name = ws.tuning.config
    prefix = f"--config {config_file}" if config_file is not None else f"tuning.config ({name})" if name else ""
    try:
        configmap = next((d for d in others if d.get("kind") == "ConfigMap"
                          and (d.get("metadata") or {}).get("name") == name), None) if name else None
        if config_file is None and configmap is not None:  # the file's own, even under a default's name
            config = parse_training_config(configmap, f"ConfigMap {name}")
        elif config_file is None and name and name not in DEFAULT_TEMPLATES.values():
            return None, [Problem("tuning.config", f"ConfigMap '{name}' is read in the cluster; pass "
                                                   "--config FILE to check it here", "warning")]
        else:
            config = resolve_training_config(ws.method, name, config_file)
    except InvalidInput as err:
        return None, [Problem(": ".join(part for part in (prefix, p.path) if part) or "training_config", p.message)
                      for p in err.problems]
    unused = [str((d.get("metadata") or {}).get("name")) for d in others if d.get("kind") == "ConfigMap"
              and "training_config.yaml" in (d.get("data") or {}) and (d.get("metadata") or {}).get("name") != name]
    if unused and config_file is None and (name is None or name in DEFAULT_TEMPLATES.values()):
        hint = [Problem("tuning.config", f"this file's ConfigMap '{unused[0]}' holds a training_config.yaml the "
                        f"workspace does not use — {name or 'the ' + ws.method + ' default'} applies; to use it, "
                        f"set tuning.config: {unused[0]}", "warning")]
    else:
        hint = []
    return config, hint + config.problems(ws.method)


def iter_fields(model: type[BaseModel] = Workspace, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every field path of the spec with its FieldInfo (for the README reference and the CRD)."""
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, info
        annotation = info.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from iter_fields(candidate, path)
