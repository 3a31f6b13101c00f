"""Paired tests of models against a reference model, from finished `prismrec tune` / `compare` runs.

Usage: python benchmarks/paired.py bench_out/topk/scientific_mm --ref freedom --models lirdrec,alignrec
       [--metrics recall@20,ndcg@20] [--layout tune|compare]
For every seed: difference of the per-user test metric (model - ref), paired t-test and Wilcoxon
p-values; "pooled": the toolkit's rule over seeds (prismrec.report.paired, docs/evaluation.md): each
user's metric averaged over the seeds both models ran, then the same test on users.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prismrec.report.paired import paired_over_seeds
from prismrec.report.tables import Table, ci, history_protocol, num, pvalue, signed
from prismrec.runs import load_per_user, masked_history


def seed_runs(root: Path, model: str, layout: str) -> dict[str, Path]:
    # compare layout: MODEL is the entry's folder name exactly (sasrec must not match sasrecf)
    pattern = f"{model}/final/*/seed-*" if layout == "tune" else f"{model}/seed-*"
    return {p.name: p for p in sorted(root.glob(pattern)) if (p / "per_user_test.npz").is_file()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--metrics", default="recall@20,ndcg@20")
    ap.add_argument("--layout", default="tune", choices=["tune", "compare"])
    a = ap.parse_args()
    ref = seed_runs(a.root, a.ref, a.layout)
    every = [*ref.values(), *(p for m in a.models.split(",") for p in seed_runs(a.root, m, a.layout).values())]
    table = Table(["model", "metric", "seed", "ref", "model", "diff", "95% CI", "t p", "Wilcoxon p"],
                  caption=f"\nPaired tests on `{a.root.name}` against **{a.ref}** (per-user test metric, B - A; "
                          f"{history_protocol(masked_history(p) for p in every)})")
    for model in a.models.split(","):
        runs = seed_runs(a.root, model, a.layout)
        seeds = sorted(set(ref) & set(runs))
        za = {s: load_per_user(ref[s]) for s in seeds}
        zb = {s: load_per_user(runs[s]) for s in seeds}
        for metric in a.metrics.split(","):
            groups = [(s.replace("seed-", ""), [s]) for s in seeds] + ([("pooled", seeds)] if seeds else [])
            for name, group in groups:
                t = paired_over_seeds([za[s] for s in group], [zb[s] for s in group], metric)
                table.add(model, metric, name, num(t.mean_a), num(t.mean_b), signed(t.diff), ci(t.ci_low, t.ci_high),
                          pvalue(t.t_pvalue), pvalue(t.wilcoxon_pvalue))
    print(table.markdown())


if __name__ == "__main__":
    main()
