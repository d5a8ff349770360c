"""The Workspace spec: Kaito's `Workspace` with a `tuning:` or an `inference:` section, parsed and validated.

Files are accepted as Kaito users write them (`kaito.sh/v1alpha1` and `v1beta1`, several YAML
documents per file). Validation reports every problem at once, each with its path, the value and
what is allowed. The package's modules: `model` (the pydantic models), `files` (reading YAML documents),
`structure` (the shape, pruned where wrong), `rules` (what a valid tuning Workspace obeys) and `inference`
(what a valid inference Workspace obeys, as Kaito's source says).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairo.cluster import ClusterConfig
from kairo.problems import InvalidInput, Problem
from kairo.spec.files import WorkspaceFile, parse_workspace_text, read_workspace_file
from kairo.spec.inference import check_inference_config
from kairo.spec.model import ANNOTATIONS, KIND, Annotation, Workspace, iter_fields
from kairo.spec.rules import Rules, check_training_config
from kairo.spec.structure import as_kubernetes_reads_it, misplaced_volume_keys, parse_structure
from kairo.training.config import TrainingConfig

__all__ = [
    "ANNOTATIONS", "KIND", "Annotation", "Checked", "Workspace", "WorkspaceFile", "check_workspace", "iter_fields",
    "load_workspace", "parse_workspace_text", "read_workspace_file",
]


@dataclass
class Checked:
    """The outcome of validating a Workspace: the typed object (when usable) and every problem."""

    workspace: Workspace | None
    problems: list[Problem]
    training_config: TrainingConfig | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_workspace(
    data: dict[str, Any],
    cluster: ClusterConfig | None = None,
    config_file: str | Path | None = None,
    others: list[dict[str, Any]] | None = None,
) -> Checked:
    """Validate a Workspace mapping: every problem, not just the first."""
    cluster = cluster or ClusterConfig()
    problems: list[Problem] = []
    data = as_kubernetes_reads_it(json.loads(json.dumps(data, default=str)))  # a private copy we may prune
    problems += misplaced_volume_keys(data)
    workspace, structural, pruned = parse_structure(data)
    problems += structural
    if workspace is None:
        return Checked(None, problems)
    rules = Rules(workspace, cluster, pruned)
    problems += rules.run()
    training_config = None
    if workspace.tuning and rules.method_ok:
        training_config, config_problems = check_training_config(workspace, config_file, others or [])
        problems += config_problems
    if workspace.is_inference:
        problems += check_inference_config(workspace, rules.inference_preset, others or [])[1]
    return Checked(workspace, problems, training_config)


def load_workspace(
    path: str | Path, cluster: ClusterConfig | None = None, config_file: str | Path | None = None
) -> tuple[Workspace, WorkspaceFile, Checked]:
    """Read and validate a workspace file; InvalidInput with every problem when it is not valid."""
    wfile = read_workspace_file(path)
    checked = check_workspace(wfile.workspace, cluster, config_file, wfile.others)
    if not checked.ok or checked.workspace is None:
        raise InvalidInput(checked.problems, wfile.source)
    return checked.workspace, wfile, checked

