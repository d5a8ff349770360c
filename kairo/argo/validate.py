"""Argo's `validate.go`, ported for what kairo renders: the rules `argo submit`, `argo lint`, the Argo Server and
the controller apply to a Workflow, WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow.

Read from argoproj/argo-workflows v4.1.2 `workflow/validate/validate.go` (each rule names its line) and what
it calls; written anew in Python. Argo stops at the first error; this reports every one, each with Argo's
wording and the path of the field. `validate(obj)` is the entry; the DAG's rules live in `dag.py`, the
controller's run-time rules (podSpecPatch, `when`, retry expressions, locks, claims) in `runtime.py`, and
`{{…}}` resolution in `refs.py`. The rules judged not to apply to kairo are listed in docs/argo-local.md.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kairo.argo import dag, rules, runtime
from kairo.problems import Problem

MAX_NAME = 63  # validate.go:101 maxCharsInObjectName
MAX_CRON_NAME = 52  # validate.go:105 maxCharsInCronWorkflowName
TYPES = ("container", "containerSet", "steps", "script", "resource", "dag", "suspend", "data", "http", "plugin")
LEAF = {"container", "containerSet", "script", "resource", "data", "http", "plugin"}  # Template.IsLeaf
POD = {"container", "containerSet", "script"}  # Template.IsPodType
TYPE_NAMES = {"containerSet": "ContainerSet", "dag": "DAG", "http": "HTTP"}  # Template.GetType
POD_GC = {"", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"}  # workflow_types.go:138
RETRY_POLICIES = {"", "Always", "OnError", "OnFailure", "OnTransientError"}  # validate.go:690
RESOURCE_ACTIONS = {"get", "create", "apply", "delete", "replace", "patch"}  # validate.go:922
ARGO_CONTAINERS = {"wait", "supervisor"}  # common.go:316 IsArgoAuxilliary
_CRON_WORD = re.compile(r"^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$")
_CRON_EVERY = re.compile(r"^@every\s+(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_CRON_FIELD = re.compile(r"^[A-Za-z0-9*,/?-]+$")


def template_type(template: dict[str, Any]) -> str:
    """The template's one type (`container`, `dag`…), or '' when it has none."""
    return next((t for t in TYPES if template.get(t) is not None), "")


def type_name(template: dict[str, Any]) -> str:
    """How Argo names a template's type in its messages (`Container`, `DAG`, `Steps`)."""
    kind = template_type(template)
    return TYPE_NAMES.get(kind, kind[:1].upper() + kind[1:])


def validate(obj: dict[str, Any]) -> list[Problem]:
    """Every rule of Argo's validate.go (and the controller's run-time checks) that `obj` breaks."""
    kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name") or ""
    if kind == "CronWorkflow":
        return _cron(obj)
    noun = {"Workflow": "workflow", "WorkflowTemplate": "workflow template",
            "ClusterWorkflowTemplate": "cluster workflow template"}.get(kind)
    if noun is None:
        return []
    problems = []
    if len(name) > MAX_NAME:  # validate.go:162, 402, 420
        problems.append(Problem("metadata.name", f"{noun} name \"{name}\" must not be more than 63 characters long "
                                                 f"(currently {len(name)})"))
    return problems + workflow_spec(obj.get("spec") or {}, "spec", template=kind != "Workflow", meta=obj)


def _cron(obj: dict[str, Any]) -> list[Problem]:
    """validate.go:436 CronWorkflow: its name, schedules, time zone and policies, then the workflow it starts."""
    name, spec = (obj.get("metadata") or {}).get("name") or "", obj.get("spec") or {}
    problems = []
    if len(name) > MAX_CRON_NAME:  # validate.go:441
        problems.append(Problem("metadata.name", f"cron workflow name \"{name}\" must not be more than 52 characters "
                                                 f"long (currently {len(name)})"))
    schedules = spec.get("schedules") or []
    if not schedules:  # validate.go:445
        problems.append(Problem("spec.schedules", "cron workflow must have at least one schedule"))
    for i, schedule in enumerate(schedules):
        why = cron_schedule_error(schedule)
        if why:  # validate.go:450
            problems.append(Problem(f"spec.schedules[{i}]", f"cron schedule {schedule} is malformed: {why}"))
    timezone = spec.get("timezone") or ""
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):  # validate.go:456
            problems.append(Problem("spec.timezone", f"invalid timezone \"{timezone}\": unknown time zone {timezone}"))
    policy = spec.get("concurrencyPolicy") or ""
    if policy not in ("", "Allow", "Forbid", "Replace"):  # validate.go:464
        problems.append(Problem("spec.concurrencyPolicy", f"'{policy}' is not a valid concurrencyPolicy"))
    if (spec.get("startingDeadlineSeconds") or 0) < 0:  # validate.go:468
        problems.append(Problem("spec.startingDeadlineSeconds", "startingDeadlineSeconds must be positive"))
    inner = workflow_spec(spec.get("workflowSpec") or {}, "spec.workflowSpec", template=False,
                          meta={"metadata": spec.get("workflowMetadata") or {}})
    # validate.go:475: the workflow's own problems come wrapped.
    return problems + [Problem(p.path, f"cannot validate Workflow: {p.message}") for p in inner]


