#!/usr/bin/env bash
# Top-K tables under EQUAL budgets (issue 14): every model gets the same number of TPE trials on validation
# (its declared search space, docs/models/<model>.md "Search space"), the same patience and epoch cap, then the
# selected setting over seeds 0,1,2 (the only runs whose test set is scored), with paired tests against the first
# entry (the best ID-only baseline is listed first: lightgcn, then bpr) and against FREEDOM (`compare --ref`).
# Resumable: run it again after a crash; each model's study resumes from OUT/<dataset>/<entry>/tune/study.journal
# and finished seed runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/tuned_topk_table.sh [dataset ...]
#   TRIALS=30 (per model), WORKERS=1 (local processes per study), MODELS="lightgcn bpr ...", EPOCHS=400,
#   JOBS=1 (seed runs trained at once; one per core), PRUNE_WARMUP (epochs of a trial never pruned; default: the
#   patience, as in `compare --tune`; the tables measured before 2026-12-04 used PRUNE_WARMUP=2, docs/benchmarks.md §1.7)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/tuned_topk}
DATASETS=${*:-tiktok scientific_mm scientific baby}
MODELS=${MODELS:-lightgcn bpr vbpr freedom bm3 lirdrec alignrec mgcn lattice lgmrec mentor}
TRIALS=${TRIALS:-30}
WARMUP=()
[ -n "${PRUNE_WARMUP:-}" ] && WARMUP=(--tune-prune-warmup "$PRUNE_WARMUP")
ENTRIES=()
for m in $MODELS; do ENTRIES+=(--model "$m"); done
REFS=(--ref "${MODELS%% *}")
[[ " $MODELS " == *" freedom "* && "${MODELS%% *}" != freedom ]] && REFS+=(--ref freedom)
for d in $DATASETS; do
  echo "== $d: ${MODELS} x ${TRIALS} trials each"
  $P -q compare "${ENTRIES[@]}" --data "$d" --out "$OUT/$d" --seeds 0,1,2 --tune "$TRIALS" \
     --tune-workers "${WORKERS:-1}" "${WARMUP[@]}" --jobs "${JOBS:-1}" "${REFS[@]}" \
     --set "train.epochs=${EPOCHS:-400}" --set "train.threads=${THREADS:-1}"
done
