"""Scale and cost: shop-like data of 1M, 3M and 10M interactions, and what one machine spends on it.

The generator (fixed seed) writes an MMRec folder the readers take as is:

* users' activity and items' popularity follow power laws (Zipf-like: a few heavy users and best
  sellers, a long tail of both); every user has at least 4 interactions;
* items belong to co-consumption clusters (``n_items / 250`` of them); a user draws most of their items
  from two "home" clusters (by popularity inside the cluster) and the rest from the whole catalogue;
* item content correlates with the clusters: a 384-d "text" and a 512-d "image" feature per item, each
  its cluster's centroid plus item noise, L2-normalised, stored as float16 (``text_feat.npy``,
  ``image_feat.npy``, written block by block through a memory map);
* ``<name>.inter``: ``userID itemID x_label timestamp``, each user's interactions in time order, the last
  one test (2) and the one before validation (1): the same split for both families.

Sizes: ``100k`` and ``300k`` (for the trend), ``1m`` (1M interactions, 100k users, 50k items), ``3m``
(3M, 300k users, 200k items), ``10m`` (10M, 1M users, 1M items). For each size and model (LightGCN,
FREEDOM, LIRDRec, SASRec-F) a child process (one torch thread) measures: read + validate + split
seconds, seconds of one training epoch (wall and CPU), seconds of one full validation evaluation (every
validation user ranked against every item; wall and CPU), peak RSS; and the evaluation's effective
GFLOP/s (the scoring products ``2 x users x items x d`` over the evaluation's time) against this CPU's
fp32 GEMM rate, measured in the same process (``torch.mm`` of 2048 x 2048, one thread, best of 3).

    python benchmarks/scale.py --sizes 1m --models lightgcn,freedom,lirdrec,sasrecf --out bench_scale
    python benchmarks/scale.py --sizes baby --models lightgcn          # a real dataset by name

Results: ``OUT/results.jsonl`` (one line per size x model, appended as each finishes) and
``OUT/scale.md`` (the table). ``--max-batches N`` times the first N batches of the epoch and scales
to the whole epoch (marked in the table) when a full epoch does not fit the time at hand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {  # interactions, users, items
    "100k": (100_000, 10_000, 5_000),
    "300k": (300_000, 30_000, 15_000),
    "1m": (1_000_000, 100_000, 50_000),
    "3m": (3_000_000, 300_000, 200_000),
    "10m": (10_000_000, 1_000_000, 1_000_000),
}
MODELS = ("lightgcn", "freedom", "lirdrec", "sasrecf")
#: settings that keep a model's cost linear at scale (said in docs/benchmarks.md §7.5)
MODEL_SETS = {
    "sasrecf": ["sasrecf.loss_type=sampled"],  # full softmax: batch x positions x items logits per step
}
#: settings that change memory or chunking but not the computation's result (their rows stay in the plot)
MEMORY_ONLY = ("item_chunk", "train.eval_batch_users")
DIMS = {"text": 384, "image": 512}


# ------------------------------------------------------------------------------------------ generator
def powerlaw(rng: np.random.Generator, n: int, exponent: float, low: float = 1.0) -> np.ndarray:
    """``n`` Pareto-tailed weights ``>= low`` (density ~ x^-exponent)."""
    return low * (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))


def generate(folder: Path, n_inter: int, n_users: int, n_items: int, *, seed: int = 0,
             dims: dict[str, int] = DIMS, name: str | None = None) -> Path:
    """Write the MMRec folder ``folder`` (skipped when its ``.done`` marker exists); returns it."""
    folder = Path(folder)
    name = name or folder.name
    if (folder / ".done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_clusters = max(4, n_items // 250)
    cluster = rng.integers(0, n_clusters, n_items)
    order = np.lexsort((rng.random(n_items), cluster))           # items grouped by cluster, random inside
    starts = np.searchsorted(cluster[order], np.arange(n_clusters))
    ends = np.append(starts[1:], n_items)
    sizes = ends - starts
    rank = np.arange(n_items) - np.repeat(starts, sizes) + 1      # an item's popularity rank in its cluster
    cum = np.cumsum(rank ** -0.8)                                 # Zipf inside each cluster
    lo = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    hi = cum[np.maximum(ends - 1, 0)]
    cluster_mass = np.where(sizes == 0, 0.0, hi - lo)
    cluster_pop = np.where(sizes == 0, 0.0, rng.permutation(np.arange(1, n_clusters + 1)) ** -0.8)  # Zipf clusters
    cluster_pop /= cluster_pop.sum()

    # user activity: power law, at least 4, scaled to about n_inter in total
    act = powerlaw(rng, n_users, 2.2, 4.0)
    act = np.maximum(4, np.round(act * n_inter / act.sum())).astype(np.int64)
    act = np.minimum(act, n_items // 2)
    users = np.repeat(np.arange(n_users), np.ceil(act * 1.3).astype(np.int64))  # extra draws: repeats are dropped
    home = np.stack([rng.choice(n_clusters, n_users, p=cluster_pop) for _ in range(2)], 1)
    own = rng.random(len(users)) < 0.8
    c = np.where(own, home[users, rng.integers(0, 2, len(users))], rng.choice(n_clusters, len(users), p=cluster_pop))
    x = lo[c] + rng.random(len(users)) * cluster_mass[c]
    items = order[np.minimum(np.searchsorted(cum, x, side="right"), n_items - 1)]
    # distinct (user, item) pairs, then per-user time order
    keys = np.unique(users.astype(np.int64) * n_items + items)
    if len(keys) > n_inter:  # the target count exactly, dropping only beyond each user's first 4 pairs
        ku = keys // n_items
        cnt = np.bincount(ku, minlength=n_users)
        rank = np.arange(len(keys)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        spare = np.flatnonzero(rank >= 4)
        drop = rng.choice(spare, min(len(keys) - n_inter, len(spare)), replace=False)
        keys = np.delete(keys, drop)
    users, items = keys // n_items, keys % n_items
    ts = rng.permutation(len(users)).astype(np.int64)
    o = np.lexsort((ts, users))
    users, items = users[o], items[o]
    counts = np.bincount(users, minlength=n_users)
    end = np.cumsum(counts)
    pos = np.arange(len(users)) - np.repeat(end - counts, counts)
    n_u = np.repeat(counts, counts)
    label = np.where(pos == n_u - 1, 2, np.where(pos == n_u - 2, 1, 0)).astype(np.int8)
    label[n_u < 3] = 0
    t_rank = np.arange(len(users))  # timestamps increasing within each user (ties broken by the order)
    import pandas as pd

    frame = pd.DataFrame({"userID": users, "itemID": items, "x_label": label, "timestamp": t_rank})
    frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)

    # item features: cluster centroid + noise, normalised, float16, written in blocks through a memory map
    for m, (mod, dim) in enumerate(dims.items()):
        crng = np.random.default_rng([seed, m])
        centroids = crng.standard_normal((n_clusters, dim)).astype(np.float32)
        out = np.lib.format.open_memmap(folder / f"{mod}_feat.npy", mode="w+", dtype=np.float16,
                                        shape=(n_items, dim))
        for s in range(0, n_items, 65_536):
            e = min(s + 65_536, n_items)
            block = centroids[cluster[s:e]] + 1.2 * crng.standard_normal((e - s, dim)).astype(np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[s:e] = block.astype(np.float16)
        out.flush()
        del out
    (folder / ".done").write_text(json.dumps({"interactions": int(len(users)), "users": n_users,
                                              "items": n_items, "clusters": n_clusters, "seed": seed}))
    return folder


# ------------------------------------------------------------------------------------------ measuring
def gemm_gflops(n: int = 2048, repeat: int = 3, clock=time.process_time) -> float:
    """fp32 GEMM rate of this process (its torch threads): best of ``repeat`` products of n x n, per second
    of ``clock`` (CPU seconds by default: other programs on a shared machine do not lower it)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b, clock) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(f, clock=time.perf_counter) -> float:
    t = clock()
    f()
    return clock() - t


