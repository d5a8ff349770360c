"""What Argo's controller refuses only when a workflow runs: kairo checks it before anything is sent.

These are not in validate.go; a cluster accepts the object and the node (or the run) fails later:
- `when` (workflow/controller/steps.go:384 shouldExecute, govaluate), after its `{{…}}` are substituted;
- `depends` (dag.go:1021 evaluateDependsLogic, expr-lang, with `-` in task names read as `_`);
- `retryStrategy.expression` (operator.go:1193, util/expr/argoexpr/eval.go EvalBool, expr-lang);
- `podSpecPatch` after substitution (workflowpod.go:299, util.go:1693: it must be a PodSpec in JSON or YAML);
- `volumeClaimTemplates` (operator.go:1975: each names its claim);
- `synchronization` locks (workflow/sync/lock_name.go:138: a mutex or semaphore names its lock).
Expressions are read with kairo's own evaluator (`kairo.argo.expr`), which knows the subset kairo renders:
an expression it cannot read is refused, as `kairo run --local` would refuse it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kairo.argo import expr
from kairo.argo.refs import tags_in
from kairo.problems import Problem

_DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
PLACEHOLDER = "placeholder"  # what a `{{…}}` of `when` becomes before it is read (its value is a run's)


def is_go_duration(text: str) -> bool:
    """Whether Go's time.ParseDuration reads `text` (`90s`, `1h30m`, `0`)."""
    return text == "0" or bool(_DURATION.match(text))


def runtime_problems(spec: dict[str, Any], path: str) -> list[Problem]:
    """The controller's run-time rules over one workflow spec."""
    problems = _claims(spec, path) + _locks(spec.get("synchronization"), f"{path}.synchronization")
    defaults = {p["name"]: str(p["value"]) for p in (spec.get("arguments") or {}).get("parameters") or []
                if "name" in p and "value" in p}
    if spec.get("podSpecPatch"):
        problems += _pod_spec_patch(spec["podSpecPatch"], f"{path}.podSpecPatch", defaults)
    for i, tmpl in enumerate(spec.get("templates") or []):
        where = f"{path}.templates[{i}]"
        problems += _locks(tmpl.get("synchronization"), f"{where}.synchronization")
        retry = (tmpl.get("retryStrategy") or {}).get("expression")
        if retry:
            problems += _expression(retry, f"{where}.retryStrategy.expression", _retry_names)
        if tmpl.get("podSpecPatch"):
            problems += _pod_spec_patch(tmpl["podSpecPatch"], f"{where}.podSpecPatch", defaults)
        for j, task in enumerate((tmpl.get("dag") or {}).get("tasks") or []):
            if task.get("when"):
                problems += _when(task["when"], f"{where}.dag.tasks[{j}].when")
            if task.get("depends"):
                logic = task["depends"].replace("-", "_")  # dag.go:1021
                problems += _expression(logic, f"{where}.dag.tasks[{j}].depends", lambda name: True)
    return problems


class Unknown(Exception):
    """A value only the run knows (a parameter without a default): the substituted text cannot be judged."""


def substitute(text: str, defaults: dict[str, str]) -> str:
    """`text` with each `{{…}}` replaced as the controller would; raises Unknown where a value is needed but unset."""
    out, pos = [], 0
    for tag in tags_in(text):
        start = text.index("{{", pos)
        end = text.index("}}", start) + 2
        out += [text[pos:start], _expression_value(tag[1:], defaults) if tag.startswith("=") else _value(tag, defaults)]
        pos = end
    return "".join(out + [text[pos:]])


def _value(name: str, defaults: dict[str, str]) -> str:
    if name.startswith("workflow.parameters."):
        key = name[len("workflow.parameters."):]
        if key not in defaults:
            raise Unknown(name)
        return defaults[key]
    raise Unknown(name)


def _expression_value(source: str, defaults: dict[str, str]) -> str:
    expr.evaluate(source, lambda name: "")  # it must read, whatever the values
    return str(expr.evaluate(source, lambda name: _value(name, defaults)))


def _when(when: str, where: str) -> list[Problem]:
    # steps.go:396: after substitution, govaluate reads bare words as strings.
    substituted = re.sub(r"{{.*?}}", PLACEHOLDER, when)
    try:
        result = expr.evaluate(substituted, lambda name: name)
    except expr.ExpressionError as err:
        return [Problem(where, f"Invalid 'when' expression '{substituted}': {err}")]  # steps.go:393
    if not isinstance(result, bool):  # steps.go:417
        return [Problem(where, f"Expected boolean evaluation for '{substituted}'. Got {result}")]
    return []


