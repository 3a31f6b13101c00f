"""LGMRec: learns, scoring contract, checkpoints, missing features (projections and hyperedge
dependencies), any number of modalities, the forward pass and the loss against a dense re-computation of
the official equations, and the whole-table InfoNCE against its direct form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from prismrec.models.contrastive import full_info_nce

from model_checks import (N_ITEMS, check_learns_past_content, check_missing_features, check_modality_counts,
                          check_shapes_and_round_trip, fit, multimodal_dataset, scores)

ARGS = ["lgmrec.embedding_size=16", "lgmrec.hyper_num=4"]


def test_lgmrec_learns():
    """Untrained, LGMRec already ranks well on the group-structured features (0.77 recall@10: the user's
    mean projected feature against the items', propagated on the user-item graph, is a content and
    co-occurrence recommender before any step), so the shared margin check cannot apply. With noise
    features the untrained model keeps only the co-occurrence signal of the fixed propagation, and
    training must add to it; the group-feature model must not get worse."""
    check_learns_past_content("lgmrec", ARGS, gain=0.15, margin=0.05)


def test_lgmrec_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("lgmrec", ARGS)


def test_lgmrec_missing_features():
    check_missing_features("lgmrec", ARGS)


def test_lgmrec_any_number_of_modalities():
    check_modality_counts("lgmrec", ARGS)


def test_scores_are_the_dot_product_of_the_vectors_and_deterministic():
    run = fit("lgmrec", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.eval()
    with torch.no_grad():
        u, i = m.user_item_vectors()
    torch.testing.assert_close(scores(m), u @ i.T)
    m.clear_scoring()
    assert torch.equal(scores(m), u @ i.T)          # no Gumbel noise, no dropout when scoring
    m.config.score_hyperedges = "gumbel"             # one seeded draw: reproducible, but not the softmax
    m.clear_scoring()
    g1 = scores(m)
    m.clear_scoring()
    assert torch.equal(scores(m), g1) and not torch.allclose(g1, u @ i.T)


def test_training_forward_is_stochastic():
    run = fit("lgmrec", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.train()
    with torch.no_grad():
        a, b = m.forward(train=True)[0], m.forward(train=True)[0]
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------- against the official code
def _dense_forward(m, train_matrix):
    """The official ``forward`` (two modalities image = v, text = t) with dense matrices and the scoring
    assignments softmax(H / tau), from the model's parameters."""
    cfg, n_u = m.config, m.n_users
    r = torch.from_numpy(train_matrix.toarray()).float()
    n = n_u + m.n_items
    a = torch.zeros(n, n)
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    deg = a.sum(1) + 1e-7
    norm = deg.pow(-0.5)[:, None] * a * deg.pow(-0.5)[None, :]
    ego = torch.cat([m.user_embedding, m.item_embedding])
    layers = [ego]
    for _ in range(cfg.n_ui_layers):
        layers.append(norm @ layers[-1])
    cge = torch.stack(layers, 1).mean(1)
    num_inters = 1.0 / (a.sum(1, keepdim=True) + 1e-7)
    mge, hyper = {}, {}
    for name in ("image", "text"):
        feat = m.features.tables[name].values
        item_feats = feat @ m.features.proj[name].net.weight.T           # f @ item_trs
        user_feats = (r @ item_feats) * num_inters[:n_u]
        x = torch.cat([user_feats, item_feats])
        for _ in range(cfg.n_mm_layers):
            x = norm @ x
        mge[name] = x
        i_hyper = feat @ m.hyper[name].net.weight.T                       # f @ v_hyper
        u_hyper = r @ i_hyper
        i_hyper, u_hyper = torch.softmax(i_hyper / cfg.tau, 1), torch.softmax(u_hyper / cfg.tau, 1)
        i_ret = cge[n_u:]
        for _ in range(cfg.n_hyper_layer):
            lat = i_hyper.T @ i_ret
            i_ret = i_hyper @ lat
            u_ret = u_hyper @ lat
        hyper[name] = (u_ret, i_ret)
    lge = cge + F.normalize(mge["image"]) + F.normalize(mge["text"])
    ghe = torch.cat(hyper["image"]) + torch.cat(hyper["text"])
    return lge + cfg.alpha * F.normalize(ghe), hyper


