#!/usr/bin/env bash
# Feature extraction: features from raw inputs with `prismrec features`, and models trained on them.
#  1. text of scientific_mm (items.tsv: "title. categories. brand.") with the default encoder (MiniLM);
#  2. image throughput on real photos (the sample photos scikit-image ships; pip install scikit-image);
#  3. LIRDRec and FREEDOM trained with the shipped text features and with the extracted ones (text only,
#     so the comparison isolates the text modality). Resumable (finished runs are reloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
P=${PRISMREC:-.venv/bin/prismrec}
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/scientific_mm}
OUT=${OUT:-bench_out/features}
SEEDS=${SEEDS:-0}
mkdir -p $OUT
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1

# 1. text features
$P features --data $DATA --modality text --out $OUT/sci_text.npz --threads 1

# 2. image features from real photos: an item table over scikit-image's sample photos, repeated to 240 items
$PY - "$OUT" <<'PYEOF'
import sys, pathlib, skimage, pandas as pd
root = pathlib.Path(skimage.data.__file__).parent
photos = sorted(p for p in root.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.stat().st_size > 20000)
rows = [{"item_id": f"photo{i}", "image": str(photos[i % len(photos)])} for i in range(240)]
rows += [{"item_id": "missing", "image": "no/such/file.jpg"}, {"item_id": "broken", "image": __file__}]
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
pd.DataFrame(rows).to_csv(out / "photos.csv", index=False)
print(f"{len(photos)} distinct photos: " + ", ".join(p.name for p in photos))
PYEOF
$P features --items $OUT/photos.csv --modality image --out $OUT/photos_image.npz --threads 1 --batch-size 16 --no-cache

# 3. shipped vs extracted text features, same split, same seeds
for m in ${MODELS:-lirdrec freedom}; do
  for s in ${SEEDS//,/ }; do
    $P -q train --model $m --data $DATA --out $OUT/train/$m-shipped-s$s --seed $s --epochs 200 --resume \
       --set data.modalities=[text] --set train.threads=1
    $P -q train --model $m --data $DATA --out $OUT/train/$m-extracted-s$s --seed $s --epochs 200 --resume \
       --set data.modalities=[text] --set data.extra_features.text=$OUT/sci_text.npz --set train.threads=1
  done
done
$PY - "$OUT" <<'PYEOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1]) / "train"
print("| run | best epoch | recall@20 | ndcg@20 |\n|---|---|---|---|")
for d in sorted(out.iterdir()):
    m = json.loads((d / "metrics.json").read_text())
    print(f"| {d.name} | {m['best_epoch']} | {m['test']['recall@20']:.4f} | {m['test']['ndcg@20']:.4f} |")
PYEOF
