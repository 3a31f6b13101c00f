"""Counting each ground-truth item's rank (tile by tile of items) gives the metrics of ``torch.topk``.

The evaluator's default path (:mod:`prismrec.evaluate.truth_rank`) must agree, user by user, with the
top-k path (``keep_topk=True``), whatever the scores: distinct, tied, near-tied, NaN, several truth
items per user, catalogues cut into tiles whose width is or is not a multiple of 16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prismrec.evaluate.ranking as ranking
from prismrec.data.split import Split
from prismrec.evaluate import RankingEvaluator
from prismrec.models.base import DotProductRecommender


class Vectors:
    """Just the dot-product scoring of :class:`DotProductRecommender`, on given vectors."""

    dot_product = True
    score = DotProductRecommender.score
    query_vectors = DotProductRecommender.query_vectors
    item_vectors = DotProductRecommender.item_vectors

    def __init__(self, u: torch.Tensor, i: torch.Tensor):
        self._cache = (u, i)


def random_split(n_users: int = 240, n_items: int = 700, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    users, items, labels = [], [], []
    for u in range(n_users):
        its = rng.choice(n_items, size=int(rng.integers(3, 30)), replace=False)
        n_test = min(int(rng.integers(1, 4)), len(its) - 2)
        users += [u] * len(its)
        items += its.tolist()
        labels += [0] * (len(its) - 1 - n_test) + [1] + [2] * n_test
    return Split("given", n_users, n_items, users, items, labels, np.arange(len(users)))


def both(split: Split, model: Vectors, stage: str = "test", ks=(1, 5, 10, 20)):
    ev = RankingEvaluator(split, stage, list(ks), mask_valid=stage == "test")
    counted = ev.evaluate(model.score, keep_per_user=True, tiles=model)
    listed = ev.evaluate(model.score, keep_per_user=True, keep_topk=True, tiles=model)
    return counted, listed


def assert_same(a, b):
    assert a.per_user.keys() == b.per_user.keys()
    for name in a.per_user:
        np.testing.assert_array_equal(a.per_user[name], b.per_user[name], err_msg=name)


@pytest.mark.parametrize("tile", [64, 100, 10_000])  # tiles of 64, tiles widened to 112, no tiles
@pytest.mark.parametrize("kind", ["distinct", "ties", "near_ties", "nan", "zeros"])
def test_counted_ranks_equal_topk(monkeypatch, tile, kind):
    monkeypatch.setattr(ranking, "ITEM_TILE", tile)
    split = random_split()
    g = torch.Generator().manual_seed(1)
    u, i = torch.randn(split.n_users, 16, generator=g), torch.randn(split.n_items, 16, generator=g)
    if kind == "ties":  # small integers: many exactly equal scores
        u, i = torch.randint(-2, 3, u.shape, generator=g).float(), torch.randint(-2, 3, i.shape, generator=g).float()
    elif kind == "near_ties":  # items that differ in the last bits: their order is within rounding
        i[1::2] = i[0::2][: len(i[1::2])] * (1 + 1e-7)
    elif kind == "nan":
        u[::7, 3] = float("nan")
    elif kind == "zeros":  # an untrained model: every score 0
        u = torch.zeros_like(u)
    for stage in ("valid", "test"):
        counted, listed = both(split, Vectors(u, i), stage)
        if kind == "near_ties" and tile < split.n_items:
            # tiles and whole rows are different products: where two scores differ by less than their
            # rounding, either order is the product's; every user that differs must have such a near-tie
            # at a truth item within the top 20
            assert_differ_only_at_near_ties(split, stage, u, i, counted, listed)
        else:
            assert_same(counted, listed)
    if kind == "distinct":  # not vacuous: the model finds some of the truth
        assert listed.metrics["recall@20"] > 0


def assert_differ_only_at_near_ties(split, stage, u, i, counted, listed):
    differ = np.zeros(len(counted.users), dtype=bool)
    for name in counted.per_user:
        differ |= counted.per_user[name] != listed.per_user[name]
    truth = split.matrix(stage)
    for row in np.nonzero(differ)[0]:
        user = counted.users[row]
        s = (u[user] @ i.T).double()
        near = [(s - s[c]).abs().le(1e-5 * s[c].abs()).sum().item() > 1 for c in truth[user].indices]
        assert any(near), f"user {user} differs without a near-tie at a truth item"


def test_counted_ranks_from_whole_rows_equal_topk():
    """A model that is not a dot product (a score function, like the sequential models): one tile."""
    split = random_split(seed=3)
    scores = torch.randn(split.n_users, split.n_items, generator=torch.Generator().manual_seed(2))
    scores[:, ::5] = scores[:, :1]            # ties inside each row
    scores[5] = float("nan")
    ev = RankingEvaluator(split, "test", [1, 10, 50], mask_valid=True)
    fn = lambda users: scores[users]  # noqa: E731  (a copy: masking cannot leak back)
    assert_same(ev.evaluate(fn, keep_per_user=True), ev.evaluate(fn, keep_per_user=True, keep_topk=True))


def test_tiled_scoring_shape_and_memory(monkeypatch):
    """A catalogue larger than a tile is scored ITEM_TILE columns at a time, with more users a product."""
    monkeypatch.setattr(ranking, "ITEM_TILE", 128)
    ev = RankingEvaluator(random_split(n_items=1000), "valid", [10])
    users, items = ev.scoring_shape(tiled=True)
    assert items == 128 and users == min(4096, ranking.EVAL_MEMORY_BYTES // (ranking.SCORE_BYTES * 128))
    assert ev.scoring_shape(tiled=False) == (ev.chunk, 1000)


@pytest.mark.parametrize("name", ["sasrecf", "gru4rec"])
def test_sequential_models_are_counted_tile_by_tile(monkeypatch, name):
    """A sequential model is evaluated from its query and item vectors tile by tile of items (its chunk's
    histories encoded once for all tiles), with the metrics of the top-k path."""
    from seq_checks import cyclic_dataset, fit

    run = fit(name, cyclic_dataset(), [], 2)
    model = run.model
    monkeypatch.setattr(ranking, "ITEM_TILE", 16)  # 40 items: tiles of 16, 16 and 8 (widened to 16)
    encoded = []
    orig = type(model).encode_users

    def counted(self, users, history=None):
        encoded.append(len(users))
        return orig(self, users, history)

    monkeypatch.setattr(type(model), "encode_users", counted)
    products = []
    dot = ranking.dot_scores
    monkeypatch.setattr(ranking, "dot_scores", lambda u, i, out=None: products.append(len(i)) or dot(u, i, out))
    for stage in ("valid", "test"):
        ev = RankingEvaluator(run.split, stage, [1, 5, 10], mask_valid=stage == "test")
        assert ev.scoring_shape(True)[1] == 16
        encoded.clear()
        counted_res = ev.evaluate_model(model, keep_per_user=True)
        assert sum(encoded) == len(ev.users), encoded  # every user encoded once, not once per tile
        assert products[:3] == [16, 16, 16], products     # the product taken tile by tile
        products.clear()
        listed = ev.evaluate_model(model, keep_per_user=True, keep_topk=True)
        assert_same(counted_res, listed)
        assert counted_res.metrics["recall@10"] > 0.3  # trained: the vectors are the model's, not noise
