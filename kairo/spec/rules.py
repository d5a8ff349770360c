"""The rules a valid tuning Workspace obeys, beyond its shape: each adds Problems, none stops the others."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from kairo.cluster import ClusterConfig
from kairo.data.netguard import check_literal
from kairo.oci.reference import (
    Reference,
    ReferenceError,
    is_loopback_registry,
    looks_like_placeholder,
    parse_reference,
)
from kairo.presets import (
    Preset,
    all_instance_types,
    all_presets,
    find_preset,
    fitting_instance_types,
    unknown_name_message,
)
from kairo.problems import InvalidInput, Problem, path_of, show
from kairo.sizing import gpu_layout
from kairo.spec.inference import inference_rules
from kairo.spec.model import (
    ANNOTATIONS,
    API_VERSIONS,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    KIND,
    LABEL_NAME,
    LABEL_VALUE,
    DataDestination,
    DataSource,
    LabelSelectorRequirement,
    PresetOptions,
    PresetSpec,
    TuningSpec,
    Workspace,
)
from kairo.training.config import (
    DEFAULT_TEMPLATES,
    TrainingConfig,
    parse_training_config,
    resolve_training_config,
)

# Kubernetes expands `$(NAME)` in a container's command, args and env values (`$$(NAME)` escapes it).
ENV_REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_.-]*\)")
# Kubernetes refuses an object whose annotations (keys and values) pass 256 KiB in total.
ANNOTATIONS_MAX_BYTES = 256 * 1024
# A ConfigMap holds at most 1 MiB; the dataset URLs' ConfigMap leaves room for its metadata.
URLS_MAX_CHARS = 900 * 1024
# Query parameters that make a URL a credential (S3, GCS and Azure SAS signatures, tokens).
SIGNED_URL_KEYS = frozenset({"sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
                             "x-goog-signature", "x-goog-credential", "token", "access_token", "sv", "se", "skoid"})


RUNTIME_ANNOTATION = "kaito.sh/runtime"


def urls_size_problem(urls: list[str]) -> Problem | None:
    """The dataset URLs must fit the ConfigMap they are shipped in: validate and render judge by this one rule."""
    size = sum(len(u) + 1 for u in urls)
    if size <= URLS_MAX_CHARS:
        return None
    return Problem("tuning.input.urls", f"{len(urls)} URLs take {size} characters — more than a ConfigMap holds "
                                        "(1 MiB); serve the files from one folder and list fewer, larger files")


@cache
def _volume_schema_validator() -> Any:
    import jsonschema

    schema = json.loads((Path(__file__).parent.parent / "schemas" / "volume-source.json").read_text())
    return jsonschema.Draft202012Validator(schema)



# JobSet and Kubeflow Trainer take more; past this many nodes a run wants more than a restart-the-set policy.
MAX_NODES = 64

def _label_key_ok(key: str) -> bool:
    """A Kubernetes label key: an optional DNS-subdomain prefix and '/', then a name of at most 63 characters."""
    name = key.rsplit("/", 1)[-1]
    prefix = key[: -len(name) - 1] if "/" in key else ""
    return bool(LABEL_NAME.match(name)) and len(name) <= 63 and (not prefix or bool(DNS1123_SUBDOMAIN.match(prefix)))


class Rules:
    """The rules a valid tuning Workspace obeys; each adds Problems, none stops the others."""

    def __init__(self, ws: Workspace, cluster: ClusterConfig, pruned: set[str]):
        self.ws, self.cluster, self.pruned = ws, cluster, pruned
        self.problems: list[Problem] = []
        self.method_ok = False
        self.inference_preset: Preset | None = None

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
        if self.ws.is_inference:
            self.inference_preset = inference_rules(self)
        return self.problems

    def no_templates(self) -> None:
        """Values reach Argo and Kubernetes, which would substitute `{{…}}` and `$(VAR)` in them."""
        def walk(value: Any, path: str) -> None:
            if isinstance(value, str) and "{{" in value:
                self.error(path, f"{show(value)} holds '{{{{', which Argo would read as a template — "
                                 "percent-encode it in a URL (%7B%7B), or rename")
            elif isinstance(value, str) and ENV_REFERENCE.search(value):
                found = ENV_REFERENCE.search(value).group(0)  # type: ignore[union-attr]
                self.error(path, f"{show(value)} holds {found}, which Kubernetes replaces in container arguments "
                                 "with an environment variable's value — write the value itself (in a URL, "
                                 "percent-encode it: %24%28)")
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
                                    "keep tuning (kairo serves its adapter itself) or move inference to a second "
                                    "workspace that names the pushed adapter under inference.adapters")

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
        total = sum(len(k.encode()) + len(v.encode()) for k, v in meta.annotations.items())
        if total > ANNOTATIONS_MAX_BYTES:
            self.error("metadata.annotations", f"{total} bytes in all — Kubernetes allows at most "
                                               f"{ANNOTATIONS_MAX_BYTES} (256 KiB) of annotations on an object; "
                                               "keep large values in a ConfigMap")
        self._runtime(meta.annotations.get(RUNTIME_ANNOTATION))
        for key, value in meta.annotations.items():
            if not key.startswith("kairo.sh/"):
                continue
            spec = ANNOTATIONS.get(key)
            path = f"metadata.annotations[{key}]"
            if spec is None:
                self.error(path, unknown_name_message("kairo annotation", key, list(ANNOTATIONS)))
            elif not re.fullmatch(spec.pattern, value):
                self.error(path, f"{show(value)} — must be {spec.allowed}")

    def _runtime(self, runtime: str | None) -> None:
        """Kaito's kaito.sh/runtime: vllm deploys vLLM's OpenAI server; transformers (or none) kairo's."""
        path = f"metadata.annotations[{RUNTIME_ANNOTATION}]"
        if runtime is None or runtime == "transformers":
            return
        if runtime != "vllm":
            self.error(path, f"{show(runtime)} — Kaito's runtimes are 'vllm' and 'transformers'")
            return
        self.warn(path, "vLLM serves the OpenAI API only, no Kaito /chat (nor does Kaito's vLLM runtime); the smoke "
                        "test asks /v1/chat/completions. kairo checks the vLLM Deployment by schema and vLLM's flags "
                        "only — no vLLM runs in its tests — and a local run serves with kairo's server")

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
                self._several_nodes(res.count)
        if res.labelSelector is None:
            self.missing("resource.labelSelector", "the labels GPU nodes carry, e.g. matchLabels: {app: tuning}")
        elif not res.labelSelector.matchLabels and not res.labelSelector.matchExpressions:
            self.error("resource.labelSelector", "is empty — an empty selector matches every node, so the tuning "
                                                 "pod could land on a node without a GPU (and a node kairo creates "
                                                 "would carry no label to find it by); name the labels your GPU "
                                                 "nodes carry, e.g. matchLabels: {apps: tuning}")
        else:
            for key, value in res.labelSelector.matchLabels.items():
                self._label(f"resource.labelSelector.matchLabels[{key}]", key, value)
            for i, expr in enumerate(res.labelSelector.matchExpressions):
                self._requirement(f"resource.labelSelector.matchExpressions[{i}]", expr)
        if res.preferredNodes:
            self.warn("resource.preferredNodes", "deprecated in Kaito; kairo's 'existing' provisioner still "
                                                 "uses these nodes first")
        for i, node in enumerate(res.preferredNodes):
            if not DNS1123_SUBDOMAIN.match(node) or len(node) > 253:
                self.error(f"resource.preferredNodes[{i}]", f"{show(node)} — must be a node name (a DNS-1123 "
                                                            "subdomain: lowercase letters, digits, '-' and '.', "
                                                            "at most 253 characters), as `kubectl get nodes` lists")
        if res.instanceType is None:
            if self.cluster.provisioner.kind != "existing":
                self.missing("resource.instanceType",
                             f"the {self.cluster.provisioner.kind} provisioner needs a GPU machine size to create")
        elif self.ws.instance_type is None and self._placeholder("resource.instanceType", res.instanceType,
                                                                 "a GPU machine size (`kairo instance-types`)"):
            pass
        elif self.ws.instance_type is None:
            self.error("resource.instanceType",
                       unknown_name_message("instance type", res.instanceType, list(all_instance_types()))
                       + " (see `kairo instance-types`)")

    def _several_nodes(self, count: int) -> None:
        """Kaito refuses count > 1 for tuning; kairo runs it on JobSet or Kubeflow Trainer (README, "Several nodes")."""
        if count > MAX_NODES:
            self.error("resource.count", f"{count} — at most {MAX_NODES} nodes")
        if not self.cluster.storage.readWriteManyClassName and not self.cluster.local:
            self.error("resource.count", f"{count} nodes share one work volume (data, model, checkpoints), which "
                                         "needs a ReadWriteMany StorageClass — set storage.readWriteManyClassName in "
                                         "the cluster config (Azure Files, NFS…), or use count 1")

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
                self.missing("tuning", "a tuning section (preset, method, input, output) or an inference section "
                                       "(preset, adapters)")
            return
        preset = self.preset("tuning", tuning.preset)
        self.method(tuning, preset)
        if tuning.config is not None and not DNS1123_SUBDOMAIN.match(tuning.config):
            self.error("tuning.config", f"{show(tuning.config)} — must be the name of a ConfigMap in the "
                                        "workspace's namespace (DNS-1123); pass a local file with --config")
        self.input(tuning.input)
        self.output(tuning.output)
        if preset is not None and self.method_ok:
            self.gpu_fit(preset, self.ws.method)

    def preset(self, where: str, spec: PresetSpec | None, tuned: bool = True) -> Preset | None:
        """`where`.preset (tuning or inference): a known preset, one that can be tuned when `tuned`."""
        if spec is None or spec.name is None:
            self.missing(f"{where}.preset" if spec is None else f"{where}.preset.name",
                         "the base model, e.g. preset: {name: phi-3-mini-4k-instruct} (`kairo presets`)")
            return None
        presets = all_presets()
        name = spec.name
        preset = find_preset(name)
        if preset is None:
            self.error(f"{where}.preset.name", unknown_name_message("preset", name, list(presets))
                       + " (`kairo presets` lists them with their Hugging Face repos)")
            return None
        if preset.name != name:
            self.warn(f"{where}.preset.name", f"{show(name)} is the Hugging Face repo of preset '{preset.name}' — "
                                              f"kairo {'tunes' if tuned else 'serves'} that preset "
                                              f"(revision {preset.revision[:12]})")
        if tuned and not preset.supports_tuning:
            self.error(f"{where}.preset.name", f"'{name}' cannot be tuned — presets that can: "
                       + ", ".join(n for n, p in presets.items() if p.supports_tuning))
            return None
        options = spec.presetOptions or PresetOptions()
        if spec.accessMode not in (None, "public", "private"):
            self.error(f"{where}.preset.accessMode", f"{show(spec.accessMode)} — allowed: public, private")
        if preset.gated and not options.modelAccessSecret and not options.image:
            self.error(f"{where}.preset.presetOptions.modelAccessSecret",
                       f"is required — '{preset.name}' is gated on Hugging Face: name a Secret holding your hub "
                       "token (key HF_TOKEN, as Kaito's, or token)")
        for key in ("modelAccessSecret",):
            value = getattr(options, key)
            if value is not None and not DNS1123_SUBDOMAIN.match(value):
                self.error(f"{where}.preset.presetOptions.{key}", f"{show(value)} — must be a Secret name (DNS-1123)")
        if options.modelWeightsPVC is not None:
            self.error(f"{where}.preset.presetOptions.modelWeightsPVC", f"{show(options.modelWeightsPVC)} — only for "
                       "inference in older Kaito versions; kairo fetches the preset's weights itself "
                       "(fetch-model): remove it")
        if options.image is not None:
            self._reference(f"{where}.preset.presetOptions.image", options.image)
        self._secret_names(f"{where}.preset.presetOptions.imagePullSecrets", options.imagePullSecrets)
        return preset

    def method(self, tuning: TuningSpec, preset: Preset | None) -> None:
        if tuning.method is None:  # a value other than lora/qlora was refused (and pruned) by the model
            self.missing("tuning.method", "lora or qlora")
            return
        method = tuning.method
        if preset is not None and preset.tuning is not None and method not in preset.tuning.methods:
            self.error("tuning.method", f"'{method}' — preset '{preset.name}' supports "
                                        f"{', '.join(preset.tuning.methods)}")
            return
        self.method_ok = True

    def input(self, source: DataSource | None) -> None:
        if source is None:
            self.missing("tuning.input", "the dataset: urls, image or volumeSource")
            return
        sources = ("urls", "urlsSecret", "image", "volumeSource")
        given = [k for k in sources if getattr(source, k)]
        if len(given) != 1 and not self.pruned & {f"tuning.input.{k}" for k in sources}:
            self.error("tuning.input", f"exactly one of urls, urlsSecret, image, volumeSource is allowed — found "
                                       f"{', '.join(given) if given else 'none'}")
        if source.urlsSecret is not None and not DNS1123_SUBDOMAIN.match(source.urlsSecret):
            self.error("tuning.input.urlsSecret", f"{show(source.urlsSecret)} — must be a Secret name (DNS-1123)")
        for i, url in enumerate(source.urls):
            self._url(f"tuning.input.urls[{i}]", url)
        too_long = urls_size_problem(source.urls)
        if too_long:
            self.problems.append(too_long)
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
        from urllib.parse import parse_qsl, urlsplit

        if any(c.isspace() for c in url):  # download reads a URL list split on whitespace: this would be two
            self.error(path, f"{show(url)} holds whitespace — percent-encode it (a space is %20)")
            return
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.error(path, f"{show(url)} — only http(s) URLs with a host are allowed")
            return
        try:
            port_ok = parts.port is None or 1 <= parts.port <= 65535
        except ValueError:  # not a number, or above 65535
            port_ok = False
        if not port_ok:
            self.error(path, f"{show(url)} — the port must be a number from 1 to 65535")
            return
        if parts.username is not None or parts.password is not None:
            # never echo the value: it holds a password
            self.error(path, f"holds credentials ({parts.scheme}://USER:PASSWORD@…), which would be stored in the "
                             "Workflow for anyone who can read it — keep them in a Secret: list the URLs in a "
                             "Secret's key urls.txt and name it in tuning.input.urlsSecret (kubectl create secret "
                             "generic NAME --from-file=urls.txt)")
            return
        signed = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)
                         if k.lower() in SIGNED_URL_KEYS})
        if signed:
            self.warn(path, f"A SIGNED URL (its query has {', '.join(signed)}): the signature is a credential, and "
                            "it WILL BE STORED in the Workflow (and its ConfigMap) for anyone who can read them — "
                            "list the URLs in a Secret's key urls.txt and name it in tuning.input.urlsSecret instead")
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
                here = ("; for `kairo run --local`, validate with --local (a registry on this machine needs no "
                        "Secret there)") if is_loopback_registry(host) else ""
                self.error("tuning.output.imagePushSecret",
                           f"is required to push to '{host}' — name a dockerconfigjson Secret, or list the "
                           f"registry under registry.anonymous in the cluster config{here}")
        secret = dest.imagePushSecret
        if secret is not None and not DNS1123_SUBDOMAIN.match(secret) and not self._placeholder(
                "tuning.output.imagePushSecret", secret, "the name of a dockerconfigjson Secret"):
            self.error("tuning.output.imagePushSecret", f"{show(secret)} — must be a Secret name (DNS-1123)")
        if dest.volumeSource is not None:
            self._volume("tuning.output.volumeSource", dest.volumeSource)

    def _reference(self, path: str, text: str) -> Reference | None:
        try:
            return parse_reference(text)
        except ReferenceError as err:
            if not self._placeholder(path, text, "an image reference"):
                self.error(path, f"{show(text)} — not an OCI reference: {err}")
            return None

    def _secret_names(self, path: str, names: list[str]) -> None:
        for i, name in enumerate(names):
            # as Kaito's examples write them: IMAGE_PULL_SECRETS_HERE
            if not DNS1123_SUBDOMAIN.match(name) and not self._placeholder(f"{path}[{i}]", name,
                                                                           "the name of a dockerconfigjson Secret"):
                self.error(f"{path}[{i}]", f"{show(name)} — must be a Secret name (DNS-1123)")

    def _placeholder(self, path: str, value: str, what: str = "a real value") -> bool:
        """The one rule for template text (`<your-vm-sku>`, `ACR_REPO_HERE`): a warning naming the field, wherever.

        `$(VAR)` is no placeholder: Kubernetes would expand it, and `no_templates` refuses it.
        """
        if not looks_like_placeholder(value) or ENV_REFERENCE.search(value):
            return False
        self.warn(path, f"{show(value)} looks like a placeholder — replace it with {what} before submitting")
        return True

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
        if gpu_layout(preset, method, itype.gpu.memory_gib, itype.gpu.count).kind != "none":
            return  # whole on each GPU, or sharded over them (`kairo validate` says which)
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


def check_training_config(
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
    preset = find_preset(ws.tuning.preset.name or "") if ws.tuning.preset else None
    return config, hint + config.problems(ws.method) + _target_modules(preset, config)


def _target_modules(preset: Preset | None, config: TrainingConfig) -> list[Problem]:
    """LoraConfig.target_modules must name layers the preset's model has: else train fails after a GPU node is up."""
    targets = config.LoraConfig.target_modules
    if preset is None or preset.linear_modules is None or targets is None or preset.tuning is None:
        return []
    known = preset.linear_modules
    if isinstance(targets, str):
        if targets == "all-linear" or not re.fullmatch(r"[A-Za-z0-9_.]+", targets):
            return []  # a regular expression: matched against the model's full names in train
        targets = [targets]
    missing = [t for t in targets if t.rsplit(".", 1)[-1] not in known]
    if not missing:
        return []
    return [Problem("training_config.LoraConfig.target_modules",
                    f"{', '.join(map(show, missing))} {'is' if len(missing) == 1 else 'are'} not a linear layer of "
                    f"preset '{preset.name}' ({preset.architecture}) — its layers are {', '.join(known)}; the "
                    f"preset's default is {', '.join(preset.tuning.target_modules)}")]
