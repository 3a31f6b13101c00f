"""Collect the transfer benchmark (benchmarks/transfer.sh) into Markdown tables.

Usage: python benchmarks/collect_transfer.py bench_out/transfer [--metrics recall@10,recall@50,ndcg@10,ndcg@50]
Prints: pre-training epochs, convergence and seconds per epoch (loss curves in ROOT/pretrain_loss.png); per setting x strategy the test metrics (mean ± std over seeds),
seconds per adaptation epoch, epochs run and best epoch; then the negative-transfer report of each setting
(each strategy vs scratch, the toolkit's paired rule over seeds: docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from prismrec.report.tables import Table, count, mean_std, num
from prismrec.report.transfer import transfer_report

ORDER = ["scratch", "finetune", "adaptor", "relearn"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--metrics", default="recall@10,recall@50,ndcg@10,ndcg@50")
    a = ap.parse_args()
    metrics = a.metrics.split(",")
    pre = Table(["checkpoint", "sources", "modalities", "epochs", "converged", "best epoch", "s/epoch",
                 "first loss", "best loss", "params"], caption="\n### Pre-training")
    curves = {}
    for p in sorted(a.root.glob("*/pretrain.json")):
        m = json.loads(p.read_text())
        mods = ", ".join(f"{k} ({v['encoder']}, {v['dim']}-d)" for k, v in m["modalities"].items())
        losses = [h["loss"] for h in m["history"]]
        curves[p.parent.name] = losses
        pre.add(p.parent.name, ", ".join(s["name"] for s in m["sources"]), mods, m["epochs_run"],
                "yes" if m.get("converged") else "no (epoch cap)", m.get("best_epoch", ""),
                num(m["epoch_seconds"], 1), num(losses[0]), num(min(losses)), count(m["n_params"]))
    print(pre.markdown())
    if curves:  # the pre-training loss curves, one line per checkpoint
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, losses in curves.items():
            ax.plot(range(1, len(losses) + 1), losses, label=name)
        ax.set(xlabel="pre-training epoch", ylabel="mean training loss", title="ANT pre-training")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.root / "pretrain_loss.png", dpi=120)
        print(f"\nloss curves: {a.root / 'pretrain_loss.png'}")
    for setting in sorted(p for p in (a.root / "runs").glob("*") if p.is_dir()):
        table = Table(["strategy", "seeds", *metrics, "s/epoch", "epochs run", "best epoch", "trainable params"],
                      caption=f"\n### {setting.name}")
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
                cells.append(mean_std(v.mean(), v.std(ddof=1) if len(v) > 1 else None))
            eps = np.mean([r["epoch_seconds"] for r in runs])
            ran = "/".join(str(r["epochs_run"]) for r in runs)
            best = "/".join(str(r["best_epoch"]) for r in runs)
            tp = (runs[0].get("model_info") or {}).get("trainable_params", "")
            table.add(strat, len(runs), *cells, num(eps, 2), ran, best, count(tp))
        print(table.markdown())
        if dirs:
            md, _ = transfer_report(dirs, metrics=metrics)
            print("\nAgainst scratch (paired over users, per-user metric averaged over seeds):\n")
            print(md)


if __name__ == "__main__":
    main()
