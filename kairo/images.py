"""The one place that names kairo's step images: pipelines, the chart and `make images` read it.

Each image installs only its step's extra. Steps that are close relatives share an image (evaluate
runs in the train image, pull-adapter in the push image); every template still names its step in
`command`, so an image's ENTRYPOINT is only the default.

`python -m kairo.images list` prints them; `python -m kairo.images build` builds them all with Docker buildx
where a Docker engine answers and Podman otherwise, tagged with the package version (what `make images`
runs); `build --local` first bootstraps a Debian base with mmdebstrap and builds on it from this machine's
wheels (`make images-local`: no registry needed). `python -m kairo.images check STEP…` runs inside an image:
it imports every module the steps can reach, lazy imports included, so an extra that misses one fails there;
`prune VENV` runs in each image's build: it removes what no step can use (PRUNED says what and why).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kairo import __version__, contract
from kairo.cluster import ClusterConfig

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
IMAGE_UID = contract.IMAGE_UID  # the `kairo` user every image creates (`USER 10001:10001`); pods run as it too


@dataclass(frozen=True)
class StepImage:
    name: str  # image name under the repository, e.g. kairo-train
    extra: str  # the pip extra it installs
    entrypoint: str  # the kairo-step it runs by default
    gpu: bool  # built on a CUDA runtime base
    steps: tuple[str, ...]  # every kairo-step this image runs

    @property
    def dockerfile(self) -> Path:
        """images/NAME.Dockerfile, NAME without the `kairo-` prefix."""
        return IMAGES_DIR / f"{self.name.removeprefix('kairo-')}.Dockerfile"


IMAGES: tuple[StepImage, ...] = (
    StepImage("kairo-provision", "azure", "provision", False, ("provision", "cleanup")),
    StepImage("kairo-download", "data", "download", False, ("download",)),
    StepImage("kairo-fetch-model", "fetch", "fetch-model", False, ("fetch-model",)),
    StepImage("kairo-train", "train", "train", True, ("train", "evaluate")),
    StepImage("kairo-push", "oci", "push", False, ("push", "pull-adapter")),
    StepImage("kairo-deploy", "k8s", "deploy", False, ("deploy", "deployed", "workspace", "workspace-status")),
    StepImage("kairo-serve", "serve", "serve", True, ("serve",)),
    StepImage("kairo-smoke", "oci", "smoke", False, ("smoke",)),
)


def image_for_step(step: str) -> StepImage:
    """The image that runs `step`."""
    for image in IMAGES:
        if step in image.steps:
            return image
    raise KeyError(f"no image runs step '{step}'")


def image_ref(step: str, cluster: ClusterConfig | None = None) -> str:
    """Full reference of the image running `step`: repository from the cluster config, tag = version."""
    cluster = cluster or ClusterConfig()
    tag = cluster.images.tag or __version__
    return f"{cluster.images.repository.rstrip('/')}/{image_for_step(step).name}:{tag}"


# -- what an image must hold: `python -m kairo.images check STEP…` -------------------------------------


def _guarded(tree: ast.AST) -> set[int]:
    """Import nodes that may fail by design: under `try: … except ImportError` or `if TYPE_CHECKING:`."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body: list[ast.stmt] = []
        if isinstance(node, ast.Try):
            caught = [h.type for h in node.handlers]
            names = {n.id for c in caught if c is not None for n in ast.walk(c) if isinstance(n, ast.Name)}
            if names & {"ImportError", "ModuleNotFoundError"}:
                body = node.body
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body = node.body
        found.update(id(n) for stmt in body for n in ast.walk(stmt))
    return found


def _probed(tree: ast.AST) -> set[str]:
    """Modules a file asks about before importing them (`importlib.util.find_spec("torch")`): optional there."""
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("find_spec") and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}


