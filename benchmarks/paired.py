"""Paired tests of models against reference models, from finished `prismrec tune` / `compare` runs.

Usage: python benchmarks/paired.py bench_out/topk/scientific_mm --ref freedom --models lirdrec,alignrec
       [--ref lightgcn ...] [--metrics recall@20,ndcg@20] [--layout tune|compare] [--wide]
For every seed: difference of the per-user test metric (model - ref), paired t-test and Wilcoxon
p-values; "pooled": the toolkit's rule over seeds (prismrec.report.paired, docs/evaluation.md): each
user's metric averaged over the seeds both models ran, then the same test on users.
`--wide`: the pooled tests only, one row per model and one column per reference and metric,
"diff (t p / Wilcoxon p)", bold where the t-test's p is below 0.05 (the layout of docs/benchmarks.md).
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


def tests(root: Path, ref: str, model: str, metrics: list[str], layout: str, per_seed: bool = True):
    """{metric: [(seed label, test), ...]}: every seed both ran (with ``per_seed``), then "pooled" over
    them all; each run's per-user results are read once."""
    a, b = seed_runs(root, ref, layout), seed_runs(root, model, layout)
    seeds = sorted(set(a) & set(b))
    za, zb = {s: load_per_user(a[s]) for s in seeds}, {s: load_per_user(b[s]) for s in seeds}
    groups = [(s.replace("seed-", ""), [s]) for s in seeds] if per_seed else []
    groups += [("pooled", seeds)] if seeds else []
    return {metric: [(name, paired_over_seeds([za[s] for s in g], [zb[s] for s in g], metric))
                     for name, g in groups] for metric in metrics}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--ref", required=True, action="append", help="reference entry; repeat for several")
    ap.add_argument("--models", required=True)
    ap.add_argument("--metrics", default="recall@20,ndcg@20")
    ap.add_argument("--layout", default="tune", choices=["tune", "compare"])
    ap.add_argument("--wide", action="store_true", help="pooled tests only: one row per model")
    a = ap.parse_args()
    models, metrics = a.models.split(","), a.metrics.split(",")
    every = [p for m in [*a.ref, *models] for p in seed_runs(a.root, m, a.layout).values()]
    protocol = history_protocol(masked_history(p) for p in every)
    if a.wide:
        table = Table(["model", *(f"− {r}: Δ{m} (t p / Wilcoxon p)" for r in a.ref for m in metrics)],
                      caption=f"\nPaired tests on `{a.root.name}`, pooled over seeds (per-user test metric, "
                              f"B - A; {protocol}; bold: t p < 0.05)")
        for model in models:
            cells = []
            for ref in a.ref:
                pooled = {} if model == ref else tests(a.root, ref, model, metrics, a.layout, per_seed=False)
                for metric in metrics:
                    if not pooled.get(metric):
                        cells.append("")  # the reference itself, or no seed in common
                        continue
                    t = pooled[metric][0][1]
                    diff = signed(t.diff)
                    cells.append(f"{f'**{diff}**' if t.t_pvalue < 0.05 else diff} "
                                 f"({pvalue(t.t_pvalue)} / {pvalue(t.wilcoxon_pvalue)})")
            table.add(model, *cells)
        print(table.markdown())
        return
    for ref in a.ref:
        table = Table(["model", "metric", "seed", "ref", "model", "diff", "95% CI", "t p", "Wilcoxon p"],
                      caption=f"\nPaired tests on `{a.root.name}` against **{ref}** (per-user test metric, "
                              f"B - A; {protocol})")
        for model in (m for m in models if m != ref):
            for metric, rows in tests(a.root, ref, model, metrics, a.layout).items():
                for name, t in rows:
                    table.add(model, metric, name, num(t.mean_a), num(t.mean_b), signed(t.diff),
                              ci(t.ci_low, t.ci_high), pvalue(t.t_pvalue), pvalue(t.wilcoxon_pvalue))
        print(table.markdown())


if __name__ == "__main__":
    main()
