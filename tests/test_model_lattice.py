"""LATTICE: the blockwise differentiable top-k against a dense top-k, learns, scoring contract,
checkpoints, missing features, any number of modalities, the mixed item graph against the official
dense computation, and when the learned graph carries gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.graphs.knn import edge_matmul, merge_edges, sym_normalize_edges, topk_similarity

from model_checks import (N_ITEMS, check_learns, check_modality_counts, check_shapes_and_round_trip, fit,
                          multimodal_dataset, scores)

ARGS = ["lattice.embedding_size=16", "lattice.feat_embed_dim=8", "lattice.knn_k=5"]


# ----------------------------------------------------------------------------- blockwise top-k
def _dense_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """The code's build_sim + build_knn_neighbourhood: a dense n x n matrix with the top-k kept."""
    xn = x / x.norm(dim=-1, keepdim=True)
    sim = xn @ xn.T
    val, ind = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, ind, val)


@pytest.mark.parametrize("block_rows", [1, 7, 50])
def test_blockwise_topk_equals_dense_topk_values_and_gradients(block_rows):
    torch.manual_seed(0)
    n, d, k = 50, 8, 6
    x1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    weight = torch.randn(n, n, dtype=torch.float64)  # an arbitrary downstream use of the edges
    dense = _dense_topk(x1, k)
    r, c, v = topk_similarity(x2, k, block_bytes=4 * n * block_rows)
    sparse = torch.zeros(n, n, dtype=torch.float64).index_put((r, c), v, accumulate=True)
    assert len(r) == n * k and not r.requires_grad and not c.requires_grad
    torch.testing.assert_close(sparse, dense)
    (dense * weight).sum().backward()
    (sparse * weight).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    # normalisation of the edge list = the code's compute_normalized_laplacian on the dense matrix
    deg = dense.sum(-1)
    want = dense / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    got = torch.zeros(n, n, dtype=torch.float64).index_put((r, c), sym_normalize_edges(r, c, v, n), accumulate=True)
    torch.testing.assert_close(got, want)


def test_blockwise_topk_skips_unavailable_rows_and_breaks_ties_by_id():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], requires_grad=True)
    avail = np.array([True, False, True, True, True])
    r, c, v = topk_similarity(x, 2, available=avail)
    edges = set(zip(r.tolist(), c.tolist()))
    assert edges == {(0, 0), (0, 2), (2, 0), (2, 2), (3, 3), (3, 4), (4, 3), (4, 4)}
    assert 1 not in r.tolist() and 1 not in c.tolist()
    r, c, _ = topk_similarity(x, 1, exclude_self=True)
    assert dict(zip(r.tolist(), c.tolist())) == {0: 1, 1: 0, 2: 0, 3: 4, 4: 3}


# ------------------------------------------------------------------------------- shared checks
def test_lattice_learns():
    check_learns("lattice", ARGS, epochs=6, margin=0.3)


def test_lattice_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("lattice", ARGS)


def test_lattice_any_number_of_modalities():
    check_modality_counts("lattice", ARGS)


def test_lattice_step_updates_and_mf_backbone():
    for extra in ("lattice.graph_update=step", "lattice.cf_model=mf"):
        run = fit("lattice", multimodal_dataset(), [*ARGS, extra], 2)
        assert torch.isfinite(scores(run.model)).all()


