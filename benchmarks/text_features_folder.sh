#!/usr/bin/env bash
# A dataset folder with text features made by the toolkit, for a shared dataset that ships none (Office):
# DEST holds links to SRC's files (nothing of SRC is written) plus text_feat.npy, text_available.npy and
# features.json from `prismrec features` (all-MiniLM-L6-v2, offline). Skips the extraction when DEST has them.
# Usage: bash benchmarks/text_features_folder.sh [SRC] [DEST]
#   defaults: SRC=${PRISMREC_DATA:-../shared/data}/office, DEST=bench_out/data/<SRC's name>
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
SRC=${1:-${PRISMREC_DATA:-../shared/data}/office}
DEST=${2:-bench_out/data/$(basename "$SRC")}
[ -d "$SRC" ] || { echo "$SRC is not a folder. Fix: pass a dataset folder (PRISMREC_DATA=../shared/data)." >&2; exit 2; }
mkdir -p "$DEST"
for f in "$SRC"/*; do
  [ -e "$DEST/$(basename "$f")" ] || ln -s "$(realpath "$f")" "$DEST/"
done
if [ -f "$DEST/text_feat.npy" ] && [ -f "$DEST/features.json" ]; then
  echo "$DEST has text features already"
else
  HF_HUB_OFFLINE=1 $P features --modality text --data "$DEST" --out "$DEST/" --threads 1
fi
