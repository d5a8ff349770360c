"""Step images: one Dockerfile per image in kairo.images, each consistent with it, hadolint-clean."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kairo import __version__
from kairo.images import (
    IMAGE_UID,
    IMAGES,
    IMAGES_DIR,
    Build,
    build_command,
    image_for_step,
    image_ref,
    labels_for,
    main,
    prune,
    step_imports,
)
from kairo.step import step_names

ROOT = Path(__file__).resolve().parent.parent
STEPS_DOC = ROOT / "docs" / "steps.md"
# Every step the contract names, in docs/steps.md: "### NAME (image kairo-IMAGE)".
DOCUMENTED = dict(re.findall(r"^### ([a-z-]+) \(image (kairo-[a-z-]+)\)", STEPS_DOC.read_text(), re.M))
OCI_LABELS = ("title", "description", "version", "source", "licenses")


def instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


@pytest.fixture(params=IMAGES, ids=lambda i: i.name)
def image(request):
    return request.param


def test_every_image_has_its_dockerfile_and_no_dockerfile_is_left_over():
    assert sorted(p.name for p in IMAGES_DIR.glob("*.Dockerfile")) == sorted(i.dockerfile.name for i in IMAGES)
    assert len(IMAGES) == 8


def test_the_entrypoint_is_the_images_own_step(image):
    entrypoint = [v for k, v in final_stage(image.dockerfile) if k == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [["kairo-step", image.entrypoint]]
    assert image.entrypoint in image.steps


def test_the_image_installs_only_its_extra(image):
    installs = [v for k, v in instructions(image.dockerfile) if k == "RUN" and "/src[" in v]
    assert len(installs) == 1
    assert re.findall(r"/src\[([a-z0-9,]+)\]", installs[0]) == [image.extra]


def global_args(path: Path) -> dict[str, str]:
    """The ARGs before the first FROM with their defaults: what FROM lines may name."""
    found: dict[str, str] = {}
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            found[name] = default
    return found


def test_base_images_are_pinned_by_digest_and_gpu_images_start_from_cuda(image):
    args = global_args(image.dockerfile)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], v.split()[0])
             for k, v in instructions(image.dockerfile) if k == "FROM"]
    external = [b for b in bases if "/" in b or ":" in b]
    assert external, "no base image"
    for base in external:
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), f"{base} is not pinned by tag and digest"
    assert external[0].startswith("nvidia/cuda:") == image.gpu


@pytest.mark.parametrize("image", [i for i in IMAGES if i.extra in ("train", "serve")], ids=lambda i: i.name)
def test_images_with_torch_pin_it(image):
    text = image.dockerfile.read_text()
    assert re.search(r"ARG TORCH_VERSION=\d+\.\d+\.\d+\n", text)
    assert '"torch==${TORCH_VERSION}"' in text


def test_the_image_runs_as_a_numeric_non_root_user(image):
    users = [v for k, v in final_stage(image.dockerfile) if k == "USER"]
    assert len(users) == 1
    uid = users[0].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000


def test_every_image_runs_as_the_one_uid_the_pods_run_as(image):
    from kairo.pipelines.pods import POD_SECURITY

    users = [v for k, v in final_stage(image.dockerfile) if k == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    assert f"--uid {IMAGE_UID} --gid {IMAGE_UID}" in image.dockerfile.read_text()
    assert POD_SECURITY.run_as_user == POD_SECURITY.run_as_group == POD_SECURITY.fs_group == IMAGE_UID


def test_every_dockerfile_builds_on_a_base_given_as_a_build_argument(image):
    """The pinned base is only BASE_IMAGE's default: `make images-local` builds on a Debian base of its own."""
    assert global_args(image.dockerfile)["BASE_IMAGE"]
    assert [v for k, v in instructions(image.dockerfile) if k == "FROM"][0] == "${BASE_IMAGE} AS base"
    text = image.dockerfile.read_text()
    assert "download.pytorch.org" not in text or 'ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu' in text
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT"):
        assert f"ARG {arg}\n" in text, arg  # no default: unset unless a build gives it


def test_the_image_carries_oci_labels_naming_it(image):
    labels = " ".join(v for k, v in final_stage(image.dockerfile) if k == "LABEL")
    for key in OCI_LABELS:
        assert f"org.opencontainers.image.{key}=" in labels
    for key, value in labels_for(image).items():
        assert f'{key}="{value}"' in labels, key


def test_no_secret_is_baked_into_an_image(image):
    text = image.dockerfile.read_text()
    for k, v in instructions(image.dockerfile):
        if k in ("ENV", "ARG"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)", v, re.I), v
        if k in ("COPY", "ADD"):
            assert not re.search(r"(\.docker|\.netrc|\.env\b|id_rsa|\.pem|kubeconfig)", v, re.I), v
    assert "--secret" not in text or "mount=type=secret" in text