def test_scores_are_the_dot_product_of_the_vectors():
    run = fit("lattice", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.eval()
    with torch.no_grad():
        u, i = m.user_item_vectors()
    torch.testing.assert_close(scores(m), u @ i.T)


# ------------------------------------------------------------------------------------ item graph
def _dense_adj(m) -> torch.Tensor:
    idx, val = m.item_adjacency()
    return torch.zeros(m.n_items, m.n_items).index_put((idx[0], idx[1]), val, accumulate=True)


def test_edge_matmul_equals_dense_product_values_and_gradients():
    torch.manual_seed(1)
    n, d = 30, 4
    r, c = torch.randint(0, n, (120,)), torch.randint(0, n, (120,))
    v1 = torch.rand(120, dtype=torch.float64, requires_grad=True)
    x1 = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    v2, x2 = v1.detach().clone().requires_grad_(True), x1.detach().clone().requires_grad_(True)
    idx, val = merge_edges(r, c, v1, n)
    assert idx.shape[1] == len(set(zip(r.tolist(), c.tolist())))
    out = edge_matmul(idx, val, x1, n)
    dense = torch.zeros(n, n, dtype=torch.float64).index_put((r, c), v2, accumulate=True)
    want = dense @ x2
    torch.testing.assert_close(out, want)
    g = torch.randn(n, d, dtype=torch.float64)
    (out * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(v1.grad, v2.grad)
    torch.testing.assert_close(x1.grad, x2.grad)


def test_item_graph_matches_the_official_dense_computation():
    ds = multimodal_dataset()
    run = fit("lattice", ds, ARGS, 1)
    m = run.model
    k, lam = m.config.knn_k, m.config.lambda_coeff
    with torch.no_grad():
        w = torch.softmax(m.modal_weight, 0)
        learned, original = 0, 0
        for j, n in enumerate(m.features.names):
            learned = learned + w[j] * _dense_topk(m.features(n), k)
            raw = torch.from_numpy(ds.modalities[n].values)
            knn = _dense_topk(raw, k)
            deg = knn.sum(-1).rsqrt()
            original = original + w[j] * (deg[:, None] * knn * deg[None, :])
        deg = learned.sum(-1).rsqrt()
        want = (1 - lam) * deg[:, None] * learned * deg[None, :] + lam * original
        got = _dense_adj(m)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the backbone graph is the code's D^-1 (A + I)
    a = m.adj.matrix.to_dense()
    torch.testing.assert_close(a.sum(1), torch.ones(a.shape[0]))
    assert (torch.diagonal(a) > 0).all()


def test_learned_graph_carries_gradients_at_the_epochs_first_batch_only():
    run = fit("lattice", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.train()
    batch = {"users": torch.tensor([0, 1, 2]), "pos_items": torch.tensor([0, 1, 2]),
             "neg_items": torch.tensor([3, 4, 5])}
    proj = m.features.proj["image"].net.weight
    m.on_epoch_start(2)
    for first in (True, False):
        m.zero_grad()
        m.loss(batch)["loss"].backward()
        got = proj.grad is not None and bool(proj.grad.abs().sum() > 0)
        assert got is first
        assert (m.modal_weight.grad is not None and bool(m.modal_weight.grad.abs().sum() > 0)) is first
        assert m.item_embedding.grad.abs().sum() > 0
    m.config.graph_update = "step"
    m.zero_grad()
    m.loss(batch)["loss"].backward()
    assert proj.grad.abs().sum() > 0


def test_lattice_missing_features():
    """Items without an image have no image edge (learned or frozen); their frozen row is the text graph's
    at full weight (renormalised over the modalities they have); nothing is NaN."""
    gone = np.arange(0, N_ITEMS, 5)
    ds = multimodal_dataset(missing={"image": gone})
    run = fit("lattice", ds, ARGS, 3)
    m = run.model
    assert m.features.names == ["image", "text"]
    assert torch.isfinite(scores(m)).all()
    lam = m.config.lambda_coeff

    def dense(j):
        e, v = getattr(m, f"_frozen_{j}"), getattr(m, f"_frozen_val_{j}")
        return torch.zeros(N_ITEMS, N_ITEMS).index_put((e[0], e[1]), v, accumulate=True)

    img, txt = dense(0), dense(1)
    assert img[gone].abs().sum() == 0 and img[:, gone].abs().sum() == 0
    with torch.no_grad():
        w = torch.softmax(m.modal_weight, 0)
        x = m.features("image")
        r, c, _ = topk_similarity(x, m.config.knn_k, available=m._available[:, 0])
        assert not np.isin(r.numpy(), gone).any() and not np.isin(c.numpy(), gone).any()
        r, c, v = m.learned_edges(w)
        learned = torch.zeros(N_ITEMS, N_ITEMS).index_put((r, c), v, accumulate=True)
        frozen = (_dense_adj(m) - (1 - lam) * learned) / lam
    others = np.setdiff1d(np.arange(N_ITEMS), gone)
    torch.testing.assert_close(frozen[gone], txt[gone], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(frozen[others], (w[0] * img + w[1] * txt)[others], rtol=1e-4, atol=1e-6)
    assert torch.isfinite(learned).all() and (learned[gone].abs().sum(1) > 0).all()  # text neighbours remain
