"""Ranking metrics against values worked out by hand, and the full-ranking evaluator end to end.

Definitions (MMRec's, see prismrec/evaluate/metrics.py): recall divides by n_truth; precision by K;
NDCG's ideal DCG has min(n_truth, K) hits at the top; MAP divides the summed precision@r at hits by
min(n_truth, K); hit is 0/1; MRR is 1 / rank of the first hit within K.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

from prismrec.data.split import Split
from prismrec.errors import PrismrecError
from prismrec.evaluate import RankingEvaluator, paired_test, per_user_metrics, summarise
from prismrec.evaluate.segments import activity_buckets, item_groups

L2 = np.log2


# ---------------------------------------------------------------------------------------- metrics
# Four users, top-5 lists (1 = the item at that rank is in the user's ground truth).
HITS = np.array([
    [1, 0, 1, 0, 0],  # A: 2 truth items, both found (ranks 1 and 3)
    [0, 1, 0, 0, 1],  # B: 4 truth items (more than K=1 and K=3), found at ranks 2 and 5
    [0, 0, 0, 0, 0],  # C: 1 truth item, never found
    [1, 1, 1, 1, 1],  # D: 7 truth items (more than every K), top 5 all hits
], dtype=bool)
N_TRUTH = np.array([2, 4, 1, 7])
KS = [1, 3, 5]

# Hand-computed per-user values: EXPECTED[metric@K] = [A, B, C, D].
EXPECTED = {
    "recall@1": [1 / 2, 0, 0, 1 / 7],
    "recall@3": [2 / 2, 1 / 4, 0, 3 / 7],
    "recall@5": [2 / 2, 2 / 4, 0, 5 / 7],
    "precision@1": [1, 0, 0, 1],
    "precision@3": [2 / 3, 1 / 3, 0, 1],
    "precision@5": [2 / 5, 2 / 5, 0, 1],
    # NDCG: DCG = sum hit_r / log2(r+1); IDCG = DCG of min(n_truth, K) hits at the top.
    "ndcg@1": [1 / 1, 0, 0, 1],
    "ndcg@3": [(1 + 1 / L2(4)) / (1 + 1 / L2(3)),                                 # A: idcg of 2 hits
               (1 / L2(3)) / (1 + 1 / L2(3) + 1 / L2(4)),                         # B: idcg of min(4,3)=3
               0, 1],
    "ndcg@5": [(1 + 1 / L2(4)) / (1 + 1 / L2(3)),
               (1 / L2(3) + 1 / L2(6)) / (1 + 1 / L2(3) + 1 / L2(4) + 1 / L2(5)),  # B: idcg of min(4,5)=4
               0, 1],
    # MAP: sum over hit ranks r <= K of precision@r, divided by min(n_truth, K).
    "map@1": [1 / min(2, 1), 0, 0, 1 / min(7, 1)],
    "map@3": [(1 / 1 + 2 / 3) / min(2, 3), (1 / 2) / min(4, 3), 0, (1 + 1 + 1) / min(7, 3)],
    "map@5": [(1 / 1 + 2 / 3) / min(2, 5), (1 / 2 + 2 / 5) / min(4, 5), 0, 5 / min(7, 5)],
    "hit@1": [1, 0, 0, 1],
    "hit@3": [1, 1, 0, 1],
    "hit@5": [1, 1, 0, 1],
    "mrr@1": [1, 0, 0, 1],
    "mrr@3": [1, 1 / 2, 0, 1],
    "mrr@5": [1, 1 / 2, 0, 1],
}


def test_per_user_metrics_match_hand_computed_values():
    got = per_user_metrics(HITS, N_TRUTH, KS)
    assert set(got) == set(EXPECTED)
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-12, err_msg=name)


def test_summary_is_the_mean_over_users():
    means = summarise(per_user_metrics(HITS, N_TRUTH, KS))
    for name, want in EXPECTED.items():
        assert means[name] == pytest.approx(sum(want) / 4, abs=1e-12), name
    assert means["recall@5"] == pytest.approx((1 + 0.5 + 0 + 5 / 7) / 4)


def test_recall_denominator_is_n_truth_not_min_k():
    # one user, 10 truth items, 2 hits in the top 2: MMRec recall@2 = 2/10 (not 2/min(10, 2) = 1)
    got = per_user_metrics(np.ones((1, 2), bool), np.array([10]), [2])
    assert got["recall@2"][0] == pytest.approx(0.2)
    assert got["ndcg@2"][0] == pytest.approx(1.0)  # ideal DCG uses min(n_truth, K) = 2 hits
    assert got["map@2"][0] == pytest.approx(1.0)


def test_metric_subset_and_unknown_metric():
    got = per_user_metrics(HITS, N_TRUTH, [3], metrics=("recall", "mrr"))
    assert set(got) == {"recall@3", "mrr@3"}
    with pytest.raises(ValueError, match="unknown metric"):
        per_user_metrics(HITS, N_TRUTH, [3], metrics=("auc",))
    empty = per_user_metrics(np.zeros((0, 5), bool), np.zeros(0), [5])
    assert all(len(v) == 0 for v in empty.values())
    assert summarise(empty)["recall@5"] == 0.0


# -------------------------------------------------------------------------------------- evaluator
# 4 users x 8 items, written out by hand:
#   train: u0 {0, 1}, u1 {5}, u3 {2}          (u2 has no training interaction: a cold user)
#   valid: u0 {2},    u1 {0}, u2 {7}
#   test:  u0 {3, 5}, u1 {1}, u2 {6}, u3 {7}
TRAIN = {0: [0, 1], 1: [5], 3: [2]}
VALID = {0: [2], 1: [0], 2: [7]}
TEST = {0: [3, 5], 1: [1], 2: [6], 3: [7]}
# each user's preference order, best first; the score of an item is 8 - its position
PREF = {0: [0, 1, 2, 3, 5, 6, 7, 4],
        1: [5, 0, 1, 2, 3, 4, 6, 7],
        2: [6, 7, 0, 1, 2, 3, 4, 5],
        3: [2, 7, 0, 1, 3, 4, 5, 6]}
N_ITEMS = 8


def hand_split() -> Split:
    users, items, labels = [], [], []
    for label, part in enumerate((TRAIN, VALID, TEST)):
        for u, its in part.items():
            users += [u] * len(its)
            items += its
            labels += [label] * len(its)
    return Split("given", 4, N_ITEMS, users, items, labels, np.arange(len(users)))


SCORES = torch.zeros(4, N_ITEMS)
for _u, _order in PREF.items():
    SCORES[_u, _order] = torch.arange(N_ITEMS, 0, -1, dtype=torch.float32)


def fixed_scores(users: torch.Tensor) -> torch.Tensor:
    return SCORES[users]  # advanced indexing: a copy, so the evaluator's masking cannot leak back


def test_evaluator_test_stage_masks_train_but_not_valid():
    res = RankingEvaluator(hand_split(), "test", [1, 2, 3]).evaluate(fixed_scores, keep_per_user=True,
                                                                      keep_topk=True)
    # u2 is skipped (no training interaction); u0, u1, u3 are evaluated
    assert res.users.tolist() == [0, 1, 3]
    # top-3 after masking training items only: u0 [2, 3, 5] (2 is a *valid* item, still a candidate),
    # u1 [0, 1, 2] (0 is valid), u3 [7, 0, 1]
    assert res.topk.tolist() == [[2, 3, 5], [0, 1, 2], [7, 0, 1]]
    for row, u in enumerate(res.users):
        assert not set(res.topk[row]) & set(TRAIN[u])
    # hits: u0 [0, 1, 1] (n_truth 2), u1 [0, 1, 0] (n_truth 1), u3 [1, 0, 0] (n_truth 1)
    np.testing.assert_allclose(res.per_user["recall@1"], [0, 0, 1])
    np.testing.assert_allclose(res.per_user["recall@2"], [1 / 2, 1, 1])
    np.testing.assert_allclose(res.per_user["recall@3"], [1, 1, 1])
    m = res.metrics
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert m["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert m["ndcg@2"] == pytest.approx(((1 / L2(3)) / (1 + 1 / L2(3)) + 1 / L2(3) + 1) / 3)
    assert m["ndcg@3"] == pytest.approx(((1 / L2(3) + 1 / L2(4)) / (1 + 1 / L2(3)) + 1 / L2(3) + 1) / 3)
    assert m["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2 + 1) / 3)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert m["hit@1"] == pytest.approx(1 / 3)


def test_evaluator_mask_valid_at_test_time():
    res = RankingEvaluator(hand_split(), "test", [1, 2], mask_valid=True).evaluate(
        fixed_scores, keep_per_user=True, keep_topk=True)
    # u0 now ranks [3, 5] (train 0, 1 and valid 2 masked); u1 ranks [1, 2] (train 5, valid 0 masked)
    assert res.topk.tolist() == [[3, 5], [1, 2], [7, 0]]
    np.testing.assert_allclose(res.per_user["recall@1"], [1 / 2, 1, 1])
    assert res.metrics["recall@1"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert res.metrics["recall@2"] == pytest.approx(1.0)


def test_evaluator_valid_stage():
    res = RankingEvaluator(hand_split(), "valid", [1], mask_valid=True).evaluate(fixed_scores, keep_topk=True)
    # valid users with a training interaction: u0 (top [2]) and u1 (top [0]); mask_valid only affects test
    assert res.users.tolist() == [0, 1]
    assert res.topk.tolist() == [[2], [0]]
    assert res.metrics["recall@1"] == 1.0


def test_evaluator_cold_users_kept_when_not_filtered():
    res = RankingEvaluator(hand_split(), "test", [1], filter_cold_users=False).evaluate(fixed_scores,
                                                                                         keep_per_user=True)
    assert res.users.tolist() == [0, 1, 2, 3]
    # u2 has nothing masked, its top item 6 is its test item
    np.testing.assert_allclose(res.per_user["recall@1"], [0, 0, 1, 1])
    assert res.metrics["recall@1"] == pytest.approx(0.5)


def test_evaluator_segments_cold_and_warm_items():
    split = hand_split()
    groups = item_groups(split.train)
    # items with a training interaction: 0, 1, 2, 5
    assert np.flatnonzero(groups["warm_items"]).tolist() == [0, 1, 2, 5]
    assert np.flatnonzero(groups["cold_items"]).tolist() == [3, 4, 6, 7]
    res = RankingEvaluator(split, "test", [1, 2, 3]).evaluate(fixed_scores, item_groups=groups)
    # cold: u0's cold truth {3} (found at rank 2), u3's {7} (rank 1); u1's truth {1} is warm -> skipped
    cold = res.segments["cold_items"]
    assert res.segment_users["cold_items"] == 2
    assert cold["recall@1"] == pytest.approx((0 + 1) / 2)
    assert cold["recall@2"] == pytest.approx((1 + 1) / 2)
    assert cold["ndcg@2"] == pytest.approx((1 / L2(3) + 1) / 2)
    assert cold["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # warm: u0's warm truth {5} (rank 3), u1's {1} (rank 2); the cold hit of u0 at rank 2 does not count
    warm = res.segments["warm_items"]
    assert res.segment_users["warm_items"] == 2
    assert warm["recall@1"] == 0.0
    assert warm["recall@2"] == pytest.approx((0 + 1) / 2)
    assert warm["recall@3"] == pytest.approx(1.0)
    assert warm["ndcg@3"] == pytest.approx((1 / L2(4) + 1 / L2(3)) / 2)
    assert warm["mrr@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # asking for segments does not change the overall metrics
    plain = RankingEvaluator(split, "test", [1, 2, 3]).evaluate(fixed_scores)
    assert plain.metrics == res.metrics


def random_split(n_users=57, n_items=31, seed=0) -> Split:
    rng = np.random.default_rng(seed)
    mat = rng.random((n_users, n_items)) < 0.3
    u, i = np.nonzero(mat)
    labels = rng.choice([0, 0, 0, 1, 2], size=len(u))
    return Split("given", n_users, n_items, u, i, labels, np.arange(len(u)))


@pytest.mark.parametrize("mask_valid", [False, True])
def test_chunking_does_not_change_results(mask_valid):
    split = random_split()
    scores = torch.as_tensor(np.random.default_rng(1).standard_normal((split.n_users, split.n_items)),
                             dtype=torch.float32)
    groups = item_groups(split.train)
    results = [RankingEvaluator(split, "test", [5, 10], mask_valid=mask_valid, chunk_users=c).evaluate(
        lambda u: scores[u], keep_per_user=True, keep_topk=True, item_groups=groups) for c in (1, 7, 10_000)]
    for other in results[1:]:
        assert other.metrics == results[0].metrics
        np.testing.assert_array_equal(other.topk, results[0].topk)
        for k, v in results[0].per_user.items():
            np.testing.assert_array_equal(other.per_user[k], v)
        assert other.segments == results[0].segments


def test_evaluator_against_brute_force():
    """Independent reference: rank with numpy argsort per user, count hits in Python."""
    split = random_split(seed=3)
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((split.n_users, split.n_items)).astype(np.float32)
    res = RankingEvaluator(split, "test", [3, 10]).evaluate(lambda u: torch.as_tensor(scores)[u],
                                                            keep_per_user=True)
    train, test = split.train.toarray() > 0, split.test.toarray() > 0
    users = [u for u in range(split.n_users) if test[u].any() and train[u].any()]
    assert res.users.tolist() == users
    for k in (3, 10):
        recalls, ndcgs = [], []
        for u in users:
            s = np.where(train[u], -np.inf, scores[u])
            top = np.argsort(-s, kind="stable")[:k]
            truth = set(np.flatnonzero(test[u]))
            gains = [1.0 if i in truth else 0.0 for i in top]
            dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
            idcg = sum(1 / np.log2(r + 2) for r in range(min(len(truth), k)))
            recalls.append(sum(gains) / len(truth))
            ndcgs.append(dcg / idcg)
        np.testing.assert_allclose(res.per_user[f"recall@{k}"], recalls, atol=1e-12)
        np.testing.assert_allclose(res.per_user[f"ndcg@{k}"], ndcgs, atol=1e-12)


def test_activity_buckets():
    # training counts: u0 2, u1 1, u3 1 (evaluated users of the hand split)
    split = hand_split()
    res = RankingEvaluator(split, "test", [1]).evaluate(fixed_scores, keep_per_user=True)
    buckets = activity_buckets(res.per_user, res.users, split.train, edges=(1, 2, 5))
    assert buckets["1-1"]["users"] == 2 and buckets["1-1"]["recall@1"] == pytest.approx((0 + 1) / 2)  # u1, u3
    assert buckets["2-4"]["users"] == 1 and buckets["2-4"]["recall@1"] == 0.0                      # u0
    assert "5+" not in buckets


# ------------------------------------------------------------------------------------ significance
def test_paired_test_on_hand_values():
    users_a = np.array([1, 2, 3, 4, 5, 6])
    a = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])   # user 6 is not evaluated by B
    users_b = np.array([5, 4, 3, 2, 1, 7])         # other order; user 7 only in B
    b = np.array([0.9, 0.5, 0.6, 0.2, 0.4, 0.0])
    t = paired_test(users_a, a, users_b, b, "recall@20")
    # common users 1..5: a = [.1, .2, .3, .4, .5], b = [.4, .2, .6, .5, .9], d = [.3, 0, .3, .1, .4]
    d = np.array([0.3, 0.0, 0.3, 0.1, 0.4])
    assert t.n_users == 5
    assert t.mean_a == pytest.approx(0.3) and t.mean_b == pytest.approx(0.52)
    assert t.diff == pytest.approx(0.22)
    t_stat = d.mean() / (d.std(ddof=1) / np.sqrt(5))
    assert t.t_pvalue == pytest.approx(2 * stats.t.sf(t_stat, df=4), rel=1e-9)
    assert t.ci_low <= t.diff <= t.ci_high
    assert 0 <= t.ci_low  # every bootstrap mean of non-negative differences is non-negative
    assert "B ahead" in t.summary("A", "B")


def test_paired_test_identical_runs_and_no_overlap():
    u = np.arange(10)
    v = np.linspace(0, 1, 10)
    t = paired_test(u, v, u, v.copy(), "ndcg@20")
    assert t.diff == 0 and t.t_pvalue == 1.0 and t.wilcoxon_pvalue == 1.0
    with pytest.raises(PrismrecError, match="share 0 evaluated users"):
        paired_test(u, v, u + 100, v, "ndcg@20")


def test_sparse_truth_counts_repeated_pairs_once():
    # a (user, item) pair repeated in test counts as one ground-truth item
    split = Split("given", 1, 5, [0, 0, 0, 0], [0, 1, 1, 2], [0, 2, 2, 2], np.arange(4))
    assert split.test.nnz == 2 and isinstance(split.test, sp.csr_matrix)
    scores = torch.tensor([[5.0, 4.0, 0.0, 3.0, 2.0]])
    res = RankingEvaluator(split, "test", [1]).evaluate(lambda u: scores[u])
    assert res.metrics["recall@1"] == pytest.approx(1 / 2)
