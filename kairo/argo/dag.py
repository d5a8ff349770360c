"""Argo's DAG rules (validate.go:1433 validateDAG and workflow/common/ancestry.go), ported for kairo's DAGs.

Argo sorts the tasks first (validate.go:1454, util/sorting/topological_sorting.go), so a task depending on a
task that does not exist, a repeated name or a cycle is reported as `sorting failed: …`; the later checks
for those (validate.go:1391, 1499, 1636) cannot be reached in v4.1.2 and are not repeated here.
"""

from __future__ import annotations

import re
from typing import Any

from kairo.argo import rules
from kairo.problems import Problem

# ancestry.go:35-36: a task name, or a task name with its result (`train.Succeeded`).
TASK_NAME = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)|([a-zA-Z0-9][-a-zA-Z0-9]*)")
TASK_RESULT = re.compile(r"([a-zA-Z0-9][-a-zA-Z0-9]*?\.[A-Z][a-zA-Z]+)")
RESULTS = {"Succeeded", "Failed", "Skipped", "Omitted", "Errored", "Daemoned", "AnySucceeded", "AllFailed"}
ITEM_RESULTS = {"AnySucceeded", "AllFailed"}


def dependencies(task: dict[str, Any]) -> dict[str, bool]:
    """ancestry.go:52 GetTaskDependencies: each task `task` waits for, and whether on its items' results."""
    if not task.get("depends"):
        return dict.fromkeys(task.get("dependencies") or [], False)
    found: dict[str, bool] = {}
    for with_result, bare in TASK_NAME.findall(task["depends"]):
        if with_result:
            name, result = with_result.split(".", 1)
            found[name] = found.get(name, False) or result in ITEM_RESULTS
        else:
            found.setdefault(bare, False)
    return found


def ancestry(name: str, tasks: dict[str, dict[str, Any]]) -> set[str]:
    """ancestry.go:141 GetTaskAncestry: every task `name` depends on, directly or not."""
    seen: set[str] = set()
    todo = list(dependencies(tasks.get(name, {})))
    while todo:
        parent = todo.pop()
        if parent not in seen and parent in tasks:
            seen.add(parent)
            todo += dependencies(tasks[parent])
    return seen


def sort_error(tasks: list[dict[str, Any]]) -> str:
    """Why topological_sorting.go refuses the DAG (a repeated name, an unknown dependency, a cycle), or ''."""
    names: set[str] = set()
    for task in tasks:
        if task.get("name") in names:
            return f"duplicated nodeName {task.get('name')}"  # topological_sorting.go:18
        names.add(task.get("name"))
    waiting = {}
    for task in tasks:
        for dependency in dependencies(task):
            if dependency not in names:
                return f"invalid dependency {dependency}"  # topological_sorting.go:26
        waiting[task.get("name")] = set(dependencies(task))
    while waiting:
        ready = [name for name, deps in waiting.items() if not deps]
        if not ready:
            return "graph with cycle"  # topological_sorting.go:44
        for name in ready:
            waiting.pop(name)
        for deps in waiting.values():
            deps.difference_update(ready)
    return ""


def dag_problems(tmpl: dict[str, Any], path: str, templates: list[dict[str, Any]]) -> list[Problem]:
    """The rules validateDAG applies to one DAG template (`path` is where it is: `spec.templates[0]`)."""
    name, tasks = tmpl.get("name"), (tmpl.get("dag") or {}).get("tasks") or []
    if not tasks:  # validate.go:1439
        return [Problem(f"{path}.dag.tasks", f"templates.{name} must have at least one task")]
    why = sort_error(tasks)
    if why:  # validate.go:1456
        return [Problem(f"{path}.dag.tasks", f"templates.{name} sorting failed: {why}")]
    problems = rules.field_names(tasks, f"templates.{name}.tasks", f"{path}.dag.tasks")  # validate.go:1461
    by_name = {t.get("name"): t for t in tasks}
    known = {t.get("name") for t in templates}
    using_depends = any(t.get("depends") for t in tasks)
    for i, task in enumerate(tasks):
        where, task_name = f"{path}.dag.tasks[{i}]", task.get("name", "")
        prefix = f"templates.{name}.tasks.{task_name}"
        if (using_depends or task.get("dependencies")) and task_name[:1].isdigit():  # validate.go:1469
            problems.append(Problem(f"{where}.name", f"{prefix} name cannot begin with a digit when using either "
                                                     "'depends' or 'dependencies'"))
        if using_depends and task.get("dependencies"):  # validate.go:1473
            problems.append(Problem(f"{where}.dependencies", f"templates.{name} cannot use both 'depends' and "
                                                             "'dependencies' in the same DAG template"))
        if using_depends and task.get("continueOn") is not None:  # validate.go:1477
            problems.append(Problem(f"{where}.continueOn", f"templates.{name} cannot use 'continueOn' when using "
                                                           "'depends'. Instead use 'dep-task.Failed'/'dep-task.Errored'"))
        problems += _holder(task, where, prefix, known)
        problems += _results(task, where, prefix)
        for dependency, on_items in dependencies(task).items():
            parent = by_name[dependency]
            if on_items and not (parent.get("withItems") or parent.get("withParam") or parent.get("withSequence")):
                problems.append(Problem(f"{where}.depends", f"{prefix} dependency '{dependency}' uses an items-based "
                                                            "condition such as .AnySucceeded or .AllFailed but does "
                                                            "not contain any items"))  # validate.go:1503
        problems += _items(task, where, prefix)
        problems += rules.arguments(task.get("arguments"), f"{prefix}.arguments.", f"{where}.arguments",
                                    allow_empty=False)  # validate.go:1557
        problems += _argument_dependencies(task, where, prefix, ancestry(task_name, by_name))
    return problems + _targets(tmpl, path, by_name)