def _imports(module: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each import in a file, lazy ones inside functions included; name None for `import M`."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _guarded(tree)
    optional = _probed(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found += [(base, alias.name) for alias in node.names if alias.name != "*"]
    return [(m, a) for m, a in found if m.partition(".")[0] not in optional]


def step_imports(steps: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The kairo modules `kairo-step STEP` can reach, and every outside import they hold (lazy ones too).

    Imports guarded by `except ImportError` (optional accelerations), TYPE_CHECKING blocks and modules the
    file probes with `find_spec` first (kairo.machine's torch) are left out.
    """
    todo = [f"kairo.steps.{step.replace('-', '_')}" for step in steps] + ["kairo.step"]
    ours: list[str] = []
    outside: set[tuple[str, str | None]] = set()
    while todo:
        name = todo.pop()
        if name in ours:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise ModuleNotFoundError(f"kairo module {name} is not installed")
        ours.append(name)
        for module, attr in _imports(name, Path(spec.origin)):
            top = module.partition(".")[0]
            if top == "kairo":
                todo.append(module)
                if attr and importlib.util.find_spec(module) is not None and _is_submodule(module, attr):
                    todo.append(f"{module}.{attr}")
            elif top not in sys.stdlib_module_names and top != "__future__":
                outside.add((module, attr))
    return sorted(ours), sorted(outside, key=lambda x: (x[0], x[1] or ""))


def _is_submodule(package: str, name: str) -> bool:
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec else None
    return bool(locations) and any((Path(p) / f"{name}.py").exists() or (Path(p) / name).is_dir() for p in locations)


def check_steps(steps: list[str]) -> list[str]:
    """Import everything `step_imports` names, here; the problems found (empty when every import works)."""
    problems: list[str] = []
    ours, outside = step_imports(steps)
    for name in ours:
        try:
            importlib.import_module(name)
        except Exception as err:  # any failure to import is what the check reports
            problems.append(f"{name}: {type(err).__name__}: {err}")
    for module, attr in outside:
        try:
            loaded = importlib.import_module(module)
            if attr is not None and not hasattr(loaded, attr):
                importlib.import_module(f"{module}.{attr}")
        except Exception as err:
            what = f"from {module} import {attr}" if attr else f"import {module}"
            problems.append(f"{what}: {type(err).__name__}: {err}")
    return problems


# -- what no step can use, removed from an image: `python -m kairo.images prune VENV` ------------------------

# (globs under site-packages, why). Every Dockerfile's build stage runs the prune after `pip check`; a pattern
# that matches nothing in an image is skipped. The container tests then import all that each step can reach
# (`check`) and read a dataset of every format in the download image: a removal too many fails there.
PRUNED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("kubernetes/aio",),
     "kubernetes' asyncio client (68 MB of its 126): kairo's clients use the synchronous one, and nothing "
     "outside kubernetes/aio imports it"),
    (("pyarrow/include", "pyarrow/src", "pyarrow/**/*.pyx", "pyarrow/**/*.pxd", "pyarrow/**/*.pxi"),
     "C++ headers and Cython sources, for building extensions against pyarrow, not for running it (8 MB)"),
    (("pyarrow/tests", "pyarrow/_pyarrow_cpp_tests.*"), "pyarrow's own test suite (7 MB)"),
    (("pyarrow/_flight.*", "pyarrow/flight.py", "pyarrow/__pycache__/flight.*", "pyarrow/libarrow_flight.so*",
      "pyarrow/libarrow_python_flight.so*"),
     "Arrow Flight, an RPC protocol no step speaks (40 MB); only `import pyarrow.flight` loads it"),
    (("pyarrow/_s3fs.*", "pyarrow/libarrow_s3.so*"),
     "pyarrow's S3 filesystem (17 MB): datasets come over http(s), from images or volumes; pyarrow.fs "
     "imports it only where it is installed"),
    (("pyarrow/libarrow_python*.so", "pyarrow/libarrow_python*.so.*.*.*"),
     "copies of libarrow_python under the names a C++ build links with; every module loads the soname "
     "copy (libarrow_python.so.2600), which stays (5 MB)"),
)


def prune(venv: Path) -> int:
    """Remove what PRUNED names from the virtual environment `venv`; the bytes removed."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    removed = 0
    for patterns, _why in PRUNED:
        for pattern in patterns:
            for path in sorted(site.glob(pattern)):
                if not path.exists():  # under a folder removed by an earlier pattern
                    continue
                if path.is_dir() and not path.is_symlink():
                    removed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
                    shutil.rmtree(path)
                else:
                    removed += path.lstat().st_size
                    path.unlink()
    return removed


# -- `make images` -------------------------------------------------------------------------------------

CACHE = Path(os.environ.get("KAIRO_CACHE") or Path.home() / ".cache" / "kairo")  # outside any checkout
BASE_SUITE = "bookworm"  # Debian 12: Python 3.11, as python:3.11-slim-bookworm
# The essential variant: Debian's Essential packages and these, no apt (a step installs nothing at run time;
# the Dockerfiles' apt-get only runs on a base that lacks Python). usr-is-merged stands for usrmerge, which
# would bring perl along (≈ 55 MB): mmdebstrap merges /usr itself.
BASE_VARIANT = "essential"
# What python:3.11-slim has and the essential variant lacks: libstdc++6 (pyarrow, tokenizers and numpy are C++;
# found by the container tests) and tzdata (Argo's CronWorkflow timezones are checked with zoneinfo).
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd", "usr-is-merged",
                 "libstdc++6", "tzdata")
# Never unpacked: documentation and translations (≈ 50 MB), glibc's iconv charset modules (8 MB: Python
# decodes with its own codecs, and no library a step loads calls iconv for another charset).
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*",
                 "/usr/lib/x86_64-linux-gnu/gconv/*")
# Run in the bootstrapped tree (mmdebstrap --customize-hook, "$1" its root), in order.
BASE_HOOKS = (
    # mmdebstrap still installs usrmerge for bookworm; once /usr is merged it and perl serve nothing.
    'chroot "$1" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl '
    "perl-modules-5.36 libperl5.36 >/dev/null",
    # Parts of Python's library no step imports: 2to3, help()'s topics, the regression-test helpers (3 MB).
    # Removed after dpkg configured python3 (its postinst byte-compiles every file it ships); apt's lists too.
    'rm -rf "$1"/usr/lib/python3.11/lib2to3 "$1"/usr/lib/python3.11/pydoc_data "$1"/usr/lib/python3.11/test '
    '"$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
)
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LABELS = "sh.kairo."  # the labels each Dockerfile sets from this table: extra, steps, gpu


def labels_for(image: StepImage) -> dict[str, str]:
    """The labels an image of `image` must carry (its Dockerfile sets them; the container tests read them)."""
    return {
        "org.opencontainers.image.title": image.name,
        f"{LABELS}extra": image.extra,
        f"{LABELS}steps": ",".join(image.steps),
        f"{LABELS}gpu": "true" if image.gpu else "false",
    }


@dataclass
class Build:
    """How `build` runs: the engine, and what every image's build is given."""

    engine: str  # docker (buildx) or podman
    repository: str
    tag: str
    push: bool = False
    platform: str | None = None
    base: str | None = None  # BASE_IMAGE for every Dockerfile; None keeps each one's pinned default
    build_args: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)  # podman: host folders the build reads (HOST:PATH:ro)
    network: str | None = None

    def ref(self, image: StepImage) -> str:
        return f"{self.repository.rstrip('/')}/{image.name}:{self.tag}"

    def command(self, image: StepImage) -> list[str]:
        """The build's argument list for one image (no shell: every value is one argument)."""
        args = {"VERSION": self.tag, **({"BASE_IMAGE": self.base} if self.base else {}), **self.build_args}
        if self.engine == "docker":
            command = ["docker", "buildx", "build", "--file", str(image.dockerfile), "--tag", self.ref(image)]
        else:
            # docker format: the OCI one drops HEALTHCHECK; buildx writes this one too.
            command = ["podman", "build", "--format", "docker", "--file", str(image.dockerfile),
                       "--tag", self.ref(image)]
            for volume in self.volumes:
                command += ["--volume", volume]
        for key, value in args.items():
            command += ["--build-arg", f"{key}={value}"]
        if self.network:
            command += ["--network", self.network]
        if self.engine == "docker":
            command.append("--push" if self.push else "--load")
        if self.platform:
            command += ["--platform", self.platform]
        return [*command, str(ROOT)]


def build_command(image: StepImage, repository: str, tag: str, push: bool, platform: str | None,
                  engine: str = "docker") -> list[str]:
    """The build's argument list for one image with `engine`'s defaults (no shell sees it)."""
    return Build(engine, repository, tag, push, platform).command(image)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return (proc.stderr.strip().splitlines() or ["?"])[-1]


def docker_problem() -> str | None:
    """Why images cannot be built with Docker here, or None when docker buildx and a Docker engine answer."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    engine = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if engine.returncode != 0:
        return f"no Docker engine answers (docker info failed: {_last_line(engine)})"
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True)
    if buildx.returncode != 0:
        return "docker buildx is not installed (the docker-buildx plugin)"
    return None


def podman_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment podman runs in. Without a containers.conf of the user's or the system's, one of
    kairo's: the runc runtime (crun refuses hybrid cgroups) and no default rlimits (which an unprivileged
    or nested container cannot set) — what our machines need (GOTCHAS.md, Containers)."""
    env = dict(os.environ if base is None else base)
    own = [Path("/etc/containers/containers.conf"), Path.home() / ".config" / "containers" / "containers.conf"]
    if env.get("CONTAINERS_CONF") or any(p.is_file() for p in own):
        return env
    text = "[containers]\ndefault_ulimits = []\n"
    if shutil.which("runc"):
        text += '[engine]\nruntime = "runc"\n'
    conf = CACHE / "containers.conf"
    if not conf.is_file() or conf.read_text() != text:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(text)
    env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    """Run podman with `podman_env`; raises RuntimeError naming the command when `check` and it fails."""
    proc = subprocess.run(["podman", *args], env=podman_env(), capture_output=capture, text=True)  # noqa: S603
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:2])} failed: {_last_line(proc) if capture else proc.returncode}")
    return proc


