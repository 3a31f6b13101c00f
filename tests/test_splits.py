"""Split rules, their persistence, and the cleaning steps that run before them."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from prismrec.config import DataConfig
from prismrec.data import Modality, build_dataset, make_split
from prismrec.data.preprocess import deduplicate, filter_min_rating, kcore, preprocess
from prismrec.data.split import SPLIT_RULES, TEST, TRAIN, VALID, Split
from prismrec.errors import DataError

# users with these many interactions, and MMRec's (train, valid, test) counts for each, by hand:
# n < 10 -> 1 valid + 1 test; n >= 10 -> int(0.2 n) to valid+test, valid (v+t)//2, test the rest;
# a single interaction stays in train.
MMREC_COUNTS = {
    1: (1, 0, 0),
    2: (0, 1, 1),
    5: (3, 1, 1),
    9: (7, 1, 1),
    10: (8, 1, 1),    # int(2.0) = 2 -> 1 + 1
    11: (9, 1, 1),    # int(2.2) = 2
    14: (12, 1, 1),   # int(2.8) = 2
    15: (12, 1, 2),   # int(3.0) = 3 -> 1 + 2 (0.2 * 15 is 3.0000000000000004 in floating point)
    25: (20, 2, 3),   # int(5.0) = 5 -> 2 + 3
    49: (40, 4, 5),   # int(9.8) = 9 -> 4 + 5
    50: (40, 5, 5),
}


def counts_dataset(counts=MMREC_COUNTS, timestamps=True, seed=0):
    """User 'n<N>' has N interactions with distinct items; unique timestamps, shuffled in file order."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for n in counts:
        users += [f"n{n}"] * n
        items += [f"i{j}" for j in rng.permutation(60)[:n]]
    frame = pd.DataFrame({"user": users, "item": items})
    if timestamps:
        frame["timestamp"] = rng.permutation(len(frame)).astype(float) * 10 + 1000
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # file order != time order
    return build_dataset("counts", frame)


def per_user_counts(ds, labels) -> dict[str, tuple[int, int, int]]:
    users = ds.user_ids[ds.interactions["user"].to_numpy()]
    out = {}
    for u in np.unique(users):
        lab = labels[users == u]
        out[int(u[1:])] = (int((lab == TRAIN).sum()), int((lab == VALID).sum()), int((lab == TEST).sum()))
    return out


# -------------------------------------------------------------------------------------------- rules
@pytest.mark.parametrize("rule", ["mmrec", "user_temporal"])
def test_mmrec_counts_per_user(rule):
    ds = counts_dataset()
    split = make_split(ds, DataConfig(split=rule))
    assert split.rule == rule
    assert per_user_counts(ds, split.labels) == MMREC_COUNTS


def test_mmrec_counts_with_other_ratios():
    ds = counts_dataset({30: None, 10: None, 5: None})
    labels = SPLIT_RULES.get("mmrec")(ds, DataConfig(split_ratios=(0.7, 0.2, 0.1)))
    # n=30: int(30 * 0.3) = 9 to valid+test, valid int(9 * 0.2 / 0.3) = 6, test 3; small users keep 1+1
    assert per_user_counts(ds, labels) == {30: (21, 6, 3), 10: (7, 2, 1), 5: (3, 1, 1)}


def test_mmrec_is_seeded_by_split_seed():
    ds = counts_dataset()
    a = make_split(ds, DataConfig(split="mmrec", split_seed=7)).labels
    b = make_split(ds, DataConfig(split="mmrec", split_seed=7)).labels
    c = make_split(ds, DataConfig(split="mmrec", split_seed=8)).labels
    np.testing.assert_array_equal(a, b)
    assert (a != c).sum() > 10
    # the random rule is not a time rule: over a few seeds the held-out rows are not always the latest
    ts = ds.interactions["timestamp"].to_numpy()
    user = ds.interactions["user"].to_numpy()
    big = user == ds.user_index["n50"]
    latest5 = set(np.argsort(-np.where(big, ts, -np.inf))[:5])
    assert set(np.flatnonzero(big & (a == TEST))) != latest5


