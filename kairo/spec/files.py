"""Reading workspace files: several YAML documents, exactly one Workspace, the others valid Kubernetes objects.

A file is read within bounds before anything is built from it (`kairo.yamlfile`: size, depth, alias expansion,
encoding), so that an alias bomb is refused instead of expanded by the checks after parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairo import yamlfile
from kairo.problems import InvalidInput, Problem, show
from kairo.spec.model import KIND


@dataclass
class WorkspaceFile:
    """A file's Workspace document and the Kubernetes objects beside it (PVCs, ConfigMaps…)."""

    source: str
    workspace: dict[str, Any]
    others: list[dict[str, Any]] = field(default_factory=list)

    def other(self, kind: str, name: str) -> dict[str, Any] | None:
        for doc in self.others:
            if doc.get("kind") == kind and (doc.get("metadata") or {}).get("name") == name:
                return doc
        return None


def read_workspace_file(path: str | Path) -> WorkspaceFile:
    """Read a (multi-document) YAML file and pick its one Workspace; InvalidInput otherwise."""
    source = str(path)
    try:
        text = yamlfile.read_text(path)
    except OSError as err:
        raise InvalidInput([Problem("", f"cannot read the file: {err.strerror}")], source) from err
    except yamlfile.YAMLRefused as err:
        raise InvalidInput([Problem("", str(err))], source) from err
    return parse_workspace_text(text, source)


def parse_workspace_text(text: str, source: str = "<stdin>") -> WorkspaceFile:
    try:
        docs = [d for d in yamlfile.load_all(text) if d is not None]
    except yamlfile.YAMLRefused as err:
        raise InvalidInput([Problem("", str(err))], source) from err
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            problems.append(Problem(f"document {i + 1}", f"expected a mapping (a Kubernetes object), got {show(doc)}"))
    if problems:
        raise InvalidInput(problems, source)
    workspaces = [d for d in docs if d.get("kind") == KIND]
    if len(workspaces) != 1:
        kinds = ", ".join(str(d.get("kind")) for d in docs) or "nothing"
        raise InvalidInput(
            [Problem("", f"expected exactly one document of kind Workspace, found {len(workspaces)} (documents: {kinds})")],
            source,
        )
    others = [d for d in docs if d is not workspaces[0]]
    for i, doc in enumerate(others):
        problems += _check_other_object(doc, i)
    if problems:
        raise InvalidInput(problems, source)
    return WorkspaceFile(source, workspaces[0], others)


def _check_other_object(doc: dict[str, Any], index: int) -> list[Problem]:
    """The documents beside the Workspace must be valid Kubernetes objects."""
    kind = doc.get("kind")
    where = f"{kind or 'document'} '{(doc.get('metadata') or {}).get('name', '?')}'"
    problems = []
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str):
            problems.append(Problem(where, f"{key} is missing"))
    if not isinstance((doc.get("metadata") or {}).get("name"), str):
        problems.append(Problem(where, "metadata.name is missing"))
    if problems:
        return problems
    try:
        import kubernetes_validate
    except ImportError:  # only the CLI's extra installs the schemas; steps never read such files
        return []
    try:
        kubernetes_validate.validate(doc, "1.33", strict=True)
    except kubernetes_validate.ValidationError as err:
        return [Problem(f"{where}.{'.'.join(str(p) for p in err.path)}".rstrip("."), err.message)]
    except kubernetes_validate.SchemaNotFoundError:
        return []  # custom resources: not ours to judge
    return []

