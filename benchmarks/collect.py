"""Collect the final tables that ``prismrec tune`` wrote under a benchmark folder into one Markdown table.

Usage: python benchmarks/collect.py bench_out/topk [--metrics recall@10,recall@20,ndcg@10,ndcg@20]
Layout read: ROOT/<dataset>/<model>/final/results.csv (one row per chosen setting, mean and std over seeds)
and runs.csv beside it (peak RSS: the largest of the seeds' run processes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


ORDER = ["pop", "bpr", "lightgcn", "vbpr", "freedom", "bm3", "lirdrec", "alignrec",
         "gru4rec", "gru4recf", "sasrec", "sasrecf", "mdsrec", "demure"]


def collect(root: Path, metrics: list[str]) -> str:
    rows = []
    for csv in sorted(root.glob("*/*/final/results.csv")):
        dataset, model = csv.parts[-4], csv.parts[-3]
        r = pd.read_csv(csv).iloc[0].copy()
        runs = csv.with_name("runs.csv")
        r["peak_rss_mb"] = pd.read_csv(runs)["peak_rss_mb"].max() if runs.is_file() else float("nan")
        rows.append((dataset, model, r))
    out = []
    for dataset in dict.fromkeys(d for d, _, _ in rows):
        out.append(f"\n**{dataset}** (test, mean ± std over seeds; setting chosen on validation)\n")
        out.append("| model | chosen setting | " + " | ".join(metrics) + " | s/epoch | best epoch | peak RSS MB |")
        out.append("|---|---|" + "---|" * (len(metrics) + 3))
        sub = sorted(((m, r) for d, m, r in rows if d == dataset),
                     key=lambda x: (ORDER.index(x[0]) if x[0] in ORDER else len(ORDER), x[0]))
        best = {k: max(r[f"{k}_mean"] for _, r in sub) for k in metrics}
        for model, r in sub:
            cells = []
            for k in metrics:
                cell = f"{r[f'{k}_mean']:.4f} ± {r[f'{k}_std']:.4f}"
                cells.append(f"**{cell}**" if r[f"{k}_mean"] == best[k] else cell)
            setting = str(r["entry"]).split("[", 1)[1].rstrip("]") if "[" in str(r["entry"]) else "defaults"
            out.append(f"| {model} | `{setting}` | " + " | ".join(cells)
                       + f" | {r['epoch_seconds_mean']:.3f} | {r['best_epoch_mean']:.0f} | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--metrics", default="recall@10,recall@20,ndcg@10,ndcg@20")
    a = ap.parse_args()
    print(collect(a.root, a.metrics.split(",")))
