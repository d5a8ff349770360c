"""Argo's small rules shared by workflows, templates and DAG tasks: names and arguments.

Ported from argoproj/argo-workflows v4.1.2, `workflow/validate/validate.go` (line numbers in comments).
Each function returns every problem it finds (Argo stops at the first), each worded as Argo words it.
"""

from __future__ import annotations

import re
from typing import Any

from kairo.problems import Problem

# validate.go:1690-1714: the name formats and their messages.
PARAM_OR_ARTIFACT_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
PARAM_OR_ARTIFACT_MESSAGE = ("Parameter/Artifact name must consist of alpha-numeric characters, '_' or '-' "
                             "e.g. my_param_1, MY-PARAM-1")
FIELD_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
FIELD_NAME_MESSAGE = ("name must consist of alpha-numeric characters or '-', and must start with an alpha-numeric "
                      "character (e.g. My-name1-2, 123-NAME)")
FIELD_NAME_MAX = 128
# validate.go:1690: a parameter reference such as {{inputs.parameters.x}} (a globalName may be one).
PARAMETER = re.compile(r"{{[-a-zA-Z0-9]+(\.[-a-zA-Z0-9_]+)*}}")


def is_parameter(text: str) -> bool:
    """Whether `text` holds a `{{…}}` parameter reference (Argo leaves such names to run time)."""
    return PARAMETER.search(text) is not None


def field_name_errors(name: str) -> list[str]:
    """validate.go:1717 isValidWorkflowFieldName: templates, tasks and steps."""
    errors = []
    if len(name) > FIELD_NAME_MAX:
        errors.append(f"must be no more than {FIELD_NAME_MAX} characters")
    if not FIELD_NAME.match(name):
        errors.append(FIELD_NAME_MESSAGE)
    return errors


def param_name_errors(name: str) -> list[str]:
    """validate.go:1702 isValidParamOrArtifactName."""
    return [] if PARAM_OR_ARTIFACT_NAME.match(name) else [PARAM_OR_ARTIFACT_MESSAGE]


def field_names(items: list[dict[str, Any]], prefix: str, path: str, params: bool = False) -> list[Problem]:
    """validate.go:1350 validateWorkflowFieldNames: each name given, well formed (1387) and unique (1391)."""
    problems, seen = [], set()
    for i, item in enumerate(items or []):
        name = item.get("name") or ""
        where = f"{path}[{i}].name"
        if not name:
            problems.append(Problem(where, f"{prefix}[{i}].name is required"))  # validate.go:1377
            continue
        errors = param_name_errors(name) if params else field_name_errors(name)
        if errors:
            problems.append(Problem(where, f"{prefix}[{i}].name: '{name}' is invalid: {';'.join(errors)}"))
        if name in seen:
            problems.append(Problem(where, f"{prefix}[{i}].name '{name}' is not unique"))
        seen.add(name)
    return problems


def arguments(args: dict[str, Any] | None, prefix: str, path: str, allow_empty: bool) -> list[Problem]:
    """validate.go:993 validateArguments: names (1009), then values (validateArgumentsValues, 1016)."""
    args = args or {}
    problems = []
    for field in ("parameters", "artifacts"):
        problems += field_names(args.get(field) or [], f"{prefix}{field}", f"{path}.{field}", params=True)
    for i, param in enumerate(args.get("parameters") or []):
        name, where = param.get("name", ""), f"{path}.parameters[{i}]"
        value_from = param.get("valueFrom")
        if value_from is None and "value" not in param and not allow_empty:
            problems.append(Problem(where, f"{prefix}{name}.value or {prefix}{name}.valueFrom is required"))  # 1021
        if value_from is not None:
            allowed = value_from.get("configMapKeyRef") or value_from.get("event") or "supplied" in value_from
            stray = any(value_from.get(k) for k in ("path", "jsonPath", "parameter", "expression"))
            if not allowed or stray:  # validate.go:1028, 1032
                problems.append(Problem(f"{where}.valueFrom",
                                        f"{prefix}{name}.valueFrom only allows: default, configMapKeyRef and supplied"))
        if "enum" in param:
            problems += _enum(param, prefix, where, allow_empty)
    for i, art in enumerate(args.get("artifacts") or []):
        name, where = art.get("name", ""), f"{path}.artifacts[{i}]"
        if not art.get("from") and not has_location(art):
            problems.append(Problem(where, f"{prefix}{name}.from, artifact location, or key is required"))  # 1053
        if art.get("from") and art.get("fromExpression"):
            problems.append(Problem(where, f"{prefix}{name} shouldn't have both `from` and `fromExpression` in "
                                           "Artifact"))  # validate.go:1056
    return problems


def _enum(param: dict[str, Any], prefix: str, where: str, allow_empty: bool) -> list[Problem]:
    name, enum = param.get("name", ""), param.get("enum") or []
    if not enum:
        return [Problem(f"{where}.enum", f"{prefix}{name}.enum should contain at least one value")]  # 1038
    if "value" not in param:
        return [] if allow_empty else [Problem(where, f"{prefix}{name}.value is required")]  # 1044
    if str(param["value"]) not in [str(v) for v in enum]:
        return [Problem(f"{where}.value", f"{prefix}{name}.value should be present in {prefix}{name}.enum list")]
    return []


LOCATIONS = ("s3", "git", "http", "artifactory", "hdfs", "raw", "oss", "gcs", "azure", "plugin")


def has_location(artifact: dict[str, Any]) -> bool:
    """Artifact.HasLocationOrKey (workflow_types.go): a location, or a key into the artifact repository."""
    return any(artifact.get(k) for k in LOCATIONS) or bool(artifact.get("artifactLocation"))
