#!/usr/bin/env bash
# Sequential table: GRU4Rec, SASRec, SASRec-F, MDSRec, Demure (and ANT: MODELS=ant) with default settings (no
# test-set tuning), seeds 0,1,2; `prismrec compare` adds a paired test of every entry against the
# first (SASRec-F). Leave-one-out, full ranking, history masked. Resumable: finished runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/sequential_table.sh [dataset ...]
#   a dataset is a name under PRISMREC_DATA or a folder (bench_out/data/office: written to OUT/office).
#   ML1M_SAMPLED=1024: MovieLens-1M with the sampled softmax (1,024 uniform negatives shared by the batch,
#   loss_type=sampled; the quality check against the full softmax is docs/benchmarks.md §2.4), written to
#   OUT/ml-1m-sampled-1024; the full softmax otherwise.
#   MODELS="sasrecf gru4rec" runs a subset (one lane per core; SASRec-F first keeps the paired tests against it),
#   SEEDS=0,1,2, THREADS=1, JOBS=1 (runs trained at once; compare's default otherwise: 2 on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq}
ML1M=${ML1M:-${PRISMREC_DATA:-../shared/data}/movielens/ml-1m}
DATASETS=${*:-scientific_mm scientific ml-1m}
ENTRIES=()
JOBS_ARG=(); [ -n "${JOBS:-}" ] && JOBS_ARG=(--jobs "$JOBS")
for m in ${MODELS:-sasrecf gru4rec sasrec mdsrec demure}; do ENTRIES+=(--model "$m"); done
METRICS=recall@10,ndcg@10,recall@50,ndcg@50,mrr@10
# every row selected on validation NDCG@10: the sequential models' default, set so that ANT (R@10 by default) is alike
SELECT=(--set train.valid_metric=ndcg@10)
for d in $DATASETS; do
  if [ "$d" = ml-1m ]; then
    # 1M interactions: epochs capped at 60, max_len 50 (the paper uses 200 on ML-1M; see docs)
    LOSS=() ; DEST=$OUT/ml-1m
    if [ -n "${ML1M_SAMPLED:-}" ]; then
      LOSS=(--set loss_type=sampled --set "num_sampled=$ML1M_SAMPLED"); DEST=$OUT/ml-1m-sampled-$ML1M_SAMPLED
    fi
    $P -q compare --data "$ML1M" --out "$DEST" "${ENTRIES[@]}" --seeds ${SEEDS:-0,1,2} --epochs 60 \
       --metrics $METRICS --set train.threads=${THREADS:-1} "${SELECT[@]}" "${LOSS[@]}" "${JOBS_ARG[@]}"
  else
    $P -q compare --data "$d" --out "$OUT/$(basename "$d")" "${ENTRIES[@]}" --seeds ${SEEDS:-0,1,2} --epochs 200 \
       --metrics $METRICS --set train.threads=${THREADS:-1} "${SELECT[@]}" "${JOBS_ARG[@]}"
  fi
done
