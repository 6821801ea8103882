#!/usr/bin/env bash
# Ablations of the distillation recipe, after scripts/distill_table.sh (same teacher, student, data, steps and seed):
# each run drops one group of terms from distill=default; the teacher's outputs come from OUT/teacher_cache, so a run
# costs only the student's training. Ends with a metrics table (no latency: it is one network).
#   bash scripts/distill_ablations.sh [STUDENT] [OUT]   (defaults: window_vit_nano, outputs/table)
# JOBS=2 runs two at a time with one thread each (2 cores); ONLY="no-features hard" picks ablations.
set -euo pipefail
STUDENT="${1:-window_vit_nano}"
OUT="${2:-outputs/table}"
PY="${PYTHON:-.venv/bin/python}"
JOBS="${JOBS:-1}"
THREADS=$(( $(nproc) / JOBS > 0 ? $(nproc) / JOBS : 1 ))
declare -A ABLATIONS=(
  [no-output-kd]="distill.weights.kd_expression=0 distill.weights.kd_spoof=0 distill.weights.kd_recognition=0"
  [no-embedding]="distill.weights.embedding=0"
  [no-relational]="distill.weights.relational=0"
  [no-features]="distill.weights.features=0"
  [no-landmarks-kd]="distill.weights.landmarks_kd=0"
  [outputs-only]="distill=outputs_only"
  [hard]="distill=hard"
)
read -ra NAMES <<< "${ONLY:-no-output-kd no-embedding no-relational no-features no-landmarks-kd outputs-only hard}"
run() {
  local name="$1" dir="$OUT/$STUDENT-distilled-$1"
  [ -f "$dir/metrics.json" ] && return 0
  # shellcheck disable=SC2086  # the overrides are separate words
  "$PY" distill.py student="$STUDENT" teacher.ckpt_path="$OUT/teacher/checkpoints/last.ckpt" \
    distill.teacher_classes=prefix teacher.cache_dir="$OUT/teacher_cache" threads="$THREADS" \
    ${ABLATIONS[$name]} hydra.run.dir="$dir" > "$dir.log" 2>&1
}
for name in "${NAMES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  run "$name" &
done
wait
dirs=("$OUT/$STUDENT-alone" "$OUT/$STUDENT-distilled-default")
labels=("alone" "distill=default")
for name in "${NAMES[@]}"; do dirs+=("$OUT/$STUDENT-distilled-$name"); labels+=("$name"); done
"$PY" -m facetx.bench.compare "${dirs[@]}" --labels "${labels[@]}" --no-latency --out "$OUT/ablations-$STUDENT.md"
"$PY" -m facetx.bench.compare "${dirs[@]}" --labels "${labels[@]}" --no-latency --split val \
  --out "$OUT/ablations-$STUDENT-val.md"
