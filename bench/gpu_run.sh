#!/usr/bin/env bash
# The GPU run of bench/gpu_train.py, on the H200 the device tool lends (bench/README.md): install the wheels
# `make bench-gpu-prepare` put in .whl/ (carried: carry [".whl"]) into /tmp/site, then run the bench with
# its results in $OUT, which the tool brings back. Arguments go to gpu_train.py (e.g. --budget-s 240).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "gpu_run.sh: no wheels in .whl/ — run 'make bench-gpu-prepare' first and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-bench/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv || true
python3 bench/gpu_train.py --out "$out" "$@" 2>&1 | tee "$out/console.log"
