"""Every step image built with a real engine and run as a pod runs it: uid 10001, read-only root, no network.

The images are built once per test session (`python -m kairo.images build --local`: Podman on a Debian base
bootstrapped with mmdebstrap, this machine's wheels, torch's CPU build); the engine's layer cache makes a
second session cheap. Each image is then run as a container: its entrypoint's `--help`, every step it is
meant to run (`kairo.images`) imported down to its lazy imports, its user, labels, torch and size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kairo import __version__
from kairo.images import IMAGE_UID, IMAGES, image_size, labels_for, podman, podman_problem

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

REPOSITORY = "localhost/kairo"  # what `make images-local` tags; `kairo run --containers` runs these
# Size budgets (MB, as `podman image inspect` reports them) on the Debian base (176 MB of it): the light
# images hold kairo and their extra only; train, serve and fetch-model carry torch's CPU build (≈ 700 MB
# installed; the CUDA wheel and its nvidia-* wheels add ≈ 4 GB, on a CUDA base of ≈ 3 GB).
BUDGET_MB = {"kairo-provision": 330, "kairo-download": 400, "kairo-push": 260, "kairo-smoke": 260,
             "kairo-deploy": 330, "kairo-fetch-model": 1400, "kairo-train": 1900, "kairo-serve": 1700}
TORCH_EXTRAS = ("train", "serve")  # the extras that pull torch: every other image must not hold it
# How a pod runs each step (pipelines/pods.py): its uid, a read-only root, /tmp an emptyDir and HOME in it.
POD = ["--user", f"{IMAGE_UID}:{IMAGE_UID}", "--read-only", "--tmpfs", "/tmp:rw,mode=1777", "--env", "HOME=/tmp"]


def _require_podman() -> None:
    problem = podman_problem()
    if problem is None:
        return
    if os.environ.get("KAIRO_REQUIRE_SYSTEM_DEPS"):
        pytest.fail(f"podman cannot run here: {problem} (CI must install podman, buildah, runc: see .ci/run)")
    pytest.skip(f"podman cannot run here ({problem}): apt-get install podman buildah runc mmdebstrap uidmap")


@pytest.fixture(scope="session")
def built() -> dict[str, dict]:
    """Build every image once (layers cached by the engine); name -> `podman image inspect` of it."""
    _require_podman()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kairo.images", "build", "--local", "--repository", REPOSITORY],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"make images-local failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    print(f"\nbuilt {len(IMAGES)} images in {time.monotonic() - started:.0f} s:\n{proc.stdout}")
    found = {}
    for image in IMAGES:
        inspected = json.loads(podman("image", "inspect", ref(image.name)).stdout)
        found[image.name] = inspected[0]
    return found


def ref(name: str) -> str:
    return f"{REPOSITORY}/{name}:{__version__}"


def run(name: str, *argv: str, entrypoint: str | None = None, network: str = "none") -> subprocess.CompletedProcess:
    """Run the image as a pod runs a step: `argv` after the entrypoint (or `entrypoint` instead of it)."""
    options = [*POD, "--network", network]
    if entrypoint is not None:
        options += ["--entrypoint", entrypoint]
    return podman("run", "--rm", *options, ref(name), *argv, check=False)


@pytest.fixture(params=IMAGES, ids=lambda i: i.name)
def image(request, built):
    return request.param


def test_the_entrypoint_starts_as_the_pods_uid_on_a_read_only_root_without_network(image):
    proc = run(image.name, "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage:" in proc.stdout


def test_every_step_the_image_runs_starts_there(image):
    for step in image.steps:
        proc = run(image.name, step, "--help", entrypoint="kairo-step")
        assert proc.returncode == 0, f"kairo-step {step} --help in {image.name}:\n{proc.stdout}{proc.stderr}"


def test_every_module_the_images_steps_reach_imports_there(image):
    """Lazy imports included: an extra that misses a module one of the steps imports fails here."""
    proc = run(image.name, "-m", "kairo.images", "check", *image.steps, entrypoint="python")
    assert proc.returncode == 0, f"{image.name} (extra {image.extra}) lacks what its steps import:\n{proc.stderr}"
    assert "every import works" in proc.stdout


def test_the_image_runs_as_the_kairo_user_not_root(image, built):
    assert built[image.name]["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    proc = podman("run", "--rm", "--read-only", "--network", "none", "--entrypoint", "id", ref(image.name), check=False)
    assert proc.stdout.split()[:2] == [f"uid={IMAGE_UID}(kairo)", f"gid={IMAGE_UID}(kairo)"], proc.stdout


def test_the_labels_match_kairo_images(image, built):
    labels = built[image.name]["Config"]["Labels"]
    for key, value in labels_for(image).items():
        assert labels.get(key) == value, key
    assert labels["org.opencontainers.image.version"] == __version__


def test_torch_only_in_the_images_whose_extra_pulls_it(image):
    proc = run(image.name, "-c", "import importlib.util as u; print(u.find_spec('torch') is not None)",
               entrypoint="python")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(image.extra in TORCH_EXTRAS), image.name


def test_the_image_stays_within_its_size_budget(image):
    size = image_size("podman", ref(image.name))
    assert size is not None
    print(f"{image.name}: {size / 1e6:.0f} MB (budget {BUDGET_MB[image.name]} MB)")
    assert size / 1e6 <= BUDGET_MB[image.name], f"{image.name} weighs {size / 1e6:.0f} MB"
