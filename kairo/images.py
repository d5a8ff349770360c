"""The one place that names kairo's step images: pipelines, the chart and `make images` read it.

Each image installs only its step's extra. Steps that are close relatives share an image (evaluate
runs in the train image, pull-adapter in the push image); every template still names its step in
`command`, so an image's ENTRYPOINT is only the default.

`python -m kairo.images list` prints them; `python -m kairo.images build` builds them all with
`docker buildx`, tagged with the package version (what `make images` runs).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
    StepImage("kairo-fetch-model", "train", "fetch-model", False, ("fetch-model",)),
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


# -- `make images` -------------------------------------------------------------------------------------


def build_command(image: StepImage, repository: str, tag: str, push: bool, platform: str | None) -> list[str]:
    """The `docker buildx build` argument list for one image (no shell: every value is one argument)."""
    command = [
        "docker", "buildx", "build",
        "--file", str(image.dockerfile),
        "--tag", f"{repository.rstrip('/')}/{image.name}:{tag}",
        "--build-arg", f"VERSION={tag}",
        "--push" if push else "--load",
    ]
    if platform:
        command += ["--platform", platform]
    return [*command, str(ROOT)]


def docker_problem() -> str | None:
    """Why images cannot be built here, or None when docker buildx and a Docker engine answer."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    engine = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if engine.returncode != 0:
        return "no Docker engine answers (docker info failed: " + (engine.stderr.strip().splitlines() or ["?"])[-1] + ")"
    buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True, text=True)
    if buildx.returncode != 0:
        return "docker buildx is not installed (the docker-buildx plugin)"
    return None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kairo.images", description="kairo's step images")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print every image, its Dockerfile, extra and steps")
    build = sub.add_parser("build", help="build every image with docker buildx")
    build.add_argument("--repository", default=ClusterConfig().images.repository, help="where the images go")
    build.add_argument("--tag", default=__version__, help="image tag (default: the kairo version)")
    build.add_argument("--push", action="store_true", help="push instead of loading into the local engine")
    build.add_argument("--platform", help="target platform(s), e.g. linux/amd64")
    build.add_argument("--only", action="append", metavar="NAME", help="build only this image (repeatable)")
    build.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "list":
        for image in IMAGES:
            print(f"{image_ref(image.entrypoint)}  {image.dockerfile.relative_to(ROOT)}  "
                  f"extra={image.extra}  gpu={'yes' if image.gpu else 'no'}  steps={','.join(image.steps)}")
        return 0
    chosen = [i for i in IMAGES if not args.only or i.name in args.only or i.entrypoint in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        known = ", ".join(i.name for i in IMAGES)
        print(f"--only {', '.join(args.only)}: unknown image — known: {known}", file=sys.stderr)
        return 2
    commands = [build_command(i, args.repository, args.tag, args.push, args.platform) for i in chosen]
    if args.dry_run:
        for command in commands:
            print(" ".join(command))
        return 0
    problem = docker_problem()
    if problem:
        print(f"cannot build images here: {problem}. Building needs Docker with buildx; "
              "`python -m kairo.images build --dry-run` prints the commands.", file=sys.stderr)
        return 1
    for image, command in zip(chosen, commands, strict=True):
        print(f"building {image.name}:{args.tag}", file=sys.stderr)
        # An argument list built from IMAGES and our own flags; no shell sees it.
        if subprocess.run(command).returncode != 0:  # noqa: S603
            print(f"building {image.name} failed (see the buildx output above)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
