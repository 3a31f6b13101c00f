"""MENTOR: learns, scoring contract, checkpoints, missing features, any number of modalities, the
forward pass and every loss term against a dense re-computation of the official code, the perturbation,
and the options (feature-masking gradient, batch-scoped contrast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model_checks import (N_ITEMS, check_learns_past_content, check_missing_features, check_modality_counts,
                          check_shapes_and_round_trip, fit, multimodal_dataset, scores)

ARGS = ["mentor.embedding_size=16", "mentor.knn_k=5"]


def test_mentor_learns():
    """Untrained, the encoders already propagate the group-structured features to the users (a content
    recommender before any step), so the margin is shown on noise features; the group-feature model
    must not get worse."""
    check_learns_past_content("mentor", ARGS, gain=0.3, margin=0.0)


def test_mentor_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("mentor", ARGS)


def test_mentor_missing_features():
    check_missing_features("mentor", ARGS)


def test_mentor_any_number_of_modalities():
    check_modality_counts("mentor", ARGS)


def test_scores_are_the_dot_product_of_the_vectors():
    run = fit("mentor", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.eval()
    with torch.no_grad():
        u, i = m.user_item_vectors()
    assert u.shape == (m.n_users, 2 * 16) and i.shape == (m.n_items, 2 * 16)
    torch.testing.assert_close(scores(m), u @ i.T)


# ----------------------------------------------------------------------- against the official code
def _dense_adj(train_matrix, n_u):
    r = torch.from_numpy(train_matrix.toarray()).float()
    n = n_u + r.shape[1]
    a = torch.zeros(n, n)
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


def _dense_knn(feat, k):
    """The code's get_knn_adj_mat: binary top-k (self included), D^-1/2 S D^-1/2."""
    x = feat / feat.norm(dim=-1, keepdim=True)
    _, ind = torch.topk(x @ x.T, k, dim=-1)
    s = torch.zeros(len(x), len(x)).scatter_(1, ind, 1.0)
    d = (s.sum(-1) + 1e-7).pow(-0.5)
    return d[:, None] * s * d[None, :]


def _gcn(a, pref, feats, mlp):
    """The code's GCN.forward (no perturbation): x = normalize([P; MLP_1(leaky(MLP(f)))]), x + Ax + A²x."""
    x = F.normalize(torch.cat([pref, mlp(feats)]))
    h = a @ x
    return x + h + a @ h


def _official_tables(m, ds, split, encoder=None, prefs=None):
    """result_embed, result_embed_guide, result_embed_v, result_embed_t of the code's forward (the v / t
    GCNs: the model's main encoders, or ``encoder`` / ``prefs``, e.g. a perturbed pair without noise)."""
    n_u, k = m.n_users, m.config.knn_k
    encoder, prefs = encoder or m.features, prefs or m.preferences
    a = _dense_adj(split.train, n_u)
    mm = 0.1 * _dense_knn(torch.from_numpy(ds.modalities["image"].values), k) \
        + 0.9 * _dense_knn(torch.from_numpy(ds.modalities["text"].values), k)
    v = _gcn(a, prefs["image"], m.features.tables["image"].values, encoder.proj["image"].net)
    t = _gcn(a, prefs["text"], m.features.tables["text"].values, encoder.proj["text"].net)
    idr = _gcn(a, m.id_preference, m.item_id_features, m.id_mlp)
    w = m.user_weight.unsqueeze(-1)                          # the code's weight_u (U, 2, 1)

    def table(left, right, weighted):
        rep = torch.cat([left, right], dim=1)
        users = rep[:n_u]
        if weighted:
            users = torch.cat([w[:, 0] * left[:n_u], w[:, 1] * right[:n_u]], dim=1)
        items = rep[n_u:]
        return torch.cat([users, items + mm @ items])

    return table(v, t, True), table(idr, idr, False), table(v, v, False), table(t, t, False)


def test_forward_matches_the_official_equations():
    ds = multimodal_dataset()
    run = fit("mentor", ds, ARGS, 1)
    m = run.model
    with torch.no_grad():
        users, items = m.user_item_vectors()
        fused = _official_tables(m, ds, run.split)[0]
    torch.testing.assert_close(torch.cat([users, items]), fused, rtol=1e-4, atol=1e-5)


def _info_nce(view1, view2, temp):
    """The code's InfoNCE."""
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos = torch.exp((view1 * view2).sum(-1) / temp)
    ttl = torch.exp(view1 @ view2.T / temp).sum(1)
    return torch.mean(-torch.log(pos / ttl))


