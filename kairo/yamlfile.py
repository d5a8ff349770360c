"""YAML read within bounds, for every file a person hands kairo: Workspaces, training configs, the ConfigMaps in them.

Before anything is built from a document it is measured as PyYAML's node graph, where an alias is one shared
node: at most `MAX_NODES` values once every alias is expanded (a 730-byte "billion laughs" file expands to 9⁹,
and whatever walks the result — json.dumps, pydantic, rendering — expands it), nested at most `MAX_DEPTH` deep,
no alias loops; files at most `MAX_FILE_BYTES`. Text is UTF-8 (a byte-order mark allowed) or UTF-16/UTF-32 with
a byte-order mark, as YAML allows. A key given twice in one mapping is refused with both lines (PyYAML would keep
the last silently), and a Helm template (`{{ .Release.Namespace }}`) is named as one, to be rendered first.
Every refusal is a `YAMLRefused` whose message says what and where.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import Any

import yaml

MAX_FILE_BYTES = 8 * 1024**2
MAX_DEPTH = 100
MAX_NODES = 1_000_000
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class YAMLRefused(ValueError):
    """A YAML text refused before it was built: too large, too deep, an alias bomb or loop, not YAML, not text."""


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a YAML file, read no further than the size limit; OSError when it cannot be read."""
    with open(path, "rb") as handle:
        return decode(handle.read(MAX_FILE_BYTES + 1))


def decode(data: bytes) -> str:
    """The text of a YAML file: UTF-8, or UTF-16/32 with a byte-order mark; YAMLRefused for anything else."""
    if len(data) > MAX_FILE_BYTES:
        raise YAMLRefused(f"the file is larger than {MAX_FILE_BYTES // 1024**2} MiB — a workspace file is a few KiB; "
                          "keep datasets and configs out of it")
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise YAMLRefused(f"not {encoding.upper().removesuffix('-SIG')} text: byte 0x{data[err.start]:02x} at line "
                          f"{line} ({err.reason}) — save the file as UTF-8 (iconv -f latin1 -t utf-8, or your "
                          "editor's \"save with encoding\")") from err


def load_all(text: str) -> list[Any]:
    """Every document in `text` (None for an empty one), each measured before it is built; YAMLRefused otherwise."""
    if len(text) > MAX_FILE_BYTES:
        decode(b" " * (MAX_FILE_BYTES + 1))  # the same refusal as for a file
    loader = yaml.SafeLoader(text)
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            problem = _measure(node) or _duplicate_key(node)
            if problem:
                where = f"document {len(docs) + 1}: " if len(docs) or loader.check_node() else ""
                raise YAMLRefused(where + problem)
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as err:
        raise YAMLRefused(_helm_template(text) or f"not valid YAML: {err}") from err
    except RecursionError as err:  # the composer recurses: nesting far deeper than MAX_DEPTH
        raise YAMLRefused(f"nested too deep (more than {MAX_DEPTH} levels)") from err
    finally:
        loader.dispose()
    return docs


def _helm_template(text: str) -> str | None:
    """Why a text that failed as YAML did: it is a Helm (Go) template, `{{ .Release.Namespace }}` and all."""
    found = re.search(r"{{-?\s*[.$A-Za-z(]", text)
    if found is None:
        return None
    line = text.count("\n", 0, found.start()) + 1
    snippet = text[found.start():].split("\n", 1)[0][:60]
    return (f"this is a Helm template, not YAML yet ({snippet} at line {line}) — render it first (helm template "
            "RELEASE CHART --show-only templates/FILE > file.yaml) and pass the rendered file")


def _duplicate_key(root: yaml.Node) -> str | None:
    """A key given twice in one mapping (each node visited once: aliases share nodes)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in lines:
                        return (f"the key '{key.value}' is given twice in one mapping, at lines {lines[key.value]} "
                                f"and {line} — YAML would keep only the second; keep the one you mean")
                    lines[key.value] = line
        stack.extend(_children(node))
    return None


def load(text: str) -> Any:
    """The one document in `text` (None when empty), measured before it is built; YAMLRefused otherwise."""
    docs = load_all(text)
    if len(docs) > 1:
        raise YAMLRefused(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def _measure(root: yaml.Node) -> str | None:
    """Refuse a document nested deeper than MAX_DEPTH, or of more than MAX_NODES values with its aliases expanded.

    Each node is measured once (aliases share nodes), so this costs the file's size, not the expansion's.
    """
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
                return (f"more than {MAX_NODES:,} values once its YAML aliases (*name) are expanded "
                                      f"(line {node.start_mark.line + 1}) — refused before expanding them")
            if levels > MAX_DEPTH:
                return (f"nested deeper than {MAX_DEPTH} levels (line {node.start_mark.line + 1})")
            measured[id(node)] = (values, levels)
            continue
        if id(node) in open_nodes:
            return (f"a YAML alias refers to a value that holds it (line {node.start_mark.line + 1}) — "
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
