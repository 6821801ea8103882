#!/usr/bin/env bash
# Regenerates the export benchmark table (torch eager; ONNX Runtime, OpenVINO and LiteRT FP32/INT8; Core ML checks;
# TensorRT where available; batch 1 and 32) for the teacher and the default distilled student, from their checkpoints:
#   scripts/bench_export.sh [export.py overrides ...]        e.g. export.tensorrt=true threads=4
# Checkpoints: TEACHER_CKPT / STUDENT_CKPT, else the newest `train.py model=teacher` and `distill.py` runs under
# LOG_DIR (default outputs). Writes OUT (default outputs/export/bench)/{teacher,student}/ and OUT/benchmark.{csv,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-outputs}
OUT=${OUT:-outputs/export/bench}
TEACHER_CKPT=${TEACHER_CKPT:-$("$PY" -m facetx.export.locate teacher --root "$LOG_DIR")}
STUDENT_CKPT=${STUDENT_CKPT:-$("$PY" -m facetx.export.locate student --root "$LOG_DIR")}
echo "teacher: $TEACHER_CKPT"
echo "student: $STUDENT_CKPT"
RUNTIMES=${RUNTIMES:-[onnxruntime,openvino,tflite,coreml]}
"$PY" export.py ckpt_path="$TEACHER_CKPT" hydra.run.dir="$OUT/teacher" "runtime=$RUNTIMES" "$@"
"$PY" export.py ckpt_path="$STUDENT_CKPT" hydra.run.dir="$OUT/student" "runtime=$RUNTIMES" "$@"
"$PY" -m facetx.bench.combine "$OUT/teacher/benchmark.csv" "$OUT/student/benchmark.csv" --out "$OUT/benchmark"
