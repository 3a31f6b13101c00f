#!/usr/bin/env bash
# GPU check: every registered model trains for 2 epochs on the device, then a 1-process DDP smoke run
# (torchrun: NCCL on CUDA, gloo on CPU); writes a Markdown table. Under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh                      # CUDA, all models, demo data, out: bench_gpu_check/
#   benchmarks/gpu_check.sh --device cpu         # the same on the CPU (slow: use the limits below)
#   benchmarks/gpu_check.sh --out DIR --data NAME_OR_FOLDER
#
# Limits (the test suite runs a reduced form on the CPU, tests/test_gpu_check.py):
#   GPU_CHECK_MODELS="bpr sasrec"   models to run (default: every registered model)
#   GPU_CHECK_EPOCHS=1              epochs per model (default 2)
#   GPU_CHECK_DDP_PROCS=1           processes of the DDP smoke run (default 1; 0 skips it)
#
# bf16: the trainer has no autocast setting (train.* has none), so every run is fp32; the table says so.
# Exit status: 0 when every run finished, 1 otherwise (the table still lists every model).
set -euo pipefail

DEVICE=cuda
OUT=bench_gpu_check
DATA=demo
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (--device, --out, --data)" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python}"
if [[ -x "$(dirname "$0")/../.venv/bin/python" && -z "${PYTHON:-}" ]]; then PY="$(dirname "$0")/../.venv/bin/python"; fi
EPOCHS="${GPU_CHECK_EPOCHS:-2}"
DDP_PROCS="${GPU_CHECK_DDP_PROCS:-1}"
rm -rf "$OUT/runs" "$OUT/ddp"
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TORCH_CPP_LOG_LEVEL="${TORCH_CPP_LOG_LEVEL:-ERROR}"

# 1. every model, one process (one interpreter and one CUDA context for all of them)
"$PY" - "$DEVICE" "$OUT" "$DATA" "$EPOCHS" "${GPU_CHECK_MODELS:-}" <<'EOF'
import json, sys, time, traceback
from pathlib import Path

import torch

from prismrec.models import MODELS
from prismrec.runs import train_run

device, out, data, epochs, only = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5].split()
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_check: --device cuda but torch sees no GPU. Fix: run on a GPU machine, or --device cpu.")
names = only or MODELS.names()
# keep each model's check short: AlignRec's stage-1 alignment and ANT's encoders are fits of their own
extra = {"alignrec": ["alignrec.stage1_epochs=2"]}
rows = []
for name in names:
    run_dir = out / "runs" / name
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    row = {"model": name, "family": MODELS.get(name).family, "precision": "fp32"}
    try:
        sets = ["train.threads=1", "train.patience=1000", *extra.get(name, [])]
        run = train_run(name, data, run_dir, overrides=sets, seed=0,
                        epochs=epochs, device=device)
        m = run.metrics
        key = "ndcg@10" if "ndcg@10" in m["test"] else sorted(m["test"])[0]
        row.update(status="ok", epochs=m["epochs_run"], epoch_s=m["epoch_seconds"], eval_s=m["eval_seconds"],
                   metric=f"{key} {m['test'][key]:.4f}")
    except Exception as exc:  # noqa: BLE001 - every model is listed, failed or not
        row.update(status="FAIL", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
        traceback.print_exc()
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    if device.startswith("cuda"):
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rows.append(row)
    print(json.dumps(row), flush=True)
(out / "models.json").write_text(json.dumps(rows, indent=1))
EOF

# 2. DDP smoke run: torchrun, NCCL on CUDA (gloo on the CPU)
DDP_STATUS="skipped"
if [[ "$DDP_PROCS" -gt 0 ]]; then
  if "$PY" -m torch.distributed.run --standalone --nproc_per_node "$DDP_PROCS" -m prismrec -q train \
       -m lightgcn -d "$DATA" -o "$OUT/ddp" --epochs "$EPOCHS" --device "$DEVICE" --set train.threads=1 \
       > "$OUT/ddp.log" 2>&1; then
    DDP_STATUS="ok"
  else
    DDP_STATUS="FAIL (see $OUT/ddp.log)"
  fi
fi

# 3. the table
"$PY" - "$OUT" "$DEVICE" "$DATA" "$DDP_STATUS" "$DDP_PROCS" <<'EOF'
import json, platform, sys
from pathlib import Path

import torch

out, device, data, ddp_status, procs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = json.loads((out / "models.json").read_text())
gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else platform.processor() or "cpu"
lines = [f"# GPU check: {device} ({gpu}), data {data}, torch {torch.__version__}", "",
         "| model | family | status | epochs | s/epoch | s/eval | test | peak GPU MiB | precision | wall s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    status = r["status"] if r["status"] == "ok" else f"FAIL: {r.get('error', '')}"
    lines.append(f"| {r['model']} | {r['family']} | {status} | {r.get('epochs', '')} | {r.get('epoch_s', '')} | "
                 f"{r.get('eval_s', '')} | {r.get('metric', '')} | {r.get('peak_gpu_mib', '')} | {r['precision']} | "
                 f"{r['wall_s']} |")
ddp = ""
if (out / "ddp" / "metrics.json").is_file():
    m = json.loads((out / "ddp" / "metrics.json").read_text())
    ddp = (f": lightgcn, {m.get('distributed', {}).get('processes')} process(es), backend "
           f"{m.get('distributed', {}).get('backend')}, {m['epoch_seconds']} s/epoch, test ndcg@10 {m['test']['ndcg@10']:.4f}")
lines += ["", f"DDP smoke run (torchrun --nproc_per_node {procs}): {ddp_status}{ddp}", "",
          "bf16 autocast: not offered by the trainer (no train.* setting), every run above is fp32.", ""]
(out / "gpu_check.md").write_text("\n".join(lines))
print("\n".join(lines))
failed = [r["model"] for r in rows if r["status"] != "ok"] + (["ddp"] if ddp_status.startswith("FAIL") else [])
sys.exit(1 if failed else 0)
EOF
