#!/usr/bin/env bash
# MDSRec's default (10 interest centres per modality, uniform dropout masks) against the SGP4SR code's setting
# (50 centres, bernoulli masks as nn.Dropout), on scientific_mm with the protocol of the sequential table (default
# settings otherwise, history masked, patience 20, at most 200 epochs, seeds 0,1,2). Resumable: finished runs
# are reused. docs/benchmarks.md §2.4.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/mdsrec_cost_quality.sh
#   ENTRIES="mdsrec mdsrec[positions=from_start;training_samples=windows]": prefix against window training instead
#   then python benchmarks/paired.py bench_out/seq/mdsrec_cost/scientific_mm --ref "mdsrec_n_centers=50_dropout_masks=bernoulli" \
#        --models "mdsrec_n_centers=10" --metrics recall@10,ndcg@10,recall@50,ndcg@50 --layout compare
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq/mdsrec_cost}
D=${DATASET:-scientific_mm}
C=(--data "$D" --out "$OUT/$D" --seeds "${SEEDS:-0,1,2}" --epochs 200 --metrics recall@10,ndcg@10,recall@50,ndcg@50,mrr@10
   --jobs 1 --set "train.threads=${THREADS:-1}")
M=()
for e in ${ENTRIES:-"mdsrec[n_centers=50;dropout_masks=bernoulli]" "mdsrec[n_centers=10]"}; do M+=(--model "$e"); done
$P -q compare "${M[@]}" "${C[@]}"
