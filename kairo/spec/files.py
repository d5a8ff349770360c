"""Reading workspace files: several YAML documents, exactly one Workspace, the others valid Kubernetes objects.

A file is read within bounds before anything is built from it: at most `MAX_FILE_BYTES`, nested at most
`MAX_DEPTH` deep, and at most `MAX_NODES` values once every alias is expanded (a 730-byte "billion laughs"
file expands to 9⁹ values, and the checks after parsing expand it). The text is UTF-8 (a byte-order mark
allowed) or UTF-16/UTF-32 with a byte-order mark, as YAML allows.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


MAX_FILE_BYTES = 8 * 1024**2
MAX_DEPTH = 100
MAX_NODES = 1_000_000
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_workspace_file(path: str | Path) -> WorkspaceFile:
    """Read a (multi-document) YAML file and pick its one Workspace; InvalidInput otherwise."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise InvalidInput([Problem("", f"cannot read the file: {err.strerror}")], source) from err
    return parse_workspace_text(decode_yaml_bytes(data, source), source)


def decode_yaml_bytes(data: bytes, source: str) -> str:
    """The text of a YAML file: UTF-8, or UTF-16/32 with a byte-order mark; InvalidInput for anything else."""
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput([Problem("", f"the file is larger than {MAX_FILE_BYTES // 1024**2} MiB — a workspace file "
                                        "is a few KiB; keep datasets and configs out of it")], source)
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InvalidInput([Problem("", f"not {encoding.upper().removesuffix('-SIG')} text: byte 0x{data[err.start]:02x} "
                                        f"at line {line} ({err.reason}) — save the file as UTF-8 (iconv -f latin1 "
                                        "-t utf-8, or your editor's \"save with encoding\")")], source) from err


def parse_workspace_text(text: str, source: str = "<stdin>") -> WorkspaceFile:
    if len(text) > MAX_FILE_BYTES:
        decode_yaml_bytes(b" " * (MAX_FILE_BYTES + 1), source)  # the same refusal as for a file
    docs = [d for d in _load_documents(text, source) if d is not None]
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


def _load_documents(text: str, source: str) -> list[Any]:
    """Every document in `text`, each measured as a node graph (aliases not expanded) before it is built."""
    loader = yaml.SafeLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _measure(node, len(docs) + 1)
            if problem:
                raise InvalidInput([problem], source)
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as err:
        raise InvalidInput([Problem("", f"not valid YAML: {err}")], source) from err
    except RecursionError as err:  # the composer recurses: nesting far deeper than MAX_DEPTH
        raise InvalidInput([Problem("", f"nested too deep (more than {MAX_DEPTH} levels)")], source) from err
    finally:
        loader.dispose()
    return docs


def _measure(root: yaml.Node, number: int) -> Problem | None:
    """Refuse a document nested deeper than MAX_DEPTH, or of more than MAX_NODES values with its aliases expanded.

    Each node is measured once (aliases share nodes), so this costs the file's size, not the expansion's.
    """
    where = f"document {number}"
    measured: dict[int, tuple[int, int]] = {}  # id(node) → (values, levels) with aliases expanded
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in measured:
            continue
        children = _children(node)
        if children_done or not children:
            open_nodes.discard(id(node))
            values = 1 + sum(measured[id(child)][0] for child in children)
            levels = 1 + max((measured[id(child)][1] for child in children), default=0)
            if values > MAX_NODES:
                return Problem(where, f"more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded "
                                      f"(line {node.start_mark.line + 1}) — refused before expanding them")
            if levels > MAX_DEPTH:
                return Problem(where, f"nested deeper than {MAX_DEPTH} levels (line {node.start_mark.line + 1})")
            measured[id(node)] = (values, levels)
            continue
        if id(node) in open_nodes:
            return Problem(where, f"a YAML alias refers to a value that holds it (line {node.start_mark.line + 1}) — "
                                  "a loop no Kubernetes object can be")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in measured)
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


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

