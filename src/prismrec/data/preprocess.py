"""Cleaning before the split: rating filter, de-duplication and iterative k-core.

All three work on whole columns (no per-row Python) and renumber ids contiguously through
:meth:`Dataset.subset`, which keeps feature rows aligned with the new item ids. For robustness
experiments, :func:`corrupt_features` (``data.feature_noise``) then replaces a share of the feature
rows by random vectors.
"""

from __future__ import annotations

import logging
import zlib

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset, Modality

log = logging.getLogger("prismrec")


def filter_min_rating(ds: Dataset, min_rating: float | None) -> Dataset:
    """Keep interactions with ``rating >= min_rating`` (explicit feedback treated as implicit)."""
    if min_rating is None:
        return ds
    if "rating" not in ds.interactions.columns:
        raise DataError(f"data.min_rating is set but dataset '{ds.name}' has no rating column.",
                        fix="drop data.min_rating.")
    keep = ds.interactions["rating"].to_numpy() >= min_rating
    return ds.subset(keep, drop_unused_items=False)


def deduplicate(ds: Dataset, mode: str = "pair") -> Dataset:
    """Remove repeated interactions, warning with the count.

    ``pair``: keep the first occurrence of each (user, item) pair, where "first" follows the given
    split label, then time, then file order (so a pair in train and again in test stays in train);
    ``row``: drop rows identical in every column; ``none``: keep everything (sequential data with
    repeat consumption).
    """
    if mode == "none":
        return ds
    inter = ds.interactions
    if mode == "row":
        dup = inter.duplicated().to_numpy()
    else:
        keys = [c for c in ("label", "timestamp", "order") if c in inter.columns]
        order = inter.sort_values(keys, kind="stable").index if keys else inter.index
        dup_sorted = inter.loc[order].duplicated(subset=["user", "item"]).to_numpy()
        dup = np.zeros(len(inter), dtype=bool)
        dup[inter.index.get_indexer(order)] = dup_sorted
    n = int(dup.sum())
    if n == 0:
        return ds
    log.warning(
        "%s: %d duplicate %s removed (%.2f%% of %d interactions); set data.dedup=none to keep them.",
        ds.name, n, "(user, item) pairs" if mode == "pair" else "rows", 100 * n / len(inter), len(inter),
    )
    return ds.subset(~dup, drop_unused_items=False)


def kcore(ds: Dataset, user_k: int, item_k: int) -> Dataset:
    """Iterative k-core: repeatedly drop users with < user_k and items with < item_k interactions.

    Matches MMRec's preprocessing (both conditions checked on the same pass, until nothing changes).
    Items left without interactions are dropped, with their feature rows.
    """
    if user_k <= 1 and item_k <= 1:
        return ds
    users = ds.interactions["user"].to_numpy()
    items = ds.interactions["item"].to_numpy()
    keep = np.ones(len(users), dtype=bool)
    while True:
        u_cnt = np.bincount(users[keep], minlength=ds.n_users)
        i_cnt = np.bincount(items[keep], minlength=ds.n_items)
        bad = keep & ((u_cnt[users] < user_k) | (i_cnt[items] < item_k))
        if not bad.any():
            break
        keep &= ~bad
    if not keep.any():
        raise DataError(
            f"{ds.name}: the {user_k}-core (users) / {item_k}-core (items) is empty.",
            fix="lower data.kcore (or data.user_core / data.item_core).",
        )
    out = ds.subset(keep, drop_unused_items=True)
    log.info("%s: %d-core/%d-core keeps %d of %d interactions, %d users, %d items.", ds.name, user_k, item_k,
             out.n_interactions, ds.n_interactions, out.n_users, out.n_items)
    return out


def corrupt_features(ds: Dataset, share: float, seed: int = 0) -> Dataset:
    """A copy of ``ds`` where, in every modality, ``round(share * n)`` of its ``n`` items that have a
    feature get a random vector instead: Gaussian with the modality's per-dimension mean and std
    (over those ``n`` rows), so the rows look like features but carry no information about the item.

    Each modality draws its own items (seeded by ``seed`` and the modality's name, so the draw does
    not depend on which other modalities are loaded): an item may keep its text and lose its image.
    Items without a feature stay missing; interactions and ids are unchanged. ``share == 0`` returns
    ``ds`` itself.
    """
    if share <= 0 or not ds.modalities:
        return ds
    mods = {}
    for name, m in ds.modalities.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        rows = np.flatnonzero(m.available)
        pick = np.sort(rng.choice(rows, int(round(share * len(rows))), replace=False))
        values = m.values.copy()
        if len(pick):
            mu, sd = m.values[rows].mean(axis=0), m.values[rows].std(axis=0)
            values[pick] = mu + sd * rng.standard_normal((len(pick), m.dim))
        prov = {**m.provenance, "feature_noise": {"share": share, "seed": seed, "items": int(len(pick))}}
        mods[name] = Modality(name, values, m.available.copy(), prov)
    log.info("%s: data.feature_noise=%g gave random features to %s items.", ds.name, share,
             ", ".join(f"{m.provenance['feature_noise']['items']} {n}" for n, m in mods.items()))
    return ds._replace(modalities=mods)


def preprocess(ds: Dataset, cfg: DataConfig) -> Dataset:
    """Apply the configured steps in a fixed order: rating filter, de-duplication, k-core, then
    (robustness experiments only) ``data.feature_noise``."""
    ds = ds.with_modalities(cfg.modalities)
    ds = filter_min_rating(ds, cfg.min_rating)
    ds = deduplicate(ds, cfg.dedup)
    uk = cfg.user_core if cfg.user_core is not None else cfg.kcore
    ik = cfg.item_core if cfg.item_core is not None else cfg.kcore
    ds = kcore(ds, uk, ik)
    return corrupt_features(ds, cfg.feature_noise, cfg.feature_noise_seed)