def podman_problem() -> str | None:
    """Why images cannot be built or run with Podman here, or None when it answers."""
    if shutil.which("podman") is None:
        return "the podman command is not installed"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        return f"podman does not answer (podman info failed: {_last_line(info)})"
    return None


def choose_engine(requested: str) -> tuple[str | None, str]:
    """(engine, "") for `auto` (buildx where Docker answers, else Podman), `docker` or `podman`; (None, why) else."""
    problems: list[str] = []
    for engine, problem in (("docker", docker_problem), ("podman", podman_problem)):
        if requested in ("auto", engine):
            why = problem()
            if why is None:
                return engine, ""
            problems.append(why)
    return None, "; ".join(problems)


def local_base(suite: str = BASE_SUITE) -> str:
    """A Debian base image in Podman's store, bootstrapped with mmdebstrap once and cached under CACHE.

    The cache only saves the bootstrap (≈40 s to minutes, on the mirror's speed): without it the base is
    made again. The tag names the recipe's hash, so a changed package list makes a new base.
    """
    recipe = " ".join([suite, BASE_VARIANT, *BASE_PACKAGES, *BASE_EXCLUDES, *BASE_HOOKS])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    ref = f"localhost/kairo-base:{suite}-{key}"
    if podman("image", "exists", ref, check=False).returncode == 0:
        return ref
    tar = CACHE / f"base-{suite}-{key}.tar"
    if not tar.is_file():
        if shutil.which("mmdebstrap") is None:
            raise RuntimeError("the mmdebstrap command is not installed (Debian: apt-get install mmdebstrap)")
        tar.parent.mkdir(parents=True, exist_ok=True)
        partial = tar.with_suffix(".partial.tar")
        command = ["mmdebstrap", "--quiet", f"--variant={BASE_VARIANT}", f"--include={','.join(BASE_PACKAGES)}",
                   *(f"--dpkgopt=path-exclude={p}" for p in BASE_EXCLUDES),
                   *(f"--customize-hook={hook}" for hook in BASE_HOOKS), suite, str(partial)]
        print(f"bootstrapping a Debian {suite} base with mmdebstrap into {tar}", file=sys.stderr)
        if subprocess.run(command).returncode != 0:  # noqa: S603 - our own argument list
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed: {shlex.join(command)}")
        partial.rename(tar)
    podman("import", "--message", f"kairo base: mmdebstrap {recipe}", str(tar), ref)
    return ref


