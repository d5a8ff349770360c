"""Every `{{…}}` in an Argo object must resolve: to a declared parameter, input, task output or Argo variable.

Argo finds a template tag the way fasttemplate does: from `{{` to the first `}}`. A tag is a variable
(`{{inputs.parameters.preset}}`) or, after `=`, an expression (`{{=asInt(inputs.parameters.n) + 1}}`)
whose dotted names are checked the same way. Where a name may be used matters: `tasks.T.…` only in
a DAG task that depends (directly or not) on T, `inputs.…` only in the template declaring the input,
`workflow.status` and `workflow.failures` only in the exit handler. Bare expressions (`when` after
substitution, `retryStrategy.expression`, `labelsFrom`) are read for their names too.

`check_references(obj)` returns the problems, each with its path; an empty list means all resolve.
The local runner uses `tags_in` to substitute exactly what Argo would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Variables Argo defines for every workflow (docs: "Workflow Variables").
WORKFLOW_VARIABLES = {
    "workflow.name", "workflow.namespace", "workflow.uid", "workflow.serviceAccountName",
    "workflow.mainEntrypoint", "workflow.creationTimestamp", "workflow.priority", "workflow.duration",
    "workflow.scheduledTime", "workflow.parameters", "workflow.labels", "workflow.annotations",
}
EXIT_HANDLER_VARIABLES = {"workflow.status", "workflow.failures"}
POD_VARIABLES = {"pod.name", "retries", "node.name", "inputs.parameters"}
TASK_FIELDS = {"status", "exitCode", "startedAt", "finishedAt", "id", "ip", "hostNodeName", "outputs.result"}
RETRY_VARIABLES = {"lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message"}
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`")
_NAME = re.compile(r"(?<![\w.#'])([A-Za-z_]\w*(?:\.[A-Za-z_][\w-]*)+)")
_FUNCTION_ROOTS = {"sprig"}


class UnclosedTag(ValueError):
    """A `{{` without its `}}`."""


def tags_in(text: str) -> list[str]:
    """The tags of `text` as Argo reads them: from `{{` to the first `}}`, stripped."""
    tags, pos = [], 0
    while (start := text.find("{{", pos)) != -1:
        end = text.find("}}", start + 2)
        if end == -1:
            raise UnclosedTag(f"'{{{{' without '}}}}' in {text!r}")
        tags.append(text[start + 2:end].strip())
        pos = end + 2
    return tags


def expression_names(expression: str) -> list[str]:
    """The dotted variable names an expression reads (`a['b-c']` read as `a.b-c`; strings and calls skipped)."""
    bracketed = re.sub(r"\[\s*(['\"])([^'\"]+)\1\s*\]", lambda mt: "." + mt.group(2), expression)
    source = _STRING.sub("''", bracketed)
    names = []
    for match in _NAME.finditer(source):
        name = match.group(1)
        if name.split(".")[0] in _FUNCTION_ROOTS or source[match.end():].lstrip().startswith("("):
            continue
        names.append(name)
    return names


@dataclass
class _Scope:
    parameters: set[str]
    global_outputs: set[str]
    inputs: set[str] = field(default_factory=set)
    in_pod: bool = False
    in_exit: bool = False
    tasks: dict[str, set[str]] = field(default_factory=dict)  # visible task -> its output parameters
    in_task: bool = False

    def problem(self, name: str) -> str | None:
        """Why `name` does not resolve here, or None when it does."""
        parts = name.split(".")
        if name in WORKFLOW_VARIABLES or name.startswith(("workflow.labels.", "workflow.annotations.",
                                                           "workflow.creationTimestamp.")):
            return None
        if name.startswith("workflow.parameters."):
            param = name[len("workflow.parameters."):]
            return None if param in self.parameters else f"no workflow parameter '{param}' is declared"
        if name.startswith("workflow.outputs.parameters."):
            param = name[len("workflow.outputs.parameters."):]
            return None if param in self.global_outputs else f"no output parameter has globalName '{param}'"
        if name in EXIT_HANDLER_VARIABLES:
            return None if self.in_exit else f"'{name}' is only set in the exit handler (onExit)"
        if name in POD_VARIABLES:
            return None if self.in_pod else f"'{name}' is only set inside a pod template"
        if name.startswith("inputs.parameters."):
            param = name[len("inputs.parameters."):]
            return None if param in self.inputs else f"the template declares no input parameter '{param}'"
        if name == "tasks.name":
            return None if self.in_task else "'tasks.name' is only set in a DAG task"
        if parts[0] == "tasks" and len(parts) >= 3:
            task, rest = parts[1], ".".join(parts[2:])
            if task not in self.tasks:
                return f"task '{task}' is not one this task depends on"
            if rest in TASK_FIELDS:
                return None
            if rest.startswith("outputs.parameters."):
                output = rest[len("outputs.parameters."):]
                return None if output in self.tasks[task] else f"task '{task}' has no output parameter '{output}'"
        return f"'{name}' is not an Argo variable, parameter, input or task output"


def check_references(obj: dict[str, Any]) -> list[str]:
    """Problems with the `{{…}}` references of a Workflow, WorkflowTemplate or CronWorkflow (empty: all resolve)."""
    spec = obj.get("spec") or {}
    prefix = "spec"
    if obj.get("kind") == "CronWorkflow":
        spec, prefix = spec.get("workflowSpec") or {}, "spec.workflowSpec"
    templates = {t.get("name"): t for t in spec.get("templates", [])}
    base = _Scope(
        parameters={p["name"] for p in (spec.get("arguments") or {}).get("parameters", [])},
        global_outputs={p["globalName"] for t in templates.values()
                        for p in (t.get("outputs") or {}).get("parameters", []) if p.get("globalName")},
    )
    problems = []
    for key, value in spec.items():
        if key != "templates":
            problems += _check_value(value, f"{prefix}.{key}", base)
    for i, template in enumerate(spec.get("templates", [])):
        problems += _check_template(template, f"{prefix}.templates[{i}]", base, templates,
                                    in_exit=template.get("name") == spec.get("onExit"))
    for where, meta in (("metadata", obj.get("metadata") or {}),
                        (f"{prefix}.workflowMetadata", spec.get("workflowMetadata") or {})):
        for key, source in (meta.get("labelsFrom") or {}).items():
            problems += _check_expression(source.get("expression", ""), f"{where}.labelsFrom[{key}]", base)
    if obj.get("kind") == "CronWorkflow":
        problems += _check_value({k: v for k, v in obj["spec"].items() if k != "workflowSpec"}, "spec", base)
    return problems


def _check_template(template: dict[str, Any], path: str, base: _Scope, templates: dict[str, Any],
                    in_exit: bool) -> list[str]:
    inputs = {p["name"] for p in (template.get("inputs") or {}).get("parameters", [])}
    scope = _Scope(base.parameters, base.global_outputs, inputs, in_pod="dag" not in template, in_exit=in_exit)
    problems = []
    for key, value in template.items():
        if key == "dag":
            problems += _check_dag(value, f"{path}.dag", scope, templates, template.get("name"))
        elif key == "retryStrategy":
            expression = (value or {}).get("expression", "")
            problems += _check_value(value, f"{path}.{key}", scope)
            problems += _check_expression(_without_tags(expression), f"{path}.retryStrategy.expression", scope,
                                          allowed=RETRY_VARIABLES)
        else:
            problems += _check_value(value, f"{path}.{key}", scope)
    return problems


def _check_dag(dag: dict[str, Any], path: str, scope: _Scope, templates: dict[str, Any],
               name: str | None) -> list[str]:
    tasks = {t.get("name"): t for t in dag.get("tasks", [])}
    outputs = {name: {p["name"] for p in (templates.get(t.get("template"), {}).get("outputs") or {})
                      .get("parameters", [])} for name, t in tasks.items()}
    problems = []
    for i, task in enumerate(dag.get("tasks", [])):
        where = f"{path}.tasks[{i}]({task.get('name')})"
        # A missing task or template is the DAG's rules' to report (kairo.argo.dag), in Argo's words.
        visible = _ancestors(task.get("name"), tasks)
        task_scope = _Scope(scope.parameters, scope.global_outputs, scope.inputs, in_pod=False, in_exit=scope.in_exit,
                            tasks={t: outputs[t] for t in visible if t in outputs}, in_task=True)
        for key, value in task.items():
            if key != "depends":
                problems += _check_value(value, f"{where}.{key}", task_scope)
        callee = templates.get(task.get("template"), {})
        declared = {p["name"]: p for p in (callee.get("inputs") or {}).get("parameters", [])}
        given = {p["name"] for p in (task.get("arguments") or {}).get("parameters", [])}
        for param_name in sorted(given - set(declared)):
            problems.append(f"{where}.arguments: template '{task.get('template')}' has no input '{param_name}'")
        for param_name, param in declared.items():
            if param_name not in given and "value" not in param and "default" not in param:
                # workflow/common/util.go:289 (SubstituteParams), wrapped by validate.go:547 and 1570
                problems.append(f"{where}.arguments: templates.{name}.tasks.{task.get('name')} templates."
                                f"{task.get('template')} inputs.parameters.{param_name} had no value")
    return problems


def _depends_on(task: dict[str, Any]) -> set[str]:
    depends = task.get("depends") or ""
    names = {re.sub(r"\.\w+$", "", word) for word in re.findall(r"[A-Za-z0-9][\w.-]*", depends)}
    return (names - {"&&", "||"}) | set(task.get("dependencies") or [])


def _ancestors(name: str, tasks: dict[str, dict[str, Any]]) -> set[str]:
    seen: set[str] = set()
    todo = list(_depends_on(tasks.get(name, {})))
    while todo:
        parent = todo.pop()
        if parent in seen or parent not in tasks:
            continue
        seen.add(parent)
        todo += _depends_on(tasks[parent])
    return seen


def _check_value(value: Any, path: str, scope: _Scope) -> list[str]:
    problems = []
    for where, text in _strings(value, path):
        try:
            tags = tags_in(text)
        except UnclosedTag as err:
            problems.append(f"{where}: {err}")
            continue
        for tag in tags:
            if tag.startswith("="):
                problems += _check_expression(tag[1:], where, scope, tag=tag)
            elif (why := scope.problem(tag)) is not None:  # validate.go:831, Argo's words first
                problems.append(f"{where}: failed to resolve {{{{{tag}}}}} — {why}")
    return problems


def _check_expression(expression: str, where: str, scope: _Scope, allowed: set[str] = frozenset(),
                      tag: str | None = None) -> list[str]:
    shown = f"'{{{{{tag}}}}}'" if tag else f"'{expression}'"
    problems = []
    for name in expression_names(expression):
        if name in allowed:
            continue
        why = scope.problem(name)
        if why is not None:  # util/template/expression_template.go:94, when the expression runs
            problems.append(f"{where}: {shown}: failed to evaluate expression: {name} is missing — {why}")
    return problems


def _without_tags(text: str) -> str:
    """A bare expression with its `{{…}}` tags blanked (they are checked as tags)."""
    return re.sub(r"\{\{.*?\}\}", "''", text)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if "{{" in value:
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")