class _FirstBatches:
    """The first ``n`` batches of a batch source's epoch (timing a part of an epoch)."""

    def __init__(self, inner, n: int):
        self.inner, self.n = inner, n

    def n_batches(self, batch_size: int) -> int:
        return min(self.n, self.inner.n_batches(batch_size))

    def epoch(self, rng, batch_size, device):
        for i, batch in enumerate(self.inner.epoch(rng, batch_size, device)):
            if i >= self.n:
                return
            yield batch


def measure(data: str, model: str, max_batches: int = 0, sets: list[str] | None = None, eval_users: int = 0,
            eval_repeats: int = 3) -> dict:
    """One model on one dataset in this process: the five figures (see the module docstring)."""
    import torch

    from prismrec.evaluate.ranking import RankingEvaluator
    from prismrec.models.base import DotProductRecommender
    from prismrec.runs import build_config, prepare
    from prismrec.train.sampling import make_sampler
    from prismrec.train.trainer import Trainer
    from prismrec.utils.loop import EpochLoop
    from prismrec.utils.runtime import peak_rss_mb

    torch.set_num_threads(1)
    gemm, gemm_wall = gemm_gflops(), gemm_gflops(clock=time.perf_counter)
    cfg = build_config(model, data, overrides=["train.threads=1", "train.epochs=1", *MODEL_SETS.get(model, []),
                                               *(sets or [])], seed=0)
    ds, split, net, tdata, took = prepare(cfg)
    read_s, build_s = took["read"], took["build"]
    trainer = Trainer(net, tdata, split, cfg.train, cfg.seed)
    if eval_users > 0:  # rank only the first N validation users (against every item)
        full = trainer.valid_eval
        trainer.valid_eval = RankingEvaluator(split, "valid", cfg.train.eval_ks, users=full.users[:eval_users],
                                              chunk_users=cfg.train.eval_batch_users)
    sampler = net.build_sampler(tdata, cfg.train) or make_sampler(net.sampler, tdata.train, tdata.train_items,
                                                                  cfg.train.num_negatives)
    n_batches = sampler.n_batches(cfg.train.batch_size)
    timed = n_batches if max_batches <= 0 else min(max_batches, n_batches)
    source = sampler if timed == n_batches else _FirstBatches(sampler, timed)
    selection = trainer.selection()
    eval_cpu = [0.0]
    measure_valid = selection.measure

    def timed_measure(row):  # the evaluation's CPU seconds (this process's), beside its wall time
        c = time.process_time()
        out = measure_valid(row)
        eval_cpu[0] += time.process_time() - c
        return out

    selection.measure = timed_measure
    loop = EpochLoop(net, source, cfg.train, cfg.seed, selection, before_epoch=net.on_epoch_start)
    c0 = time.process_time()
    res = loop.fit()
    fit_cpu = time.process_time() - c0
    row = res.history[-1]
    epoch_s = row["train_s"] * n_batches / timed
    epoch_cpu = (fit_cpu - eval_cpu[0]) * n_batches / timed
    eval_s = row["eval_s"]
    ev: RankingEvaluator = trainer.valid_eval
    d = None
    if isinstance(net, DotProductRecommender) or getattr(net, "dot_product", False):
        with torch.no_grad():
            d = int(net.item_embeddings().shape[1]) if hasattr(net, "item_embeddings") else \
                int(net.user_item_vectors(split.history("valid"))[1].shape[1])
    flops = 2.0 * len(ev.users) * split.n_items * d if d else float("nan")
    shape_gemm = None
    bracketed = []  # the evaluation again, each time between two GEMM timings: its ratio to the GEMM rate
    if d:           # at that moment (the load of a shared machine moves both; the best of the repeats)
        for _ in range(eval_repeats):
            g0 = gemm_gflops()
            c = time.process_time()
            ev.evaluate_model(net)
            e = time.process_time() - c
            bracketed.append(round(flops / e / 1e9 / ((g0 + gemm_gflops()) / 2), 3))
    chunk, tile = ev.scoring_shape(isinstance(net, DotProductRecommender))
    if d:  # the bare score product at the evaluation's shape (chunk x d) @ (d x items in a tile), reused buffer
        u, v = torch.randn(chunk, d), torch.randn(tile, d)
        buf = torch.empty(chunk, tile)
        shape_gemm = 2.0 * chunk * tile * d / min(
            _timed(lambda: torch.mm(u, v.T, out=buf), time.process_time) for _ in range(3)) / 1e9
        del u, v, buf
    return {
        "data": data, "model": model, "interactions": int(len(ds.interactions)), "users": ds.n_users,
        "items": ds.n_items, "read_split_s": round(read_s, 2), "build_s": round(build_s, 2),
        "epoch_s": round(epoch_s, 2), "epoch_cpu_s": round(epoch_cpu, 2), "epoch_batches_timed": f"{timed}/{n_batches}",
        "eval_s": round(eval_s, 2), "eval_cpu_s": round(eval_cpu[0], 2),
        "eval_gflops_cpu": round(flops / eval_cpu[0] / 1e9, 2) if d and eval_cpu[0] > 0 else None,
        "eval_users": int(len(ev.users)), "eval_chunk": chunk, "eval_tile": tile, "dim": d,
        "eval_gflops": round(flops / eval_s / 1e9, 2) if d else None, "gemm_gflops": round(gemm, 1),
        "gemm_gflops_wall": round(gemm_wall, 1), "gemm_clock": "cpu",
        "score_gemm_gflops": round(shape_gemm, 1) if shape_gemm else None,
        "eval_gemm_ratio": round(flops / eval_s / 1e9 / gemm_wall, 3) if d else None,
        "eval_gemm_ratio_bracketed": bracketed,
        "peak_rss_mb": round(peak_rss_mb(), 1), "loss": row["loss"], "valid": row["valid"].get(cfg.train.valid_metric),
        "settings": MODEL_SETS.get(model, []) + (sets or []), "torch_threads": torch.get_num_threads(),
    }


