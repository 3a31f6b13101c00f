#!/usr/bin/env bash
# Transfer: ANT (pre-train -> adapt) with the negative-transfer report.
#
# Settings (no item shared between source and target):
#   A. movies (MovieLens-1M, MiniLM text of title + genres)  ->  Amazon Scientific (scientific_mm)
#   B. Amazon Scientific (scientific, MiniLM text)           ->  movies (MovieLens-100K)
#   C. multi-domain: {movies (MovieLens-100K), Amazon Scientific without scientific_mm's items} -> scientific_mm,
#      against each source alone (the second source is derived by benchmarks/make_disjoint_domain.py:
#      4,857 users, 2,797 items, no item of the target). Strategies STRATS_C (default finetune relearn) and
#      scratch, which does not depend on the source and is run once and shared by the three settings.
#   D. converged pre-training, uncapped adaptation (two Amazon text domains and movies, no item shared):
#      {Amazon Office, MovieLens-100K} -> Amazon Scientific and {Amazon Scientific, MovieLens-100K} -> Amazon
#      Office. Pre-training stops when the training loss has not fallen by PRE_MIN_DELTA for PRE_PATIENCE
#      epochs (at most PRE_EPOCHS_D; pretrain.json keeps the loss curve and says whether it converged);
#      adaptation runs up to EPOCHS_D epochs with patience PATIENCE_D, so the cap does not bind (the best
#      epochs are reported beside it). Office ships raw text only: its MiniLM features are extracted here
#      (prismrec features, by benchmarks/text_features_folder.sh) into OUT/data/office. MovieLens-100K stands
#      for MovieLens: one ml-1m pre-training epoch costs ~115 s on this CPU (one thread, shared cores),
#      ~10x an epoch of {office or scientific, ml-100k}.
# plus the modality ablation on target A (text only vs text + image; the image adaptor is new at adaptation,
# since the movie source has no images).
#
# The text features of all three folders are sentence-transformers all-MiniLM-L6-v2 (384-d, per
# ../shared/data/README); the folders carry no features.json, so the encoder is declared with --encoder.
#
# Usage: DATA=/work/shared/data OUT=bench_out/transfer SEEDS="0 1 2" EPOCHS=20 PRE_EPOCHS=5 bash benchmarks/transfer.sh
# Then:  python benchmarks/collect_transfer.py $OUT   (tables + seconds per epoch)
# Measured (docs/benchmarks.md, Transfer): PART=A PRE_EPOCHS=3 EPOCHS=20 and PART=B PRE_EPOCHS=10 EPOCHS=15 (two shells), SEEDS="0 1 2";
#   PART=C PRE_EPOCHS=10 EPOCHS=60 PATIENCE=10 SEEDS="0 1 2" (multi-domain).
# Longer-budget check of setting A (seed 0, 60 epochs, patience 10; one shell per strategy):
#   mkdir -p bench_out/transfer_long && cp -r bench_out/transfer/pre_movies bench_out/transfer_long/
#   PART=A SEEDS=0 EPOCHS=60 PATIENCE=10 STRATS=scratch STRATS_MM="" OUT=bench_out/transfer_long bash benchmarks/transfer.sh
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

PART=${PART:-all}             # A, B, C, D or all (all: A-C) (they can run in parallel, in separate shells)

# ---- pre-training (resumed when killed, skipped when already done)
pre() {  # pre OUT_NAME SOURCE [SOURCE ...]
  local name=$1; shift
  local r=() d=(); [ -f "$OUT/$name/pretrain_request.json" ] && r=(--resume)
  for s in "$@"; do d+=(--data "$s"); done
  [ -f "$OUT/$name/pretrain.json" ] || $PR pretrain "${d[@]}" --out "$OUT/$name" --epochs "$PRE_EPOCHS" \
      "${ENC[@]}" "${COMMON[@]}" --set ant.modalities=[text] "${r[@]}"
}
[[ $PART == A || $PART == all ]] && pre pre_movies "$DATA/movielens/ml-1m"
[[ $PART == B || $PART == all ]] && pre pre_scientific "$DATA/scientific"
REST=$OUT/data/scientific_rest
if [[ $PART == C || $PART == all ]]; then
  [ -d "$REST" ] || ${PY:-python} benchmarks/make_disjoint_domain.py "$DATA/scientific" "$DATA/scientific_mm" "$REST"
  pre pre_c_multi "$DATA/movielens/ml-100k" "$REST"
  pre pre_c_ml100k "$DATA/movielens/ml-100k"
  pre pre_c_scirest "$REST"