def _retry_names(name: str) -> Any:
    return {"lastRetry.exitCode": "1", "lastRetry.status": "Failed", "lastRetry.duration": "1",
            "lastRetry.message": "", "retries": "1"}.get(name, PLACEHOLDER)


def _expression(source: str, where: str, names: Any) -> list[Problem]:
    try:
        result = expr.evaluate(re.sub(r"{{.*?}}", "''", source), names)
    except expr.ExpressionError as err:  # argoexpr/eval.go:16
        return [Problem(where, f"unable to evaluate expression '{source}': {err}")]
    if not isinstance(result, bool):  # argoexpr/eval.go:20
        return [Problem(where, f"unable to cast expression result '{result}' to bool")]
    return []


def _pod_spec_patch(patch: str, where: str, defaults: dict[str, str]) -> list[Problem]:
    """util.go:1679 ApplyPodSpecPatch: YAML or JSON that reads as a PodSpec, after substitution."""
    import yaml

    try:
        text = substitute(patch, defaults)
    except expr.ExpressionError as err:
        return [Problem(where, f"Failed to substitute the PodSpecPatch variables: {err}")]  # workflowpod.go:318
    except Unknown:
        return []  # its value comes with the run (a parameter without a default): judged when it is known
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as err:  # util.go:1689
        return [Problem(where, f"Failed to convert the PodSpecPatch yaml to json: {str(err).splitlines()[0]}")]
    why = _pod_spec_error(spec)
    return [Problem(where, f"invalid podSpecPatch {json.dumps(text)}: {why}")] if why else []  # util.go:1694 (%q)


def _pod_spec_error(spec: Any) -> str:
    """What Go's json.Unmarshal into a PodSpec refuses among the fields kairo patches (unknown fields it ignores)."""
    if not isinstance(spec, dict):
        return f"json: cannot unmarshal {type(spec).__name__} into Go value of type v1.PodSpec"
    selector = spec.get("nodeSelector")
    if selector is not None and not (isinstance(selector, dict)
                                     and all(isinstance(v, str) or v is None for v in selector.values())):
        return "json: cannot unmarshal into Go struct field PodSpec.nodeSelector of type map[string]string"
    if isinstance(selector, dict) and "" in selector:  # the API server then refuses the pod (a label key)
        return 'spec.nodeSelector: Invalid value: "": name part must be non-empty'
    for field in ("containers", "initContainers", "tolerations", "volumes"):
        items = spec.get(field)
        if items is not None and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
            return f"json: cannot unmarshal into Go struct field PodSpec.{field} of type []v1.{field[:-1].title()}"
    return ""


def _claims(spec: dict[str, Any], path: str) -> list[Problem]:
    return [Problem(f"{path}.volumeClaimTemplates[{i}].metadata.name",
                    f"volumeClaimTemplates[{i}].metadata.name is required")  # operator.go:1975
            for i, claim in enumerate(spec.get("volumeClaimTemplates") or [])
            if not (claim.get("metadata") or {}).get("name")]


def _locks(sync: dict[str, Any] | None, path: str) -> list[Problem]:
    """lock_name.go:138: each mutex names its lock; each semaphore says where its count lives."""
    sync = sync or {}
    problems = [Problem(f"{path}.mutexes[{i}].name", "Invalid lock key: ResourceName is missing")  # lock_name.go:146
                for i, mutex in enumerate(sync.get("mutexes") or []) if not mutex.get("name")]
    for i, semaphore in enumerate(sync.get("semaphores") or []):
        has_map, has_db = semaphore.get("configMapKeyRef") is not None, semaphore.get("database") is not None
        if has_map and has_db:  # lock_name.go:55
            problems.append(Problem(f"{path}.semaphores[{i}]", "invalid semaphore with both ConfigMapKeyRef and "
                                                               "Database"))
        elif not has_map and not has_db:  # lock_name.go:69
            problems.append(Problem(f"{path}.semaphores[{i}]", "cannot get LockName for a Semaphore without a "
                                                               "ConfigMapRef or Database"))
    return problems
