#!/usr/bin/env bash
# Sequential table: GRU4Rec, SASRec, SASRec-F, MDSRec, Demure with default settings (no
# test-set tuning), seeds 0,1,2; `prismrec compare` adds a paired test of every entry against the
# first (SASRec-F). Leave-one-out, full ranking, history masked. Resumable: finished runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/sequential_table.sh [dataset ...]
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq}
ML1M=${ML1M:-${PRISMREC_DATA:-../shared/data}/movielens/ml-1m}
DATASETS=${*:-scientific_mm scientific ml-1m}
MODELS=(--model sasrecf --model gru4rec --model sasrec --model mdsrec --model demure)
METRICS=recall@10,ndcg@10,recall@50,ndcg@50,mrr@10
for d in $DATASETS; do
  if [ "$d" = ml-1m ]; then
    # 1M interactions: epochs capped at 60, max_len 50 (the paper uses 200 on ML-1M; see docs)
    $P -q compare --data "$ML1M" --out $OUT/ml-1m "${MODELS[@]}" --seeds ${SEEDS:-0,1,2} --epochs 60 \
       --metrics $METRICS --set train.threads=${THREADS:-1}
  else
    $P -q compare --data $d --out $OUT/$d "${MODELS[@]}" --seeds ${SEEDS:-0,1,2} --epochs 200 \
       --metrics $METRICS --set train.threads=${THREADS:-1}
  fi
done
