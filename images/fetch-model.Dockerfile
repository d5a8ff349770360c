# syntax=docker/dockerfile:1
# kairo-fetch-model: runs `kairo-step fetch-model` (the preset's weights at their pinned revision, or the tiny
# model built from its seed). Installs kairo with the `fetch` extra only: no torch, no transformers.
# Build from the repository root: `make images`.
# The base: the pinned image users get; `--build-arg BASE_IMAGE=…` builds on another (make images-local).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
# checkov:skip=CKV_DOCKER_7: FROM names the build argument above, whose default is pinned by digest
FROM ${BASE_IMAGE} AS base

FROM base AS build
# Where pip finds packages: PyPI unless these are given (`make images-local` points them at this machine's
# wheel folders, mounted for the build only). Build arguments reach RUN as environment variables, which pip reads.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
# pip's cache is a cache mount of the build (shared by every image's build, in no image).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The extra's packages first, read from pyproject.toml alone: this layer stays cached while kairo's
# code changes (only the last install below runs again).
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip python -m venv /opt/kairo \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['fetch']))" > requirements.txt \
 && /opt/kairo/bin/pip install -r requirements.txt
COPY README.md ./
COPY kairo kairo
COPY pipelines pipelines
COPY steps steps
COPY presets presets
# kairo itself, its dependencies in already (pip check says so); then pip and setuptools go: they
# are no use to a step (≈ 23 MB); then what no step can use (kairo/images.py, PRUNED: what and why).
RUN --mount=type=cache,target=/root/.cache/pip /opt/kairo/bin/pip install --no-deps "/src[fetch]" \
 && /opt/kairo/bin/python -m pip check \
 && /opt/kairo/bin/python -m pip uninstall -y -q pip setuptools \
 && /opt/kairo/bin/python -m kairo.images prune /opt/kairo

FROM base
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="kairo-fetch-model" \
      org.opencontainers.image.description="kairo step: fetch a preset's model weights" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/kairo-project/kairo" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kairo" \
      sh.kairo.extra="fetch" \
      sh.kairo.steps="fetch-model" \
      sh.kairo.gpu="false"
RUN groupadd --gid 10001 kairo \
 && useradd --uid 10001 --gid 10001 --home-dir /home/kairo --create-home --shell /usr/sbin/nologin kairo \
 && mkdir -p /kairo/work && chown 10001:10001 /kairo/work
COPY --from=build /opt/kairo /opt/kairo
ENV PATH=/opt/kairo/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/kairo KAIRO_WORKDIR=/kairo/work
WORKDIR /kairo/work
USER 10001:10001
# A batch step: Kubernetes decides its fate by exit code, so the image declares no health probe.
HEALTHCHECK NONE
ENTRYPOINT ["kairo-step", "fetch-model"]