@pytest.mark.parametrize("extra", [[], ["lgmrec.n_hyper_layer=2", "lgmrec.n_mm_layers=1", "lgmrec.n_ui_layers=3"]])
def test_forward_matches_the_official_equations(extra):
    ds = multimodal_dataset()
    run = fit("lgmrec", ds, [*ARGS, *extra], 1)
    m = run.model
    with torch.no_grad():
        got, views = m.forward(train=False)
        want, want_views = _dense_forward(m, run.split.train)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for name in ("image", "text"):
        for g, w in zip(views[name], want_views[name]):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def _ssl_triple_loss(emb1, emb2, all_emb, tau):
    """The code's ``ssl_triple_loss``."""
    n1, n2, na = F.normalize(emb1), F.normalize(emb2), F.normalize(all_emb)
    pos = torch.exp((n1 * n2).sum(1) / tau)
    ttl = torch.exp(n1 @ na.T / tau).sum(1)
    return -torch.log(pos / ttl).sum()


def test_loss_terms_match_the_official_code():
    run = fit("lgmrec", multimodal_dataset(), [*ARGS, "lgmrec.cl_weight=0.01", "lgmrec.reg_weight=0.001"], 1)
    m = run.model
    m.eval()   # the scoring assignments make the forward deterministic: the same views twice
    batch = {"users": torch.tensor([0, 1, 2, 3, 3]), "pos_items": torch.tensor([0, 1, 2, 3, 9]),
             "neg_items": torch.tensor([4, 5, 6, 7, 8])}
    out = m.loss(batch)
    assert set(out) == {"loss", "bpr", "reg", "cl"}
    final, views = m.forward(train=False)
    u, p, n = batch["users"], m.n_users + batch["pos_items"], m.n_users + batch["neg_items"]
    (uv, iv), (ut, it) = views["image"], views["text"]
    want_cl = (_ssl_triple_loss(uv[u], ut[u], ut, 0.2)
               + _ssl_triple_loss(iv[batch["pos_items"]], it[batch["pos_items"]], it, 0.2))
    torch.testing.assert_close(out["cl"], want_cl, rtol=1e-5, atol=1e-4)
    want_reg = (final[u].norm() + final[p].norm() + final[n].norm()) / 5
    torch.testing.assert_close(out["reg"], want_reg)
    want_bpr = -F.logsigmoid((final[u] * final[p]).sum(1) - (final[u] * final[n]).sum(1)).mean()
    torch.testing.assert_close(out["bpr"], want_bpr)
    torch.testing.assert_close(out["loss"], out["bpr"] + 0.01 * out["cl"] + 0.001 * out["reg"])
    m.train()
    m.zero_grad()
    m.loss(batch)["loss"].backward()
    for p_ in [m.user_embedding, m.item_embedding, *m.features.linears()[0].parameters(),
               *(m.hyper[k].net.weight for k in m.features.names)]:
        assert p_.grad is not None and torch.isfinite(p_.grad).all() and p_.grad.abs().sum() > 0
    assert "values" in m.features.tables["image"]._buffers   # frozen features (freeze=True in the code)


def test_missing_items_use_the_learned_hyperedge_dependency_vector():
    gone = np.arange(0, N_ITEMS, 5)
    run = fit("lgmrec", multimodal_dataset(missing={"image": gone}), ARGS, 3)
    m = run.model
    hyper = m.hyper["image"]
    assert hyper.missing.abs().sum() > 0, "the missing hyperedge vector received no gradient"
    t = m.features.tables["image"]
    with torch.no_grad():
        logits = hyper(t.values, t.available)
    assert torch.equal(logits[gone], hyper.missing.expand(len(gone), -1))
    assert torch.isfinite(scores(m)).all()


def test_one_modality_has_no_contrast():
    run = fit("lgmrec", multimodal_dataset({"image": 16}), ARGS, 1)
    m = run.model
    m.train()
    out = m.loss({"users": torch.tensor([0, 1]), "pos_items": torch.tensor([0, 1]), "neg_items": torch.tensor([2, 3])})
    assert "cl" not in out and m.pairs == []


# ------------------------------------------------------------------------- whole-table InfoNCE
@pytest.mark.parametrize("block_bytes", [4 * 7 * 256, 4 * 1000, 2**30])
def test_full_info_nce_blockwise_equals_direct(block_bytes):
    torch.manual_seed(0)
    a1 = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    t1 = torch.randn(300, 5, dtype=torch.float64, requires_grad=True)
    a2, t2 = a1.detach().clone().requires_grad_(True), t1.detach().clone().requires_grad_(True)
    y = torch.tensor([0, 3, 3, 299, 10, 11, 100])
    got = full_info_nce(a1, t1, y, 0.3, reduction="sum", block_bytes=block_bytes)
    logits = F.normalize(a2, dim=-1) @ F.normalize(t2, dim=-1).T / 0.3
    want = F.cross_entropy(logits, y, reduction="sum")
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    torch.testing.assert_close(t1.grad, t2.grad)
    torch.testing.assert_close(full_info_nce(a1, t1, y, 0.3, block_bytes=block_bytes), want / 7)
