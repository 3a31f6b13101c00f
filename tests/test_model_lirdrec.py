"""LIRDRec: equations against a dense re-computation, DCT modes, kNN item graph, PWC copying, missing
features, cold items, any number of modalities, ID-hybrid diagnostic, stale evaluation, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from prismrec.config import DataConfig, TrainConfig
from prismrec.data import Modality, build_dataset, make_split
from prismrec.data.training import TrainingData
from prismrec.errors import ConfigError
from prismrec.models import MODELS
from prismrec.graphs.knn import knn_graph
from prismrec.graphs.knn import modality_weights
from prismrec.runs import train_run
from prismrec.train.trainer import Trainer

from conftest import tiny_frame

LIRDRec = MODELS.get("lirdrec")
N_USERS, N_ITEMS, GROUPS = 48, 40, 4


def features(n_items: int, dim: int, seed: int, noise: float = 0.3) -> np.ndarray:
    """Group-revealing features (item % GROUPS) plus noise, so that the block structure is learnable."""
    rng = np.random.default_rng(seed)
    return (np.eye(GROUPS, dim)[np.arange(n_items) % GROUPS] + noise * rng.standard_normal((n_items, dim))).astype(
        np.float32)


def make_data(names=("image", "text"), dims=(8, 6), *, missing: dict[str, list[int]] | None = None,
              cold: int = 0, override: dict[int, np.ndarray] | None = None, noise: float = 0.3):
    """Block-structured interactions (given split); ``cold`` extra items with features and no interaction."""
    frame = tiny_frame(n_users=N_USERS, n_items=N_ITEMS, per_user=8, n_groups=GROUPS)
    n = N_ITEMS + cold
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(n)]})
    mods = {}
    for j, (name, dim) in enumerate(zip(names, dims)):
        values = features(n, dim, seed=j, noise=noise)
        for item, row in (override or {}).items():
            values[item] = row[:dim]
        avail = np.ones(n, dtype=bool)
        avail[(missing or {}).get(name, [])] = False
        mods[name] = Modality(name, values, avail)
    ds = build_dataset("toy", frame, items=items, modalities=mods)
    split = make_split(ds, DataConfig())
    return ds, split, TrainingData.from_split(ds, split)


def build(data: TrainingData, seed: int = 0, **cfg) -> LIRDRec:
    torch.manual_seed(seed)
    return LIRDRec(LIRDRec.Config(**{"embedding_size": 8, "knn_k": 3, **cfg}), data)


def bpr_batch(data: TrainingData, seed: int = 0, size: int = 64) -> dict[str, torch.Tensor]:
    coo = data.train.tocoo()
    rng = np.random.default_rng(seed)
    pick = rng.choice(coo.nnz, size)
    return {"users": torch.as_tensor(coo.row[pick], dtype=torch.long),
            "pos_items": torch.as_tensor(coo.col[pick], dtype=torch.long),
            "neg_items": torch.as_tensor(rng.integers(0, data.n_items, size), dtype=torch.long)}


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II as an explicit n x n matrix (reference only)."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


@pytest.fixture(scope="module")
def toy():
    return make_data()


# ------------------------------------------------------------------------------------ equations
def test_forward_matches_a_dense_recomputation(toy):
    _, _, data = toy
    model = build(data, n_ui_layers=3, mm_image_weight=0.2)
    model.on_epoch_start(4)
    users, items, att = model.forward()
    n_u, n_i, C, d = data.n_users, data.n_items, 3, 8
    assert model.channels == ["image", "text", "shared"]
    assert users.shape == (n_u, C * d) and items.shape == (n_i, C * d) and att.shape == (n_u, C)

    with torch.no_grad():
        r = torch.as_tensor(data.train.toarray())
        a = torch.zeros(n_u + n_i, n_u + n_i)
        a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
        dinv = (a.sum(1) + 1e-7).pow(-0.5)
        a_hat = dinv[:, None] * a * dinv[None, :]
        x0 = torch.cat([model.user_preference.view(n_u, C, d), model.item_inputs()])
        x0 = (x0 / x0.norm(dim=-1, keepdim=True)).reshape(n_u + n_i, C * d)
        h, layer = x0.clone(), x0
        for _ in range(3):                                      # layers are SUMMED, not averaged
            layer = a_hat @ layer
            h = h + layer
        a_mm = torch.zeros(n_i, n_i)
        for name, w in (("image", 0.2), ("text", 0.8)):         # binary top-k cosine graph, self included
            f = torch.as_tensor(data.modalities[name].values)
            f = f / f.norm(dim=1, keepdim=True)
            top = torch.topk(f @ f.T, 3, dim=1).indices
            a_mm[torch.arange(n_i)[:, None], top] += w / 3
        item_ref = h[n_u:] + a_mm @ h[n_u:]                     # residual item-item step
        hu = h[:n_u].view(n_u, C, d)
        w1, w2 = model.pwc.mix_at(4)
        logits = torch.cat([f(hu[:, c]) for c, f in enumerate(model.pwc.scorers)], 1)
        att_ref = torch.softmax(w1 * logits + w2 * model.pwc.theta, 1)
        user_ref = (hu * att_ref[..., None]).reshape(n_u, C * d)
    torch.testing.assert_close(items, item_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(att, att_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(users, user_ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        model.prepare_scoring()
        torch.testing.assert_close(model.score(torch.arange(5)), user_ref[:5] @ item_ref.T, rtol=1e-4, atol=1e-5)


def test_item_chunk_recomputes_the_same_values_and_gradients():
    """Activation checkpointing in item blocks (``item_chunk``) changes memory, not numbers; the folded
    per-item DCT equals the MLP on the explicit spectrum."""
    _, _, data = make_data(missing={"image": [1, 5, 9], "text": [5]})
    grads, losses = [], []
    for chunk in (None, 7):
        torch.manual_seed(0)
        model = build(data, item_chunk=chunk)
        model.shared_missing.data.normal_()
        out = model.loss(bpr_batch(data))
        out["loss"].backward()
        losses.append(out["loss"].detach())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys() and "shared.0.weight" in grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-7)
    lin, act, last = model.shared
    with torch.no_grad():
        explicit = lin(model.shared_spectrum()) + model.shared_missing_blocks @ model.shared_missing
        torch.testing.assert_close(model.item_inputs()[:, 2], last(act(explicit)), rtol=1e-4, atol=1e-6)


def test_loss_is_bpr_plus_mean_square_over_all_users_and_items(toy):
    _, _, data = toy
    model = build(data, reg_weight=0.5)
    batch = bpr_batch(data)
    out = model.loss(batch)
    users, items, _ = model.forward()
    u = users[batch["users"]]
    diff = (u * items[batch["pos_items"]]).sum(-1) - (u * items[batch["neg_items"]]).sum(-1)
    bpr = -torch.nn.functional.logsigmoid(diff).mean()
    reg = users.pow(2).mean() + items.pow(2).mean()
    torch.testing.assert_close(out["bpr"], bpr)
    torch.testing.assert_close(out["reg"], reg)
    torch.testing.assert_close(out["loss"], bpr + 0.5 * reg)


@pytest.mark.parametrize("mode", ["1d", "2d", "none"])
def test_shared_branch_input_is_the_requested_dct(toy, mode):
    _, _, data = toy
    model = build(data, dct_mode=mode)
    v, t = data.modalities["image"].values, data.modalities["text"].values
    if mode == "none":
        expected = np.concatenate([v, t], 1)
    elif mode == "1d":   # per item over the feature axis (the official code)
        expected = np.concatenate([v @ dct_matrix(8).T, t @ dct_matrix(6).T], 1)
    else:                # over items and features (the paper's 2-D DCT)
        ci = dct_matrix(data.n_items)
        expected = np.concatenate([ci @ v @ dct_matrix(8).T, ci @ t @ dct_matrix(6).T], 1)
    np.testing.assert_allclose(model.shared_spectrum().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert model.extra_info()["dct_mode"] == mode


def test_2d_dct_depends_on_the_item_order_1d_does_not(toy):
    _, _, data = toy
    perm = np.random.default_rng(0).permutation(data.n_items)
    spectra = {}
    for mode in ("1d", "2d"):
        a = build(data, dct_mode=mode).shared_spectrum().numpy()
        shuffled = {n: Modality(n, m.values[perm], m.available[perm]) for n, m in data.modalities.items()}
        b = build(TrainingData(data.name, data.n_users, data.n_items, data.train[:, perm], shuffled),
                  dct_mode=mode).shared_spectrum().numpy()
        spectra[mode] = np.abs(a[perm] - b).max()
    assert spectra["1d"] < 1e-5 and spectra["2d"] > 0.1


# -------------------------------------------------------------------------------------- item graph
def test_graph_weights_generalise_mm_image_weight():
    assert modality_weights(["image", "text"], 0.1, "image", None) == pytest.approx({"image": 0.1, "text": 0.9})
    assert modality_weights(["caption", "image", "text"], 0.2, "image", None) == pytest.approx(
        {"caption": 0.4, "image": 0.2, "text": 0.4})
    assert modality_weights(["audio", "text"], 0.1, "image", None) == pytest.approx({"audio": 0.5, "text": 0.5})
    assert modality_weights(["image"], 0.1, "image", None) == pytest.approx({"image": 1.0})
    assert modality_weights(["image", "text"], 0.1, "image", {"image": 1, "text": 3}) == pytest.approx({"image": 0.25, "text": 0.75})
    with pytest.raises(ConfigError, match="mm_weights"):
        modality_weights(["image", "text"], 0.1, "image", {"image": 1.0})


def test_item_graph_rows_and_missing_features():
    _, _, data = make_data(missing={"image": [1, 5]})
    mods = data.modalities
    g = build(data, mm_image_weight=0.1).item_adj.matrix.to_dense().numpy()
    img = knn_graph(mods["image"].values, 3, available=mods["image"].available).toarray()
    txt = knn_graph(mods["text"].values, 3, available=mods["text"].available).toarray()
    # every kept edge of one modality's graph weighs 1/k; the self loop is kept (top-1 of cosine)
    np.testing.assert_allclose(img[img > 0], 1 / 3, rtol=1e-5)
    assert all(img[i, i] > 0 for i in range(data.n_items) if i not in (1, 5))
    # items without an image have no image row and are nobody's image neighbour
    assert not img[[1, 5]].any() and not img[:, [1, 5]].any()
    # A_mm rows sum to 1: w_image/k on image neighbours + w_text/k on text ones; missing image -> text only
    np.testing.assert_allclose(g.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(g[1], txt[1], rtol=1e-6)
    np.testing.assert_allclose(g[0], 0.1 * img[0] + 0.9 * txt[0], rtol=1e-6)
    assert build(data, mm_weights={"image": 1, "text": 1}).mm_weights == {"image": 0.5, "text": 0.5}


# --------------------------------------------------------------------------------------------- PWC
def test_pwc_decay_and_weight_copying(toy):
    _, _, data = toy
    model = build(data, decay_weight=0.95, decay_base=0.9)
    pwc = model.pwc
    assert isinstance(pwc.theta, torch.nn.Parameter)
    assert {"pwc.theta", "pwc.last_att", "pwc.mix"} <= set(model.state_dict())
    # closed form of the code's recursion: w1/w2 = (w1_0/w2_0) * b^(e(e+1)/2)
    for e in (1, 3, 10):
        w1, w2 = pwc.mix_at(e)
        assert w1 + w2 == pytest.approx(1.0)
        assert w1 / w2 == pytest.approx(0.95 / 0.05 * 0.9 ** (e * (e + 1) / 2), rel=1e-9)
    theta0 = pwc.theta.detach().clone()
    model.on_epoch_start(1)                        # epoch 1: theta copies its own initial value
    assert torch.equal(pwc.theta, theta0)
    assert pwc.mix.tolist() == pytest.approx(list(pwc.mix_at(1)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(3):
        out = model.loss(bpr_batch(data, seed=step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    _, _, att = model.forward()
    assert not torch.allclose(pwc.theta, theta0)   # theta is trained by Adam inside the epoch
    last = pwc.last_att.clone()                    # attention of the last training forward (pre-step)
    assert not torch.allclose(last, att.detach())
    torch.testing.assert_close(last.sum(1), torch.ones(data.n_users))
    model.on_epoch_start(2)
    assert torch.equal(pwc.theta, last)
    assert pwc.mix.tolist() == pytest.approx(list(pwc.mix_at(2)))
    # scoring does not touch the copy state
    with torch.no_grad():
        model.prepare_scoring()
    assert torch.equal(pwc.last_att, last)


def test_checkpoint_round_trip_resumes_exactly(toy):
    _, _, data = toy
    model = build(data, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in (1, 2):
        model.on_epoch_start(epoch)
        for step in range(2):
            out = model.loss(bpr_batch(data, seed=10 * epoch + step))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
    clone = build(data, seed=99)
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        for m in (model, clone):
            m.prepare_scoring()
        assert torch.equal(model.score(torch.arange(data.n_users)), clone.score(torch.arange(data.n_users)))
    for m in (model, clone):                       # the next epoch's copy and the next loss agree too
        m.on_epoch_start(3)
    assert torch.equal(model.pwc.theta, clone.pwc.theta) and torch.equal(model.pwc.mix, clone.pwc.mix)
    batch = bpr_batch(data, seed=7)
    assert torch.equal(model.loss(batch)["loss"], clone.loss(batch)["loss"])


def test_trainer_resume_equals_an_uninterrupted_run(tmp_path, toy):
    _, split, data = toy

    def fit(epochs: int, run_dir, resume: bool = False) -> LIRDRec:
        model = build(data, seed=3)
        cfg = TrainConfig(epochs=epochs, batch_size=64, learning_rate=0.01, patience=1000)
        Trainer(model, data, split, cfg, seed=0, run_dir=run_dir).fit(resume=resume)
        return model

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = fit(3, tmp_path / "a")
    fit(2, tmp_path / "b")
    resumed = fit(3, tmp_path / "b", resume=True)  # PWC's theta, last_att and mix come from the checkpoint
    final = {k: torch.load(p / "checkpoint.pt", weights_only=True)["model"] for k, p in
             (("a", tmp_path / "a"), ("b", tmp_path / "b"))}
    for key, value in final["a"].items():
        assert torch.equal(value, final["b"][key]), key
    assert torch.equal(straight.pwc.theta, resumed.pwc.theta)


# ---------------------------------------------------------------------------------------- training
TINY = ["train.batch_size=64", "train.learning_rate=0.01", "lirdrec.embedding_size=16", "lirdrec.knn_k=3",
        "lirdrec.reg_weight=0.0001", "train.patience=1000", "train.topk=[5,10,20]", "train.valid_metric=recall@10"]


def test_training_beats_the_untrained_model():
    ds, _, _ = make_data(noise=1.0)   # noisy features: the untrained model is near random (recall@10 ~ 1/3)
    untrained = train_run("lirdrec", ds, None, overrides=TINY, seed=0, epochs=0).metrics
    trained = train_run("lirdrec", ds, None, overrides=TINY, seed=0, epochs=6).metrics
    assert untrained["valid"]["recall@10"] < 0.45
    assert trained["valid"]["recall@10"] >= untrained["valid"]["recall@10"] + 0.25
    assert trained["best_epoch"] >= 1


@pytest.mark.parametrize("names", [("image",), ("caption", "image", "text")])
def test_any_number_of_modalities(names):
    _, split, data = make_data(names, dims=(8, 6, 5)[: len(names)])
    model = build(data)
    assert model.channels == [*sorted(names), "shared"]
    res = Trainer(model, data, split, TrainConfig(epochs=2, batch_size=64, learning_rate=0.01), seed=0).fit()
    assert all(math.isfinite(h["loss"]) for h in res.history)
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.score(torch.arange(4))
    assert scores.shape == (4, data.n_items) and torch.isfinite(scores).all()
    assert model.user_preference.shape == (data.n_users, (len(names) + 1) * 8)


def test_modalities_option_picks_channels(toy):
    _, _, data = toy
    model = build(data, modalities=["text"])
    assert model.channels == ["text", "shared"] and list(model.projections) == ["text"]
    assert model.shared_spectrum().shape[1] == 6
    with pytest.raises(ConfigError, match="Did you mean 'image'"):
        build(data, modalities=["imag"])


def test_missing_features_use_the_missing_vectors():
    _, _, data = make_data(missing={"image": [1, 5, 9], "text": [5]})
    model = build(data)
    x = model.item_inputs()
    torch.testing.assert_close(x[[1, 5, 9], 0], model.projections["image"].missing.expand(3, -1))
    torch.testing.assert_close(x[[5], 1], model.projections["text"].missing[None])
    # shared branch: each missing block adds its learned hidden vector instead of zero features
    lin, act, last = model.shared
    with torch.no_grad():
        model.shared_missing.normal_()
        x = model.item_inputs()
        h = lin(model.shared_spectrum()[5]) + model.shared_missing[0] + model.shared_missing[1]
        torch.testing.assert_close(x[5, 2], last(act(h)))
    out = model.loss(bpr_batch(data))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert model.projections["image"].missing.grad.abs().sum() > 0
    assert model.shared_missing.grad[0].abs().sum() > 0
    with torch.no_grad():
        model.prepare_scoring()
        assert torch.isfinite(model.score(torch.arange(data.n_users))).all()
    # 2-D DCT: rows are frequencies, so no per-item block masks; missing rows are mean-filled first
    model2d = build(data, dct_mode="2d")
    assert not model2d.shared_missing_blocks.any()
    v = data.modalities["image"].values.copy()
    v[[1, 5, 9]] = np.delete(v, [1, 5, 9], axis=0).mean(axis=0)
    expected = dct_matrix(data.n_items) @ v @ dct_matrix(8).T
    np.testing.assert_allclose(model2d.shared_spectrum()[:, :8].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_cold_items_get_finite_feature_dependent_scores():
    cold = [N_ITEMS, N_ITEMS + 1, N_ITEMS + 2]
    _, split, data = make_data(cold=3, missing={"image": [N_ITEMS + 2]})
    assert data.train[:, cold].nnz == 0
    model = build(data)
    Trainer(model, data, split, TrainConfig(epochs=2, batch_size=64, learning_rate=0.01), seed=0).fit()
    assert model.extra_info()["items_without_training_interactions"] >= 3
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.score(torch.arange(data.n_users))
    assert torch.isfinite(scores).all()
    assert scores[:, cold].std(dim=0).min() > 0          # users rank cold items differently
    # the same model on data where only cold item N_ITEMS's features differ scores it differently
    _, _, data2 = make_data(cold=3, missing={"image": [N_ITEMS + 2]}, override={N_ITEMS: np.full(8, 3.0)})
    other = build(data2)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.prepare_scoring()
        scores2 = other.score(torch.arange(data.n_users))
    assert (scores2[:, N_ITEMS] - scores[:, N_ITEMS]).abs().max() > 1e-3
    assert torch.isfinite(scores2).all()


# ------------------------------------------------------------------------------ ID hybrid, legacy
def test_id_hybrid_exposes_the_gradient_ratio(toy):
    _, split, data = toy
    assert build(data).diagnostic_groups() == {}
    model = build(data, id_hybrid=True)
    groups = model.diagnostic_groups()
    assert groups["id"] == [model.item_id_embedding] and len(groups["feature"]) > 0
    ids = {id(p) for p in groups["feature"]}
    assert id(model.item_id_embedding) not in ids and id(model.user_preference) not in ids
    res = Trainer(model, data, split, TrainConfig(epochs=2, batch_size=64, learning_rate=0.01), seed=0).fit()
    ratios = [h["grad_ratio_id_over_feature"] for h in res.history]
    assert all(r > 0 and math.isfinite(r) for r in ratios)
    # the ID table is added to each channel's item input
    with torch.no_grad():
        model.item_id_embedding.zero_()
        base = model.item_inputs()
        model.item_id_embedding[3, 8:16] = 1.0
        torch.testing.assert_close(model.item_inputs()[3, 1], base[3, 1] + 1.0)


def test_legacy_stale_eval_scores_the_last_training_forward(toy):
    _, _, data = toy
    fresh, legacy = build(data, seed=2), build(data, seed=2, legacy_stale_eval=True)
    assert "stale" in legacy.state_dict() and "stale" not in fresh.state_dict()
    all_users = torch.arange(data.n_users)
    for model in (fresh, legacy):
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        out = model.loss(bpr_batch(data))
        with torch.no_grad():
            before_u, before_i, _ = model.forward()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        with torch.no_grad():
            after_u, after_i, _ = model.forward()
            model.prepare_scoring()
            scores = model.score(all_users)
        expected = before_u @ before_i.T if model is legacy else after_u @ after_i.T
        torch.testing.assert_close(scores, expected)
        assert not torch.allclose(before_u @ before_i.T, after_u @ after_i.T)
    clone = build(data, seed=5, legacy_stale_eval=True)
    clone.load_state_dict(legacy.state_dict())     # the best epoch's stale embeddings travel with it
    with torch.no_grad():
        clone.prepare_scoring()
        assert torch.equal(clone.score(all_users), legacy.score(all_users))
