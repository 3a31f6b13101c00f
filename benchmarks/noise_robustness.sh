#!/usr/bin/env bash
# Noise robustness: the features of a growing share of items (10 %, 30 %, 50 %, per
# modality) are replaced by random vectors (data.feature_noise: Gaussian with each modality's
# per-dimension mean and std); Demure against SASRec-F, seeds 0,1,2, paired test vs SASRec-F.
# Default settings: the 0 % level is the main sequential table (benchmarks/sequential_table.sh).
# TRIALS=N: both models tuned at every level with the same budget (N TPE trials on validation NDCG@10 over
# each model's declared space, pruning warm-up = the patience), written under OUT/tuned-N/, the 0 % level included.
# Resumable (studies resume, finished runs are reused).
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/noise_robustness.sh [dataset]
#        TRIALS=4 PRISMREC_DATA=../shared/data bash benchmarks/noise_robustness.sh scientific_mm
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
D=${1:-scientific_mm}
OUT=${OUT:-bench_out/noise/$D}
TUNE=()
SHARES=${SHARES:-0.1 0.3 0.5}
if [ -n "${TRIALS:-}" ]; then
  TUNE=(--tune "$TRIALS" --jobs 1)
  OUT=$OUT/tuned-$TRIALS
  SHARES=${SHARES_TUNED:-0 0.1 0.3 0.5}
fi
for share in $SHARES; do
  $P -q compare --data $D --out $OUT/noise-$share --model sasrecf --model demure \
     --seeds ${SEEDS:-0,1,2} --epochs 200 --metrics recall@10,ndcg@10,mrr@10 "${TUNE[@]}" \
     --set data.feature_noise=$share --set train.threads=${THREADS:-1}
done
