"""The evaluation rate of a finished SASRec-family run (sasrec, sasrecf, demure) against the CPU's matrix
rate, measured in the same process, one thread.

Usage (from the repository root)::

    PRISMREC_DATA=../shared/data python benchmarks/eval_rate.py RUN_DIR

One validation pass (``evaluate_stage``: encoding every user's history, the score products, masking and
top-k; the fastest of 3) is counted as the model's FLOP: the encoder's projections and feed-forward
layers on the real (unpadded) history tokens, ``2 * tokens * n_layers * 12 d^2``, plus the score
products ``2 * users * items * d``. The matrix rate is a ``(users x d) @ (d x items)`` product timed
right after. Prints one JSON line: GFLOP, GFLOP/s of the pass, GFLOP/s of the product, and their ratio
(also counting the score products alone).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    args = ap.parse_args()
    from prismrec.errors import PrismrecError
    from prismrec.models.sequential.layers import CausalTransformer
    from prismrec.runs import evaluate_stage, load_run

    torch.set_num_threads(1)
    run = load_run(args.run_dir)
    model = run.model.eval()
    if not isinstance(getattr(model, "encoder", None), CausalTransformer):
        raise PrismrecError(f"{args.run_dir} is a {run.config.model} run; eval_rate.py counts the FLOP of the "
                            "SASRec encoder. Fix: pass a sasrec, sasrecf or demure run.")
    d = model.item_embeddings().shape[1]
    n_users, n_items = run.dataset.n_users, run.dataset.n_items
    indptr, _ = run.split.history("valid").sequences
    tokens = int(np.minimum(np.diff(indptr), model.max_len).sum())
    ff = model.encoder.layers.layers[0].linear1.out_features // d
    enc = 2 * tokens * model.config.n_layers * (4 * d * d + 2 * ff * d * d)
    scores = 2 * n_users * n_items * d
    spent = []
    for _ in range(3):
        c = time.process_time()
        evaluate_stage(model, run.split, run.config, "valid", keep_per_user=False, with_segments=False)
        spent.append(time.process_time() - c)
    a, b = torch.randn(n_users, d), torch.randn(n_items, d)
    gemm = []
    for _ in range(3):
        c = time.process_time()
        a @ b.T
        gemm.append(time.process_time() - c)
    ev, gm = min(spent), min(gemm)
    print(json.dumps({"eval_cpu_s": round(ev, 3), "gflop": round((enc + scores) / 1e9, 2),
                      "gflop_scores": round(scores / 1e9, 2), "eval_gflops": round((enc + scores) / ev / 1e9, 1),
                      "gemm_gflops": round(scores / gm / 1e9, 1),
                      "ratio": round((enc + scores) / ev / (scores / gm), 2),
                      "ratio_scores_only": round(scores / ev / (scores / gm), 2)}))


if __name__ == "__main__":
    main()
