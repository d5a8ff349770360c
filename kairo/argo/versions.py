"""The Argo Workflows versions kairo claims, and whether each knows every field an object sets.

kairo renders one object for all of them (no `--argo-version`): the chart installs one WorkflowTemplate per
cluster and the Sensor submits from it, so the objects must mean the same on every claimed Argo; a field
that only newer releases know is refused here rather than left out for some.

How each version is known (the evidence, in the README and tests/test_argo_versions.py):
- 4.1 — Argo v4.1.2's full CRDs (`schemas/argo-crds/`), made strict, and their CEL rules;
- 4.0 — Hera 7.1.0's models (generated from v4.0.5's schema, which has v4.0.10's fields), and the CEL rules,
  which v4.0.10's CRDs carry unchanged from v4.1.2's;
- 3.7, 3.6 — Argo's own SDK on PyPI, argo-workflows 6.7.18 and 6.6.19 (= v3.7.18, v3.6.19); their CRDs carry
  no CEL rules. The field tables are `schemas/argo-fields.json` (`make argo-fields` rebuilds them).
Each minor is checked at its latest patch: run that patch (older patches of a minor may lack a field).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from kairo.argo.schema import SCHEMAS
from kairo.problems import Problem

CRD_VERSION = "4.1.2"  # the release of the vendored CRDs
CLAIMED = ("3.6.19", "3.7.18", "4.0.10", CRD_VERSION)


def minor(version: str) -> str:
    """`3.6.19` → `3.6`."""
    return ".".join(version.split(".")[:2])


@cache
def field_tables() -> dict[str, Any]:
    """{version: {source, roots, types}} for the versions known by field table (all but the CRDs' own)."""
    return json.loads((SCHEMAS / "argo-fields.json").read_text())


def field_problems(obj: dict[str, Any], version: str) -> list[Problem]:
    """Each field of `obj` that Argo `version` does not know (empty for kinds it has no table for)."""
    table = field_tables().get(version)
    root = (table or {}).get("roots", {}).get(obj.get("kind", ""))
    if root is None or str(obj.get("apiVersion", "")).split("/")[0] != "argoproj.io":
        return []
    problems: list[Problem] = []
    _walk(obj, root, "", table["types"], f"Argo {version} (per {table['source']})", problems)
    return problems


def _walk(value: Any, ref: str | None, path: str, types: dict[str, Any], who: str, problems: list[Problem]) -> None:
    if ref is None:
        return
    if ref[0] in "[{":
        items = enumerate(value) if ref[0] == "[" and isinstance(value, list) else \
            value.items() if ref[0] == "{" and isinstance(value, dict) else ()
        for key, item in items:
            _walk(item, ref[1:], f"{path}[{key}]" if ref[0] == "[" else f"{path}.{key}", types, who, problems)
        return
    fields = types.get(ref)
    if fields is None or not isinstance(value, dict):
        return
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            problems.append(Problem(where, f"unknown field \"{key}\": {who} does not know it"))
        else:
            _walk(item, fields[key], where, types, who, problems)
