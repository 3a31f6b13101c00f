"""kNN item graph at scale: N synthetic items x D dims, top-k, wall time and peak memory.

Usage::

    python benchmarks/knn_scale.py --items 1000000 --dim 128 --k 10 --backend ivf
    python benchmarks/knn_scale.py --items 50000 --dim 128 --k 10 --backend torch --check-recall 2000
    python benchmarks/knn_scale.py --items 200000 --dim 64 --k 10 --learned   # LATTICE's learned graph

``--learned``: LATTICE's learned item graph instead, with gradients: ``topk_similarity`` of a trainable
``N x D`` matrix (blocks, no ``N x N`` similarity), ``sym_normalize_edges``, ``merge_edges``, ``edge_matmul``
on ``N x D`` embeddings, and the backward pass to both (one rebuild, as at the start of each epoch); CPU
seconds of each part, peak RSS. Exact (every block's top-k), so ``O(N^2 D)`` work.

The features are clustered Gaussians (so neighbours mean something). ``--check-recall N`` compares
N random rows with exact brute-force neighbours and reports recall@k of the approximate graph.
A dense N x N float32 similarity matrix would need 4 N^2 bytes (4 TB at N = 1M).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--check-recall", type=int, default=1000)
    ap.add_argument("--learned", action="store_true", help="time LATTICE's learned graph (forward + backward)")
    args = ap.parse_args()
    if args.learned:
        return learned(args.items, args.dim, args.k)

    from prismrec.graphs.knn import knn, knn_graph, l2_normalize
    from prismrec.utils.runtime import current_rss_mb, peak_rss_mb

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(1000, args.dim)).astype(np.float32)
    x = centers[rng.integers(0, 1000, size=args.items)] + 0.5 * rng.normal(size=(args.items, args.dim)).astype(np.float32)
    base_mb = current_rss_mb()
    t = time.perf_counter()
    res = knn(x, args.k, backend=args.backend, nprobe=args.nprobe)  # type: ignore[arg-type]
    t_knn = time.perf_counter() - t
    t = time.perf_counter()
    graph = knn_graph(x, args.k, backend=args.backend) if args.items <= 200_000 else None
    t_graph = time.perf_counter() - t if graph is not None else None
    out = {"items": args.items, "dim": args.dim, "k": args.k, "backend": res.backend,
           "knn_seconds": round(t_knn, 1), "graph_seconds": None if t_graph is None else round(t_graph, 1),
           "rss_before_mb": round(base_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
           "features_mb": round(x.nbytes / 2**20, 1), "dense_matrix_would_need_gb": round(4 * args.items**2 / 2**30, 1)}
    if args.check_recall:
        xn = l2_normalize(x)
        rows = rng.choice(args.items, size=min(args.check_recall, args.items), replace=False)
        exact = np.concatenate([np.argpartition(-(xn[rows[i:i + 100]] @ xn.T), args.k, axis=1)[:, : args.k]
                                for i in range(0, len(rows), 100)])
        hit = [len(set(a) & set(b)) / args.k for a, b in zip(exact, res.indices[rows])]
        out["recall_vs_exact"] = round(float(np.mean(hit)), 4)
    print(json.dumps(out))


def learned(n: int, dim: int, k: int) -> None:
    """One rebuild of LATTICE's learned graph and ``S @ E`` with gradients, one thread."""
    import torch

    from prismrec.graphs.knn import edge_matmul, merge_edges, sym_normalize_edges, topk_similarity
    from prismrec.utils.runtime import current_rss_mb, peak_rss_mb

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(1000, dim, generator=g)
    x = (centers[torch.randint(0, 1000, (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g)).requires_grad_()
    emb = torch.randn(n, dim, generator=g, requires_grad=True)
    base_mb, times = current_rss_mb(), {}
    c = time.process_time()
    rows, cols, vals = topk_similarity(x, k)
    times["topk_s"] = time.process_time() - c
    c = time.process_time()
    idx, merged = merge_edges(rows, cols, sym_normalize_edges(rows, cols, vals, n), n)
    out = edge_matmul(idx, merged, emb, n)
    times["normalise_matmul_s"] = time.process_time() - c
    c = time.process_time()
    out.pow(2).sum().backward()
    times["backward_s"] = time.process_time() - c
    gflop = 2.0 * n * n * dim / 1e9
    print(json.dumps({"items": n, "dim": dim, "k": k, "edges": int(idx.shape[1]),
                      **{key: round(v, 1) for key, v in times.items()},
                      "similarity_gflop": round(gflop, 1), "topk_gflops": round(gflop / times["topk_s"], 1),
                      "grad_finite": bool(torch.isfinite(x.grad).all() and torch.isfinite(emb.grad).all()),
                      "rss_before_mb": round(base_mb, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                      "dense_matrix_would_need_gb": round(4 * n**2 / 2**30, 1)}))


if __name__ == "__main__":
    main()
