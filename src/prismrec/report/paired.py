"""The one rule for paired tests over seeds (documented in docs/evaluation.md).

Every run saves its per-user test metric (``per_user_test.npz``: ``users`` and one array per metric).
Two models A and B, each run with several seeds on the same split, are compared like this:

1. for each model, average each user's metric over its seeds, keeping the users present in every
   seed (users are matched by id, never by position);
2. pair the two models on the users both have (again by id);
3. report B - A: the mean difference, a 95 % bootstrap CI of it, a paired t-test and a Wilcoxon
   signed-rank test over those users (:func:`prismrec.evaluate.significance.paired_test`).

One observation per user: the seeds measure the model's variance, not more users, so pooling
(seed, user) pairs would count each user several times and make p-values too small.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import PrismrecError
from ..evaluate.significance import PairedTest, paired_test

PerUser = Mapping[str, np.ndarray]  # {"users": ids, metric: values aligned with ids}


def seed_mean_per_user(per_seed: Sequence[PerUser], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Users present in every seed (sorted by id) and their metric averaged over the seeds."""
    if not per_seed:
        raise PrismrecError("no per-user results to average: pass the per-user results of one or more seeds.")
    common: np.ndarray | None = None
    for z in per_seed:
        if metric not in z:
            known = sorted(k for k in z if k != "users")
            raise PrismrecError(f"metric {metric!r} is not in the saved per-user results; known: {', '.join(known)}.")
        users = np.asarray(z["users"])
        if len(np.unique(users)) != len(users):
            raise PrismrecError("per-user results list a user twice; they must hold one value per user.")
        common = users if common is None else np.intersect1d(common, users)
    common = np.unique(common)
    acc = []
    for z in per_seed:
        users = np.asarray(z["users"])
        order = np.argsort(users, kind="stable")
        pos = order[np.searchsorted(users, common, sorter=order)]
        acc.append(np.asarray(z[metric], dtype=float)[pos])
    return common, np.mean(acc, axis=0)


def paired_over_seeds(a: Sequence[PerUser], b: Sequence[PerUser], metric: str, *, n_boot: int = 2000,
                      seed: int = 0) -> PairedTest:
    """B - A under the rule above (``a`` and ``b``: the per-user results of each model's seeds)."""
    ua, va = seed_mean_per_user(a, metric)
    ub, vb = seed_mean_per_user(b, metric)
    return paired_test(ua, va, ub, vb, metric, n_boot=n_boot, seed=seed)


def verdict(test: PairedTest, alpha: float = 0.05) -> str:
    """``better``, ``worse`` (B vs A, paired-t p < alpha) or ``no significant difference``."""
    if not np.isnan(test.t_pvalue) and test.t_pvalue < alpha:
        if test.diff > 0:
            return "better"
        if test.diff < 0:
            return "worse"
    return "no significant difference"