def test_alias_random_is_mmrec():
    ds = counts_dataset()
    np.testing.assert_array_equal(SPLIT_RULES.get("random")(ds, DataConfig()),
                                  SPLIT_RULES.get("mmrec")(ds, DataConfig()))
    assert SPLIT_RULES.canonical("leave_one_out") == "loo"


def test_user_temporal_puts_latest_in_test():
    ds = counts_dataset()
    split = make_split(ds, DataConfig(split="user_temporal"))
    inter = ds.interactions
    for u in range(ds.n_users):
        rows = np.flatnonzero(inter["user"].to_numpy() == u)
        ts = inter["timestamp"].to_numpy()[rows]
        lab = split.labels[rows]
        by_time = lab[np.argsort(ts)]
        n = len(rows)
        t, v, e = MMREC_COUNTS[n]
        # in time order: all train, then valid, then test
        assert by_time.tolist() == [TRAIN] * t + [VALID] * v + [TEST] * e, n


def test_loo_in_time_order():
    ds = counts_dataset({1: None, 2: None, 3: None, 12: None})
    split = make_split(ds, DataConfig(split="loo"))
    inter = ds.interactions
    for u in range(ds.n_users):
        rows = np.flatnonzero(inter["user"].to_numpy() == u)
        by_time = split.labels[rows][np.argsort(inter["timestamp"].to_numpy()[rows])].tolist()
        n = len(rows)
        want = {1: [TRAIN], 2: [TRAIN, TEST]}.get(n, [TRAIN] * (n - 2) + [VALID, TEST])
        assert by_time == want, n


def test_loo_and_user_temporal_follow_sequence_order_without_timestamps():
    # MMRec's seq_pos (canonical 'order'): no timestamps, rows shuffled in the file
    frame = pd.DataFrame({"user": ["a"] * 5 + ["b"] * 4, "item": list("vwxyz") + list("vwxy"),
                          "order": [4, 0, 3, 1, 2, 2, 0, 3, 1]})
    ds = build_dataset("seq", frame)
    loo = make_split(ds, DataConfig(split="loo")).labels
    # a: order 4 is 'v' (test), order 3 is 'x' (valid); b: order 3 'y' test, order 2 'v' valid
    assert loo.tolist() == [TEST, TRAIN, VALID, TRAIN, TRAIN, VALID, TRAIN, TEST, TRAIN]
    ut = make_split(ds, DataConfig(split="user_temporal")).labels
    assert ut.tolist() == loo.tolist()  # both users have < 10 interactions: same as leave-one-out