def test_hadolint_passes(image):
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        hadolint = Path(shutil.which("hadolint") or "hadolint")
    proc = subprocess.run([str(hadolint), "--no-color", str(image.dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_documented_step_runs_in_the_image_the_contract_names():
    assert len(DOCUMENTED) >= 12, DOCUMENTED  # an empty parse cannot pass
    for step, image_name in DOCUMENTED.items():
        assert image_for_step(step).name == image_name, step
    assert {s for i in IMAGES for s in i.steps} == set(DOCUMENTED)


@pytest.mark.parametrize("step", sorted({s for i in IMAGES for s in i.steps}))
def test_every_image_step_is_a_real_kairo_step(step):
    module = ROOT / "steps" / f"{step.replace('-', '_')}.py"
    if not module.exists():
        pytest.skip(f"steps/{module.name} is not written yet")
    assert step in step_names()


def test_image_ref_names_the_repository_image_and_version():
    assert image_ref("evaluate") == f"ghcr.io/kairo-project/kairo-train:{__version__}"
    with pytest.raises(KeyError, match="no image runs step 'nope'"):
        image_for_step("nope")


def test_build_tags_every_image_with_the_version_and_passes_no_shell():
    train = image_for_step("train")
    command = build_command(train, "registry.example/kairo/", "1.2.3", push=False, platform="linux/amd64")
    assert command[:3] == ["docker", "buildx", "build"]
    assert command[command.index("--tag") + 1] == "registry.example/kairo/kairo-train:1.2.3"
    assert command[command.index("--file") + 1] == str(train.dockerfile)
    assert "VERSION=1.2.3" in command and "--load" in command and command[-1] == str(ROOT)


def test_podman_builds_take_the_base_the_build_arguments_and_the_build_time_mounts():
    build = Build("podman", "localhost/kairo", "1.2.3", base="localhost/kairo-base:bookworm-x", network="host",
                  build_args={"PIP_FIND_LINKS": "/opt/wheels"}, volumes=["/opt/wheels:/opt/wheels:ro"])
    command = build.command(image_for_step("download"))
    assert command[:2] == ["podman", "build"] and "--load" not in command and command[-1] == str(ROOT)
    pairs = list(zip(command, command[1:], strict=False))
    for pair in (("--build-arg", "BASE_IMAGE=localhost/kairo-base:bookworm-x"), ("--network", "host"),
                 ("--build-arg", "PIP_FIND_LINKS=/opt/wheels"), ("--volume", "/opt/wheels:/opt/wheels:ro"),
                 ("--tag", "localhost/kairo/kairo-download:1.2.3"), ("--format", "docker")):
        assert pair in pairs, pair


def test_push_names_the_registry_the_images_go_to(capsys):
    assert main(["build", "--dry-run", "--push", "registry.example:5000/team", "--only", "push"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--tag registry.example:5000/team/kairo-push:" in line and line.endswith(f"--push {ROOT}")


@pytest.mark.parametrize("step", ["deploy", "download", "fetch-model", "train"])
def test_the_import_check_follows_lazy_imports_and_skips_optional_ones(step):
    ours, outside = step_imports([step])
    tops = {module.partition(".")[0] for module, _ in outside}
    assert f"kairo.steps.{step.replace('-', '_')}" in ours and "kairo.step" in ours
    assert "torch" not in tops or step == "train"  # kairo.machine probes torch: optional there
    expected = {"deploy": {"kubernetes", "oras"}, "download": {"pyarrow", "oras"},
                "fetch-model": {"huggingface_hub", "tokenizers", "numpy", "safetensors"},
                "train": {"torch", "peft"}}[step]
    assert expected <= tops, tops
    if step == "fetch-model":  # the tiny model is built without them (kairo.training.tinyfiles)
        assert not tops & {"torch", "transformers"}, tops


def test_build_without_an_engine_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, no podman
    assert main(["build"]) == 1
    err = capsys.readouterr().err
    assert "cannot build images here: the docker command is not installed; the podman command is not installed" in err


def test_dry_run_prints_one_buildx_command_per_image(capsys):
    assert main(["build", "--dry-run", "--tag", "9.9.9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(IMAGES)
    assert all(line.startswith("docker buildx build") and ":9.9.9 " in line for line in lines)


def test_list_names_every_image(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"/{i.name}:{__version__}" in out for i in IMAGES)


def test_every_image_prunes_its_environment_after_pip_check(image):
    text = image.dockerfile.read_text()
    assert text.index("-m pip check") < text.index("/opt/kairo/bin/python -m kairo.images prune /opt/kairo")


def test_prune_removes_what_no_step_uses_and_keeps_what_pyarrow_loads(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    kept = ["pyarrow/__init__.py", "pyarrow/fs.py", "pyarrow/lib.cpython-311-x86_64-linux-gnu.so",
            "pyarrow/_fs.cpython-311-x86_64-linux-gnu.so", "pyarrow/libarrow.so.2600", "pyarrow/libarrow_python.so.2600",
            "pyarrow/libarrow_substrait.so.2600", "pyarrow/libarrow_python_parquet_encryption.so.2600",
            "kubernetes/__init__.py", "kubernetes/client/api_client.py"]
    gone = ["kubernetes/aio/__init__.py", "kubernetes/aio/client/api_client.py", "pyarrow/include/arrow/api.h",
            "pyarrow/tests/test_array.py", "pyarrow/lib.pyx", "pyarrow/includes/libarrow.pxd",
            "pyarrow/_flight.cpython-311-x86_64-linux-gnu.so", "pyarrow/flight.py",
            "pyarrow/__pycache__/flight.cpython-311.pyc", "pyarrow/libarrow_flight.so.2600",
            "pyarrow/libarrow_python_flight.so.2600.1.0", "pyarrow/_s3fs.cpython-311-x86_64-linux-gnu.so",
            "pyarrow/libarrow_s3.so.2600", "pyarrow/libarrow_python.so", "pyarrow/libarrow_python.so.2600.1.0",
            "pyarrow/_pyarrow_cpp_tests.cpython-311-x86_64-linux-gnu.so"]
    for name in kept + gone:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x" * 10)
    assert prune(tmp_path / "venv") == 10 * len(gone)
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()) == sorted(kept)
    assert prune(tmp_path / "venv") == 0  # again: nothing left to remove
