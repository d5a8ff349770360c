"""What the local runner runs, and the refusal of everything else before any task starts."""

from __future__ import annotations

import re
from typing import Any

from kairo.local.mounts import Unsupported

# Fields that shape how a pod is placed or secured on a cluster: meaningless on one machine, so ignored.
CLUSTER_ONLY = {
    "affinity", "nodeSelector", "tolerations", "securityContext", "serviceAccountName", "podGC", "ttlStrategy",
    "synchronization", "metadata", "podMetadata", "workflowMetadata", "artifactRepositoryRef", "priorityClassName",
    "schedulerName", "automountServiceAccountToken", "imagePullSecrets", "podDisruptionBudget", "archiveLocation",
    "executor", "hostAliases", "dnsPolicy", "dnsConfig", "podPriorityClassName", "workflowTemplateRef",
    "activeDeadlineSeconds", "parallelism", "failFast",
}
SPEC_KEYS = {"entrypoint", "arguments", "templates", "onExit", "volumeClaimTemplates", "volumes"} | CLUSTER_ONLY
TEMPLATE_KEYS = {"name", "inputs", "outputs", "container", "dag", "resource", "retryStrategy", "timeout",
                 "volumes"} | CLUSTER_ONLY
RESOURCE_KEYS = {"action", "manifest", "setOwnerReference", "successCondition", "failureCondition"}
CONTAINER_KEYS = {
    "name", "image", "command", "args", "env", "volumeMounts", "workingDir", "resources", "securityContext",
    "imagePullPolicy", "ports", "readinessProbe", "livenessProbe", "startupProbe", "terminationMessagePolicy",
}
TASK_KEYS = {"name", "template", "arguments", "depends", "dependencies", "when", "continueOn"}
RETRY_KEYS = {"limit", "retryPolicy", "backoff", "expression", "affinity"}


def check_supported(workflow: dict[str, Any]) -> None:
    """Raise Unsupported naming the first feature this runner would otherwise silently ignore."""
    if workflow.get("kind") != "Workflow":
        raise Unsupported(f"the local runner runs a Workflow, not a {workflow.get('kind')}")
    spec = workflow.get("spec") or {}
    _only(spec, SPEC_KEYS, "spec")
    templates = {t.get("name"): t for t in spec.get("templates", [])}
    entry = templates.get(spec.get("entrypoint"))
    if entry is None or "dag" not in entry:
        raise Unsupported("spec.entrypoint must name a DAG template")
    for name, template in templates.items():
        where = f"template {name}"
        _only(template, TEMPLATE_KEYS, where)
        if "dag" in template:
            _only(template["dag"], {"tasks", "failFast"}, f"{where}.dag")
            for task in template["dag"]["tasks"]:
                _only(task, TASK_KEYS, f"{where} task {task.get('name')}")
                _only(task.get("continueOn") or {}, {"failed", "error"}, f"{where} task {task.get('name')}.continueOn")
                if task.get("template") not in templates:
                    raise Unsupported(f"{where} task {task.get('name')}: unknown template {task.get('template')}")
            _refuse_recursion(name, templates)
            continue
        if "resource" in template:
            _resource(template, where)
            continue
        if "container" not in template:
            raise Unsupported(f"{where}: only container templates (and resource templates creating a JobSet) run "
                              "locally")
        _only(template["container"], CONTAINER_KEYS, f"{where}.container")
        for item in template["container"].get("env", []):
            if "valueFrom" in item:
                raise Unsupported(f"{where}: env {item['name']} takes its value from the cluster (valueFrom)")
        _only(template.get("retryStrategy") or {}, RETRY_KEYS, f"{where}.retryStrategy")
        inputs = template.get("inputs") or {}
        _only(inputs, {"parameters"}, f"{where}.inputs")
        outputs = template.get("outputs") or {}
        _only(outputs, {"parameters", "artifacts"}, f"{where}.outputs")
        for param in outputs.get("parameters", []):
            _only(param.get("valueFrom") or {}, {"path", "default"}, f"{where} output {param.get('name')}")
    if spec.get("onExit") and spec["onExit"] not in templates:
        raise Unsupported(f"spec.onExit names an unknown template {spec['onExit']}")


def _resource(template: dict[str, Any], where: str) -> None:
    """A resource template runs here when it creates a JobSet (kairo.local.jobset) and has nothing else to say."""
    import yaml

    from kairo.local.jobset import check_jobset

    resource = template["resource"]
    _only(resource, RESOURCE_KEYS, f"{where}.resource")
    if resource.get("action") != "create":
        raise Unsupported(f"{where}: resource action {resource.get('action')} — locally only `create` of a JobSet runs")
    check_jobset(yaml.safe_load(re.sub(r"{{.*?}}", "x", str(resource.get("manifest", "")))) or {}, where)
    if (template.get("outputs") or {}).get("parameters"):
        raise Unsupported(f"{where}: a resource template's outputs are not read locally")


def _refuse_recursion(name: str, templates: dict[str, Any], seen: tuple[str, ...] = ()) -> None:
    """A DAG that calls itself, directly or not, would never end here (Argo needs a `when` to stop it)."""
    if name in seen:
        raise Unsupported(f"template {seen[0]}: calls itself through {' → '.join((*seen, name))}, which the "
                          "local runner does not run")
    for task in (templates[name].get("dag") or {}).get("tasks", []):
        if "dag" in templates[task["template"]]:
            _refuse_recursion(task["template"], templates, (*seen, name))


def _only(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise Unsupported(f"{where}: {', '.join(extra)} cannot run locally (kairo's local runner supports "
                          "container templates in DAGs (nested too), parameters, when/depends, continueOn, retries and onExit, "
                          "itself a container or a DAG)")


def parse_duration(value: Any) -> float:
    """Seconds from an Argo duration: a number of seconds, or text like '90s', '30m', '2h', '1h30m'."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise Unsupported(f"cannot read the duration '{value}'")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * scale[u] for n, u in parts)
