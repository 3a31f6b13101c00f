#!/usr/bin/env bash
# docs/benchmarks.md §2.6: the second search of both text-first SASRec-F variants (linear, and the MoE encoder
# ID-free with cosine / tau), with RecBole's initialisation and ANT's learning-rate decay added to the space:
# init {torch, normal}, train.lr_scheduler {constant, x0.99 per epoch}. Width held at 128 (the first search's
# choice for both). Each variant: TRIALS TPE trials on validation NDCG@10, the first at its own earlier selection
# with init=normal and the decay (--start-at-defaults); then seeds 0,1,2 of the selected setting; paired test
# MoE - linear. Scientific, text only, history NOT masked (RecBole's protocol), patience 10, at most 100 epochs.
# Resumable: finished trials and seed runs are reused.
# Usage: PRISMREC_DATA=../shared/data bash benchmarks/text_first_sasrecf_details.sh   (TRIALS=4 OUT=...)
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/seq16/details}
C=(--data scientific --trials "${TRIALS:-4}" --select ndcg@10 --epochs 100 --space "init=[torch,normal]"
   --space "train.lr_scheduler=[[1.0,50],[0.99,1]]" --start-at-defaults --set "data.modalities=[text]"
   --set train.mask_history=false --set train.patience=10 --set "train.threads=${THREADS:-1}"
   --set "train.topk=[10,20,50]" --set sasrecf.embedding_size=128 --set sasrecf.init=normal
   --set "train.lr_scheduler=[0.99,1]")
# the first search's selections (benchmarks/results/seq16/width/*/trials.csv): the start point of each search
LINEAR=(--set train.learning_rate=0.0007501954443620128 --set sasrecf.n_layers=3 --set sasrecf.dropout=0.4854651042004118)
MOE=(--set sasrecf.feature_encoder=moe --set sasrecf.scoring=cosine --set sasrecf.use_ids=false
     --set train.learning_rate=0.0012520653814999472 --set sasrecf.n_layers=3 --set sasrecf.dropout=0.3411053504286575
     --set sasrecf.adaptor_dropout=0.31795327319875877)
$P -q tune --model sasrecf --out "$OUT/linear" "${C[@]}" "${LINEAR[@]}" --final-seeds 0,1,2 > /dev/null
$P -q tune --model sasrecf --out "$OUT/moe" "${C[@]}" "${MOE[@]}" --final-seeds 0,1,2 > /dev/null
cat "$OUT/linear/tune.md" "$OUT/moe/tune.md"
python benchmarks/paired.py "$OUT" --ref linear --models moe --metrics recall@10,ndcg@10,recall@50,ndcg@50
