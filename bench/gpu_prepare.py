"""Gather what bench/gpu_train.py needs on the H200 and the machine lacks, as wheels in `.whl/` (git-ignored),
for the device tool's `carry: [".whl"]`; bench/gpu_run.sh installs them there. Run by `make bench-gpu-prepare`.

The H200's image has Python 3.12, torch 2.11 (CUDA 13), transformers 5.17, peft, accelerate, triton,
safetensors, pyarrow (/work/.library/device/KINDS.md lists it all, as DEVICE_HAS below). Carried:

- what it lacks: bitsandbytes, trl, datasets (+ dill, multiprocess), Liger Kernel, and kairo's own small
  dependencies (pydantic, jsonschema, fastapi, uvicorn, opentelemetry-api …), and kairo itself, built from
  this tree (gpu_train.py refuses to run when the installed kairo differs from the tree it was sent with);
- the versions kairo is tested with where the machine's are older or unknown: transformers (5.17 there has no
  `TrainingArguments.activation_checkpointing`, which the train step passes), peft, accelerate, fsspec.

Versions are this virtual environment's (what the tests ran against), for CPython 3.12 on manylinux x86-64.
bitsandbytes' wheel is slimmed to its CUDA 13 and CPU libraries (43 MB → about 6 MB): the tree and the carried
paths must stay under the device tool's 64 MiB. Every carried wheel's requirements are checked to be carried
or on the machine, so that nothing is found missing there.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
LIMIT = 64 * 1024 * 1024
LIGER = "0.8.5"  # not a kairo dependency, so not in the venv: the release this bench was written against

CARRY = (
    "bitsandbytes", "trl", "datasets", "dill", "multiprocess", "liger-kernel",
    "transformers", "peft", "accelerate", "fsspec",
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
    "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
    "fastapi", "starlette", "uvicorn", "opentelemetry-api",
)
# The H200 image's packages, read on such a machine on 2026-11-17 (/work/.library/device/KINDS.md).
DEVICE_HAS = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
BNB_KEEP = re.compile(r"bitsandbytes/libbitsandbytes_(cpu|cuda13\d)\.so$")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def version_of(name: str) -> str:
    return LIGER if name == "liger-kernel" else metadata.version(name)


def download(pins: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", "-d", str(WHEELS), *(f"--platform={p}" for p in PLATFORMS), *pins]
    subprocess.run(command, check=True)  # noqa: S603 — pip, fixed arguments


def slim_bitsandbytes() -> None:
    """Rewrite bitsandbytes' wheel with only its CUDA 13 and CPU libraries (and its RECORD to match)."""
    (wheel,) = WHEELS.glob("bitsandbytes-*.whl")
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        dropped = {n for n in source.namelist() if n.endswith(".so") and not BNB_KEEP.search(n)}
        for item in source.infolist():
            if item.filename in dropped:
                continue
            data = source.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if line.split(",")[0] not in dropped) + "\n").encode()
            target.writestr(item, data)
    slim.replace(wheel)


def build_kairo() -> None:
    """kairo's own wheel, from this tree as it is now (uncommitted changes included)."""
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(WHEELS),
               str(ROOT)]
    built = subprocess.run(command, capture_output=True, text=True)  # noqa: S603 — pip, fixed arguments
    if built.returncode:
        raise SystemExit(f"building kairo's wheel failed:\n{built.stdout[-2000:]}{built.stderr[-3000:]}")


def write_build_record(wheels: list[Path]) -> None:
    """.whl/BUILD.json: the commit and the wheels, so the GPU run's JSON says what it ran."""
    import json
    from datetime import UTC, datetime

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: S603

    record = {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain")),
              "built": datetime.now(UTC).isoformat(timespec="seconds"), "wheels": [w.name for w in wheels]}
    (WHEELS / "BUILD.json").write_text(json.dumps(record, indent=2) + "\n")


def requirements(wheel: Path) -> set[str]:
    """The distributions a wheel requires on CPython 3.12, Linux (extras left out)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(name).decode().splitlines()
    needed = set()
    environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "extra": ""}
    for line in lines:
        if line.startswith("Requires-Dist:"):
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is None or requirement.marker.evaluate(environment):
                needed.add(normal(requirement.name))
    return needed


def tree_bytes() -> int:
    """What the device tool sends besides the carried paths: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / p).stat().st_size for p in listed if p and (ROOT / p).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    shutil.rmtree(WHEELS, ignore_errors=True)  # one version of each: two would stop the install there
    WHEELS.mkdir()
    download([f"{name}=={version_of(name)}" for name in CARRY])
    slim_bitsandbytes()
    build_kairo()
    wheels = sorted(WHEELS.glob("*.whl"))
    write_build_record(wheels)
    carried = {normal(w.name.split("-")[0]) for w in wheels}
    missing = {f"{need} (for {w.name.split('-')[0]})" for w in wheels for need in requirements(w)
               if need not in carried and need not in DEVICE_HAS}
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 1e6:7.2f} MB  {wheel.name}")
    carried_bytes, tree = sum(w.stat().st_size for w in wheels), tree_bytes()
    print(f"  {carried_bytes / 2**20:.1f} MiB in .whl/ + {tree / 2**20:.1f} MiB of tree = "
          f"{(carried_bytes + tree) / 2**20:.1f} MiB of the device tool's 64 MiB")
    if missing:
        print(f"not carried and not on the H200: {', '.join(sorted(missing))} — add them to CARRY", file=sys.stderr)
        return 1
    if carried_bytes + tree > LIMIT:
        print("over the device tool's 64 MiB: carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