fi

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
  if [[ $PART == A || $PART == all ]]; then
    # ---- A: movies -> scientific_mm, text only
    for s in $STRATS; do run_one pre_movies "$DATA/scientific_mm" movies_to_scientific_mm_text "$s" "$seed"; done
    # ---- A, modality ablation: text + image on the target (the image adaptor is new: the source has no images)
    for s in $STRATS_MM; do
      run_one pre_movies "$DATA/scientific_mm" movies_to_scientific_mm_text_image "$s" "$seed" \
          --set ant.modalities=[image,text]
    done
  fi
  if [[ $PART == B || $PART == all ]]; then
    # ---- B: scientific -> movies (MovieLens-100K), text
    for s in $STRATS; do
      EPOCHS=${EPOCHS_B:-$EPOCHS} run_one pre_scientific "$DATA/movielens/ml-100k" scientific_to_ml100k_text "$s" "$seed"
    done
  fi
done

# ---- C: multi-domain vs single-source pre-training -> scientific_mm (text)
if [[ $PART == C || $PART == all ]]; then
  for seed in $SEEDS; do
    run_one pre_c_multi "$DATA/scientific_mm" c_multi_to_scientific_mm scratch "$seed"
    for pre in multi ml100k scirest; do
      for s in ${STRATS_C:-finetune relearn}; do run_one "pre_c_$pre" "$DATA/scientific_mm" "c_${pre}_to_scientific_mm" "$s" "$seed"; done
      rd="$OUT/runs/c_${pre}_to_scientific_mm/scratch/seed-$seed"      # the shared scratch run
      [ "$pre" = multi ] || [ -e "$rd" ] || { mkdir -p "$(dirname "$rd")" && cp -r "$OUT/runs/c_multi_to_scientific_mm/scratch/seed-$seed" "$rd"; }
    done
  done
fi

# ---- D: converged pre-training, uncapped adaptation: {office, ml-100k} -> scientific, {scientific, ml-100k} -> office
if [[ $PART == D ]]; then
  OFFICE=$OUT/data/office
  PRISMREC="$(command -v "$PR")" bash "$(dirname "$0")/text_features_folder.sh" "$(realpath "$DATA/office")" \
    "$(realpath -m "$OFFICE")"   # links to the shared files + MiniLM text features; skipped when present
  CONV=(--set ant.pretrain_patience="${PRE_PATIENCE:-10}" --set ant.pretrain_min_delta="${PRE_MIN_DELTA:-0.005}")
  PAIRS=()   # checkpoint:source:target; TARGETS_D="scientific office" (default both; one per shell runs them in parallel)
  for t in ${TARGETS_D:-scientific office}; do
    case $t in scientific) PAIRS+=("d_office_ml100k:$OFFICE:$DATA/scientific");;
      office) PAIRS+=("d_sci_ml100k:$DATA/scientific:$OFFICE");;
      *) echo "TARGETS_D: unknown target '$t' (scientific or office)" >&2; exit 2;; esac
  done
  for pair in "${PAIRS[@]}"; do
    IFS=: read -r name src _ <<< "$pair"
    r=(); [ -f "$OUT/$name/pretrain_request.json" ] && r=(--resume)
    [ -f "$OUT/$name/pretrain.json" ] || $PR pretrain --data "$src" --data "$DATA/movielens/ml-100k" --out "$OUT/$name" \
        --epochs "${PRE_EPOCHS_D:-300}" "${ENC[@]}" "${COMMON[@]}" --set ant.modalities=[text] "${CONV[@]}" "${r[@]}"
  done
  for seed in $SEEDS; do
    for s in ${STRATS_D:-scratch finetune adaptor relearn}; do
      for pair in "${PAIRS[@]}"; do
        IFS=: read -r name _ target <<< "$pair"
        EPOCHS=${EPOCHS_D:-300} PATIENCE=${PATIENCE_D:-20} run_one "$name" "$target" "${name}_to_$(basename "$target")" "$s" "$seed"
      done
    done
  done
fi

# ---- negative-transfer report (Markdown + PNG), one per setting
for d in "$OUT"/runs/*/; do
  $PR transfer-report $(find "$d" -name metrics.json -printf '%h\n' | sort) --out "$d/report" > /dev/null
done
