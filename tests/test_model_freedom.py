"""FREEDOM: frozen kNN item graph (weights, missing features), degree-sensitive edge pruning, losses."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.data import Modality
from prismrec.data.training import TrainingData
from prismrec.graphs.knn import modality_weights, multimodal_knn_graph
from prismrec.models.general.freedom import FREEDOM, sample_edges

from model_checks import (N_ITEMS, check_learns, check_missing_features, check_modality_counts,
                             check_shapes_and_round_trip, fit, group_features, multimodal_dataset, scores)

ARGS = ["freedom.embedding_size=16", "freedom.reg_weight=0.001"]


def test_freedom_learns():
    check_learns("freedom", ARGS, epochs=6, margin=0.3)


def test_freedom_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("freedom", ARGS)


def test_freedom_missing_features():
    check_missing_features("freedom", ARGS)


def test_freedom_any_number_of_modalities():
    check_modality_counts("freedom", ARGS)


# ------------------------------------------------------------------------------------ item graph
def test_modality_weights_rule():
    assert modality_weights(["image", "text"], 0.1, "image") == {"image": 0.1, "text": 0.9}
    w = modality_weights(["audio", "image", "text"], 0.1, "image")
    assert w["image"] == 0.1 and w["audio"] == pytest.approx(0.45) and w["text"] == pytest.approx(0.45)
    assert modality_weights(["audio", "text"], 0.1, "image") == {"audio": 0.5, "text": 0.5}
    assert modality_weights(["image"], 0.1, "image") == {"image": 1.0}
    assert modality_weights(["image", "text"], 0.1, "equal") == {"image": 0.5, "text": 0.5}


def test_item_graph_is_the_weighted_sum_of_knn_graphs_with_weight_one_over_k():
    k = 5
    mods = {"image": Modality("image", group_features(16, 0), None),
            "text": Modality("text", group_features(12, 1), None)}
    single = multimodal_knn_graph({"image": mods["image"]}, k, {"image": 1.0}).toarray()
    assert ((single > 0).sum(1) == k).all()
    np.testing.assert_allclose(single[single > 0], 1.0 / k, rtol=1e-6)
    assert (np.diag(single) > 0).all(), "MMRec's top-k keeps the item itself"
    # neighbours are same-group items (the features encode the group)
    rows, cols = np.nonzero(single)
    assert (rows % 4 == cols % 4).all()
    both = multimodal_knn_graph(mods, k, {"image": 0.1, "text": 0.9}).toarray()
    text = multimodal_knn_graph({"text": mods["text"]}, k, {"text": 1.0}).toarray()
    np.testing.assert_allclose(both, 0.1 * single + 0.9 * text, rtol=1e-6)
    np.testing.assert_allclose(both.sum(1), 1.0, rtol=1e-5)


def test_item_graph_leaves_out_missing_features_and_renormalises_their_rows():
    k, gone = 5, np.array([0, 7, 13])
    avail = np.ones(N_ITEMS, dtype=bool)
    avail[gone] = False
    mods = {"image": Modality("image", group_features(16, 0), avail),
            "text": Modality("text", group_features(12, 1), None)}
    g = multimodal_knn_graph(mods, k, {"image": 0.1, "text": 0.9}).toarray()
    text = multimodal_knn_graph({"text": mods["text"]}, k, {"text": 1.0}).toarray()
    # a missing-image item: only its text neighbours, at full weight (0.9 / 0.9)
    np.testing.assert_allclose(g[gone], text[gone], rtol=1e-6)
    # nobody has it as an image neighbour: its column holds only text edges (weight 0.9 / k or less)
    others = np.setdiff1d(np.arange(N_ITEMS), gone)
    np.testing.assert_allclose(g[np.ix_(others, gone)], 0.9 * text[np.ix_(others, gone)], rtol=1e-6)
    np.testing.assert_allclose(g.sum(1), 1.0, rtol=1e-5)


def test_item_graph_is_built_once_and_not_saved():
    run = fit("freedom", multimodal_dataset(), ARGS, 1)
    assert not [k for k in run.model.state_dict() if k.split(".")[0] in ("mm_adj", "adj", "masked_adj")]
    assert run.model.extra_info()["item_graph_edges"] == run.model.mm_adj.nnz > 0


# ---------------------------------------------------------------------------------- edge pruning
def test_sample_edges_without_replacement_and_proportional_to_weight():
    w = torch.cat([torch.full((50,), 0.1, dtype=torch.float64), torch.full((50,), 1.0, dtype=torch.float64)])
    torch.manual_seed(0)
    counts = torch.zeros(100)
    for _ in range(300):
        idx = sample_edges(w, 20)
        assert len(idx.unique()) == 20
        counts[idx] += 1
    light, heavy = counts[:50].sum(), counts[50:].sum()
    assert heavy > 6 * light  # first draw alone: 10x more likely; without replacement dampens it a little
    torch.manual_seed(1)
    a = sample_edges(w, 20)
    torch.manual_seed(1)
    assert torch.equal(a, sample_edges(w, 20))


def test_pruned_graph_each_epoch_keeps_a_renormalised_share_of_training_edges():
    run = fit("freedom", multimodal_dataset(), [*ARGS, "freedom.dropout=0.7"], 0)
    m = run.model
    train = run.split.train
    n_keep = int(train.nnz * 0.3)
    assert m.n_kept_edges() == n_keep
    torch.manual_seed(3)
    m.on_epoch_start(1)
    first = m.masked_adj.matrix.to_dense().numpy()
    assert (first > 0).sum() == 2 * n_keep
    block = first[: m.n_users, m.n_users:]
    assert (block > 0).sum() == n_keep and not (block > 0)[train.toarray() == 0].any()
    kept = (block > 0).astype(np.float32)
    du, di = kept.sum(1), kept.sum(0)
    expected = np.where(kept > 0, 1 / np.sqrt(np.outer(du, di) + 1e-30), 0)
    np.testing.assert_allclose(block, expected, rtol=1e-5)
    np.testing.assert_allclose(first, first.T)
    torch.manual_seed(4)
    m.on_epoch_start(2)
    assert not np.array_equal(m.masked_adj.matrix.to_dense().numpy(), first)
    # the full graph is untouched and is what scoring uses (MMRec's full_sort_predict uses norm_adj)
    assert m.adj.nnz == 2 * train.nnz
    before = scores(m)
    torch.manual_seed(5)
    m.on_epoch_start(3)
    assert torch.equal(scores(m), before)


def test_pruning_prefers_edges_of_low_degree_nodes():
    # user 0 interacts with every item, so its edges have the smallest 1/sqrt(d_u d_i)
    rng = np.random.default_rng(0)
    dense = rng.random((30, 20)) < 0.15
    dense[0] = True
    train = sp.csr_matrix(dense.astype(np.float32))
    data = TrainingData("t", 30, 20, train, {"image": Modality("image", rng.random((20, 4)), None)})
    m = FREEDOM(FREEDOM.Config(dropout=0.5, embedding_size=8, knn_k=3), data)
    hub, rest = 0, 0
    for seed in range(100):
        torch.manual_seed(seed)
        m.on_epoch_start(seed + 1)
        block = m.masked_adj.matrix.to_dense()[:30, 30:] > 0
        hub += int(block[0].sum())
        rest += int(block[1:].sum())
    share_hub = hub / (100 * dense[0].sum())
    share_rest = rest / (100 * dense[1:].sum())
    assert share_hub < 0.75 * share_rest


# --------------------------------------------------------------------------------------- losses
def test_feature_bpr_terms_train_the_projections_only_when_reg_weight_is_positive():
    ds = multimodal_dataset()
    for weight, expect in ((0.0, False), (0.01, True)):
        run = fit("freedom", ds, [*ARGS, f"freedom.reg_weight={weight}"], 0)
        m = run.model
        m.train()
        batch = {"users": torch.tensor([0, 1, 2]), "pos_items": torch.tensor([0, 1, 2]),
                 "neg_items": torch.tensor([3, 4, 5])}
        out = m.loss(batch)
        out["loss"].backward()
        assert ("feature_bpr" in out) is expect
        grads = [p.grad for p in m.diagnostic_groups()["feature"]]
        assert any(g is not None and g.abs().sum() > 0 for g in grads) is expect
        assert m.diagnostic_groups()["id"][0].grad.abs().sum() > 0
        # MMRec fine-tunes the raw features (nn.Embedding.from_pretrained(freeze=False))
        assert (m.features.tables["image"].values.grad is not None) is expect
        assert "features.tables.image.values" in m.state_dict()


def test_train_features_false_keeps_the_raw_features_fixed():
    run = fit("freedom", multimodal_dataset(), [*ARGS, "freedom.train_features=false"], 2)
    m = run.model
    assert not any(k.startswith("features.tables") for k in m.state_dict())
    assert not any(n.startswith("features.tables") for n, _ in m.named_parameters())
    assert torch.isfinite(scores(m)).all()
