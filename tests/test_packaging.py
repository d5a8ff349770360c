"""One distribution, every import name under kairo., and the wheel really holds every subpackage."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ["kairo", "kairo.commands", "kairo.clients", "kairo.local", "kairo.pipelines", "kairo.steps", "kairo.presets",
               "kairo.serving"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_subpackage_imports(name):
    importlib.import_module(name)


def test_generic_top_level_names_do_not_leak():
    for name in ("steps", "pipelines", "presets"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd="/", capture_output=True)
        assert proc.returncode != 0, name


def test_the_wheel_holds_every_subpackage_and_data_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("kairo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for package in SUBPACKAGES:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    for data in ("kairo/presets/models/phi-4.yaml", "kairo/presets/instance_types.yaml",
                 "kairo/presets/training/qlora-params-template.yaml", "kairo/schemas/volume-source.json",
                 "kairo/schemas/hf_fields.json"):
        assert data in names, data
    # every module in the source tree made it into the wheel
    for folder, package in (("steps", "kairo/steps"), ("pipelines", "kairo/pipelines"), ("kairo", "kairo")):
        for source in (ROOT / folder).glob("*.py"):
            assert f"{package}/{source.name}" in names, source
