"""Segment reports: warm vs cold items, and users bucketed by training activity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .metrics import summarise

ACTIVITY_EDGES = (1, 5, 10, 20, 50)
POPULAR_SHARE = 0.2  # share of the warm items counted as popular (the "short head")


def item_groups(train: sp.csr_matrix, popular_share: float = POPULAR_SHARE) -> dict[str, np.ndarray]:
    """Boolean masks over items, by popularity in training.

    ``warm_items``: items with a training interaction; ``cold_items``: items with none;
    ``popular_items``: the ``popular_share`` of warm items with the most training interactions (ties
    broken by internal id); ``long_tail_items``: the other warm items. The two popularity groups are
    left out when either would be empty (fewer than a handful of warm items).
    """
    counts = np.diff(sp.csc_matrix(train).indptr)
    seen = counts > 0
    groups = {"warm_items": seen, "cold_items": ~seen}
    warm = np.flatnonzero(seen)
    n_popular = int(round(popular_share * len(warm)))
    if 0 < n_popular < len(warm):
        order = warm[np.lexsort((warm, -counts[warm]))]  # most interactions first, then by id
        popular = np.zeros(len(counts), dtype=bool)
        popular[order[:n_popular]] = True
        groups["popular_items"] = popular
        groups["long_tail_items"] = seen & ~popular
    return groups


def activity_buckets(per_user: dict[str, np.ndarray], users: np.ndarray, train: sp.csr_matrix,
                     edges: tuple[int, ...] = ACTIVITY_EDGES) -> dict[str, dict[str, float]]:
    """Mean metrics of users grouped by their number of training interactions (``[a, b)`` buckets)."""
    counts = np.diff(train.indptr)[users]
    out: dict[str, dict[str, float]] = {}
    bounds = list(edges) + [np.inf]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = (counts >= lo) & (counts < hi)
        if not sel.any():
            continue
        label = f"{lo}+" if hi == np.inf else f"{lo}-{int(hi) - 1}"
        out[label] = {"users": int(sel.sum()), **summarise({k: v[sel] for k, v in per_user.items()})}
    return out