def cron_schedule_error(schedule: str) -> str:
    """Why robfig/cron's ParseStandard refuses `schedule` (five fields, a @descriptor or @every), or ''."""
    text = schedule.strip()
    if text.startswith("TZ=") or text.startswith("CRON_TZ="):
        text = text.split(None, 1)[1] if " " in text else ""
    if _CRON_WORD.match(text) or _CRON_EVERY.match(text):
        return ""
    if text.startswith("@"):
        return f"unrecognized descriptor: {text}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"  # robfig/cron parser.go
    bad = [f for f in fields if not _CRON_FIELD.match(f)]
    return f"failed to parse field: {bad[0]}" if bad else ""


def workflow_spec(spec: dict[str, Any], path: str, template: bool, meta: dict[str, Any]) -> list[Problem]:
    """validate.go:153 Workflow: the spec-level rules, then each template."""
    templates = spec.get("templates") or []
    names = {t.get("name"): i for i, t in enumerate(templates)}
    problems = []
    if spec.get("workflowTemplateRef") and templates:  # validate.go:384
        problems.append(Problem(f"{path}.templates", "Templates is invalid field in spec if workflow referred "
                                                     "WorkflowTemplate reference"))
    problems += rules.field_names(templates, "spec.templates", f"{path}.templates")  # validate.go:187, 196
    # validate.go:205: a template may leave its parameters' values to the workflows made from it.
    problems += rules.arguments(spec.get("arguments"), "spec.arguments.", f"{path}.arguments", allow_empty=template)
    entrypoint = spec.get("entrypoint") or ""
    if not entrypoint and not spec.get("workflowTemplateRef") and not template:  # validate.go:260
        problems.append(Problem(f"{path}.entrypoint", "spec.entrypoint is required"))
    for field in ("entrypoint", "onExit"):
        ref = spec.get(field) or ""
        if ref and not spec.get("workflowTemplateRef") and ref not in names and not rules.is_parameter(ref):
            problems.append(Problem(f"{path}.{field}", f"template name '{ref}' undefined"))  # validate.go:664
    problems += hooks(spec.get("hooks"), "hooks", f"{path}.hooks")
    strategy = (spec.get("podGC") or {}).get("strategy") or ""
    if strategy not in POD_GC:  # validate.go:340
        problems.append(Problem(f"{path}.podGC.strategy", f"podGC.strategy unknown strategy '{strategy}'"))
    defaults = spec.get("templateDefaults") or {}
    for i, tmpl in enumerate(templates):
        where = f"{path}.templates[{i}]"
        # Argo wraps a template's error in the names leading to it (validate.go:365, 1483); the path says that here.
        problems += template_problems(tmpl, where, defaults)
        if tmpl.get("dag") is not None:
            problems += dag.dag_problems(tmpl, where, templates)
    problems += runtime.runtime_problems(spec, path)
    return problems


def hooks(value: dict[str, Any] | None, base: str, path: str) -> list[Problem]:
    """validate.go:143 validateHooks: every hook but `exit` needs an expression."""
    return [Problem(f"{path}.{name}", f"{base}.{name} Expression required")
            for name, hook in (value or {}).items() if name != "exit" and not (hook or {}).get("expression")]


