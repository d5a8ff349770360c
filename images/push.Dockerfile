# syntax=docker/dockerfile:1
# kairo-push: runs `kairo-step push` and `kairo-step pull-adapter` (the adapter as an OCI artifact).
# Installs kairo with the `oci` extra only. Build from the repository root: `make images`.
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS base

FROM base AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kairo kairo
COPY pipelines pipelines
COPY steps steps
COPY presets presets
RUN python -m venv /opt/kairo && /opt/kairo/bin/pip install "/src[oci]"

FROM base
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="kairo-push" \
      org.opencontainers.image.description="kairo step: push and pull adapters as OCI artifacts" \
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
# A batch step: Kubernetes decides its fate by exit code, so the image declares no health probe.
HEALTHCHECK NONE
ENTRYPOINT ["kairo-step", "push"]
