"""The rooms stay apart (.importlinter): pipelines import no ML or cluster library, steps not each other."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold(tmp_path):
    # The folders are mapped into kairo.* by package-dir; import-linter scans the disk, so lay them out.
    shutil.copytree(ROOT / "kairo", tmp_path / "kairo", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("pipelines", "steps", "presets"):
        shutil.copytree(ROOT / folder, tmp_path / "kairo" / folder, ignore=shutil.ignore_patterns("__pycache__"))
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), str(ROOT / ".importlinter")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and "0 broken" in proc.stdout


def test_no_template_passes_a_parameter_through_a_shell():
    offenders = []
    for folder in ("pipelines", "kairo", "steps"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for marker in ('"sh", "-c"', '"bash", "-c"', "sh -c", "bash -c"):
                if marker in text and "{{" in text:
                    offenders.append(str(path))
    assert offenders == []


SHARED = {"__init__", "atomic", "cli", "cluster", "contract", "exitcodes", "images", "machine", "problems", "progress",
          "sizing", "step", "stepkit", "yamlfile"}


def test_the_top_of_kairo_holds_only_what_every_part_shares():
    # a module of one concept belongs in its package (docs/architecture.md); add here only what all parts share
    assert {p.stem for p in (ROOT / "kairo").glob("*.py")} == SHARED


def test_every_package_says_what_it_holds_and_who_imports_it():
    packages = [p for p in (ROOT / "kairo").iterdir() if (p / "__init__.py").is_file()]
    packages += [ROOT / f for f in ("pipelines", "steps", "presets")]
    assert len(packages) >= 13
    for package in packages:
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        assert len(doc.splitlines()) >= 2, f"{package.name}/__init__.py: say what the package holds and who uses it"
