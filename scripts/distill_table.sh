#!/usr/bin/env bash
# Reproduce the distillation table of the README on the embedded data: the teacher (experiment=teacher_cpu_long: the
# default data's 500 identities plus 500 more, one pass), then the student trained alone and the distilled student
# (same data, steps and seed: the default 12k images, 375 steps), then one comparison table with batch-1 latency.
# The teacher's outputs are cached in OUT/teacher_cache, so further recipes (ablations) skip its forward pass.
#   bash scripts/distill_table.sh [STUDENT] [OUT] [DISTILL]   (defaults: window_vit_nano, outputs/table, default)
set -euo pipefail
STUDENT="${1:-window_vit_nano}"
OUT="${2:-outputs/table}"
RECIPE="${3:-default}"
PY="${PYTHON:-.venv/bin/python}"
[ -f "$OUT/teacher/checkpoints/last.ckpt" ] || "$PY" train.py experiment=teacher_cpu_long hydra.run.dir="$OUT/teacher"
[ -f "$OUT/$STUDENT-alone/metrics.json" ] || "$PY" train.py model="$STUDENT" hydra.run.dir="$OUT/$STUDENT-alone"
"$PY" distill.py student="$STUDENT" distill="$RECIPE" teacher.ckpt_path="$OUT/teacher/checkpoints/last.ckpt" \
  distill.teacher_classes=prefix teacher.cache_dir="$OUT/teacher_cache" hydra.run.dir="$OUT/$STUDENT-distilled-$RECIPE"
"$PY" -m facetx.bench.compare "$OUT/teacher" "$OUT/$STUDENT-alone" "$OUT/$STUDENT-distilled-$RECIPE" \
  --out "$OUT/table-$STUDENT-$RECIPE.md"
