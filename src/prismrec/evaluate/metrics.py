"""Top-K ranking metrics, per user, with MMRec's definitions.

Input is a boolean hit matrix ``hits`` (users x K_max): ``hits[u, r]`` is True when the item ranked
``r + 1`` for user ``u`` is in ``u``'s ground truth, and ``n_truth[u]``, the number of ground-truth
items (distinct). For a cut-off ``K`` and one user:

* ``recall@K    = hits@K / n_truth``  (MMRec: the denominator is not min(K, n_truth))
* ``precision@K = hits@K / K``
* ``ndcg@K      = DCG@K / IDCG@K`` with binary gains, ``DCG = sum_r hit_r / log2(r + 1)`` and IDCG the
  DCG of ``min(n_truth, K)`` hits at the top
* ``map@K       = sum_{r<=K} precision@r * hit_r / min(n_truth, K)``
* ``hit@K       = 1 if hits@K > 0 else 0``
* ``mrr@K       = 1 / rank of the first hit within K, else 0``

Reported values are means over the evaluated users (MMRec averages users, then rounds to 4 digits
for display; we keep full precision in files).
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")


def per_user_metrics(hits: np.ndarray, n_truth: np.ndarray, ks: list[int],
                     metrics: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
    """Every ``metric@k`` for every user: returns ``{"recall@20": array(n_users), ...}``."""
    hits = np.asarray(hits, dtype=bool)
    n_truth = np.asarray(n_truth, dtype=np.float64)
    n_users, kmax = hits.shape
    if n_users == 0:
        return {f"{m}@{k}": np.zeros(0) for m in metrics for k in ks}
    ranks = np.arange(1, kmax + 1, dtype=np.float64)
    h = hits.astype(np.float64)
    cum_hits = np.cumsum(h, axis=1)
    discount = 1.0 / np.log2(ranks + 1.0)
    dcg = np.cumsum(h * discount, axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    prec_at_r = cum_hits / ranks
    ap_sum = np.cumsum(prec_at_r * h, axis=1)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, kmax + 1)

    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, kmax)
        hk = cum_hits[:, kk - 1]
        denom = np.minimum(n_truth, k)
        for m in metrics:
            if m == "recall":
                v = hk / n_truth
            elif m == "precision":
                v = hk / k
            elif m == "ndcg":
                v = dcg[:, kk - 1] / ideal[np.minimum(n_truth, kk).astype(np.int64)]
            elif m == "map":
                v = ap_sum[:, kk - 1] / denom
            elif m == "hit":
                v = (hk > 0).astype(np.float64)
            elif m == "mrr":
                v = np.where(first <= kk, 1.0 / first, 0.0)
            else:
                raise ValueError(f"unknown metric {m!r}; known: {', '.join(METRICS)}")
            out[f"{m}@{k}"] = v
    return out


def summarise(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over users of every per-user metric."""
    return {name: float(v.mean()) if len(v) else 0.0 for name, v in per_user.items()}