def template_problems(tmpl: dict[str, Any], path: str, defaults: dict[str, Any]) -> list[Problem]:
    """validate.go:489 validateTemplate and validateLeaf/validateNonLeaf for one template."""
    name, kind = tmpl.get("name"), template_type(tmpl)
    count = sum(tmpl.get(t) is not None for t in TYPES)
    problems = []
    if count != 1:  # validate.go:730, 734
        what = "template type unspecified" if count == 0 else "multiple template types specified"
        problems.append(Problem(path, f"templates.{name} {what}. choose one of: container, containerSet, steps, "
                                      "script, resource, dag, suspend, template, template ref"))
    problems += _inputs(tmpl, path, leaf=kind in LEAF)
    for i, init in enumerate(tmpl.get("initContainers") or []):
        if not init.get("name"):  # validate.go:483
            problems.append(Problem(f"{path}.initContainers[{i}].name", "initContainers must all have container name"))
    policy = (tmpl.get("retryStrategy") or {}).get("retryPolicy") or ""
    if policy not in RETRY_POLICIES:  # validate.go:693
        problems.append(Problem(f"{path}.retryStrategy.retryPolicy", f"{policy} is not a valid RetryPolicy"))
    problems += _timeouts(tmpl, path, kind)
    if kind in LEAF:
        problems += _leaf(tmpl, path, kind, defaults)
    elif tmpl.get("activeDeadlineSeconds") is not None and kind:  # validate.go:850
        problems.append(Problem(f"{path}.activeDeadlineSeconds",
                                f"templates.{name}.activeDeadlineSeconds is only valid for leaf templates"))
    return problems + _outputs(tmpl, path, kind)


def _inputs(tmpl: dict[str, Any], path: str, leaf: bool) -> list[Problem]:
    """validate.go:739 validateInputs: names, and where input artifacts may say `path` and `from`."""
    name, inputs = tmpl.get("name"), tmpl.get("inputs") or {}
    problems = rules.field_names(inputs.get("parameters") or [], f"templates.{name}.inputs.parameters",
                                 f"{path}.inputs.parameters", params=True)
    problems += rules.field_names(inputs.get("artifacts") or [], f"templates.{name}.inputs.artifacts",
                                  f"{path}.inputs.artifacts", params=True)
    for i, art in enumerate(inputs.get("artifacts") or []):
        ref, where = f"inputs.artifacts.{art.get('name')}", f"{path}.inputs.artifacts[{i}]"
        if leaf and not art.get("path"):  # validate.go:762 (Artifact.CleanPath)
            problems.append(Problem(f"{where}.path", f"error in templates.{name}.{ref}: Artifact '{art.get('name')}' "
                                                     "did not specify a path"))
        elif not leaf and art.get("path"):  # validate.go:766
            problems.append(Problem(f"{where}.path", f"templates.{name}.{ref}.path only valid in container/script "
                                                     "templates"))
        if art.get("from"):  # validate.go:769
            problems.append(Problem(f"{where}.from", f"templates.{name}.{ref}.from not valid in inputs"))
    return problems


def _timeouts(tmpl: dict[str, Any], path: str, kind: str) -> list[Problem]:
    """validate.go:562-575: `timeout` and `pendingTimeout` are for leaf templates; a timeout is a duration."""
    problems = []
    timeout = str(tmpl.get("timeout") or "")
    if timeout and kind not in LEAF:  # validate.go:564
        problems.append(Problem(f"{path}.timeout", f"{type_name(tmpl)} template doesn't support timeout field"))
    elif timeout and re.fullmatch(r"[+-]?\d+", timeout):  # validate.go:569 (a bare number has no unit)
        problems.append(Problem(f"{path}.timeout", f"{tmpl.get('name')} has invalid duration format in timeout"))
    elif timeout and not rules.is_parameter(timeout) and not runtime.is_go_duration(timeout):
        # operator.go parses it with time.ParseDuration when the node starts; the node errors then.
        problems.append(Problem(f"{path}.timeout", f"time: invalid duration \"{timeout}\""))
    if tmpl.get("pendingTimeout") and kind not in LEAF:  # validate.go:574
        problems.append(Problem(f"{path}.pendingTimeout",
                                f"{type_name(tmpl)} template doesn't support pendingTimeout field"))
    return problems


