"""checkov over the rendered chart (every scenario) and the Dockerfiles: no failed check.

checkov pins many packages, so it lives in its own virtual environment, `.venv-checkov`, which
`make test` creates. A finding that is accepted must carry its reason inline (`# checkov:skip=ID: why`
in a Dockerfile, a `checkov.io/skip1: ID=why` annotation on an object), so it shows here as skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.helm import CHART, rendered_text

ROOT = Path(__file__).resolve().parent.parent
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing: `make test` installs checkov into .venv-checkov")
        pytest.skip("checkov is not installed here: `make .venv-checkov/.installed` (or `make test`) installs it")
    return CHECKOV


def scan(checkov: Path, *args: str) -> list[dict]:
    """checkov's JSON report: one entry per framework (offline: no guideline download)."""
    proc = subprocess.run([str(checkov), *args, "--output", "json", "--quiet", "--skip-download", "--compact"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def failures(reports: list[dict]) -> list[str]:
    out = []
    for report in reports:
        for check in (report.get("results") or {}).get("failed_checks", []):
            out.append(f"{check['check_id']} {check['check_name']} — {check.get('file_path')} {check.get('resource')}")
    return out


def passed(reports: list[dict]) -> int:
    return sum((r.get("summary") or {}).get("passed", 0) for r in reports)


def test_the_rendered_chart_has_no_failed_check(checkov, tmp_path):
    for path in SCENARIOS:
        folder = tmp_path / path.stem
        folder.mkdir()
        for template, text in rendered_text(yaml.safe_load(path.read_text()) or {}).items():
            if template.endswith(".yaml") and text.strip():
                (folder / Path(template).name).write_text(text)
    reports = scan(checkov, "--directory", str(tmp_path), "--framework", "kubernetes", "argo_workflows")
    assert failures(reports) == []
    assert passed(reports) >= 50  # the scan saw the objects: an empty folder cannot pass


def test_the_dockerfiles_have_no_failed_check(checkov):
    reports = scan(checkov, "--directory", str(ROOT / "images"), "--framework", "dockerfile")
    assert failures(reports) == []
    assert passed(reports) >= 8 * 5