def table(rows: list[dict]) -> str:
    """The Markdown table: seconds as wall (CPU); GFLOP/s and their ratio per CPU second of this process
    (robust on a shared machine: another program's time is not counted)."""
    out = ["| data | interactions | users | items | model | read+split s | s/epoch wall (CPU) | s/eval wall (CPU) | "
           "eval GFLOP/s | GEMM GFLOP/s | eval / GEMM | eval / GEMM, bracketed (best) | score product alone GFLOP/s | "
           "peak RSS MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['data']} | | | | {r['model']} | failed: {r['error'][:120]} | | | | | | | | |")
            continue
        done, total = r["epoch_batches_timed"].split("/")
        part = "" if done == total else f" [{done}/{total} batches]"
        gemm = r["gemm_gflops"] if r.get("gemm_clock") == "cpu" else None
        g = r.get("eval_gflops_cpu")
        extra = [x for x in r.get("settings", []) if x not in MODEL_SETS.get(r["model"], [])]
        name = r["model"] + (f" ({', '.join(extra)})" if extra else "")
        out.append(f"| {Path(r['data']).name} | {r['interactions']:,} | {r['users']:,} | {r['items']:,} | {name} | "
                   f"{r['read_split_s']} | {r['epoch_s']} ({r.get('epoch_cpu_s')}){part} | {r['eval_s']} "
                   f"({r.get('eval_cpu_s')}) [{r['eval_users']:,} users] | {g} | {gemm or ''} | {round(g / gemm, 2) if g and gemm else ''} | "
                   f"{max(r.get('eval_gemm_ratio_bracketed') or [0]) or ''} | "
                   f"{r.get('score_gemm_gflops') or ''} | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> Path | None:
    """Seconds per epoch (CPU) and peak RSS against interactions, one line per model (generated data)."""
    from prismrec.report.plots import pyplot, save

    plt = pyplot()
    rows = [r for r in rows if "error" not in r and r.get("size") in SIZES
            and not [x for x in r.get("settings", []) if x not in MODEL_SETS.get(r["model"], [])
                     and x.split("=")[0] not in MEMORY_ONLY]]
    if plt is None or not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    best: dict[tuple[str, str], dict] = {}  # per model and size: the row that timed the most batches
    for r in rows:
        key, timed = (r["model"], r["size"]), int(r["epoch_batches_timed"].split("/")[0])
        if key not in best or timed > int(best[key]["epoch_batches_timed"].split("/")[0]):
            best[key] = r
    for model in sorted({m for m, _ in best}):
        pts = sorted((r["interactions"], r.get("epoch_cpu_s") or r["epoch_s"], r["peak_rss_mb"])
                     for (m, _), r in best.items() if m == model)
        x = [p[0] for p in pts]
        axes[0].plot(x, [p[1] for p in pts], marker="o", label=model)
        axes[1].plot(x, [p[2] for p in pts], marker="o", label=model)
    for ax, title in zip(axes, ("CPU seconds per training epoch (1 thread)", "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    return save(fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1m", help="comma-separated: 1m, 3m, 10m, or dataset names/folders")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default="bench_scale")
    ap.add_argument("--data-root", default=None, help="where generated data goes (default OUT/data)")
    ap.add_argument("--max-batches", type=int, default=0, help="time only the first N batches of the epoch")
    ap.add_argument("--eval-users", type=int, default=0,
                    help="rank only the first N validation users against every item (0 = all)")
    ap.add_argument("--eval-repeats", type=int, default=3,
                    help="evaluate again N times after training, each between two GEMM timings (the best ratio)")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE setting for every run")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--plot", default=None, help="also draw s/epoch and peak RSS against interactions (PNG)")
    ap.add_argument("--child", nargs=2, metavar=("DATA", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.max_batches, args.set, eval_users=args.eval_users,
                                 eval_repeats=args.eval_repeats)),
              flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_root) if args.data_root else out / "data"
    results = out / "results.jsonl"
    for size in args.sizes.split(","):
        if size in SIZES:
            n_inter, n_users, n_items = SIZES[size]
            t = time.perf_counter()
            data = str(generate(root / f"shop{size}", n_inter, n_users, n_items))
            print(f"{size}: data in {data} ({time.perf_counter() - t:.0f} s)", flush=True)
        else:
            data = size
        if args.generate_only:
            continue
        for model in args.models.split(","):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            proc = subprocess.run([sys.executable, __file__, "--child", data, model, "--max-batches",
                                   str(args.max_batches), "--eval-users", str(args.eval_users),
                                   "--eval-repeats", str(args.eval_repeats),
                                   *(f"--set={x}" for x in args.set)],
                                  capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                row = {"data": data, "model": model, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                row = json.loads(lines[-1])
            row["size"] = size
            with open(results, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    (out / "scale.md").write_text(table(rows) + "\n")
    print(table(rows))
    if args.plot:
        print(f"plot: {plot(rows, Path(args.plot))}")


if __name__ == "__main__":
    main()
