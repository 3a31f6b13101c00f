#!/usr/bin/env bash
# Cold-start items: scientific_mm with the cold_items split (20 % of items held out with all
# their interactions; half validate, half test, so test items never occur in training). Test
# Recall@20 is then recall on never-seen items. Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
$P -q compare --data ${DATA:-scientific_mm} --out ${OUT:-bench_out/cold/scientific_mm} \
   --model lightgcn --model pop --model freedom --model lirdrec --model alignrec \
   --seeds ${SEEDS:-0,1,2} --epochs 200 --set data.split=cold_items --set train.threads=${THREADS:-1} \
   --metrics recall@10,recall@20,ndcg@20
