"""Collect the final tables that ``prismrec tune`` wrote under a benchmark folder into one Markdown table.

Usage: python benchmarks/collect.py bench_out/topk [--metrics recall@10,recall@20,ndcg@10,ndcg@20]
Layout read: ROOT/<dataset>/<model>/final/results.csv (one row per chosen setting, mean and std over seeds)
and runs.csv beside it (peak RSS: the largest of the seeds' run processes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from prismrec.report.tables import count, num, seed_summary_table

ORDER = ["pop", "bpr", "lightgcn", "vbpr", "freedom", "bm3", "lirdrec", "alignrec",
         "gru4rec", "gru4recf", "sasrec", "sasrecf", "mdsrec", "demure"]


def _setting(r: dict) -> str:
    entry = r["entry"]
    return f"`{entry.split('[', 1)[1].rstrip(']')}`" if "[" in entry else "`defaults`"


def collect(root: Path, metrics: list[str]) -> str:
    rows = []
    for csv in sorted(root.glob("*/*/final/results.csv")):
        dataset, model = csv.parts[-4], csv.parts[-3]
        r = pd.read_csv(csv).iloc[0].to_dict()
        runs = csv.with_name("runs.csv")
        r["peak_rss_mb"] = pd.read_csv(runs)["peak_rss_mb"].max() if runs.is_file() else float("nan")
        r["model"], r["entry"] = model, str(r["entry"])
        rows.append((dataset, r))
    out = []
    for dataset in dict.fromkeys(d for d, _ in rows):
        sub = sorted((r for d, r in rows if d == dataset),
                     key=lambda r: (ORDER.index(r["model"]) if r["model"] in ORDER else len(ORDER), r["model"]))
        table = seed_summary_table(
            sub, metrics, label_of=lambda r: r["model"], best=True, lead=[("chosen setting", _setting)],
            caption=f"\n**{dataset}** (test, mean ± std over seeds; setting chosen on validation)",
            extra=[("s/epoch", lambda r: num(r["epoch_seconds_mean"], 3)),
                   ("best epoch", lambda r: num(r["best_epoch_mean"], 0)),
                   ("peak RSS MB", lambda r: count(r["peak_rss_mb"], missing_as="nan"))])
        out.append(table.markdown())
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--metrics", default="recall@10,recall@20,ndcg@10,ndcg@20")
    a = ap.parse_args()
    print(collect(a.root, a.metrics.split(",")))
