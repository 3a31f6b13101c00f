"""CPU seconds of a fixed set of training steps of one model: the same batches, the same seeds, so two
versions of the code can be compared on a shared machine where wall-clock seconds per epoch are noise.

Usage (from the repository root)::

    PRISMREC_DATA=../shared/data python benchmarks/step_cost.py --model sasrecf --data scientific --steps 20
    python benchmarks/step_cost.py --model demure --data scientific --set warmup_epochs=0 --profile

Runs the steps once to warm up, then again under ``time.process_time`` (one thread). Prints one JSON line
with the CPU seconds and every step's loss (equal losses = the same computation); ``--profile`` prints
torch's operator table instead. Models past a warm-up (Demure) get ``on_epoch_start(1)``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--profile", action="store_true", help="print torch's operator table (self CPU time)")
    ap.add_argument("--shapes", action="store_true", help="with --profile: one row per operator and input shape")
    args = ap.parse_args()

    from prismrec.runs import build_config, prepare
    from prismrec.utils.runtime import seed_everything, set_threads

    cfg = build_config(args.model, args.data, overrides=args.sets)
    set_threads(1)
    seed_everything(cfg.seed)
    ds, split, model, tdata, _ = prepare(cfg)
    from prismrec.train.sampling import make_sampler

    source = model.build_sampler(tdata, cfg.train) or make_sampler(model.sampler, tdata.train, tdata.train_items,
                                                                   cfg.train.num_negatives)
    batches = []
    for batch in source.epoch(np.random.default_rng(0), cfg.train.batch_size, torch.device("cpu")):
        if len(batches) == args.steps:
            break
        batches.append(batch)
    model.train()
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(1)

    def run() -> list[float]:
        torch.manual_seed(0)
        losses = []
        for batch in batches:
            out = model.loss(batch)
            loss = out["loss"] if isinstance(out, dict) else out
            model.zero_grad(set_to_none=True)
            loss.backward()
            losses.append(float(loss.detach()))
        return losses

    run()  # warm-up
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            run()
        print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total", row_limit=25))
        return
    c0 = time.process_time()
    losses = run()
    print(json.dumps({"model": args.model, "data": args.data, "sets": args.sets, "steps": len(batches),
                      "cpu_s": round(time.process_time() - c0, 3), "losses": losses}))


if __name__ == "__main__":
    main()
