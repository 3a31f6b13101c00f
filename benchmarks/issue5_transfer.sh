#!/usr/bin/env bash
# Issue 5: ANT transfer (pre-train -> adapt) with the negative-transfer report.
#
# Settings (no item shared between source and target):
#   A. movies (MovieLens-1M, MiniLM text of title + genres)  ->  Amazon Scientific (scientific_mm)
#   B. Amazon Scientific (scientific, MiniLM text)           ->  movies (MovieLens-100K)
# plus the modality ablation on target A (text only vs text + image; the image adaptor is new at adaptation,
# since the movie source has no images).
#
# The text features of all three folders are sentence-transformers all-MiniLM-L6-v2 (384-d, per
# ../shared/data/README); the folders carry no features.json, so the encoder is declared with --encoder.
#
# Usage: DATA=/work/shared/data OUT=bench_out/transfer SEEDS="0 1 2" EPOCHS=20 PRE_EPOCHS=5 bash benchmarks/issue5_transfer.sh
# Then:  python benchmarks/collect_transfer.py $OUT   (tables + seconds per epoch)
# Measured (issue 5): PART=A PRE_EPOCHS=3 EPOCHS=20 and PART=B PRE_EPOCHS=10 EPOCHS=15 (two shells), SEEDS="0 1 2".
# Longer-budget check of setting A (seed 0, 60 epochs, patience 10; one shell per strategy):
#   mkdir -p bench_out/transfer_long && cp -r bench_out/transfer/pre_movies bench_out/transfer_long/
#   PART=A SEEDS=0 EPOCHS=60 PATIENCE=10 STRATS=scratch STRATS_MM="" OUT=bench_out/transfer_long bash benchmarks/issue5_transfer.sh
#   (likewise STRATS=relearn and STRATS=finetune)
set -euo pipefail
DATA=${DATA:-/work/shared/data}
OUT=${OUT:-bench_out/transfer}
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-20}          # adaptation epoch cap (early stopping on valid recall@10, patience below)
PRE_EPOCHS=${PRE_EPOCHS:-5}   # pre-training epochs
PATIENCE=${PATIENCE:-5}
PR=${PR:-prismrec}
COMMON=(--set train.threads=1)
ENC=(--encoder text=all-MiniLM-L6-v2)
STRATS=${STRATS:-"scratch finetune adaptor relearn"}
STRATS_MM=${STRATS_MM-"scratch relearn"}   # strategies of the text + image ablation
mkdir -p "$OUT"

PART=${PART:-all}             # A, B or all (A and B can run in parallel, in two shells)

# ---- pre-training (skipped when already done)
[[ $PART == B ]] || [ -f "$OUT/pre_movies/pretrain.json" ] || $PR pretrain --data "$DATA/movielens/ml-1m" --out "$OUT/pre_movies" \
    --epochs "$PRE_EPOCHS" "${ENC[@]}" "${COMMON[@]}" --set ant.modalities=[text]
[[ $PART == A ]] || [ -f "$OUT/pre_scientific/pretrain.json" ] || $PR pretrain --data "$DATA/scientific" --out "$OUT/pre_scientific" \
    --epochs "$PRE_EPOCHS" "${ENC[@]}" "${COMMON[@]}" --set ant.modalities=[text]

run_one() {  # run_one PRE TARGET_DIR NAME STRATEGY SEED [extra args ...]
  local pre=$1 target=$2 name=$3 s=$4 seed=$5; shift 5
  local rd="$OUT/runs/$name/$s/seed-$seed"
  [ -f "$rd/metrics.json" ] && return 0
  rm -rf "$rd"
  $PR -q adapt --pretrained "$OUT/$pre" --data "$target" --strategy "$s" --out "$rd" --seed "$seed" \
      --epochs "$EPOCHS" "${ENC[@]}" "${COMMON[@]}" --set train.patience="$PATIENCE" "$@"
}

# Seeds outermost, so a cut-short run of this script leaves complete seeds.
for seed in $SEEDS; do
  if [[ $PART != B ]]; then
    # ---- A: movies -> scientific_mm, text only
    for s in $STRATS; do run_one pre_movies "$DATA/scientific_mm" movies_to_scientific_mm_text "$s" "$seed"; done
    # ---- A, modality ablation: text + image on the target (the image adaptor is new: the source has no images)
    for s in $STRATS_MM; do
      run_one pre_movies "$DATA/scientific_mm" movies_to_scientific_mm_text_image "$s" "$seed" \
          --set ant.modalities=[image,text]
    done
  fi
  if [[ $PART != A ]]; then
    # ---- B: scientific -> movies (MovieLens-100K), text
    for s in $STRATS; do
      EPOCHS=${EPOCHS_B:-$EPOCHS} run_one pre_scientific "$DATA/movielens/ml-100k" scientific_to_ml100k_text "$s" "$seed"
    done
  fi
done

# ---- negative-transfer report (Markdown + PNG), one per setting
for d in "$OUT"/runs/*/; do
  $PR transfer-report $(find "$d" -name metrics.json -printf '%h\n' | sort) --out "$d/report" > /dev/null
done
