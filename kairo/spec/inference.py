"""The rules a valid inference Workspace obeys: Kaito's, read from its source, in both API versions.

Kaito (kaito-project/kaito, api/v1beta1/workspace_validation.go; v1alpha1 has the same rules):
- inference and tuning together are refused (v1beta1 :168-170, v1alpha1 :109-111);
- at most `MaxAdaptersNumber = 10` adapters (v1beta1 :59 and :876-878, v1alpha1 :47 and :491-493);
- adapter names unique (`validateDuplicateName`, v1beta1 :880-884 and :917-925, v1alpha1 :495-499 and :527);
- each adapter (`AdapterSpec.validateCreateorUpdate`, v1beta1 :248-280, v1alpha1 :152-183): a source with a
  DNS-1123 subdomain name, an image or a volume, no URLs, and `strength` a string number in [0, 1]
  (default "1.0");
- vLLM, Kaito's default runtime, refuses `strength` (pkg/model/interface.go:711-713): only its transformers
  runtime weighs adapters, and so does kairo's server.

The volume field is `volumeSource` (`json:"volumeSource"`, api/v1beta1/workspace_types.go:172); Kaito's docs
(website/docs/lora-adapters.md:162, :179) write `source.volume`, which its API server would prune. kairo reads
both and says which is right (`structure.misplaced_volume_keys`).

`inference.config` names a ConfigMap with Kaito's `inference_config.yaml`; kairo reads what its server can
honour (`vllm.max-model-len`) and refuses the rest by name (`check_inference_config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from kairo.presets import Preset
from kairo.problems import Problem, show
from kairo.spec.model import DNS1123_SUBDOMAIN, AdapterSpec, Workspace

if TYPE_CHECKING:
    from kairo.spec.rules import Rules

MAX_ADAPTERS = 10  # Kaito's MaxAdaptersNumber
COMBINED_ADAPTER = "combined_adapter"  # the name Kaito's transformers runtime gives the weighted adapter
CONFIG_KEY = "inference_config.yaml"
# Kaito's own default template (charts/kaito/workspace/templates/inference-params.yaml) sets these for vLLM;
# at these values they ask for nothing kairo's server would do differently, so they pass with a warning.
NEUTRAL = {("kv_cache_cpu_memory_utilization",): None, ("max_probe_steps",): None, ("vllm", "cpu-offload-gb"): 0}


def inference_rules(rules: Rules) -> Preset | None:
    """Judge `inference:` — preset, template, config name, adapters — adding problems to `rules`."""
    inference = rules.ws.inference
    assert inference is not None
    if inference.template is not None:
        rules.error("inference.template", "a custom pod template is Kaito's own inference path; kairo serves presets "
                                          "(inference.preset) — remove template")
    preset = rules.preset("inference", inference.preset, tuned=False) if inference.template is None or \
        inference.preset is not None else None
    if inference.config is not None and not DNS1123_SUBDOMAIN.match(inference.config):
        rules.error("inference.config", f"{show(inference.config)} — must be the name of a ConfigMap (DNS-1123) "
                                        "holding inference_config.yaml")
    adapters = inference.adapters
    if len(adapters) > MAX_ADAPTERS:
        rules.error("inference.adapters", f"{len(adapters)} adapters — at most {MAX_ADAPTERS} are allowed "
                                          "(Kaito's MaxAdaptersNumber)")
    seen: dict[str, int] = {}
    for i, adapter in enumerate(adapters):
        _adapter(rules, f"inference.adapters[{i}]", adapter)
        name = adapter.source.name if adapter.source else None
        if not name:
            continue
        if name == COMBINED_ADAPTER or (preset is not None and name == preset.name):
            rules.error(f"inference.adapters[{i}].source.name", f"{show(name)} names the "
                        f"{'combined adapter' if name == COMBINED_ADAPTER else 'base model'} on the server — pick "
                        "another")
        if name in seen:
            rules.error(f"inference.adapters[{i}].source.name", f"{show(name)} — already the name of "
                                                               f"inference.adapters[{seen[name]}]; names must be unique")
        seen.setdefault(name, i)
    strengths = [i for i, a in enumerate(adapters) if a.strength is not None]
    runtime = rules.ws.metadata.annotations.get("kaito.sh/runtime", "")
    if strengths and runtime != "transformers":
        rules.warn(f"inference.adapters[{strengths[0]}].strength",
                   "Kaito's default runtime, vLLM, refuses strength; kairo's server weighs the adapters into "
                   f"'{COMBINED_ADAPTER}' as Kaito's transformers runtime does — add the annotation "
                   "kaito.sh/runtime: transformers so Kaito reads this file the same way")
    if rules.ws.resource.count is not None and rules.ws.resource.count > 1:
        rules.error("resource.count", f"{rules.ws.resource.count} — kairo serves on one node (replicas: the "
                                      "kairo.sh/serve-replicas annotation); Kaito's multi-node inference is not "
                                      "supported: set count to 1")
    return preset


def _adapter(rules: Rules, where: str, adapter: AdapterSpec) -> None:
    source = adapter.source
    if source is None:
        rules.missing(f"{where}.source", "the adapter's name and its image or volumeSource")
        return
    if source.name is None:
        rules.missing(f"{where}.source.name", "the name clients put in `model` to use this adapter")
    elif not DNS1123_SUBDOMAIN.match(source.name) or len(source.name) > 253:
        rules.error(f"{where}.source.name", f"{show(source.name)} — must be a DNS-1123 subdomain: lowercase letters, "
                                            "digits, '-' and '.'")
    if source.urls:
        rules.error(f"{where}.source.urls", "URLs are not supported as adapter source (as in Kaito) — push the "
                                            "adapter as an image or put it on a volume")
    given = [k for k, v in (("image", source.image), ("volumeSource", source.volumeSource)) if v]
    pruned = {f"{where}.source.{k}" for k in ("image", "volumeSource")} & rules.pruned
    if not given and not pruned:
        rules.error(f"{where}.source", "either image or volumeSource must be given")
    elif len(given) > 1:
        rules.error(f"{where}.source", "image and volumeSource are both given — name one")
    if source.image is not None:
        rules._reference(f"{where}.source.image", source.image)
    rules._secret_names(f"{where}.source.imagePullSecrets", source.imagePullSecrets)
    if source.imagePullSecrets and not source.image:
        rules.warn(f"{where}.source.imagePullSecrets", "only used with source.image")
    if source.volumeSource is not None:
        rules._volume(f"{where}.source.volumeSource", source.volumeSource)
    if adapter.strength is not None:
        value = parse_strength(adapter.strength)
        if value is None:
            rules.error(f"{where}.strength", f"{show(adapter.strength)} — must be a number from 0 to 1, as a string "
                                             "(e.g. '0.5')")
        elif not 0 <= value <= 1:
            rules.error(f"{where}.strength", f"{show(adapter.strength)} — must be between 0 and 1")


def parse_strength(text: str) -> float | None:
    """A strength as Go's strconv.ParseFloat reads it (finite numbers only); None when it is not one."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def check_inference_config(ws: Workspace, preset: Preset | None, others: list[dict[str, Any]]
                           ) -> tuple[int | None, list[Problem]]:
    """`inference.config`'s ConfigMap, from the file's documents: the context length it asks for, and problems."""
    assert ws.inference is not None
    name = ws.inference.config
    if not name:
        return None, []
    configmap = next((d for d in others if d.get("kind") == "ConfigMap"
                      and (d.get("metadata") or {}).get("name") == name), None)
    if configmap is None:
        return None, [Problem("inference.config", f"ConfigMap '{name}' is not in this file — put it beside the "
                                                  "Workspace (a second YAML document): kairo reads it when it renders")]
    where = f"ConfigMap {name}: {CONFIG_KEY}"
    text = (configmap.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        return None, [Problem("inference.config", f"ConfigMap '{name}' has no key {CONFIG_KEY} (Kaito's)")]
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        return None, [Problem(where, f"not valid YAML: {err}")]
    if not isinstance(config, dict):
        return None, [Problem(where, f"expected a mapping, got {show(config)}")]
    problems: list[Problem] = []
    max_len = None
    vllm = config.get("vllm") or {}
    if not isinstance(vllm, dict):
        return None, [Problem(f"{where}: vllm", f"expected a mapping of vLLM flags, got {show(vllm)}")]
    flat = [((k,), v) for k, v in config.items() if k != "vllm"] + [(("vllm", k), v) for k, v in vllm.items()]
    for path, value in flat:
        key = ".".join(path)
        if path == ("vllm", "max-model-len"):
            try:
                max_len = int(str(value).strip())
            except ValueError:
                problems.append(Problem(f"{where}: {key}", f"{show(value)} — must be an integer"))
                continue
            limit = preset.context_length if preset else None
            if max_len < 1 or (limit is not None and max_len > limit):
                problems.append(Problem(f"{where}: {key}", f"{max_len} — must be from 1 to the model's context "
                                                          f"length, {limit}"))
        elif path in NEUTRAL and NEUTRAL[path] in (None, value):
            problems.append(Problem(f"{where}: {key}", "vLLM's setting, not read by kairo's server (it asks for "
                                                      "nothing different here)", "warning"))
        else:
            problems.append(Problem(f"{where}: {key}", f"{show(value)} — kairo's server (Kaito's transformers "
                                                      "runtime's API) cannot honour this vLLM setting; it reads only "
                                                      "vllm.max-model-len: remove it"))
    return max_len, problems
