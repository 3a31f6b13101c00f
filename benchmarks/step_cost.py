"""CPU seconds of a fixed set of training steps of one model: the same batches, the same seeds, so two
versions of the code can be compared on a shared machine where wall-clock seconds per epoch are noise.

Usage (from the repository root)::

    PRISMREC_DATA=../shared/data python benchmarks/step_cost.py --model sasrecf --data scientific --steps 20
    python benchmarks/step_cost.py --model demure --data scientific --set warmup_epochs=0 --profile

Runs the steps once to warm up, then again under ``time.process_time`` (one thread). Prints one JSON line
with the CPU seconds and every step's loss (equal losses = the same computation); ``--profile`` prints
torch's operator table instead. Models past a warm-up (Demure) get ``on_epoch_start(1)``.

``--epoch`` adds what a whole epoch would cost: the number of steps in one epoch (the sampler run through)
and the CPU seconds per step times that number; ``--eval`` adds two full validation passes (the run's
protocol; the second is reported, wall and CPU seconds) and the process's peak RSS. The script runs
against older checkouts too (``PYTHONPATH=<checkout>/src``): where ``prismrec.runs.prepare`` is missing
it reads, splits and builds as that version's ``train`` did.
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
    ap.add_argument("--epoch", action="store_true", help="also count an epoch's steps, extrapolate its CPU s")
    ap.add_argument("--eval", action="store_true", help="also time a full validation pass; report peak RSS")
    args = ap.parse_args()

    from prismrec import runs
    from prismrec.utils.runtime import peak_rss_mb, seed_everything, set_threads

    cfg = runs.build_config(args.model, args.data, overrides=args.sets)
    set_threads(1)
    seed_everything(cfg.seed)
    if hasattr(runs, "prepare"):
        ds, split, model, tdata, _ = runs.prepare(cfg)
    else:  # an older checkout (the "before" of a cost comparison)
        ds = runs.load_dataset(cfg.data_source, cfg.data)
        split = runs.make_split(ds, cfg.data)
        model, tdata = runs.build_model(cfg, ds, split)
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
    out = {"model": args.model, "data": args.data, "sets": args.sets, "steps": len(batches),
           "cpu_s": round(time.process_time() - c0, 3), "losses": losses}
    if args.epoch:
        n = sum(1 for _ in source.epoch(np.random.default_rng(0), cfg.train.batch_size, torch.device("cpu")))
        out["steps_per_epoch"] = n
        out["epoch_cpu_s"] = round(out["cpu_s"] / len(batches) * n, 1)
    if args.eval:
        model.eval()
        with torch.no_grad():
            for _ in range(2):  # the first pass warms up (allocations, lazily built tables)
                t0, c0 = time.perf_counter(), time.process_time()
                res = runs.evaluate_stage(model, split, cfg, "valid", keep_per_user=False,
                                          with_segments=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.update(eval_s=round(wall, 3), eval_cpu_s=round(cpu, 3), users=int(len(res.users)),
                   items=int(tdata.n_items), mask_history=bool(cfg.train.mask_history))
    if args.epoch or args.eval:
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
