#!/usr/bin/env bash
# Noise robustness: the features of a growing share of items (10 %, 30 %, 50 %, per
# modality) are replaced by random vectors (data.feature_noise: Gaussian with each modality's
# per-dimension mean and std); Demure against SASRec-F, seeds 0,1,2, paired test vs SASRec-F.
# The 0 % level is the main sequential table (benchmarks/sequential_table.sh). Resumable.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/noise_robustness.sh [dataset]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
D=${1:-scientific_mm}
OUT=${OUT:-bench_out/noise/$D}
for share in ${SHARES:-0.1 0.3 0.5}; do
  $P -q compare --data $D --out $OUT/noise-$share --model sasrecf --model demure \
     --seeds ${SEEDS:-0,1,2} --epochs 200 --metrics recall@10,ndcg@10,mrr@10 \
     --set data.feature_noise=$share --set train.threads=${THREADS:-1}
done
