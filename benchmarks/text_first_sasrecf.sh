#!/usr/bin/env bash
# Issue 16 item 3 (docs/benchmarks.md §2.6): SASRec-F with UniSRec's/ANT's MoE item encoder (ID-free, cosine / tau)
# against the default linear SASRec-F on scientific, text only, history NOT masked (RecBole's protocol), the same
# search for both (TRIALS TPE trials on validation NDCG@10, patience 10, at most EPOCHS epochs), then seeds 0,1,2,
# and the paired tests. Resumable: finished trials and seed runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/text_first_sasrecf.sh   (TRIALS=4 EPOCHS=100 OUT=...)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq16/scientific_text}
MOE="sasrecf[feature_encoder=moe;scoring=cosine;use_ids=false]"
C=(--data scientific --out "$OUT" --seeds 0,1,2 --tune "${TRIALS:-4}" --tune-prune-warmup "${PRUNE_WARMUP:-2}" --jobs 1 --epochs "${EPOCHS:-100}"
   --set "data.modalities=[text]" --set train.mask_history=false --set train.patience=10
   --set "train.threads=${THREADS:-1}" --metrics recall@10,ndcg@10,recall@50,ndcg@50,mrr@10)
$P -q compare --model "$MOE" "${C[@]}" > /dev/null
$P -q compare --model sasrecf "${C[@]}" > /dev/null
$P -q compare --model sasrecf --model "$MOE" "${C[@]}"
python benchmarks/paired.py "$OUT" --ref sasrecf --models "sasrecf_feature_encoder=moe_scoring=cosine_use_ids=false" \
  --metrics recall@10,ndcg@10,recall@50,ndcg@50 --layout compare
