# kairo — every target installs what it needs first and can be run again safely.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test demo demo-containers lint render chart argo-fields bench bench-data bench-gpu-prepare images images-local system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: this version's CPU wheel lies on our machines; a looser pin pulls CUDA builds.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# checkov (the chart and Dockerfile scan) pins many packages: it gets a virtual environment of its own.
CHECKOV := $(VENV)-checkov/.installed
$(CHECKOV):
	test -x $(VENV)-checkov/bin/python || python3 -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/pip install -q checkov==3.3.30
	touch $(CHECKOV)

# Debian packages the tests run against: the CNCF distribution registry, skopeo and htpasswd; Podman (with runc,
# buildah, mmdebstrap, uidmap, fuse-overlayfs) for the container tests.
SYSTEM_TOOLS := docker-registry skopeo htpasswd podman buildah runc mmdebstrap
SYSTEM_PACKAGES := docker-registry skopeo apache2-utils podman buildah runc mmdebstrap uidmap fuse-overlayfs
system-deps:
	@for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "note: install $(SYSTEM_PACKAGES) (Debian) for the registry and container tests"; fi; \
	fi

# pytest exits 5 when it collected no test: make fails on it like on any failure.
test: install system-deps $(CHECKOV)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The quickstart workspace end to end on this machine: data, QLoRA training, push, serve, a question.
demo: install
	$(VENV)/bin/kairo run examples/quickstart.yaml --local --workdir .kairo/demo --ask "What is the capital of France?"

# import-linter reads packages from disk, so it checks a copy laid out as the installed package is.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q tests/test_architecture.py

# Regenerate the golden workflows beside examples/ (tests compare against them).
render: install
	KAIRO_REGENERATE=1 $(VENV)/bin/pytest -q tests/test_golden.py

# Regenerate the chart's generated templates (WorkflowTemplate, CRD, presets) from the Python sources.
chart: install
	KAIRO_REGENERATE=1 $(VENV)/bin/pytest -q tests/test_chart_generated.py

# Rebuild kairo/argo/schemas/argo-fields.json (each claimed Argo version's fields) from PyPI wheels.
argo-fields: install
	KAIRO_REGENERATE=1 $(VENV)/bin/pytest -q tests/test_argo_versions.py -k field_table

bench: install
	$(PY) bench/train.py
	$(PY) bench/serve.py
	$(PY) bench/distributed.py

# Data preparation at 100k and 1M conversations (long: the 1M run takes most of an hour on 2 loaded cores).
bench-data: install
	$(PY) bench/data.py

# Wheels bench/gpu_train.py needs on a lent H200 and the machine lacks, into .whl/ (bench/README.md).
bench-gpu-prepare: install
	$(PY) bench/gpu_prepare.py

# Build every step image: docker buildx where a Docker engine answers, else Podman; each one's size printed.
# IMAGES_ARGS: --base IMAGE, --platform linux/amd64, --push REGISTRY, --only NAME (python -m kairo.images build -h).
IMAGES_ARGS ?=
images: install
	$(PY) -m kairo.images build $(IMAGES_ARGS)

# The same on this machine, no registry needed: Podman on a Debian bookworm base bootstrapped with mmdebstrap
# (cached under ~/.cache/kairo, made again without it), from this machine's wheels with torch's CPU build.
# Tagged localhost/kairo/NAME:VERSION, what `kairo run --local --containers` runs.
images-local: install
	nice $(PY) -m kairo.images build --local --repository localhost/kairo $(IMAGES_ARGS)

# The quickstart with every task in its own image, as Argo's executor runs it (uid 10001, read-only root).
demo-containers: images-local
	$(VENV)/bin/kairo run examples/quickstart.yaml --local --containers --workdir .kairo/demo-containers \
	  --ask "What is the capital of France?"

clean:
	rm -rf .kairo build dist *.egg-info
