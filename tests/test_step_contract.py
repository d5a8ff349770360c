"""The templates and the steps agree: every rendered `args` parses with its step's own parser, outputs match.

kairo.contract holds what both sides type; these tests hold the two sides to it, so a renamed flag or
output cannot drift between a template (pipelines/templates.py) and the program it runs (steps/).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

from kairo import contract

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "examples" / "golden").glob("*.yaml"))
TAG = re.compile(r"{{.*?}}")


def container_templates() -> list[tuple[str, dict]]:
    """(golden file: template name, template) for every container template of every golden workflow."""
    found = []
    for path in GOLDEN:
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec") or {}
            for template in spec.get("workflowSpec", spec).get("templates", []):
                if "container" in template:
                    found.append((f"{path.name}:{template['name']}", template))
    return found


def parser_of(step: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"kairo.steps.{step.replace('-', '_')}").make_parser()


def sample(parser: argparse.ArgumentParser, flag: str) -> str:
    """A value the flag accepts, standing for what Argo substitutes at run time."""
    action = next((a for a in parser._actions if flag in a.option_strings), None)
    if action is None:
        return "x"
    if action.choices:
        return str(next(iter(action.choices)))
    for candidate in ("x", "1", "true"):  # the first the flag's own type takes
        try:
            (action.type or str)(candidate)
            return candidate
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            continue
    raise AssertionError(f"no sample value for {flag}")


def substituted(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """`args` with every `{{…}}` replaced by a value its flag accepts (`--flag={{…}}` included)."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            flag, _, value = arg.partition("=")
            arg = f"{flag}={TAG.sub(sample(parser, flag), value)}" if TAG.search(value) else arg
        elif TAG.search(arg):
            arg = TAG.sub(sample(parser, out[-1]) if out and out[-1].startswith("--") else "x", arg)
        out.append(arg)
    return out


TEMPLATES = container_templates()


def test_every_golden_has_container_templates_to_check():
    # 12 step templates in each tuning workflow, and the generic template's `workspace` step besides; the
    # inference example's 8: provision, fetch-model, a pull-adapter per adapter (2), deploy, smoke, cleanup, status;
    # the generic inference template's 8: workspace, provision, fetch-model, pull-adapters, deploy, smoke, cleanup, status
    assert len(GOLDEN) == 8 and len(TEMPLATES) == 6 * 12 + 1 + 8 + 8


@pytest.mark.parametrize(("where", "template"), TEMPLATES, ids=[w for w, _ in TEMPLATES])
def test_every_templates_args_parse_with_its_steps_own_parser(where, template, capsys):
    command = template["container"]["command"]
    assert command[0] == "kairo-step", where
    parser = parser_of(command[1])
    try:
        parser.parse_args(substituted(parser, template["container"].get("args", [])))
    except SystemExit:
        pytest.fail(f"{where}: kairo-step {command[1]} refuses its template's args: {capsys.readouterr().err}")


def test_a_renamed_flag_would_be_caught():
    parser = parser_of("push")
    with pytest.raises(SystemExit):
        parser.parse_args(["--image-ref", "registry.example/a:1"])


@pytest.mark.parametrize(("where", "template"), TEMPLATES, ids=[w for w, _ in TEMPLATES])
def test_every_templates_outputs_are_the_ones_its_step_writes(where, template):
    step = template["container"]["command"][1]
    declared = [p["name"] for p in (template.get("outputs") or {}).get("parameters", [])]
    if template["name"] == "gpu-check":  # provision's --local check: a pod shaped like train, no outputs read
        assert declared == [], where
        return
    assert tuple(declared) == contract.STEP_OUTPUTS.get(step, ()), where
    for param in (template.get("outputs") or {}).get("parameters", []):
        assert param["valueFrom"]["path"] == f"{contract.OUTPUTS}/{param['name']}", where


@pytest.mark.parametrize("step", sorted(contract.STEP_OUTPUTS))
def test_every_step_writes_the_outputs_the_contract_names(step):
    module = importlib.import_module(f"kairo.steps.{step.replace('-', '_')}")
    tree = ast.parse(inspect.getsource(module))
    written = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "write_output":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant):
                written.add(first.value)
            elif isinstance(first, ast.Name):
                written.add(f"<{first.id}>")  # a loop over names: checked below
    names = set(contract.STEP_OUTPUTS[step])
    literal = {w for w in written if not w.startswith("<")}
    assert literal <= names, f"{step} writes outputs its template does not declare: {sorted(literal - names)}"
    missing = names - literal
    if missing:  # written in a loop over a tuple of names: those names must appear in the module
        source = inspect.getsource(module)
        assert all(f'"{n}"' in source for n in missing), f"{step} never writes {sorted(missing)}"
