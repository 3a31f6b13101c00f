"""MGCN: learns, scoring contract, checkpoints, missing features (purifier and fuser), any number of
modalities, and the forward pass against a dense re-computation of the official equations."""

from __future__ import annotations

import numpy as np
import torch

from prismrec.graphs.knn import knn_graph

from model_checks import (N_ITEMS, check_learns, check_missing_features, check_modality_counts,
                          check_shapes_and_round_trip, fit, multimodal_dataset, scores)

ARGS = ["mgcn.embedding_size=16", "mgcn.knn_k=5"]


def test_mgcn_learns():
    check_learns("mgcn", ARGS, epochs=6, margin=0.3)


def test_mgcn_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("mgcn", ARGS)


def test_mgcn_missing_features():
    check_missing_features("mgcn", ARGS)


def test_mgcn_any_number_of_modalities():
    check_modality_counts("mgcn", ARGS)


def test_scores_are_the_dot_product_of_the_vectors():
    run = fit("mgcn", multimodal_dataset(), ARGS, 1)
    m = run.model
    m.eval()
    with torch.no_grad():
        u, i = m.user_item_vectors()
    torch.testing.assert_close(scores(m), u @ i.T)


def _dense_forward(m, data_mods):
    """The official forward (two modalities image, text) with dense matrices, from the model's parameters."""
    cfg, n_u = m.config, m.n_users
    a = m.adj.matrix.to_dense()
    r = a[:n_u, n_u:]
    ego = torch.cat([m.user_embedding, m.item_embedding])
    layers = [ego]
    for _ in range(cfg.n_ui_layers):
        layers.append(a @ layers[-1])
    content = torch.stack(layers).mean(0)
    embeds = {}
    for n in ("image", "text"):
        f = m.features.tables[n].values
        x = m.features.proj[n].net(f)
        h = m.item_embedding * torch.sigmoid(m.gates[n][0](x))
        s = torch.from_numpy(knn_graph(data_mods[n].values, cfg.knn_k, weighted=True, norm="sym").toarray())
        for _ in range(cfg.n_layers):
            h = s @ h
        embeds[n] = torch.cat([r @ h, h])
    att = torch.cat([m.query_common(embeds["image"]), m.query_common(embeds["text"])], dim=-1).softmax(-1)
    common = att[:, :1] * embeds["image"] + att[:, 1:] * embeds["text"]
    sep_i = torch.sigmoid(m.prefer["image"][0](content)) * (embeds["image"] - common)
    sep_t = torch.sigmoid(m.prefer["text"][0](content)) * (embeds["text"] - common)
    side = (sep_i + sep_t + common) / 3
    return content + side, content, side


def test_forward_matches_the_official_equations():
    ds = multimodal_dataset()
    run = fit("mgcn", ds, ARGS, 1)
    m = run.model
    with torch.no_grad():
        got = m.forward()
        want = _dense_forward(m, ds.modalities)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_loss_terms_and_gradients():
    run = fit("mgcn", multimodal_dataset(), [*ARGS, "mgcn.cl_loss=0.1", "mgcn.reg_weight=0.01"], 1)
    m = run.model
    m.train()
    batch = {"users": torch.tensor([0, 1, 2, 3]), "pos_items": torch.tensor([0, 1, 2, 3]),
             "neg_items": torch.tensor([4, 5, 6, 7])}
    out = m.loss(batch)
    assert set(out) == {"loss", "bpr", "reg", "cl"}
    # reg divides by the configured batch size (32 in the test settings), not the batch's length
    final = m.forward()[0]
    n_u = m.n_users
    want_reg = 0.5 * (final[batch["users"]].pow(2).sum() + final[n_u + batch["pos_items"]].pow(2).sum()
                      + final[n_u + batch["neg_items"]].pow(2).sum()) / 32
    torch.testing.assert_close(out["reg"], want_reg)
    torch.testing.assert_close(out["loss"], out["bpr"] + 0.01 * out["reg"] + 0.1 * out["cl"])
    m.zero_grad()
    out["loss"].backward()
    linears = [p for lin in m.features.linears() for p in lin.parameters()]
    for p in [*m.diagnostic_groups()["id"], *linears, *m.gates.parameters(), *m.query_common.parameters(),
              *m.prefer.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert m.features.tables["image"].values.grad is not None  # fine-tuned raw features (freeze=False)


def test_missing_feature_items_keep_their_purified_vector_in_the_item_graph():
    gone = np.arange(0, N_ITEMS, 5)
    run = fit("mgcn", multimodal_dataset(missing={"image": gone}), ARGS, 1)
    m = run.model
    # the image kNN graph: a missing item is nobody's neighbour and its row is the identity
    g = m.item_graphs["image"].matrix.to_dense()
    others = np.setdiff1d(np.arange(N_ITEMS), gone)
    assert g[np.ix_(others, gone)].abs().sum() == 0
    torch.testing.assert_close(g[gone], torch.eye(N_ITEMS)[gone])
    assert (g[others] > 0).sum(1).min() >= 1
    assert torch.isfinite(scores(m)).all()
    # its image view is e_i * gate(missing vector): the learned missing vector reaches the score
    with torch.no_grad():
        before = scores(m)
        m.features.proj["image"].missing.add_(1.0)
        m.clear_scoring()
        after = scores(m)
    assert not torch.allclose(before[:, gone], after[:, gone])


def test_item_graphs_are_not_saved():
    run = fit("mgcn", multimodal_dataset(), ARGS, 1)
    keys = run.model.state_dict().keys()
    assert not [k for k in keys if k.split(".")[0] in ("adj", "r_hat", "item_graphs")]
