"""Shared test setup. Fixture modules live in tests/fixtures/, each loaded here as a pytest plugin."""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
pytest_plugins = [f"tests.fixtures.{m.name}" for m in pkgutil.iter_modules([str(FIXTURES)])]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# No test may reach a hub: models and data are built here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests share two cores: OpenMP threads spinning long at barriers slow training several times over (runner.py).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def require_tool(name: str) -> str:
    """Path of a system tool a test needs; skip without it, but fail in CI where it must exist."""
    import shutil

    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("KAIRO_REQUIRE_SYSTEM_DEPS"):
        pytest.fail(f"{name} is not installed (CI must install it: see .ci/run)")
    pytest.skip(f"{name} is not installed (apt-get install docker-registry skopeo apache2-utils)")


@pytest.fixture
def examples() -> Path:
    return EXAMPLES