def test_global_temporal_quantiles():
    # 101 interactions with timestamps 0..100 in shuffled file order; user = t % 10, so every user has rows
    # in every part. The 0.8 quantile of 0..100 is exactly 80 and the 0.9 quantile exactly 90: a timestamp
    # equal to a quantile is not below it, so 80 goes to valid and 90 to test.
    t = np.random.default_rng(0).permutation(101)
    frame = pd.DataFrame({"user": t % 10, "item": t // 10 + 11 * (t % 3), "timestamp": t.astype(float)})
    ds = build_dataset("global", frame)
    split = make_split(ds, DataConfig(split="global_temporal"))
    ts = ds.interactions["timestamp"].to_numpy()
    assert sorted(ts[split.labels == TRAIN]) == list(range(0, 80))
    assert sorted(ts[split.labels == VALID]) == list(range(80, 90))
    assert sorted(ts[split.labels == TEST]) == list(range(90, 101))
    # other ratios: 0.7 and 0.85 quantiles of 0..100 are 70 and 85
    labels = SPLIT_RULES.get("global_temporal")(ds, DataConfig(split_ratios=(0.7, 0.15, 0.15)))
    assert sorted(ts[labels == VALID]) == list(range(70, 85))


def cold_dataset():
    rng = np.random.default_rng(1)
    rows = [(u, i) for u in range(30) for i in rng.choice(50, 15, replace=False)]
    return build_dataset("cold", pd.DataFrame(rows, columns=["user", "item"]))


def test_cold_items_are_never_in_train():
    ds = cold_dataset()
    split = make_split(ds, DataConfig(split="cold_items", cold_item_ratio=0.2))
    items = split.items
    train_items = set(items[split.labels == TRAIN])
    valid_items = set(items[split.labels == VALID])
    test_items = set(items[split.labels == TEST])
    assert not train_items & test_items
    assert not train_items & valid_items
    assert not valid_items & test_items
    # round(50 active items * 0.2) = 10 cold items: 5 for validation, 5 for test
    assert len(valid_items) == 5 and len(test_items) == 5
    assert len(train_items) == 40
    # every interaction of a held-out item is held out
    for it in test_items:
        assert (split.labels[items == it] == TEST).all()
    same = make_split(ds, DataConfig(split="cold_items", cold_item_ratio=0.2))
    other = make_split(ds, DataConfig(split="cold_items", cold_item_ratio=0.2, split_seed=99))
    np.testing.assert_array_equal(same.labels, split.labels)
    assert set(other.items[other.labels == TEST]) != test_items


def test_given_split_is_default_when_labels_exist_and_mmrec_otherwise():
    frame = pd.DataFrame({"user": list("aaabbb"), "item": list("xyzxyz"), "label": [0, 1, 2, 0, 1, 2]})
    ds = build_dataset("given", frame)
    split = make_split(ds, DataConfig())
    assert split.rule == "given"
    assert split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert make_split(counts_dataset(), DataConfig()).rule == "mmrec"
    with pytest.raises(DataError, match="no split of its own"):
        make_split(counts_dataset(), DataConfig(split="given"))


@pytest.mark.parametrize("rule", ["user_temporal", "loo", "global_temporal"])
def test_time_rules_need_timestamps(rule):
    ds = counts_dataset(timestamps=False)
    with pytest.raises(DataError) as err:
        make_split(ds, DataConfig(split=rule))
    msg = str(err.value)
    assert "timestamp" in msg and rule in msg
    assert "Fix:" in msg and "data.split=mmrec" in msg


def test_empty_part_is_an_error():
    # one interaction per user: the MMRec rule keeps everything in train
    frame = pd.DataFrame({"user": list("abcd"), "item": list("wxyz")})
    with pytest.raises(DataError, match="valid part .* is empty"):
        make_split(build_dataset("one", frame), DataConfig(split="mmrec"))
    frame = pd.DataFrame({"user": list("aabb"), "item": list("wxyz"), "label": [0, 1, 0, 1]})
    with pytest.raises(DataError, match="test part .* is empty"):
        make_split(build_dataset("notest", frame), DataConfig())


def test_split_with_no_evaluable_user_is_an_error():
    # every valid/test user lacks a training interaction
    frame = pd.DataFrame({"user": list("abc"), "item": list("xyz"), "label": [0, 1, 2]})
    with pytest.raises(DataError, match="has a training interaction"):
        make_split(build_dataset("coldusers", frame), DataConfig())
    split = make_split(build_dataset("coldusers", frame), DataConfig(filter_cold_users=False))
    assert split.counts() == {"train": 1, "valid": 1, "test": 1}


# ----------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path):
    ds = counts_dataset()
    split = make_split(ds, DataConfig(split="mmrec", split_seed=3))
    path = split.save(tmp_path / "split.npz")
    assert path == tmp_path / "split.npz" and path.is_file()
    back = Split.load(path, ds)
    assert (back.rule, back.n_users, back.n_items) == ("mmrec", ds.n_users, ds.n_items)
    np.testing.assert_array_equal(back.labels, split.labels)
    np.testing.assert_array_equal(back.users, split.users)
    np.testing.assert_array_equal(back.items, split.items)
    np.testing.assert_array_equal(back.seq_key, split.seq_key)
    assert back.params["split_seed"] == 3
    assert back.fingerprint == split.fingerprint != ""
    for stage in ("train", "valid", "test"):
        assert (back.matrix(stage) != split.matrix(stage)).nnz == 0


def test_load_refuses_changed_data(tmp_path):
    ds = counts_dataset()
    path = make_split(ds, DataConfig(split="mmrec")).save(tmp_path / "split.npz")
    inter = ds.interactions.copy()
    changed = build_dataset("counts", pd.DataFrame({
        "user": ds.user_ids[inter["user"]], "item": ds.item_ids[inter["item"]],
        "timestamp": inter["timestamp"],
    }).iloc[:-1])  # one interaction fewer
    with pytest.raises(DataError, match="different data") as err:
        Split.load(path, changed)
    assert "Fix:" in str(err.value)
    Split.load(path)  # without a dataset there is nothing to check
    with pytest.raises(DataError, match="no saved split"):
        Split.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------- preprocess
def test_deduplicate_pair_keeps_first_in_file_order(prismrec_log):
    frame = pd.DataFrame({"user": ["a", "a", "b", "a", "b"], "item": ["x", "y", "x", "x", "x"],
                          "rating": [5.0, 4.0, 3.0, 1.0, 2.0]})
    ds = build_dataset("dup", frame)
    out = deduplicate(ds, "pair")
    kept = list(zip(out.user_ids[out.interactions["user"]], out.item_ids[out.interactions["item"]],
                    out.interactions["rating"]))
    assert kept == [("a", "x", 5.0), ("a", "y", 4.0), ("b", "x", 3.0)]
    warnings = [r for r in prismrec_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 duplicate (user, item) pairs removed" in warnings[0].getMessage()
    assert out.n_items == ds.n_items  # de-duplication never drops catalogue items


def test_deduplicate_pair_prefers_train_label_then_earliest_time():
    frame = pd.DataFrame({"user": ["a", "a", "a", "a"], "item": ["x", "x", "y", "y"],
                          "label": [2, 0, 0, 0], "timestamp": [1.0, 9.0, 8.0, 3.0]})
    out = deduplicate(build_dataset("dup", frame), "pair")
    got = sorted(zip(out.item_ids[out.interactions["item"]], out.interactions["label"],
                     out.interactions["timestamp"]))
    # (a, x) is in test at t=1 and in train at t=9: the train row stays; (a, y): the earlier row stays
    assert got == [("x", 0, 9.0), ("y", 0, 3.0)]
    # full ties on label and time: file order decides (the sort is stable over several keys)
    ties = pd.DataFrame({"user": ["a"] * 40, "item": [f"x{k % 4}" for k in range(40)], "label": 0,
                         "timestamp": 1.0, "rating": np.arange(40, dtype=float)})
    out = deduplicate(build_dataset("ties", ties), "pair")
    assert out.interactions["rating"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_deduplicate_row_and_none(prismrec_log):
    frame = pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "x", "x"], "rating": [5.0, 5.0, 1.0]})
    ds = build_dataset("dup", frame)
    out = deduplicate(ds, "row")
    assert out.interactions["rating"].tolist() == [5.0, 1.0]
    assert any("1 duplicate rows removed" in r.getMessage() for r in prismrec_log.records)
    assert deduplicate(ds, "none").n_interactions == 3
    clean = build_dataset("clean", pd.DataFrame({"user": ["a"], "item": ["x"]}))
    assert deduplicate(clean, "pair") is clean


def test_kcore_is_iterative_and_keeps_features_aligned():
    # 2-core. Item d has 1 interaction -> dropped; then u4 has 1 (c) -> dropped; then c has 1 (u3) ->
    # dropped; then u3 has 1 (b) -> dropped. A single pass would keep u3 and u4.
    pairs = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"),
             ("u3", "b"), ("u3", "c"), ("u4", "c"), ("u4", "d")]
    frame = pd.DataFrame(pairs, columns=["user", "item"])
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d", "e"]})  # e: catalogue item, no interaction
    feats = np.arange(5, dtype=np.float32).reshape(5, 1) * 10      # row r of item r: a=0, b=10, ...
    ds = build_dataset("core", frame, items=items, modalities={"image": Modality("image", feats, None)})
    out = kcore(ds, 2, 2)
    got = set(zip(out.user_ids[out.interactions["user"]], out.item_ids[out.interactions["item"]]))
    assert got == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")}
    assert list(out.user_ids) == ["u1", "u2"] and list(out.item_ids) == ["a", "b"]
    assert out.modalities["image"].values[:, 0].tolist() == [0.0, 10.0]
    assert kcore(ds, 1, 1) is ds
    # users only: u3 (2 interactions) and u4 (2) survive a 2-core on users alone
    assert kcore(ds, 2, 0).n_users == 4
    with pytest.raises(DataError, match="core"):
        kcore(ds, 5, 5)


