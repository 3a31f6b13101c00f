"""AlignRec: stage-1 alignment encoder, the stage-2 model (forward, losses, graphs), missing features,
any number of modalities, checkpoints, and the ``prismrec align`` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from prismrec.cli.main import app
from prismrec.config import DataConfig, TrainConfig
from prismrec.data import build_dataset, load_dataset, make_split
from prismrec.data.dataset import Modality
from prismrec.data.training import TrainingData
from prismrec.errors import ConfigError
from prismrec.models.general.alignrec import AlignRec
from prismrec.models.general.alignrec_stage1 import AlignConfig, concat_modalities, train_alignment
from prismrec.runs import train_run

from conftest import tiny_frame, write_mmrec

NAMES = ("image", "text", "audio")
N_GROUPS = 4
FAST = {"embedding_size": 16, "knn_k": 5, "stage1_dim": 16, "stage1_epochs": 25}
STAGE1 = AlignConfig(dim=16, hidden=64, epochs=60, batch_size=64, learning_rate=3e-3, seed=0)


# ------------------------------------------------------------------------------------------ data
def paired_modalities(n_items: int, names=NAMES[:2], seed: int = 0, latent: int = 8) -> dict[str, Modality]:
    """Modalities that describe the same items in different raw spaces: a shared latent (the item's block
    ``i % 4`` plus an item-specific part) through a different random non-linear map per modality."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([2.0 * np.eye(N_GROUPS)[np.arange(n_items) % N_GROUPS],
                        rng.standard_normal((n_items, latent))], axis=1)
    out = {}
    for j, name in enumerate(names):
        a = rng.standard_normal((z.shape[1], 12 + 6 * j))
        x = np.tanh(z @ a / 2) + 0.05 * rng.standard_normal((n_items, a.shape[1]))
        out[name] = Modality(name, x.astype(np.float32), None)
    return out


def block_dataset(n_modalities: int = 2, n_users: int = 80, n_items: int = 64, missing: dict | None = None):
    """Block-structured interactions (conftest) with item i = raw id 'i{i}' and paired modalities;
    ``missing`` maps a modality to the items that lack it."""
    mods = paired_modalities(n_items, NAMES[:n_modalities])
    for name, rows in (missing or {}).items():
        avail = np.ones(n_items, bool)
        avail[rows] = False
        mods[name] = Modality(name, mods[name].values, avail)
    frame = tiny_frame(n_users=n_users, n_items=n_items, per_user=10, n_groups=N_GROUPS, seed=0)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]})
    return build_dataset("tiny", frame, items=items, modalities=mods)


def make_model(ds, **params):
    split = make_split(ds, DataConfig())
    data = TrainingData.from_split(ds, split)
    return AlignRec(AlignRec.Config(**{**FAST, **params}), data), data


def batch(data, n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    coo = data.train.tocoo()
    pick = rng.choice(coo.nnz, n, replace=False)
    return {"users": torch.as_tensor(coo.row[pick], dtype=torch.long),
            "pos_items": torch.as_tensor(coo.col[pick], dtype=torch.long),
            "neg_items": torch.as_tensor(rng.integers(0, data.n_items, n), dtype=torch.long)}


def terms(model, b) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in model.loss(b).items()}


def steps(model, data, n: int = 3) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for s in range(n):
        opt.zero_grad()
        model.loss(batch(data, seed=s))["loss"].backward()
        opt.step()


# --------------------------------------------------------------------------------------- stage 1
def test_stage1_alignment_beats_random_on_held_out_items():
    mods = paired_modalities(240)
    res = train_alignment(mods, STAGE1, use_cache=False)
    after, before = res.report["retrieval_after"]["image->text"], res.report["retrieval_before"]["image->text"]
    assert after["n"] == 24 and after["random_top1"] == pytest.approx(1 / 24)
    assert after["top1"] > 5 * after["random_top1"] and after["top1"] > before["top1"] + 0.2
    assert after["top10"] > 0.9 and res.report["retrieval_after"]["text->image"]["top1"] > 0.3
    assert res.values.shape == (240, 16) and res.available.all()
    np.testing.assert_allclose(np.linalg.norm(res.values, axis=1), 1.0, atol=1e-5)
    assert res.report["valid_loss"][res.report["best_epoch"]] == min(res.report["valid_loss"])