def test_loss_terms_match_the_official_code():
    ds = multimodal_dataset()
    run = fit("mentor", ds, [*ARGS, "mentor.noise_eps=0.0"], 1)
    m = run.model
    m.train()
    batch = {"users": torch.tensor([0, 1, 2, 3, 3]), "pos_items": torch.tensor([0, 1, 2, 3, 9]),
             "neg_items": torch.tensor([4, 5, 6, 7, 8])}
    out = m.loss(batch)
    assert set(out) == {"loss", "bpr", "reg", "align", "cl"}
    u, n_u = batch["users"], m.n_users
    with torch.no_grad():
        r, g, v, t = _official_tables(m, ds, run.split)
        pos, neg = (r[u] * r[n_u + batch["pos_items"]]).sum(1), (r[u] * r[n_u + batch["neg_items"]]).sum(1)
        want_bpr = -torch.mean(torch.log2(torch.sigmoid(pos - neg)))
        want_reg = (m.preferences["image"][u] ** 2).mean() + (m.preferences["text"][u] ** 2).mean() \
            + (m.user_weight.unsqueeze(-1) ** 2).mean()
        stats = [(torch.var(x), torch.mean(x)) for x in (r, g, v, t)]
        want_align = sum((va - vb).abs() + (ma - mb).abs()
                         for j, (va, ma) in enumerate(stats) for (vb, mb) in stats[j + 1:])
        # noise_eps = 0: the perturbed encoders are the plain ones with their own parameters
        views = [_official_tables(m, ds, run.split, enc, prefs)[0] for enc, prefs in zip(m.noisy, m.noisy_preferences)]
        want_cl = _info_nce(views[0][:n_u], views[1][:n_u], m.config.temp) \
            + _info_nce(views[0][n_u:], views[1][n_u:], m.config.temp)
    torch.testing.assert_close(out["bpr"], want_bpr)
    torch.testing.assert_close(out["reg"], want_reg)
    torch.testing.assert_close(out["align"], want_align, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["cl"], want_cl, rtol=1e-4, atol=1e-5)
    cfg = m.config
    torch.testing.assert_close(out["loss"], out["bpr"] + cfg.reg_weight * out["reg"]
                               + cfg.align_weight * out["align"] + cfg.mask_weight_g * out["cl"])
    m.zero_grad()
    out["loss"].backward()
    groups = [m.preferences["image"], m.user_weight, m.item_id_features, m.id_preference,
              *m.features.proj["image"].net.parameters(), *m.noisy[0].proj["text"].net.parameters(),
              m.noisy_preferences[1]["image"]]
    for p in groups:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert "values" in m.features.tables["image"]._buffers   # frozen features (the code's GCN reads v_feat)


def test_perturbation_is_sign_aligned_noise_of_size_eps():
    run = fit("mentor", multimodal_dataset(), [*ARGS, "mentor.n_ui_layers=1", "mentor.noise_eps=0.3"], 1)
    m = run.model
    with torch.no_grad():
        pref, items = m.preferences["image"], m.features("image")
        plain = m.encode(pref, items)
        noisy = m.encode(pref, items, perturb=True)
    diff = noisy - plain
    rows = plain.abs().sum(1) > 0
    torch.testing.assert_close(diff[rows].norm(dim=1), torch.full((int(rows.sum()),), 0.3), rtol=1e-4, atol=1e-5)
    layer = noisy - F.normalize(torch.cat([pref, items]), dim=1)
    assert (torch.sign(diff) * torch.sign(layer) >= 0).all()   # the noise points the way of the layer


def test_options_feature_mask_gradient_and_batch_contrast():
    run = fit("mentor", multimodal_dataset(), ARGS, 1)
    assert not hasattr(run.model, "mask_mlp")   # the code's mask term has no gradient: not built by default
    run = fit("mentor", multimodal_dataset(), [*ARGS, "mentor.feature_mask_grad=true", "mentor.cl_scope=batch"], 1)
    m = run.model
    m.train()
    out = m.loss({"users": torch.tensor([0, 1, 1]), "pos_items": torch.tensor([0, 1, 2]), "neg_items": torch.tensor([3, 4, 5])})
    assert set(out) == {"loss", "bpr", "reg", "align", "cl", "mask"}
    m.zero_grad()
    out["loss"].backward()
    assert m.mask_mlp.weight.grad.abs().sum() > 0
    assert torch.isfinite(scores(m)).all()


def test_zero_weights_skip_the_auxiliary_encoders():
    run = fit("mentor", multimodal_dataset(), [*ARGS, "mentor.align_weight=0", "mentor.mask_weight_g=0"], 1)
    m = run.model
    m.train()
    m.zero_grad()
    out = m.loss({"users": torch.tensor([0, 1]), "pos_items": torch.tensor([0, 1]), "neg_items": torch.tensor([2, 3])})
    assert set(out) == {"loss", "bpr", "reg"}
    out["loss"].backward()
    assert m.id_preference.grad is None and m.noisy_preferences[0]["image"].grad is None
    assert math.isfinite(float(out["loss"].detach()))


def test_item_graph_weights_and_missing_items():
    gone = np.arange(0, N_ITEMS, 5)
    run = fit("mentor", multimodal_dataset(missing={"image": gone}), ARGS, 1)
    m = run.model
    assert m.graph_weights == pytest.approx({"image": 0.1, "text": 0.9})
    g = m.item_graph.matrix.to_dense()
    others = np.setdiff1d(np.arange(N_ITEMS), gone)
    assert g[np.ix_(others, gone)].abs().sum() > 0          # text edges to items without an image remain
    torch.testing.assert_close(g.sum(1)[gone] > 0, torch.ones(len(gone), dtype=torch.bool))
    assert torch.isfinite(scores(m)).all()
