#!/usr/bin/env bash
# MDSRec's cheap setting against the code's: 10 interest centres per modality and uniform dropout masks
# (mdsrec[n_centers=10], the toolkit's fast setting) against 50 centres and bernoulli masks (the SGP4SR code's
# K and nn.Dropout), on scientific_mm with the protocol of the sequential table (default settings, history
# masked, patience 20, at most 200 epochs, seeds 0,1,2). Resumable: finished runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/mdsrec_cost_quality.sh
#   then python benchmarks/paired.py bench_out/seq/mdsrec_cost/scientific_mm --ref "mdsrec_dropout_masks=bernoulli" \
#        --models "mdsrec_n_centers=10" --metrics recall@10,ndcg@10 --layout compare
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq/mdsrec_cost}
D=${DATASET:-scientific_mm}
C=(--data "$D" --out "$OUT/$D" --seeds "${SEEDS:-0,1,2}" --epochs 200 --metrics recall@10,ndcg@10,recall@50,ndcg@50,mrr@10
   --jobs 1 --set "train.threads=${THREADS:-1}")
$P -q compare --model "mdsrec[n_centers=10]" "${C[@]}"
$P -q compare --model "mdsrec[dropout_masks=bernoulli]" "${C[@]}"
$P -q compare --model "mdsrec[dropout_masks=bernoulli]" --model "mdsrec[n_centers=10]" "${C[@]}"
