"""Collect the issue-5 transfer benchmark (benchmarks/issue5_transfer.sh) into Markdown tables.

Usage: python benchmarks/collect_transfer.py bench_out/transfer [--metrics recall@10,recall@50,ndcg@10,ndcg@50]
Prints: pre-training seconds per epoch; per setting x strategy the test metrics (mean ± std over seeds),
seconds per adaptation epoch, epochs run and best epoch; then the negative-transfer report of each setting
(each strategy vs scratch, paired test on per-user results pooled over seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from prismrec.train.transfer import transfer_report

ORDER = ["scratch", "finetune", "adaptor", "relearn"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--metrics", default="recall@10,recall@50,ndcg@10,ndcg@50")
    a = ap.parse_args()
    metrics = a.metrics.split(",")
    print("\n### Pre-training\n")
    print("| checkpoint | sources | modalities | epochs | s/epoch | final loss | params |")
    print("|---|---|---|---|---|---|---|")
    for p in sorted(a.root.glob("pre_*/pretrain.json")):
        m = json.loads(p.read_text())
        mods = ", ".join(f"{k} ({v['encoder']}, {v['dim']}-d)" for k, v in m["modalities"].items())
        print(f"| {p.parent.name} | {', '.join(s['name'] for s in m['sources'])} | {mods} | {m['epochs_run']} | "
              f"{m['epoch_seconds']:.1f} | {m['history'][-1]['loss']:.4f} | {m['n_params']:,} |")
    for setting in sorted(p for p in (a.root / "runs").glob("*") if p.is_dir()):
        print(f"\n### {setting.name}\n")
        print("| strategy | seeds | " + " | ".join(metrics) + " | s/epoch | epochs run | best epoch | trainable params |")
        print("|---|---|" + "---|" * (len(metrics) + 4))
        dirs = []
        strategies = sorted((p.name for p in setting.iterdir() if p.is_dir() and p.name != "report"),
                            key=lambda s: ORDER.index(s) if s in ORDER else 99)
        for strat in strategies:
            runs = [json.loads(f.read_text()) for f in sorted((setting / strat).glob("seed-*/metrics.json"))]
            dirs += [f.parent for f in sorted((setting / strat).glob("seed-*/metrics.json"))]
            if not runs:
                continue
            cells = []
            for m in metrics:
                v = np.array([r["test"][m] for r in runs])
                cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
            eps = np.mean([r["epoch_seconds"] for r in runs])
            ran = "/".join(str(r["epochs_run"]) for r in runs)
            best = "/".join(str(r["best_epoch"]) for r in runs)
            tp = (runs[0].get("model_info") or {}).get("trainable_params", "")
            print(f"| {strat} | {len(runs)} | " + " | ".join(cells) + f" | {eps:.2f} | {ran} | {best} | {tp:,} |")
        if dirs:
            md, _ = transfer_report(dirs, metrics=metrics)
            print("\nAgainst scratch (paired over users x seeds):\n")
            print(md)


if __name__ == "__main__":
    main()
