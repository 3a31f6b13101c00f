"""Segment reports: warm vs cold items, and users bucketed by training activity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .metrics import summarise

ACTIVITY_EDGES = (1, 5, 10, 20, 50)


def item_groups(train: sp.csr_matrix) -> dict[str, np.ndarray]:
    """``warm_items``: items with a training interaction; ``cold_items``: items with none."""
    seen = np.asarray(train.sum(axis=0)).ravel() > 0
    return {"warm_items": seen, "cold_items": ~seen}


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
