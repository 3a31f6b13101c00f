"""Counted ranks against torch.topk on real data: the evaluator's two paths must give the same metrics.

For each (model, dataset): train a few epochs, then evaluate valid and test three ways: the top-K path
(`keep_topk=True`: `torch.topk`'s lists), the counted ranks on whole rows, and the counted ranks with the
catalogue cut into 1,000-item tiles (dot-product models). Prints, per stage, whether every per-user metric
is identical and each path's CPU seconds (one thread).

    PRISMREC_DATA=../shared/data python benchmarks/eval_exactness.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

CASES = [("pop", "baby", 0), ("bpr", "baby", 3), ("lightgcn", "baby", 2), ("sasrecf", "scientific", 1),
         ("bpr", "scientific", 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(f"{m}:{d}:{e}" for m, d, e in CASES),
                    help="model:dataset:epochs, comma-separated")
    args = ap.parse_args()
    os.environ.setdefault("PRISMREC_DATA", "../shared/data")
    import prismrec.evaluate.ranking as ranking
    from prismrec.runs import build_config, prepare
    from prismrec.train.trainer import Trainer

    torch.set_num_threads(1)
    all_same = True
    for case in args.cases.split(","):
        model, data, epochs = case.split(":")
        cfg = build_config(model, data, overrides=["train.threads=1", f"train.epochs={max(int(epochs), 1)}"], seed=0)
        _, split, net, tdata, _ = prepare(cfg)
        if int(epochs):
            Trainer(net, tdata, split, cfg.train, cfg.seed).fit()
        for stage in ("valid", "test"):
            ev = ranking.RankingEvaluator(split, stage, [10, 20, 50], mask_valid=stage == "test")
            timed = {}

            def run(name, **kw):
                c = time.process_time()
                res = ev.evaluate_model(net, keep_per_user=True, **kw)
                timed[name] = time.process_time() - c
                return res

            listed = run("top-K", keep_topk=True)
            counted = run("counted")
            saved, ranking.ITEM_TILE = ranking.ITEM_TILE, 1000
            try:
                tiled = run("counted, 1,000-item tiles")
            finally:
                ranking.ITEM_TILE = saved
            same = [all(np.array_equal(listed.per_user[k], r.per_user[k]) for k in listed.per_user)
                    for r in (counted, tiled)]
            all_same &= all(same)
            print(f"{model} {data} {stage}: recall@20 {listed.metrics['recall@20']:.5f}; identical: counted "
                  f"{same[0]}, tiled {same[1]}; CPU s " + ", ".join(f"{k} {v:.2f}" for k, v in timed.items()),
                  flush=True)
    print("all identical" if all_same else "DIFFERENCES FOUND")


if __name__ == "__main__":
    main()
