"""The CRD schemas kairo's objects must fit: Argo's full CRDs made strict, and JobSet's and Kubeflow Trainer's.

Argo's full CRDs (v4.1.2, `schemas/argo-crds/`) declare no `additionalProperties: false`, so a typo passes
plain jsonschema. Made strict — refusing unknown properties wherever an object lists its properties (and is
not `x-kubernetes-preserve-unknown-fields`), and letting `x-kubernetes-int-or-string` fields take both
types — they reject a misspelt field at any depth, with its path. Each schema is loaded and made strict
once per process (render is interactive: ≈0.1 s the first time, ≈10 ms a check after).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from kairo.problems import Problem, path_of

SCHEMAS = Path(__file__).resolve().parent / "schemas"
ARGO_KINDS = ("Workflow", "WorkflowTemplate", "CronWorkflow", "ClusterWorkflowTemplate")
# Other kinds a workflow may create, each with its CRD file (the storage version's schema is used).
OTHER_CRDS = {
    ("jobset.x-k8s.io", "JobSet"): "jobset/jobset.x-k8s.io_jobsets.yaml",
    ("trainer.kubeflow.org", "TrainJob"): "kubeflow-trainer/trainer.kubeflow.org_trainjobs.yaml",
    ("trainer.kubeflow.org", "ClusterTrainingRuntime"): "kubeflow-trainer/trainer.kubeflow.org_clustertrainingruntimes.yaml",
}


def crd_key(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(group, kind) of an object whose CRD kairo carries, or None (ConfigMaps, PVCs…: Kubernetes' own kinds)."""
    group = str(obj.get("apiVersion", "")).split("/")[0]
    kind = obj.get("kind", "")
    if group == "argoproj.io" and kind in ARGO_KINDS:
        return group, kind
    return (group, kind) if (group, kind) in OTHER_CRDS else None


@cache
def crd_schema(group: str, kind: str) -> dict[str, Any]:
    """The `openAPIV3Schema` of the CRD for `kind` (as published: not strict). Cached; do not mutate."""
    if group == "argoproj.io":
        return json.loads((SCHEMAS / "argo-crds" / f"{kind}.json").read_text())
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((SCHEMAS / OTHER_CRDS[(group, kind)]).read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return version["schema"]["openAPIV3Schema"]


def make_strict(schema: Any) -> Any:
    """A copy of `schema` refusing unknown properties everywhere and taking ints or strings where Kubernetes does."""
    if isinstance(schema, dict):
        node = {key: make_strict(value) for key, value in schema.items()}
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return node
    if isinstance(schema, list):
        return [make_strict(value) for value in schema]
    return schema


@cache
def _validator(group: str, kind: str) -> Any:
    import jsonschema

    return jsonschema.Draft7Validator(make_strict(crd_schema(group, kind)))


def schema_problems(obj: dict[str, Any]) -> list[Problem]:
    """Where `obj` breaks its strict CRD schema (empty when it conforms, or when kairo carries no CRD for it)."""
    key = crd_key(obj)
    if key is None:
        return []
    errors = sorted(_validator(*key).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [Problem(path_of(tuple(e.absolute_path)), e.message) for e in errors]
