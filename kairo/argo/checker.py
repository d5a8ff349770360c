"""One checker for everything kairo sends: what a cluster running any claimed Argo version would refuse.

`check(obj)` combines, for an Argo object: the strict CRD schema (v4.1.2), the CRDs' CEL rules (those of
v4.0 and v4.1; 3.x CRDs carry none), validate.go's rules and the controller's run-time ones (`validate.py`),
`{{…}}` resolution (`refs.py`), each claimed version's field table (`versions.py`), and the objects its resource
templates create (`created_objects`). For a JobSet or a Kubeflow Trainer object: its CRD's schema and CEL rules. Other kinds (ConfigMaps, PVCs) pass untouched.
`refuse(objects)` raises InvalidInput (exit 2) with every problem, before anything is printed or sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kairo.problems import InvalidInput, Problem

_TASK_LABEL = re.compile(r"\]\([^)]*\)")


def check(obj: dict[str, Any], versions: Iterable[str] | None = None) -> list[Problem]:
    """Every problem a cluster running one of `versions` (default: all kairo claims) would find in `obj`."""
    from kairo.argo import cel, schema
    from kairo.argo import versions as known

    key = schema.crd_key(obj)
    if key is None:
        return []
    claimed = tuple(versions or known.CLAIMED)
    problems = [Problem(p.path, f"{p.message} (Argo {known.CRD_VERSION}'s CRD schema)")
                if key[0] == "argoproj.io" else p for p in schema.schema_problems(obj)]
    if key[0] != "argoproj.io" or any(known.minor(v) in ("4.0", "4.1") for v in claimed):
        problems += cel.cel_problems(obj, schema.crd_schema(*key))
    if key[0] == "argoproj.io":
        from kairo.argo.refs import check_references
        from kairo.argo.validate import validate

        problems += validate(obj)
        problems += [_reference(text) for text in check_references(obj)]
        problems += _unknown_fields(obj, claimed)
        problems += _created_objects(obj, versions)
    return _unique(problems)


def created_objects(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for each resource template's manifest, as the API server would receive it.

    Argo fills `{{…}}` in at run time: each becomes a placeholder that is a valid name (`x`), and a
    `generateName` gets its five generated characters, so the CRD's schema and CEL rules judge the rest.
    """
    import yaml

    spec = obj.get("spec") or {}
    spec = spec.get("workflowSpec", spec)
    found = []
    for i, template in enumerate(spec.get("templates") or []):
        manifest = (template.get("resource") or {}).get("manifest")
        if not isinstance(manifest, str):
            continue
        try:
            made = yaml.safe_load(re.sub(r"{{.*?}}", "x", manifest))
        except yaml.YAMLError:
            continue  # validate.go's rule reports it
        if isinstance(made, dict):
            meta = made.get("metadata") or {}
            if "generateName" in meta and "name" not in meta:
                meta["name"] = f"{meta['generateName']}x7k2q"
            found.append((f"spec.templates[{i}].resource.manifest", made))
    return found


def _created_objects(obj: dict[str, Any], versions: Iterable[str] | None) -> list[Problem]:
    """The problems of the JobSets and TrainJobs a workflow's resource templates create (their CRDs')."""
    from kairo.argo import schema

    problems = []
    for where, made in created_objects(obj):
        if schema.crd_key(made) is not None:
            problems += [Problem(f"{where}: {p.path}" if p.path else where, f"{p.message} ({made.get('kind')})")
                         for p in check(made, versions)]
    return problems


def refuse(objects: list[dict[str, Any]], versions: Iterable[str] | None = None) -> None:
    """Raise InvalidInput naming the first object Argo (or the API server) would refuse, with all its problems."""
    for obj in objects:
        problems = check(obj, versions)
        if problems:
            meta = obj.get("metadata") or {}
            name = meta.get("name") or meta.get("generateName") or "(unnamed)"
            raise InvalidInput(problems, source=f"{obj.get('kind')} {name}: Argo would refuse it")


def _reference(text: str) -> Problem:
    path, _, message = text.partition(": ")
    return Problem(_TASK_LABEL.sub("]", path), message)


def _unknown_fields(obj: dict[str, Any], versions: tuple[str, ...]) -> list[Problem]:
    """One problem per field some claimed version lacks, naming every such version and where that is known from."""
    from kairo.argo.versions import field_problems, field_tables

    lacking: dict[str, list[str]] = {}
    for version in versions:
        if version in field_tables():
            for problem in field_problems(obj, version):
                lacking.setdefault(problem.path, []).append(f"{version} (per {field_tables()[version]['source']})")
    return [Problem(path, f"unknown field \"{path.rsplit('.', 1)[-1]}\": Argo {', '.join(who)} does not know it — "
                          "kairo renders only fields every claimed Argo version knows")
            for path, who in lacking.items()]


def _unique(problems: list[Problem]) -> list[Problem]:
    """Each problem once; where validate.go's rule and the reference check find the same field, Argo's words win."""
    ported = {p.path for p in problems if "missing dependency" in p.message}
    seen: set[tuple[str, str]] = set()
    kept = []
    for problem in problems:
        key = (problem.path, problem.message)
        if key in seen or (problem.path in ported and problem.message.startswith("failed to resolve")):
            continue
        seen.add(key)
        kept.append(problem)
    return kept
