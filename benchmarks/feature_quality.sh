#!/usr/bin/env bash
# Feature-quality protocols on every feature set we have: zero-shot, item-kNN CF and masked
# modality, on the raw features and (--aligned) on AlignRec's stage-1 aligned features.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
OUT=${OUT:-bench_out/feature_quality}
mkdir -p $OUT
for d in ${*:-scientific_mm tiktok scientific}; do
  $P -q evaluate-features --data $d --out $OUT/$d.json > $OUT/$d.md
  $P -q evaluate-features --data $d --aligned --out $OUT/${d}_aligned.json > $OUT/${d}_aligned.md
done
