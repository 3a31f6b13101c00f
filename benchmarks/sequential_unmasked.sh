#!/usr/bin/env bash
# The published protocol for sequential models (RecBole's full ranking: the user's history NOT masked), with
# training, early stopping and selection under that same protocol, text only (as VQ-Rec / UniSRec / MISSRec),
# seeds 0,1,2; the table's paired tests are against SASRec-F. Every row is selected on validation NDCG@10 (UniSRec's
# valid_metric; the sequential models' default, set here so that ANT, whose own default is Recall@10, is selected
# alike). Resumable.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/sequential_unmasked.sh [OUT]
#   MODELS="demure mdsrec ant" runs a subset (SASRec-F, GRU4Rec and SASRec by default), SEEDS=0,1,2;
#   DATA=bench_out/data/office another dataset (a name under PRISMREC_DATA or a folder; scientific by default),
#   written to bench_out/seq/<its name>_text_unmasked unless OUT is given.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
DATA=${DATA:-scientific}
OUT=${1:-bench_out/seq/$(basename "$DATA")_text_unmasked}
ENTRIES=()
for m in ${MODELS:-sasrecf sasrec gru4rec}; do ENTRIES+=(--model "$m"); done
$P -q compare --data "$DATA" --out "$OUT" --seeds ${SEEDS:-0,1,2} --jobs 1 "${ENTRIES[@]}" \
   --set "data.modalities=[text]" --set train.mask_history=false --set train.epochs=200 --set train.threads=1 \
   --set train.valid_metric=ndcg@10 --metrics recall@10,ndcg@10,recall@50,ndcg@50
