#!/usr/bin/env bash
# Sampled softmax against the full softmax (issue 16 item 4's quality check): SASRec-F on scientific, text only,
# history masked, the full softmax and uniform sampled softmax with 256 and 1,024 shared negatives per batch,
# seeds 0,1,2, early stopping on validation NDCG@10 (patience 20, at most 200 epochs); the table's paired tests
# are against the full softmax (the first entry). Resumable: finished runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/sampled_softmax_quality.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${1:-bench_out/sampled_softmax/scientific}
$P -q compare --data scientific --out "$OUT" --seeds 0,1,2 --jobs 1 \
   --model sasrecf --model "sasrecf[loss_type=sampled;num_sampled=256]" --model "sasrecf[loss_type=sampled;num_sampled=1024]" \
   --set "data.modalities=[text]" --set train.epochs=200 --set train.threads=1 \
   --metrics recall@10,ndcg@10,recall@50,ndcg@50