def test_filter_min_rating():
    frame = pd.DataFrame({"user": list("aabbc"), "item": list("xyxyz"), "rating": [5.0, 2.0, 4.0, 3.5, 1.0]})
    ds = build_dataset("r", frame)
    out = filter_min_rating(ds, 4.0)
    assert sorted(zip(out.user_ids[out.interactions["user"]], out.item_ids[out.interactions["item"]])) == [
        ("a", "x"), ("b", "x")]
    assert out.n_users == 2            # c lost its only interaction
    assert out.n_items == ds.n_items   # items are kept (cold catalogue items)
    assert filter_min_rating(ds, None) is ds
    no_rating = build_dataset("n", frame.drop(columns="rating"))
    with pytest.raises(DataError, match="no rating column"):
        filter_min_rating(no_rating, 3.0)


def test_preprocess_applies_rating_dedup_kcore_in_order():
    frame = pd.DataFrame({"user": ["a", "a", "a", "b", "b", "c"], "item": ["x", "x", "y", "x", "y", "x"],
                          "rating": [5.0, 5.0, 4.0, 5.0, 5.0, 1.0]})
    out = preprocess(build_dataset("p", frame), DataConfig(min_rating=3, kcore=2))
    # rating drops c; dedup drops the second (a, x); the 2-core keeps a and b with x and y
    assert out.n_interactions == 4 and list(out.user_ids) == ["a", "b"]


# ------------------------------------------------------------------------------------- raw ids
def test_build_dataset_accepts_plain_string_ids():
    # regression: check_interactions used to update the read-only mask from Series.isna().to_numpy() in place,
    # which pandas 3 (copy-on-write) refuses, so plain string ids failed (src/prismrec/data/validate.py:46-48)
    frame = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"]})
    ds = build_dataset("strings", frame)
    assert list(ds.user_ids) == ["a", "b"] and list(ds.item_ids) == ["x", "y"]
    assert ds.interactions["user"].tolist() == [0, 0, 1] and ds.interactions["item"].tolist() == [0, 1, 0]
    for blank in (" ", ""):
        with pytest.raises(DataError, match="1 rows have an empty user id"):
            build_dataset("blank", pd.DataFrame({"user": ["a", blank], "item": ["x", "y"]}))
    # numbers and categoricals become the same string ids
    ints = build_dataset("ints", pd.DataFrame({"user": [10, 10, 20], "item": [1, 2, 1]}))
    assert list(ints.user_ids) == ["10", "20"] and list(ints.item_ids) == ["1", "2"]
    cat = build_dataset("cat", frame.astype("category"))
    assert list(cat.user_ids) == ["a", "b"]
