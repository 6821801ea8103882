#!/usr/bin/env bash
# The student the video pipeline's tests use: window_vit_nano trained alone, liveness read from the pixels
# (model/heads=texture_spoof), with augment=tracking
# (crops jittered like tracked ROIs, so its landmarks follow a face that moved in the crop), two passes over the
# default synthetic data (750 steps, seed 42), exported to ONNX + INT8 with the calibrated threshold and landmark
# template in its metadata; the INT8 file is copied to tests/pipeline/data/student.int8.onnx.
#   scripts/make_pipeline_student.sh [OUT]      (default OUT=outputs/pipeline_student; about 10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-outputs/pipeline_student}
"$PY" train.py model=window_vit_nano model/heads=texture_spoof augment=tracking trainer.max_epochs=2 seed=42 hydra.run.dir="$OUT/train"
"$PY" export.py ckpt_path="$OUT/train/checkpoints/last.ckpt" hydra.run.dir="$OUT/export"
cp "$OUT/export/model.int8.onnx" tests/pipeline/data/student.int8.onnx
echo "wrote tests/pipeline/data/student.int8.onnx from $OUT/export"
