"""Feature-quality protocols (AlignRec's intermediate evaluation): zero-shot, item-kNN CF, masked modality,
the report and the ``prismrec evaluate-features`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from prismrec.cli.main import app
from prismrec.config import DataConfig
from prismrec.data import make_split
from prismrec.data.dataset import Modality
from prismrec.errors import ConfigError, DataError
from prismrec.evaluate.feature_quality import (FeatureSet, data_config, evaluate_feature_set, feature_quality,
                                               item_knn_scorer, mask_modality, zero_shot_scorer)
from prismrec.evaluate.ranking import RankingEvaluator

from conftest import write_mmrec
from test_model_alignrec import STAGE1, block_dataset, paired_modalities


def tiny_case(seed: int = 0):
    """7 items with 3-d features (item 5 has none) and 4 users' training rows."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((7, 3)).astype(np.float32)
    available = np.ones(7, bool)
    available[5] = False
    values[5] = 0.0
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1, 0],
                                    [0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0, 1]], dtype=np.float32))
    return FeatureSet("x", values, available), train


def test_item_knn_scores_equal_the_dense_formula():
    fs, train = tiny_case()
    k = 2
    x = fs.values / np.maximum(np.linalg.norm(fs.values, axis=1, keepdims=True), 1e-12)
    cos = x @ x.T
    knn = np.zeros_like(cos)
    have = np.flatnonzero(fs.available)
    for j in have:                       # K[j, i] = cos(j, i) for the k most similar other items i
        others = [i for i in have if i != j]
        best = sorted(others, key=lambda i: (-cos[j, i], i))[:k]
        knn[j, best] = cos[j, best]
    expected = train.toarray() @ knn
    got = item_knn_scorer(train, fs, k)(torch.arange(4)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not got[:, 5].any() and not got[2].any()          # no feature, no history: no evidence


def test_zero_shot_scores_equal_the_dense_formula():
    fs, train = tiny_case(1)
    x = fs.values / np.maximum(np.linalg.norm(fs.values, axis=1, keepdims=True), 1e-12)
    got = zero_shot_scorer(train, fs)(torch.arange(4)).numpy()
    for u, hist in enumerate([[0, 1], [2], [], [0, 3, 6]]):   # user 1's item 5 has no feature: left out
        user = x[hist].mean(axis=0) if hist else np.zeros(3)
        user = user / max(np.linalg.norm(user), 1e-12)
        expected = x @ user
        expected[5] = -2.0                                     # an item without a feature ranks last
        np.testing.assert_allclose(got[u], expected, atol=1e-6)


def test_block_features_beat_random_features_zero_shot_and_knn():
    ds = block_dataset(2, n_users=120, n_items=64)
    split = make_split(ds, DataConfig())
    ev = RankingEvaluator(split, "test", [10, 20])
    good = FeatureSet("block", ds.modalities["image"].values, np.ones(64, bool))
    noise = FeatureSet("noise", np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32),
                       np.ones(64, bool))
    for protocol in ("zero-shot", "item-knn"):
        g = evaluate_feature_set(split, good, protocol, ev, k=10)["recall@10"]
        r = evaluate_feature_set(split, noise, protocol, ev, k=10)["recall@10"]
        assert g > r + 0.15, (protocol, g, r)


def test_mask_modality_is_seeded_and_flags_rows_unavailable():
    m = Modality("image", np.ones((10, 2), np.float32), np.arange(10) != 9)
    a, b, c = mask_modality(m, 0.5, seed=0), mask_modality(m, 0.5, seed=0), mask_modality(m, 0.5, seed=1)
    dropped = np.random.default_rng(0).permutation(10)[:5]      # the first half of a seeded permutation
    np.testing.assert_array_equal(a.available, m.available & ~np.isin(np.arange(10), dropped))
    np.testing.assert_array_equal(a.available, b.available)
    assert not np.array_equal(a.available, c.available)
    assert not a.values[~a.available].any() and m.available.sum() == 9           # the input is untouched


def test_report_rows_masking_drops_and_aligned_feature():
    ds = block_dataset(2, n_users=120, n_items=64)
    split = make_split(ds, DataConfig())
    rep = feature_quality(ds, split, k=10, aligned=True, align_cfg=STAGE1.model_copy(update={"epochs": 20}))
    rows = {(r["features"], r["protocol"], r["masked"]): r for r in rep.rows}
    sets = ["image", "text", "concat(image+text)", "aligned(image+text)"]
    for fs in sets:
        for p in ("zero-shot", "item-knn"):
            assert (fs, p, None) in rows
    # masked rows exist only for the feature sets that use the masked modality
    assert ("image", "zero-shot", "image") in rows and ("text", "zero-shot", "image") not in rows
    assert ("aligned(image+text)", "item-knn", "text") in rows
    masked = rows[("image", "zero-shot", "image")]
    assert masked["items_with_feature"] == 32 and masked["metrics"]["recall@20"] < rows[("image", "zero-shot", None)][
        "metrics"]["recall@20"]
    assert masked["drop_recall@20"] < 0
    # the aligned feature of an item that lost one modality still exists (re-encoded from the other)
    assert rows[("aligned(image+text)", "zero-shot", "image")]["items_with_feature"] == 64
    md = rep.markdown()
    assert md.splitlines()[0].startswith("| features | protocol | masked | R@10 | R@20 | N@10 | N@20")
    assert len(md.splitlines()) == 2 + len(rep.rows)
    json.dumps(rep.as_dict())
    with pytest.raises(DataError, match="not in dataset"):
        feature_quality(ds, split, modalities=["video"])


def test_data_config_overrides():
    cfg = data_config(overrides=["data.kcore=2", "split_seed=7", "data.extra_features={a: /x.npz}"])
    assert cfg.kcore == 2 and cfg.split_seed == 7 and cfg.extra_features == {"a": "/x.npz"}
    with pytest.raises(ConfigError, match="Unknown key"):
        data_config(overrides=["data.kcor=2"])


def test_evaluate_features_command(tmp_path):
    folder, _ = write_mmrec(tmp_path / "data", features=16)
    np.save(folder / "text_feat.npy", paired_modalities(60)["text"].values)
    out = tmp_path / "fq.json"
    res = CliRunner().invoke(app, ["evaluate-features", "--data", str(folder), "--k", "5", "--out", str(out),
                                   "--modality", "image"])
    assert res.exit_code == 0, res.output
    assert "| image | zero-shot | - |" in res.output and "| image | item-knn | image |" in res.output
    saved = json.loads(out.read_text())
    assert saved["settings"]["k"] == 5 and len(saved["rows"]) == 4 and "text" not in res.output
