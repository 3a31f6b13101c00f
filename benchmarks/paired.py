"""Paired tests of models against a reference model, from finished `prismrec tune` / `compare` runs.

Usage: python benchmarks/paired.py bench_out/topk/scientific_mm --ref freedom --models lirdrec,alignrec
       [--metrics recall@20,ndcg@20] [--layout tune|compare]
For every seed: difference of the per-user test metric (model - ref), paired t-test and Wilcoxon
p-values; "pooled": the per-user metric averaged over the seeds, then the same test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from prismrec.evaluate.significance import paired_test
from prismrec.runs import load_per_user


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
    print(f"\nPaired tests on `{a.root.name}` against **{a.ref}** (per-user test metric, B - A)\n")
    print("| model | metric | seed | ref | model | diff | 95% CI | t p | Wilcoxon p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in a.models.split(","):
        runs = seed_runs(a.root, model, a.layout)
        seeds = sorted(set(ref) & set(runs))
        for metric in a.metrics.split(","):
            pooled_a, pooled_b, users = [], [], None
            for s in seeds + ["pooled"]:
                if s == "pooled":
                    if not pooled_a:
                        continue
                    t = paired_test(users, np.mean(pooled_a, 0), users, np.mean(pooled_b, 0), metric)
                else:
                    za, zb = load_per_user(ref[s]), load_per_user(runs[s])
                    t = paired_test(za["users"], za[metric], zb["users"], zb[metric], metric)
                    if users is None or np.array_equal(users, za["users"]):
                        users = za["users"]
                        if np.array_equal(za["users"], zb["users"]):
                            pooled_a.append(za[metric])
                            pooled_b.append(zb[metric])
                print(f"| {model} | {metric} | {s.replace('seed-', '')} | {t.mean_a:.4f} | {t.mean_b:.4f} | "
                      f"{t.diff:+.4f} | [{t.ci_low:+.4f}, {t.ci_high:+.4f}] | {t.t_pvalue:.3g} | {t.wilcoxon_pvalue:.3g} |")


if __name__ == "__main__":
    main()
