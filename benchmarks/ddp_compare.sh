#!/usr/bin/env bash
# One process against N data-parallel processes (torchrun, gloo on the CPU): the same model, seed and global
# batch; prints test metrics and seconds per epoch of each (docs/benchmarks.md §7.6).
#
#   benchmarks/ddp_compare.sh [OUT] [DATA] [EPOCHS] [NPROC]       # defaults: bench_ddp demo 10 2
#
# Models: bpr and sasrec (dropout 0, so the comparison isolates what DDP changes). One torch thread per
# process: on a 2-core machine N=2 uses both cores, so no speed-up is expected; correctness is the point.
set -euo pipefail
OUT="${1:-bench_ddp}"
DATA="${2:-demo}"
EPOCHS="${3:-10}"
NPROC="${4:-2}"
PY="${PYTHON:-python}"
if [[ -x "$(dirname "$0")/../.venv/bin/python" && -z "${PYTHON:-}" ]]; then PY="$(dirname "$0")/../.venv/bin/python"; fi
export OMP_NUM_THREADS=1 TORCH_CPP_LOG_LEVEL=ERROR
rm -rf "$OUT"
mkdir -p "$OUT"
for model in bpr sasrec; do
  sets=(--set train.threads=1 --set train.patience=1000 --seed 0 --epochs "$EPOCHS")
  [[ "$model" == sasrec ]] && sets+=(--set sasrec.dropout=0)
  "$PY" -m prismrec -q train -m "$model" -d "$DATA" -o "$OUT/$model-1" "${sets[@]}" > /dev/null
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m prismrec -q train -m "$model" -d "$DATA" \
    -o "$OUT/$model-$NPROC" "${sets[@]}" > /dev/null
done
"$PY" - "$OUT" "$NPROC" <<'EOF'
import json, sys
from pathlib import Path

out, n = Path(sys.argv[1]), sys.argv[2]
print("| model | processes | s/epoch | s/eval | best epoch | test recall@20 | test ndcg@10 | max abs metric diff |")
print("|---|---|---|---|---|---|---|---|")
for model in ("bpr", "sasrec"):
    one = json.loads((out / f"{model}-1" / "metrics.json").read_text())
    for p in ("1", n):
        m = json.loads((out / f"{model}-{p}" / "metrics.json").read_text())
        diff = max(abs(m["test"][k] - one["test"][k]) for k in one["test"])
        print(f"| {model} | {p} | {m['epoch_seconds']} | {m['eval_seconds']} | {m['best_epoch']} | "
              f"{m['test']['recall@20']:.4f} | {m['test']['ndcg@10']:.4f} | {diff:.2g} |")
EOF
