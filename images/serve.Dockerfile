# syntax=docker/dockerfile:1
# kairo-serve: runs `kairo-step serve` (the inference server: base model + adapters, /chat and the OpenAI API).
# Installs kairo with the `serve` extra only, torch pinned first. Build from the repository root: `make images`.
# The torch wheel from PyPI carries its own CUDA libraries; the CUDA base gives the NVIDIA container
# runtime its environment (driver capabilities, library paths) and cuDNN for other libraries.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04@sha256:8aef630a54bc5c5146ae5ce68e6af5caa3df0fb690bb91544175c91f307e4356 AS base
# The apt snapshot moves with the pinned base image's Ubuntu release; pinning each Debian version would
# break the build at every security update without making it more reproducible than the digest does.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM base AS build
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/kairo && /opt/kairo/bin/pip install "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY kairo kairo
COPY pipelines pipelines
COPY steps steps
COPY presets presets
RUN /opt/kairo/bin/pip install "/src[serve]"

FROM base
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="kairo-serve" \
      org.opencontainers.image.description="kairo inference server: base model plus LoRA adapters, Kaito /chat and OpenAI API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kairo-project/kairo" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kairo"
RUN groupadd --gid 10001 kairo \
 && useradd --uid 10001 --gid 10001 --home-dir /home/kairo --create-home --shell /usr/sbin/nologin kairo \
 && mkdir -p /kairo/work && chown 10001:10001 /kairo/work
COPY --from=build /opt/kairo /opt/kairo
ENV PATH=/opt/kairo/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/kairo KAIRO_WORKDIR=/kairo/work
WORKDIR /kairo/work
USER 10001:10001
# Kubernetes probes /health and /ready (the Deployment the deploy step writes); a Docker probe would duplicate them.
HEALTHCHECK NONE
ENTRYPOINT ["kairo-step", "serve"]
