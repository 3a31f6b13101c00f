"""prismrec: multimodal recommendation, from raw items to served recommendations.

The Python API mirrors the CLI and lives in :mod:`prismrec.api`::

    import prismrec.api as pr
    ds = pr.load_dataset("demo")                          # Dataset
    run = pr.train("lightgcn", "demo", out="runs/lgcn", seed=0, epochs=50)
    run.metrics["test"]["recall@20"]
    run.recommend(["12"], k=10)                           # DataFrame of raw ids and titles
    pr.evaluate("runs/lgcn")                              # re-score a saved run
    pr.load_run("runs/lgcn").recommend(["12"])
    pr.compare(["bpr", "lightgcn"], "demo", out="runs/cmp", seeds=[0, 1, 2])
    pr.paired_test("runs/a", "runs/b", metric="ndcg@20")

(``prismrec.train`` and ``prismrec.evaluate`` are the training and evaluation packages, so the API
functions of the same names are reached through ``prismrec.api``.)
"""

from __future__ import annotations

__version__ = "0.1.0"