def _pip_settings() -> dict[str, list[str]]:
    """This machine's pip settings (config files and PIP_* environment) by option: find-links, index URLs."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)  # noqa: S603
    found: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rpartition(".")[2]
        found.setdefault(option, []).extend(shlex.split(value.strip().strip("'\"")))
    return found


def local_build(build: Build) -> Build:
    """`--local`: build on the bootstrapped Debian base from this machine's wheels (the CPU torch wheel).

    The wheel folders and file:// indexes pip is configured with here are mounted for the build only, at
    the same paths; the host's CA bundle too (the package index is reached through a proxy whose CA a fresh
    base lacks), with the host's network. Nothing of them stays in an image.
    """
    settings = _pip_settings()
    links = [p for p in dict.fromkeys(settings.get("find-links", [])) if Path(p).is_dir()]
    indexes = [u for u in dict.fromkeys(settings.get("extra-index-url", []))
               if u.startswith("file://") and Path(u.removeprefix("file://")).is_dir()]
    folders = [*links, *(u.removeprefix("file://").rstrip("/").rsplit("/", 1)[0] for u in indexes)]
    build.base = build.base or local_base()
    build.network = build.network or "host"
    build.volumes += [f"{f}:{f}:ro" for f in dict.fromkeys(folders)]
    if links:
        build.build_args["PIP_FIND_LINKS"] = " ".join(links)
    if indexes:
        build.build_args["PIP_EXTRA_INDEX_URL"] = " ".join(indexes)
    if HOST_CA.is_file():
        build.volumes.append(f"{HOST_CA}:{HOST_CA}:ro")
        build.build_args["PIP_CERT"] = str(HOST_CA)
    # torch from the find-links folders (this machine's CPU wheel sorts above PyPI's: 2.13.0+cpu > 2.13.0).
    build.build_args.setdefault("TORCH_INDEX_URL", "https://pypi.org/simple")
    return build


def image_size(engine: str, ref: str) -> int | None:
    """The image's size in bytes as the engine reports it (None when it is not in the local store)."""
    command = [engine, "image", "inspect", "--format", "{{.Size}}", ref]
    proc = subprocess.run(command, capture_output=True, text=True,  # noqa: S603
                          env=podman_env() if engine == "podman" else None)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kairo.images", description="kairo's step images")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print every image, its Dockerfile, extra and steps")
    check = sub.add_parser("check", help="import every module the steps can reach (run inside an image)")
    check.add_argument("steps", nargs="+", metavar="STEP")
    pruning = sub.add_parser("prune", help="remove what no step can use from a virtual environment (PRUNED)")
    pruning.add_argument("venv", type=Path, help="the image's virtual environment, e.g. /opt/kairo")
    build = sub.add_parser("build", help="build every image (Docker buildx, else Podman)")
    build.add_argument("--repository", default=ClusterConfig().images.repository, help="where the images go")
    build.add_argument("--tag", default=__version__, help="image tag (default: the kairo version)")
    build.add_argument("--push", nargs="?", const="", metavar="REGISTRY",
                       help="push each image (to REGISTRY/NAME:TAG when given, else to --repository)")
    build.add_argument("--platform", help="target platform(s), e.g. linux/amd64")
    build.add_argument("--base", help="base image for every Dockerfile (default: each one's pinned base)")
    build.add_argument("--engine", choices=("auto", "docker", "podman"), default="auto")
    build.add_argument("--local", action="store_true",
                       help="build with Podman on a Debian base bootstrapped here (mmdebstrap, cached under "
                            f"{CACHE}) from this machine's wheels, torch's CPU build: no registry needed")
    build.add_argument("--only", action="append", metavar="NAME", help="build only this image (repeatable)")
    build.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    return parser