def _leaf(tmpl: dict[str, Any], path: str, kind: str, defaults: dict[str, Any]) -> list[Problem]:
    """validate.go:855 validateLeaf: mounts, images, reserved names, resources, deadlines, parallelism."""
    name, problems = tmpl.get("name"), []
    container = tmpl.get("container") or {}
    mounts: dict[str, str] = {}
    for i, mount in enumerate(container.get("volumeMounts") or []):
        where = mount.get("mountPath")
        if where in mounts:  # validate.go:869
            problems.append(Problem(f"{path}.container.volumeMounts[{i}].mountPath",
                                    f"templates.{name}.container.volumeMounts[{i}].mountPath '{where}' already "
                                    f"mounted in {mounts[where]}"))
        mounts[where] = f"container.volumeMounts.{mount.get('name')}"
    if kind == "container":
        for i, art in enumerate((tmpl.get("inputs") or {}).get("artifacts") or []):
            if art.get("path") in mounts:  # validate.go:875
                problems.append(Problem(f"{path}.inputs.artifacts[{i}].path",
                                        f"templates.{name}.inputs.artifacts[{i}].path '{art['path']}' already mounted "
                                        f"in {mounts[art['path']]}"))
            mounts[art.get("path")] = f"inputs.artifacts.{art.get('name')}"
    for field in ("container", "script"):
        if kind == field and not (tmpl.get(field) or {}).get("image") \
                and not (defaults.get(field) or {}).get("image"):  # validate.go:883, 967
            problems.append(Problem(f"{path}.{field}.image", f"templates.{name}.{field}.image may not be empty"))
    for i, sidecar in enumerate(tmpl.get("sidecars") or []):
        if sidecar.get("name") in ARGO_CONTAINERS or str(sidecar.get("name", "")).startswith("artifact-plugin-"):
            problems.append(Problem(f"{path}.sidecars[{i}].name", f"templates.{name}.sidecars: \"{sidecar['name']}\" "
                                                                  "is a reserved Argo container name"))  # 916
    if kind == "resource":
        problems += _resource(tmpl, path)
    deadline = tmpl.get("activeDeadlineSeconds")
    if deadline is not None and not _int_or_variable(deadline):  # validate.go:981, 984
        problems.append(Problem(f"{path}.activeDeadlineSeconds", f"templates.{name}.activeDeadlineSeconds must be a "
                                                                 "positive integer > 0 or an argo variable"))
    if tmpl.get("parallelism") is not None:  # validate.go:988
        problems.append(Problem(f"{path}.parallelism",
                                f"templates.{name}.parallelism is only valid for steps and dag templates"))
    return problems


def _int_or_variable(value: Any) -> bool:
    """util/intstr/parametrizable.go:45 IsValidIntOrArgoVariable, and not negative (validate.go:984)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    text = str(value)
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text) >= 0
    return text.startswith("{{") and text.endswith("}}")


def _resource(tmpl: dict[str, Any], path: str) -> list[Problem]:
    """validate.go:918-960: a resource template's action and manifest."""
    import yaml

    name, resource, problems = tmpl.get("name"), tmpl.get("resource") or {}, []
    action = resource.get("action") or ""
    if action not in RESOURCE_ACTIONS and not rules.is_parameter(action):  # validate.go:925
        problems.append(Problem(f"{path}.resource.action", f"templates.{name}.resource.action must be one of: get, "
                                                           "create, apply, delete, replace, patch"))
    if action in ("delete", "get"):
        return problems
    manifest, source = resource.get("manifest") or "", resource.get("manifestFrom")
    if not manifest and source is None:  # validate.go:930
        problems.append(Problem(f"{path}.resource", f"either templates.{name}.resource.manifest or "
                                                    f"templates.{name}.resource.manifestFrom must be specified"))
    if manifest and source is not None:  # validate.go:933
        problems.append(Problem(f"{path}.resource", "shouldn't have both `manifest` and `manifestFrom` specified in "
                                                    "`Manifest` for resource template"))
    artifact = ((source or {}).get("artifact") or {}).get("name")
    declared = {a.get("name") for a in (tmpl.get("inputs") or {}).get("artifacts") or []}
    if artifact and artifact not in declared:  # validate.go:944
        problems.append(Problem(f"{path}.resource.manifestFrom.artifact.name",
                                f"artifact {artifact} in `manifestFrom` refer to a non-exist artifact"))
    if manifest:
        try:  # validate.go:957: expressions replaced by placeholders first (SubstituteResourceManifestExpressions)
            yaml.safe_load(re.sub(r"{{\s*=\s*(.+?)\s*}}", "placeholder", manifest))
        except yaml.YAMLError:
            problems.append(Problem(f"{path}.resource.manifest", f"templates.{name}.resource.manifest must be a valid "
                                                                 "yaml"))
    return problems