def _holder(task: dict[str, Any], where: str, prefix: str, known: set[str]) -> list[Problem]:
    """validate.go:642 validateTemplateHolder for a task: one of template / templateRef / inline, and it exists."""
    template, ref = task.get("template") or "", task.get("templateRef")
    if ref is not None:
        if template:  # validate.go:647
            return [Problem(f"{where}.template", f"{prefix} template name cannot be specified with templateRef")]
        if not ref.get("name"):  # validate.go:650
            return [Problem(f"{where}.templateRef.name", f"{prefix} resource name is required")]
        if not ref.get("template"):  # validate.go:653
            return [Problem(f"{where}.templateRef.template", f"{prefix} template name is required")]
        return []
    if template and template not in known and not rules.is_parameter(template):  # validate.go:664
        return [Problem(f"{where}.template", f"{prefix} template name '{template}' undefined")]
    return []


def _results(task: dict[str, Any], where: str, prefix: str) -> list[Problem]:
    """ancestry.go:90 ValidateTaskResults: `depends` names only results Argo knows (`train.Succeeded`)."""
    problems = []
    for match in TASK_RESULT.findall(task.get("depends") or ""):
        task_name, result = match.split(".", 1)
        if result not in RESULTS:  # ancestry.go:104, reported by validate.go:1493
            problems.append(Problem(f"{where}.depends", f"{prefix} task result '{result}' for task '{task_name}' is "
                                                        "invalid"))
    return problems


def _items(task: dict[str, Any], where: str, prefix: str) -> list[Problem]:
    """validate.go:1139 addItemsToScope: at most one of withItems, withParam, withSequence; count or end."""
    given = sum(bool(task.get(k)) for k in ("withItems", "withParam")) + (task.get("withSequence") is not None)
    if given > 1:  # validate.go:1151
        return [Problem(where, f"{prefix} only one of withItems, withParam, withSequence can be specified")]
    sequence = task.get("withSequence") or {}
    if "count" in sequence and "end" in sequence:  # validate.go:1179
        return [Problem(f"{where}.withSequence", f"{prefix} only one of count or end can be defined in withSequence")]
    return []


def _argument_dependencies(task: dict[str, Any], where: str, prefix: str, ancestors: set[str]) -> list[Problem]:
    """validate.go:1537 validateDAGTaskArgumentDependency: a `{{tasks.X…}}` argument needs X among the ancestors."""
    problems = []
    args = task.get("arguments") or {}
    for field, key, noun in (("parameters", "value", "parameter"), ("artifacts", "from", "artifact")):
        for i, item in enumerate(args.get(field) or []):
            value = str(item.get(key, ""))
            if value.startswith("{{tasks.") and value.split(".")[1] not in ancestors:  # validate.go:1590, 1602
                problems.append(Problem(f"{where}.arguments.{field}[{i}].{key}",
                                        f"{prefix} missing dependency '{value.split('.')[1]}' for {noun} "
                                        f"'{item.get('name')}'"))
    return problems


def _targets(tmpl: dict[str, Any], path: str, by_name: dict[str, Any]) -> list[Problem]:
    """validate.go:1609 validateDAGTargets: each name in `target` is a task of the DAG."""
    target = (tmpl.get("dag") or {}).get("target") or ""
    return [Problem(f"{path}.dag.target", f"templates.{tmpl.get('name')}.targets: target '{name}' is not defined")
            for name in target.split(" ") if name and not rules.is_parameter(name) and name not in by_name]