def _build_all(build: Build, chosen: list[StepImage]) -> int:
    env = podman_env() if build.engine == "podman" else None
    for image in chosen:
        print(f"building {build.ref(image)} with {build.engine}", file=sys.stderr)
        started = time.monotonic()
        # An argument list built from IMAGES and our own flags; no shell sees it.
        if subprocess.run(build.command(image), env=env).returncode != 0:  # noqa: S603
            print(f"building {image.name} failed (see the {build.engine} output above)", file=sys.stderr)
            return 1
        seconds = time.monotonic() - started
        if build.push and build.engine == "podman":
            if subprocess.run(["podman", "push", build.ref(image)], env=env).returncode != 0:  # noqa: S603
                print(f"pushing {build.ref(image)} failed", file=sys.stderr)
                return 1
        size = image_size(build.engine, build.ref(image))
        weight = f"{size / 1e6:.0f} MB" if size is not None else "pushed"
        print(f"{build.ref(image)}  {weight}  built in {seconds:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "list":
        for image in IMAGES:
            print(f"{image_ref(image.entrypoint)}  {image.dockerfile.relative_to(ROOT)}  "
                  f"extra={image.extra}  gpu={'yes' if image.gpu else 'no'}  steps={','.join(image.steps)}")
        return 0
    if args.command == "check":
        problems = check_steps(args.steps)
        for problem in problems:
            print(f"missing: {problem}", file=sys.stderr)
        print(f"{', '.join(args.steps)}: {'every import works' if not problems else f'{len(problems)} imports fail'}")
        return 1 if problems else 0
    if args.command == "prune":
        print(f"pruned {prune(args.venv) / 1e6:.0f} MB that no step can use from {args.venv}")
        return 0
    chosen = [i for i in IMAGES if not args.only or i.name in args.only or i.entrypoint in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        known = ", ".join(i.name for i in IMAGES)
        print(f"--only {', '.join(args.only)}: unknown image — known: {known}", file=sys.stderr)
        return 2
    repository = args.push or args.repository
    if args.dry_run:
        engine = "podman" if args.local else ("docker" if args.engine == "auto" else args.engine)
    else:
        engine, problem = choose_engine("podman" if args.local else args.engine)
        if engine is None:
            print(f"cannot build images here: {problem}. Building needs Docker with buildx, or Podman; "
                  "`python -m kairo.images build --dry-run` prints the commands.", file=sys.stderr)
            return 1
    build = Build(engine, repository, args.tag, args.push is not None, args.platform, args.base)
    if args.local and not args.dry_run:
        try:
            build = local_build(build)
        except RuntimeError as err:
            print(f"cannot build images here: {err}", file=sys.stderr)
            return 1
    if args.dry_run:
        for image in chosen:
            print(shlex.join(build.command(image)))
        return 0
    return _build_all(build, chosen)


if __name__ == "__main__":
    sys.exit(main())
