#!/usr/bin/env bash
# Multimodal top-K table: every model tuned on VALIDATION with a small grid (seed 0),
# then the chosen setting over seeds 0,1,2. Resumable: finished runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/topk_table.sh [dataset ...]
# MODELS="bpr lightgcn ..." runs a subset (e.g. two lanes on two cores: never the same model twice at once).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/topk}
DATASETS=${*:-scientific_mm tiktok scientific}
MODELS=${MODELS:-bpr lightgcn vbpr freedom bm3 lirdrec alignrec}
has() { [[ " $MODELS " == *" $1 "* ]]; }
COMMON=(--seeds 0 --final-seeds 0,1,2 --set train.epochs=400 --set train.threads=${THREADS:-1})
for d in $DATASETS; do
  if has bpr; then $P -q tune --model bpr      --data $d --out $OUT/$d/bpr      --grid reg_type=l2 --grid reg_weight=0.01,0.1 "${COMMON[@]}"; fi
  if has lightgcn; then $P -q tune --model lightgcn --data $d --out $OUT/$d/lightgcn --grid reg_type=l2 --grid reg_weight=1e-3,1e-2 "${COMMON[@]}"; fi
  if has vbpr; then $P -q tune --model vbpr     --data $d --out $OUT/$d/vbpr     --grid reg_weight=0.01,0.1 "${COMMON[@]}"; fi
  if has freedom; then $P -q tune --model freedom  --data $d --out $OUT/$d/freedom  --grid dropout=0.8,0.9 "${COMMON[@]}"; fi
  if has bm3; then $P -q tune --model bm3      --data $d --out $OUT/$d/bm3      --grid dropout=0.3,0.5 "${COMMON[@]}"; fi
  if has lirdrec; then $P -q tune --model lirdrec  --data $d --out $OUT/$d/lirdrec  --grid dct_mode=1d,2d "${COMMON[@]}"; fi
  # AlignRec's official train settings: lr decay 0.96^(epoch/50), stopping_step 30 (patience 31)
  if has alignrec; then $P -q tune --model alignrec --data $d --out $OUT/$d/alignrec --grid train.learning_rate=1e-3,5e-4 \
     --grid cl_loss=0.01,0.1 --set train.lr_scheduler=[0.96,50] --set train.patience=31 "${COMMON[@]}"; fi
done
