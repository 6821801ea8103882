#!/usr/bin/env bash
# Reproduce the distillation table of the README on the embedded data: the teacher, the student trained alone and
# the distilled student (same data, steps and seed), then one comparison table with batch-1 latency.
#   bash scripts/distill_table.sh [STUDENT] [OUT]      (defaults: window_vit_tiny, outputs/table)
set -euo pipefail
STUDENT="${1:-window_vit_tiny}"
OUT="${2:-outputs/table}"
PY="${PYTHON:-.venv/bin/python}"
[ -f "$OUT/teacher/checkpoints/last.ckpt" ] || "$PY" train.py model=teacher hydra.run.dir="$OUT/teacher"
"$PY" train.py model="$STUDENT" hydra.run.dir="$OUT/$STUDENT-alone"
"$PY" distill.py student="$STUDENT" teacher.ckpt_path="$OUT/teacher/checkpoints/last.ckpt" hydra.run.dir="$OUT/$STUDENT-distilled"
"$PY" -m facetx.bench.compare "$OUT/teacher" "$OUT/$STUDENT-alone" "$OUT/$STUDENT-distilled" --out "$OUT/table.md"
