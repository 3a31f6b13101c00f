"""Speed and memory of one model on one dataset: data load, seconds per epoch, per evaluation, peak RSS.

Usage (from the repository root, on an otherwise idle machine)::

    PRISMREC_DATA=../shared/data python benchmarks/speed.py --model bpr --data baby --epochs 10
    python benchmarks/speed.py --model lightgcn --data baby --epochs 5 --set n_layers=3

Every epoch is followed by one full validation evaluation (as in a real run); the first epoch is
reported separately (warm-up). Prints one JSON line. ``fit_cpu_s`` (the process's CPU seconds for the
whole fit, training and evaluations) is the steadier figure on a shared machine: with ``--threads 1``
it does not grow when other jobs take the cores, where the wall-clock seconds do.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--results", action="store_true",
                    help="also print every epoch's training loss and the last validation metrics (full precision), "
                         "to check that a change left the results unchanged")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    t0 = time.perf_counter()
    import torch

    from prismrec.runs import build_config, prepare
    from prismrec.train.trainer import Trainer
    from prismrec.utils.runtime import peak_rss_mb, seed_everything, set_threads

    t_import = time.perf_counter() - t0
    cfg = build_config(args.model, args.data, overrides=[*args.sets, "train.patience=100000"], epochs=args.epochs)
    set_threads(args.threads)
    seed_everything(cfg.seed)
    ds, split, model, tdata, took = prepare(cfg)
    t_data, t_build = took["read"], took["build"]
    trainer = Trainer(model, tdata, split, cfg.train, cfg.seed)
    t3, c3 = time.perf_counter(), time.process_time()
    res = trainer.fit()
    t_fit, c_fit = time.perf_counter() - t3, time.process_time() - c3
    hist = res.history
    train_s = [h["train_s"] for h in hist]
    eval_s = [h["eval_s"] for h in hist if h["eval_s"] is not None]
    out = {
        "model": args.model, "data": args.data, "threads": torch.get_num_threads(),
        "import_s": round(t_import, 2), "data_load_and_split_s": round(t_data, 2), "model_build_s": round(t_build, 2),
        "epochs": len(hist), "first_epoch_s": round(train_s[0], 3),
        "epoch_s_median": round(float(np.median(train_s[1:] or train_s)), 3),
        "eval_s_median": round(float(np.median(eval_s[1:] or eval_s)), 3),
        "fit_s": round(t_fit, 2), "fit_cpu_s": round(c_fit, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "valid_recall@20_last": round(hist[-1]["valid"].get("recall@20", float("nan")), 4),
    }
    if args.results:  # what "same results" is checked on: every epoch's loss, the last validation metrics
        out["loss_per_epoch"] = [h["loss"] for h in hist]
        out["valid_last"] = hist[-1]["valid"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
