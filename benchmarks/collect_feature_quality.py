"""Summarise `prismrec evaluate-features --aligned --out F.json` results into one Markdown table.

Usage: python benchmarks/collect_feature_quality.py bench_out/feature_quality/*_aligned.json
Per dataset and feature set: test Recall@20 / NDCG@20 of the zero-shot and item-kNN protocols, and
the largest relative drop of item-kNN Recall@20 when one modality is masked for half of the items.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prismrec.report.tables import Table, num


def main(paths: list[str]) -> None:
    table = Table(["dataset", "features", "zero-shot R@20", "zero-shot N@20", "item-kNN R@20", "item-kNN N@20",
                   "worst masked ΔR@20 (item-kNN)"])
    for p in paths:
        d = json.loads(Path(p).read_text())
        name = Path(p).stem.replace("_aligned", "")
        feats = list(dict.fromkeys(r["features"] for r in d["rows"]))
        for f in feats:
            rows = [r for r in d["rows"] if r["features"] == f]
            get = {(r["protocol"], r["masked"]): r for r in rows}
            zs, kn = get.get(("zero-shot", None)), get.get(("item-knn", None))
            drops = [r["drop_recall@20"] for r in rows if r["protocol"] == "item-knn" and r["masked"]]
            drop = f"{100 * min(drops):+.1f} %" if drops else ""
            table.add(name, f, num(zs["metrics"]["recall@20"]), num(zs["metrics"]["ndcg@20"]),
                      num(kn["metrics"]["recall@20"]), num(kn["metrics"]["ndcg@20"]), drop)
    print(table.markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