def _outputs(tmpl: dict[str, Any], path: str, kind: str) -> list[Problem]:
    """validate.go:1244 validateOutputs and 1316 validateOutputParameter."""
    name, outputs = tmpl.get("name"), tmpl.get("outputs") or {}
    problems = [Problem(p.path, p.message.replace(f"templates.{name}.outputs.parameters[",
                                                  f"templates.{name}.outputs.parameters ["))
                for p in rules.field_names(outputs.get("parameters") or [], f"templates.{name}.outputs.parameters",
                                           f"{path}.outputs.parameters", params=True)]  # validate.go:1247
    problems += rules.field_names(outputs.get("artifacts") or [], f"templates.{name}.outputs.artifacts",
                                  f"{path}.outputs.artifacts", params=True)  # validate.go:1251
    for i, art in enumerate(outputs.get("artifacts") or []):
        ref, where = f"outputs.artifacts.{art.get('name')}", f"{path}.outputs.artifacts[{i}]"
        if kind in LEAF and not art.get("path"):  # validate.go:1267
            problems.append(Problem(f"{where}.path", f"error in templates.{name}.{ref}: Artifact '{art.get('name')}' "
                                                     "did not specify a path"))
        elif kind not in LEAF and art.get("path"):  # validate.go:1270
            problems.append(Problem(f"{where}.path", f"templates.{name}.{ref}.path only valid in container/script "
                                                     "templates"))
        problems += _global_name(art, f"templates.{name}.{ref}", where)  # validate.go:1275
    for i, param in enumerate(outputs.get("parameters") or []):
        ref, where = f"templates.{name}.outputs.parameters.{param.get('name')}", f"{path}.outputs.parameters[{i}]"
        problems += _output_parameter(param, ref, where, type_name(tmpl))
        problems += _global_name(param, ref, where)  # validate.go:1308
    return problems


def _global_name(item: dict[str, Any], ref: str, where: str) -> list[Problem]:
    global_name = item.get("globalName") or ""
    if not global_name or rules.is_parameter(global_name):
        return []
    return [Problem(f"{where}.globalName", f"{ref}.globalName: {e}") for e in rules.param_name_errors(global_name)]


def _output_parameter(param: dict[str, Any], ref: str, where: str, kind: str) -> list[Problem]:
    value_from = param.get("valueFrom")
    if value_from is not None and "value" in param:  # validate.go:1318
        return [Problem(where, f"{ref} has both valueFrom and value specified, choose one")]
    if "value" in param:
        return []
    if value_from is None:  # validate.go:1324
        return [Problem(where, f"{ref} does not have valueFrom or value specified")]
    sources = sum(bool(value_from.get(k)) for k in ("path", "jqFilter", "jsonPath", "parameter", "expression"))
    sources += "supplied" in value_from
    if sources == 0:  # validate.go:1337
        return [Problem(f"{where}.valueFrom", "valueFrom type unspecified. choose one of: path, jqFilter, jsonPath, "
                                              "parameter, raw, expression")]
    if sources > 1:  # validate.go:1340
        return [Problem(f"{where}.valueFrom", "multiple valueFrom types specified. choose one of: path, jqFilter, "
                                              "jsonPath, parameter, raw")]
    if kind in ("Container", "ContainerSet", "Script") and not value_from.get("path"):  # validate.go:1290
        return [Problem(f"{where}.valueFrom", f"{ref}.path must be specified for {kind} templates")]
    if kind == "Resource" and not (value_from.get("jqFilter") or value_from.get("jsonPath")):  # validate.go:1294
        return [Problem(f"{where}.valueFrom", f"{ref} .jqFilter or jsonPath must be specified for {kind} templates")]
    if kind in ("DAG", "Steps") and not (value_from.get("parameter") or value_from.get("expression")):  # 1298
        return [Problem(f"{where}.valueFrom", f"{ref}.parameter or expression must be specified for {kind} templates")]
    return []