def test_stage1_is_deterministic_and_leaves_the_global_rng_alone():
    mods = paired_modalities(80)
    cfg = STAGE1.model_copy(update={"epochs": 5})
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = train_alignment(mods, cfg, use_cache=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_alignment(mods, cfg, use_cache=False)
    np.testing.assert_array_equal(a.values, b.values)
    c = train_alignment(mods, cfg.model_copy(update={"seed": 1}), use_cache=False)
    assert not np.allclose(a.values, c.values)
    assert train_alignment(mods, cfg) is train_alignment(mods, cfg)  # memoised


def test_stage1_fuses_only_the_modalities_an_item_has():
    mods = paired_modalities(60)
    mods["text"] = Modality("text", mods["text"].values, np.arange(60) % 5 != 0)       # 0, 5, 10 ... lack text
    mods["image"] = Modality("image", mods["image"].values, np.arange(60) != 10)        # 10 lacks both
    res = train_alignment(mods, STAGE1.model_copy(update={"epochs": 3}), use_cache=False)
    enc = res.encoder
    with torch.no_grad():
        img = enc.project("image", torch.from_numpy(mods["image"].values)).numpy()
        txt = enc.project("text", torch.from_numpy(mods["text"].values)).numpy()
    np.testing.assert_allclose(res.values[5], img[5], atol=1e-6)                      # image only
    both = (img[1] + txt[1]) / 2
    np.testing.assert_allclose(res.values[1], both / np.linalg.norm(both), atol=1e-6)
    assert not res.available[10] and not res.values[10].any()
    assert res.available.sum() == 59 and np.isfinite(res.values).all()


def test_stage1_with_one_modality_is_the_modality_itself():
    mods = paired_modalities(30, names=("image",))
    res = train_alignment(mods, STAGE1)
    assert res.encoder is None and not res.report["aligned"]
    np.testing.assert_allclose(res.values, concat_modalities(mods)[0])


# --------------------------------------------------------------------------------------- stage 2
@pytest.mark.parametrize("n_modalities", [1, 3])
def test_forward_loss_and_scores_with_any_number_of_modalities(n_modalities):
    model, data = make_model(block_dataset(n_modalities))
    fused, id_view, content = model.forward()
    assert fused.shape == id_view.shape == content.shape == (data.n_users + data.n_items, 16)
    out = model.loss(batch(data))
    assert set(out) == {"loss", "bpr", "reg", "uia", "cca", "sim"}
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert model.item_embedding.grad is not None and model.mm_embedding.grad is not None
    assert model.mm_trs.net.weight.grad is not None and model.gate_v[0].weight.grad is not None
    model.prepare_scoring()
    assert model.score(torch.arange(5)).shape == (5, data.n_items)
    assert model.mm_feature.shape[1] == (16 if n_modalities > 1 else 12)
    groups = model.diagnostic_groups()
    assert groups["id"] and groups["feature"]


def test_training_improves_validation_recall():
    ds = block_dataset(2, n_users=100, n_items=64)
    sets = [f"alignrec.{k}={v}" for k, v in FAST.items()] + ["train.batch_size=64", "train.learning_rate=0.01"]
    untrained = train_run("alignrec", ds, overrides=sets, epochs=0, seed=0).metrics["valid"]
    trained = train_run("alignrec", ds, overrides=sets, epochs=12, seed=0).metrics["valid"]
    assert trained["recall@10"] > untrained["recall@10"] + 0.1, (untrained, trained)


def test_graphs_follow_the_official_construction():
    model, data = make_model(block_dataset(2, n_users=30, n_items=24), knn_k=4)
    f = model.mm_feature.numpy()
    cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (f / np.linalg.norm(f, axis=1, keepdims=True)).T
    top = np.argsort(-cos, axis=1, kind="stable")[:, :4]                     # self included (similarity 1)
    s = np.zeros_like(cos)
    np.put_along_axis(s, top, np.take_along_axis(cos, top, axis=1), axis=1)  # similarity-weighted edges
    d = s.sum(axis=1)
    expected = s / np.sqrt(d[:, None] * d[None, :])
    got = model.mm_adj.matrix.to_dense().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    r = data.train.toarray()
    du, di = r.sum(1), r.sum(0)
    r_hat = r / np.sqrt(np.maximum(du, 1e-12)[:, None] * np.maximum(di, 1e-12)[None, :])
    np.testing.assert_allclose(model.r_hat.matrix.to_dense().numpy(), r_hat, atol=1e-5)


def test_forward_matches_the_dense_formula():
    model, data = make_model(block_dataset(2, n_users=30, n_items=24))
    with torch.no_grad():
        fused, id_view, content = model.forward()
        a = model.adj.matrix.to_dense()
        x0 = torch.cat([model.user_embedding, model.item_embedding])
        layers = [x0, a @ x0, a @ a @ x0]                                     # n_ui_layers = 2, layer MEAN
        torch.testing.assert_close(id_view, torch.stack(layers).mean(0), atol=1e-5, rtol=1e-4)
        lin = model.mm_trs.net
        gate = torch.sigmoid(model.gate_v[0](model.mm_embedding @ lin.weight.T + lin.bias))
        h_items = model.mm_adj.matrix.to_dense() @ (model.item_embedding * gate)   # purifier, one kNN round
        h_users = model.r_hat.matrix.to_dense() @ h_items
        torch.testing.assert_close(content, torch.cat([h_users, h_items]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fused, id_view + content)                         # plain-sum fuser


def test_loss_terms_follow_the_official_definitions():
    model, data = make_model(block_dataset(2), sim_target="frozen")
    model.build_sampler(data, TrainConfig(batch_size=2048))
    b = batch(data, n=16)
    out = terms(model, b)
    with torch.no_grad():
        fused, id_view, content = model.forward()
        nu = data.n_users
        u, p, n = fused[b["users"]], fused[nu + b["pos_items"]], fused[nu + b["neg_items"]]
        assert out["reg"] == pytest.approx(float(0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 2048),
                                           rel=1e-5)
        assert out["bpr"] == pytest.approx(float(-torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()),
                                           rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(u, p, dim=-1)
        assert out["uia"] == pytest.approx(float(1 - cos.mean()), rel=1e-5)

        def nce(a, c, t=0.2):   # the code's InfoNCE, written out
            a, c = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(c, dim=1)
            return -torch.log(torch.exp((a * c).sum(1) / t) / torch.exp(a @ c.T / t).sum(1)).mean()

        cca = nce(content[nu + b["pos_items"]], id_view[nu + b["pos_items"]]) + nce(content[b["users"]],
                                                                                   id_view[b["users"]])
        assert out["cca"] == pytest.approx(float(cca), rel=1e-4)
        h, feat = content[nu + b["pos_items"]], model.mm_feature[b["pos_items"]]
        feat = feat / feat.norm(dim=1, keepdim=True)
        assert out["sim"] == pytest.approx(float(torch.linalg.norm(h @ h.T - feat @ feat.T) / 16), rel=1e-4)
        total = out["bpr"] + 1e-4 * out["reg"] + 0.1 * out["uia"] + 0.01 * out["cca"] + 0.1 * out["sim"]
        assert out["loss"] == pytest.approx(float(total), rel=1e-5)


def test_similarity_target_follows_the_trainable_copy_by_default():
    ds = block_dataset(2)
    trainable, data = make_model(ds)
    frozen, _ = make_model(ds, sim_target="frozen")
    frozen.load_state_dict(trainable.state_dict())
    b = batch(data)
    assert terms(trainable, b)["sim"] == pytest.approx(terms(frozen, b)["sim"])
    with torch.no_grad():
        for m in (trainable, frozen):
            m.mm_embedding.mul_(-1.0).add_(0.3)
    assert terms(trainable, b)["sim"] != pytest.approx(terms(frozen, b)["sim"], rel=1e-3)
    assert torch.equal(frozen.mm_feature, trainable.mm_feature)          # the frozen feature never moves
    fixed, _ = make_model(ds, train_features=False)
    assert not fixed.mm_embedding.requires_grad


def test_items_without_features_are_never_read_as_zero_features():
    ds = block_dataset(2, missing={"image": [0, 1, 2, 3], "text": [0, 1, 4, 5]})   # 0, 1 have nothing
    model, data = make_model(ds)
    assert model.mm_available.sum() == data.n_items - 2
    adj = model.mm_adj.matrix.to_dense()
    assert not adj[:2].any() and not adj[:, :2].any()                       # no edge from or to them
    with torch.no_grad():
        feats = model.mm_trs(model.mm_embedding, model.mm_available)
    assert torch.equal(feats[0], model.mm_trs.missing) and not torch.equal(feats[2], model.mm_trs.missing)
    steps(model, data)
    model.prepare_scoring()
    assert torch.isfinite(model.score(torch.arange(data.n_users))).all()
    # the similarity loss leaves out pairs with an item without a feature (its cosine is undefined)
    b = {"users": torch.tensor([0, 1, 2]), "pos_items": torch.tensor([0, 6, 7]), "neg_items": torch.tensor([3, 3, 3])}
    with torch.no_grad():
        h = model.forward()[2][data.n_users + b["pos_items"]]
        f = torch.nn.functional.normalize(model.mm_embedding[b["pos_items"]], dim=1)
        diff = (h @ h.T - f @ f.T)[1:, 1:]
    assert terms(model, b)["sim"] == pytest.approx(float(torch.linalg.norm(diff) / 3), rel=1e-5)


def test_checkpoint_restores_the_stage1_feature_and_its_graph():
    ds = block_dataset(2)
    model, data = make_model(ds)
    steps(model, data)
    state = model.state_dict()
    assert "mm_feature" in state and "mm_available" in state
    other, _ = make_model(ds, stage1_seed=7)               # another stage-1 result, same shapes
    assert not torch.equal(other.mm_feature, model.mm_feature)
    other.load_state_dict(state)
    assert torch.equal(other.mm_feature, model.mm_feature)
    assert torch.equal(other.mm_adj.matrix.to_dense(), model.mm_adj.matrix.to_dense())
    model.prepare_scoring()
    other.prepare_scoring()
    users = torch.arange(data.n_users)
    assert torch.equal(model.score(users), other.score(users))


def test_stage1_modes_concat_and_precomputed():
    ds = block_dataset(2)
    concat, _ = make_model(ds, stage1="concat")
    assert concat.mm_feature.shape[1] == 12 + 18
    pre, _ = make_model(ds, stage1="precomputed", feature="text")
    np.testing.assert_array_equal(pre.mm_feature.numpy(), ds.modalities["text"].values)
    with pytest.raises(ConfigError, match="alignrec.feature"):
        make_model(ds, stage1="precomputed")
    assert concat.extra_info()["stage1"] == "concat"


def test_align_command_writes_a_feature_file_any_model_can_use(tmp_path):
    folder, _ = write_mmrec(tmp_path / "data", features=16)                # image_feat.npy, 60 items
    np.save(folder / "text_feat.npy", paired_modalities(60)["text"].values)
    out = tmp_path / "aligned.npz"
    res = CliRunner().invoke(app, ["align", "--data", str(folder), "--out", str(out), "--epochs", "5",
                                   "--dim", "8", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "image->text" in res.output and "random top-1" in res.output
    with np.load(out) as z:
        assert z["values"].shape == (60, 8) and z["available"].all()
        assert json.loads(str(z["provenance"]))["modalities"] == ["image", "text"]
    ds = load_dataset(str(folder), DataConfig(extra_features={"aligned": str(out)}))
    assert ds.modalities["aligned"].available.all()
    model, _ = make_model(ds, stage1="precomputed", feature="aligned")
    assert model.mm_feature.shape == (60, 8)
    np.testing.assert_array_equal(model.mm_feature.numpy(), ds.modalities["aligned"].values)
