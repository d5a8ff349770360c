# syntax=docker/dockerfile:1
# kairo-train: runs `kairo-step train` and `kairo-step evaluate` (QLoRA/LoRA on the GPU node).
# Installs kairo with the `train` extra only, torch pinned first. Build from the repository root: `make images`.
# The torch wheel from PyPI carries its own CUDA libraries; the CUDA base gives the NVIDIA container
# runtime its environment (driver capabilities, library paths) and cuDNN for other libraries.
# The base: the pinned image users get; `--build-arg BASE_IMAGE=…` builds on another (make images-local).
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04@sha256:8aef630a54bc5c5146ae5ce68e6af5caa3df0fb690bb91544175c91f307e4356
# checkov:skip=CKV_DOCKER_7: FROM names the build argument above, whose default is pinned by digest
FROM ${BASE_IMAGE} AS base
# A base that already has Python with venv (the Debian one make images-local bootstraps) needs no apt.
# The apt snapshot moves with the pinned base image's Ubuntu release; pinning each Debian version would
# break the build at every security update without making it more reproducible than the digest does.
# hadolint ignore=DL3008
RUN python3 -c "import ensurepip, venv" 2>/dev/null \
 || (apt-get update \
     && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
     && rm -rf /var/lib/apt/lists/*)

FROM base AS build
# Where pip finds packages: PyPI unless these are given (`make images-local` points them at this machine's
# wheel folders, mounted for the build only). Build arguments reach RUN as environment variables, which pip reads.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG TORCH_VERSION=2.13.0
# PyPI's torch wheels carry CUDA; make images-local installs the CPU wheel (found through PIP_FIND_LINKS).
ARG TORCH_INDEX_URL=https://pypi.org/simple
# pip's cache is a cache mount of the build (shared by every image's build, in no image).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/pip python3 -m venv /opt/kairo && /opt/kairo/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
# The extra's packages first, read from pyproject.toml alone: this layer stays cached while kairo's
# code changes (only the last install below runs again).
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > requirements.txt \
 && /opt/kairo/bin/pip install -r requirements.txt
COPY README.md ./
COPY kairo kairo
COPY pipelines pipelines
COPY steps steps
COPY presets presets
# kairo itself, its dependencies in already (pip check says so); then what no step can use
# (kairo/images.py, PRUNED: what and why).
RUN --mount=type=cache,target=/root/.cache/pip /opt/kairo/bin/pip install --no-deps "/src[train]" \
 && /opt/kairo/bin/python -m pip check \
 && /opt/kairo/bin/python -m kairo.images prune /opt/kairo

FROM base
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="kairo-train" \
      org.opencontainers.image.description="kairo step: QLoRA/LoRA training and evaluation on a GPU" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kairo-project/kairo" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kairo" \
      sh.kairo.extra="train" \
      sh.kairo.steps="train,evaluate" \
      sh.kairo.gpu="true"
RUN groupadd --gid 10001 kairo \
 && useradd --uid 10001 --gid 10001 --home-dir /home/kairo --create-home --shell /usr/sbin/nologin kairo \
 && mkdir -p /kairo/work && chown 10001:10001 /kairo/work
COPY --from=build /opt/kairo /opt/kairo
ENV PATH=/opt/kairo/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/kairo KAIRO_WORKDIR=/kairo/work
WORKDIR /kairo/work
USER 10001:10001
# A batch step: Kubernetes decides its fate by exit code, so the image declares no health probe.
HEALTHCHECK NONE
ENTRYPOINT ["kairo-step", "train"]
