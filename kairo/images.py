"""The one place that names kairo's step images: pipelines, the chart and `make images` read it.

Each image installs only its step's extra. Steps that are close relatives share an image (evaluate
runs in the train image, pull-adapter in the push image); every template still names its step in
`command`, so an image's ENTRYPOINT is only the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from kairo import __version__
from kairo.cluster import ClusterConfig


@dataclass(frozen=True)
class StepImage:
    name: str  # image name under the repository, e.g. kairo-train
    extra: str  # the pip extra it installs
    entrypoint: str  # the kairo-step it runs by default
    gpu: bool  # built on a CUDA runtime base
    steps: tuple[str, ...]  # every kairo-step this image runs


IMAGES: tuple[StepImage, ...] = (
    StepImage("kairo-provision", "azure", "provision", False, ("provision", "cleanup")),
    StepImage("kairo-download", "data", "download", False, ("download",)),
    StepImage("kairo-fetch-model", "train", "fetch-model", False, ("fetch-model",)),
    StepImage("kairo-train", "train", "train", True, ("train", "evaluate")),
    StepImage("kairo-push", "oci", "push", False, ("push", "pull-adapter")),
    StepImage("kairo-deploy", "k8s", "deploy", False, ("deploy", "deployed")),
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
