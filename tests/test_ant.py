"""ANT: MoE adaptors, price features, feature-space checks, pre-training, adaptation strategies, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CliProcess, run_cli
from seq_checks import check_round_trip_and_sessions, cyclic_dataset, fit
from prismrec.data import Modality, build_dataset
from prismrec.errors import PrismrecError
from prismrec.models.transfer.ant import check_same_spaces, trainable_summary
from prismrec.models.transfer.modules import ItemEncoder, MoEAdaptor, encode_prices
from prismrec.report.transfer import transfer_report
from prismrec.transfer import adapt, pretrain

FAST = ["dropout=0.1", "temperature=0.2"]


def test_moe_adaptor_shapes_and_gates():
    torch.manual_seed(0)
    ad = MoEAdaptor(12, 8, n_experts=4, kind="whiten", dropout=0.0).eval()
    x = torch.randn(5, 12)
    out = ad(x)
    assert out.shape == (5, 8)
    g = ad.gates(x)
    # zero-initialised gates: uniform mixture, so the output is the mean of the experts
    assert torch.allclose(g, torch.full((5, 4), 0.25))
    experts = torch.stack([(x - ad.bias_in[k]) @ ad.weight[k] for k in range(4)], 1)
    assert torch.allclose(out, experts.mean(1), atol=1e-6)
    lin = MoEAdaptor(6, 8, n_experts=3, kind="linear").train()
    assert lin(torch.randn(4, 6)).shape == (4, 8)
    assert torch.allclose(lin.gates(torch.randn(4, 6)).sum(-1), torch.ones(4))


@pytest.mark.parametrize("mode", ["shared", "per_expert"])
def test_expert_dropout_masks(mode):
    """Two identical one-weight experts on x = 1 with dropout 0.5: one shared mask gives every row 0 or 2
    whatever the (noisy) gates; a mask per expert (ANT's and UniSRec's code) mixes a kept and a dropped
    copy in about half the rows. Evaluation is unaffected."""
    torch.manual_seed(0)
    ad = MoEAdaptor(1, 1, n_experts=2, kind="whiten", dropout=0.5, expert_dropout=mode)
    with torch.no_grad():
        ad.weight.fill_(1.0)
    y = ad.train()(torch.ones(2000, 1)).squeeze(1).detach()
    mixed = float(((y > 1e-5) & (y < 2 - 1e-5)).float().mean())
    if mode == "shared":
        assert mixed == 0.0
    else:
        assert 0.4 < mixed < 0.6
    assert torch.allclose(ad.eval()(torch.ones(3, 1)), torch.ones(3, 1))
    with pytest.raises(ValueError, match="per_expert"):
        MoEAdaptor(1, 1, expert_dropout="each")
    from prismrec.models.transfer.ant import ANT, build_networks

    items, _ = build_networks(ANT.Config(expert_dropout=mode), {"text": 8, "price": 4})  # the setting reaches every adaptor
    assert [a.per_expert for a in items.adaptors.values()] == [mode == "per_expert"] * 2


def test_item_encoder_fusion_and_missing_features():
    torch.manual_seed(0)
    enc = ItemEncoder({"image": 6, "text": 5, "price": 4}, 8, n_experts=2, dropout=0.0, beta=0.1).eval()
    avail = torch.tensor([True, False, True])
    tables = {"image": (torch.randn(3, 6), avail), "text": (torch.randn(3, 5), torch.ones(3, dtype=torch.bool)),
              "price": (torch.randn(3, 4), torch.ones(3, dtype=torch.bool))}
    fused, parts = enc(tables)
    assert fused.shape == (3, 8) and set(parts) == {"image", "text", "price"}
    assert torch.equal(parts["image"][1], enc.missing["image"].detach())  # missing image: learned vector
    expect = parts["image"] + parts["text"] + parts["price"] + 0.1 * parts["image"] * parts["text"]
    assert torch.allclose(fused, expect, atol=1e-6)
    text_only = ItemEncoder({"text": 5}, 8, n_experts=2)
    assert text_only.pair is None


def test_price_encoders():
    prices = np.array([1.0, 10.0, np.nan, 100.0, 0.5, 3.0])
    sin, avail = encode_prices(prices, "sinusoidal", dim=16)
    assert sin.shape == (6, 16) and avail.tolist() == [True, True, False, True, True, True]
    assert np.all(sin[2] == 0) and np.allclose((sin[avail] ** 2).sum(1), 8.0)  # 8 (sin, cos) pairs
    one_hot, avail = encode_prices(prices, "bucket", buckets=4)
    assert one_hot.shape == (6, 4) and one_hot[avail].sum(1).tolist() == [1.0] * 5 and one_hot[2].sum() == 0
    assert one_hot[4].argmax() == 0 and one_hot[3].argmax() == 3  # cheapest / dearest bucket


def test_ant_learns_and_round_trips():
    ds = cyclic_dataset()
    before = fit("ant", ds, FAST, 0).metrics["valid"]["recall@10"]
    after = fit("ant", ds, FAST, 15).metrics["valid"]["recall@10"]
    assert before < 0.45 and after >= 0.6, (before, after)
    check_round_trip_and_sessions("ant", FAST)


def test_ant_modality_switch_and_price():
    ds = cyclic_dataset()
    ds.items["price"] = np.linspace(1, 50, ds.n_items)
    run = fit("ant", ds, [*FAST, "ant.modalities=[text,price]", "price_encoder=bucket"], 1)
    assert sorted(run.model.features) == ["price", "text"]
    assert run.model.item_encoder.pair is None  # no image: no product term, no alignment
    run = fit("ant", ds, FAST, 1)
    assert sorted(run.model.features) == ["image", "price", "text"]
    with pytest.raises(PrismrecError, match="audio"):
        fit("ant", ds, ["ant.modalities=[audio]"], 1)


def test_feature_space_check():
    sp = lambda enc, dim: {"encoder": enc, "dim": dim, "declared": False}  # noqa: E731
    ok = check_same_spaces({"a": {"text": sp("minilm", 384)}, "b": {"text": sp("minilm", 384)}})
    assert ok["text"]["dim"] == 384
    with pytest.raises(PrismrecError) as e:
        check_same_spaces({"movies": {"text": sp("minilm", 384)}, "shop": {"text": sp("clip", 512)}})
    msg = str(e.value)
    assert "movies" in msg and "shop" in msg and "Fix" in msg and "\n" not in msg
    with pytest.raises(PrismrecError, match="records no encoder"):
        check_same_spaces({"a": {"text": sp("unknown", 384)}, "b": {"text": sp("unknown", 384)}})


def _domain(name: str, seed: int, dim: int = 12, shift: int = 0, encoder: str = "toy-text"):
    """A cyclic dataset with raw ids prefixed by ``name`` (no shared items) and a recorded text encoder."""
    ds = cyclic_dataset(seed)
    frame = ds.interactions
    raw = pd.DataFrame({"user": [f"{name}-u{u}" for u in frame["user"]],
                        "item": [f"{name}-i{(i + shift) % ds.n_items}" for i in frame["item"]],
                        "timestamp": frame["timestamp"]})
    rng = np.random.default_rng(seed)
    k = np.arange(ds.n_items)
    text = (np.eye(3, dim)[k % 3] + 0.1 * rng.standard_normal((ds.n_items, dim))).astype(np.float32)
    img = ds.modalities["image"]
    ids = [f"{name}-i{i}" for i in k]
    return build_dataset(name, raw, items=pd.DataFrame({"item_id": ids}),
                         modalities={"text": Modality("text", text, None, {"encoder": encoder}),
                                     "image": Modality("image", img.values, img.available, {"encoder": "toy-image"})})


def _save(ds, root):
    """Write a dataset as an MMRec folder with features.json (the CLI reads folders)."""
    folder = root / ds.name
    folder.mkdir(parents=True)
    inter = ds.interactions
    pd.DataFrame({"userID": inter["user"], "itemID": inter["item"], "seq_pos": inter["timestamp"]}).to_csv(
        folder / f"{ds.name}.inter", sep="\t", index=False)
    man = {}
    for m, mod in ds.modalities.items():
        np.save(folder / f"{m}_feat.npy", mod.values)
        man[m] = {"encoder": mod.provenance["encoder"]}
    (folder / "features.json").write_text(json.dumps(man))
    return folder


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ant")
    a, b = _save(_domain("srca", 1), root), _save(_domain("srcb", 2, shift=3), root)
    out = root / "pre"
    meta = pretrain([str(a), str(b)], out, overrides=["max_len=8", "embedding_size=16", "n_experts=2",
                                                      "train.batch_size=32", "train.threads=1"], epochs=2)
    return root, out, meta


def test_pretrain_checkpoint_records_provenance(pretrained_dir):
    _, out, meta = pretrained_dir
    assert (out / "model.pt").is_file() and meta["epochs_run"] == 2
    assert meta["modalities"]["text"]["encoder"] == "toy-text" and meta["modalities"]["image"]["dim"] == 16
    assert [s["name"] for s in meta["sources"]] == ["srca", "srcb"]
    assert all(h["image_text"] > 0 for h in meta["history"])  # the alignment term is active
    state = torch.load(out / "model.pt", weights_only=True)
    assert any(k.startswith("item_encoder.adaptors.text.") for k in state)
    assert not any(k.startswith("features.") for k in state)  # features are data, not weights


def test_interrupted_pretraining_resumes_to_the_same_weights(pretrained_dir):
    root, full, meta = pretrained_dir
    args = ([str(root / "srca"), str(root / "srcb")],)
    kw = {"overrides": ["max_len=8", "embedding_size=16", "n_experts=2", "train.batch_size=32", "train.threads=1"]}
    part = root / "part"
    pretrain(*args, part, epochs=1, **kw)                   # stands for a run killed after epoch 1
    with pytest.raises(PrismrecError, match="--resume"):
        pretrain(*args, part, epochs=2, **kw)               # nothing is overwritten without --resume
    with pytest.raises(PrismrecError, match="seed"):
        pretrain(*args, part, epochs=2, seed=7, resume=True, **kw)
    resumed = pretrain(*args, part, epochs=2, resume=True, **kw)
    assert resumed["epochs_run"] == 2 and resumed["best_epoch"] == meta["best_epoch"]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in meta["history"]], rel=1e-5)
    a, b = torch.load(full / "model.pt", weights_only=True), torch.load(part / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(PrismrecError, match="nothing to resume|no pre-training"):
        pretrain(*args, root / "never", epochs=1, resume=True, **kw)


def test_pretraining_stops_when_the_loss_stops_falling(pretrained_dir, tmp_path):
    root, _, meta = pretrained_dir
    small = ["max_len=8", "embedding_size=16", "n_experts=2", "train.batch_size=32", "train.threads=1"]
    args = ([str(root / "srca"), str(root / "srcb")],)
    # no fall of the loss counts as progress: the first epoch is kept and the second ends the run
    flat = pretrain(*args, tmp_path / "flat", epochs=10,
                    overrides=[*small, "pretrain_patience=1", "pretrain_min_delta=1000"])
    assert flat["epochs_run"] == 2 and flat["converged"] and flat["best_epoch"] == 1
    # the same run with the rule off runs to the cap and says it did not converge
    assert meta["epochs_run"] == 2 and not meta["converged"]
    losses = [h["loss"] for h in flat["history"]]
    assert losses == pytest.approx([h["loss"] for h in meta["history"]], rel=1e-5)


def test_pretrain_full_softmax_and_mismatch_refused(tmp_path):
    a = _save(_domain("one", 1), tmp_path)
    b = _save(_domain("two", 2, dim=20, encoder="other-text"), tmp_path)
    small = ["max_len=8", "embedding_size=16", "n_experts=2", "train.threads=1"]
    meta = pretrain([str(a)], tmp_path / "full", overrides=[*small, "pretrain_loss=full"], epochs=1)
    assert meta["history"][0]["seq_item"] > 0
    with pytest.raises(PrismrecError) as e:
        pretrain([str(a), str(b)], tmp_path / "mixed", overrides=small, epochs=1)
    assert "one" in str(e.value) and "two" in str(e.value) and "'text'" in str(e.value)
    assert not (tmp_path / "mixed" / "model.pt").exists()
    # leaving the mismatched modality out is the documented fix
    meta = pretrain([str(a), str(b)], tmp_path / "img", overrides=[*small, "ant.modalities=[image]"], epochs=1)
    assert list(meta["modalities"]) == ["image"]


@pytest.mark.parametrize("strategy", ["scratch", "finetune", "adaptor", "relearn"])
def test_strategies_freeze_and_reinitialise(pretrained_dir, tmp_path, strategy):
    root, pre, _ = pretrained_dir
    target = _domain("tgt", 5, shift=7)
    run = adapt(pre, target, strategy, None, overrides=["train.threads=1"], epochs=0)
    model = run.model
    grads = trainable_summary(model)
    layers = [v for k, v in grads.items() if k.startswith("encoder.layers.")]
    assert layers and all(layers) == (strategy in ("scratch", "finetune"))
    assert grads["encoder.position.weight"] == (strategy != "adaptor")
    assert all(v for k, v in grads.items() if k.startswith("item_encoder.") or k.startswith("encoder.norm_in"))
    state = torch.load(pre / "model.pt", weights_only=True)
    own = model.state_dict()
    same = lambda k: torch.equal(own[k].cpu(), state[k])  # noqa: E731
    assert same("encoder.layers.layers.0.linear1.weight") == (strategy != "scratch")
    assert same("item_encoder.adaptors.text.weight") == (strategy in ("finetune", "adaptor"))
    assert same("encoder.position.weight") == (strategy in ("finetune", "adaptor"))
    assert same("encoder.norm_in.weight") or strategy == "scratch"
    if strategy == "relearn":
        assert float(own["item_encoder.adaptors.text.gate"].abs().sum()) == 0.0
    assert run.metrics["strategy"] == strategy
    assert run.model.extra_info()["strategy"] == strategy


def test_adapt_refuses_a_different_space(pretrained_dir):
    _, pre, _ = pretrained_dir
    other = _domain("tgt2", 5, encoder="another-encoder")
    with pytest.raises(PrismrecError, match="another-encoder"):
        adapt(pre, other, "relearn", None, epochs=0)
    with pytest.raises(PrismrecError, match="embedding_size"):
        adapt(pre, _domain("tgt3", 6), "finetune", None, overrides=["ant.embedding_size=8"], epochs=0)


def test_cli_pretrain_adapt_report(pretrained_dir, tmp_path):
    root, pre, _ = pretrained_dir
    target = _save(_domain("clitgt", 7, shift=5), tmp_path)
    bare = _save(_domain("bare", 3), tmp_path)
    (bare / "features.json").unlink()
    # independent commands run side by side (each subprocess spends seconds importing torch)
    procs = {strat: CliProcess("adapt", "--pretrained", str(pre), "--data", str(target), "--strategy", strat,
                               "--out", str(tmp_path / strat), "--epochs", "2", "--set", "train.threads=1")
             for strat in ("scratch", "relearn")}
    # an unrecorded encoder is refused with exit status 2 and one paragraph naming the fix
    refused = CliProcess("pretrain", "--data", str(bare), "--data", str(target), "--out", str(tmp_path / "p2"),
                         "--epochs", "1")
    runs = []
    for strat, proc in procs.items():
        r = proc.result()
        assert r.returncode == 0, str(r)
        m = json.loads((tmp_path / strat / "metrics.json").read_text())
        for key in ("model", "best_epoch", "valid", "test", "seed", "epochs_run", "train_seconds", "strategy"):
            assert key in m, key
        assert m["strategy"] == strat and m["model"] == "ant" and "recall@10" in m["test"]
        runs.append(tmp_path / strat)
    r = refused.result()
    assert r.returncode == 2 and "records no encoder" in r.stderr and "--encoder" in r.stderr, str(r)
    assert not (tmp_path / "p2" / "model.pt").exists()
    r = run_cli("transfer-report", *map(str, runs), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, str(r)
    assert "relearn" in r.stdout and "| recall@10 |" in r.stdout
    assert (tmp_path / "rep" / "transfer.md").is_file()
    md, rows = transfer_report(runs)
    assert {row["strategy"] for row in rows} == {"relearn"} and len(rows) == 4


def test_pretraining_on_one_dataset_needs_no_encoder_declaration(tmp_path):
    """Nothing to mix: a single source whose features.json records no encoder pre-trains as it is; its space
    stays 'unknown', so adapting it to another dataset is the check that asks for a declaration."""
    bare = _save(_domain("solo", 3), tmp_path)
    (bare / "features.json").unlink()
    small = ["max_len=8", "embedding_size=16", "n_experts=2", "train.threads=1"]
    meta = pretrain([str(bare)], tmp_path / "p", epochs=1, overrides=small)
    assert meta["modalities"]["text"]["encoder"] == "unknown" and (tmp_path / "p" / "model.pt").is_file()
    with pytest.raises(PrismrecError, match="records no encoder"):
        adapt(tmp_path / "p", _domain("tgt", 4), "relearn", None, epochs=0)
    # two sources, one of them unrecorded: still refused (test_cli_pretrain_adapt_report runs it on the CLI)
    with pytest.raises(PrismrecError, match="records no encoder"):
        check_same_spaces({"a": {"text": {"encoder": "unknown", "dim": 12}},
                           "b": {"text": {"encoder": "toy-text", "dim": 12}}})
    assert check_same_spaces({"a": {"text": {"encoder": "unknown", "dim": 12}}})["text"]["dim"] == 12


def test_declared_encoder_is_recorded(tmp_path):
    bare = _save(_domain("bare", 3), tmp_path)
    (bare / "features.json").unlink()
    other = _save(_domain("other", 4, shift=2), tmp_path)
    small = ["max_len=8", "embedding_size=16", "n_experts=2", "train.threads=1"]
    meta = pretrain([str(bare), str(other)], tmp_path / "p", epochs=1,
                    overrides=[*small, "ant.feature_encoders.text=toy-text", "ant.feature_encoders.image=toy-image"])
    assert meta["modalities_by_source"]["bare"]["text"] == {"encoder": "toy-text", "dim": 12, "declared": True}
    assert meta["modalities_by_source"]["other"]["text"]["declared"] is False


def test_report_matches_scratch_by_target_whatever_the_source(tmp_path):
    from prismrec.report.transfer import _collect

    def run(name, strategy, sources, seed, target="shop", mods=("text",)):
        rd = tmp_path / name / f"seed-{seed}"
        rd.mkdir(parents=True)
        (rd / "metrics.json").write_text(json.dumps({
            "model": "ant", "strategy": strategy, "dataset": target, "seed": seed, "pretrain_sources": sources,
            "model_info": {"modalities": {m: {} for m in mods}}}))
        return rd

    s0 = run("scratch", "scratch", ["movies", "books"], 0)   # scratch ran with the multi-source checkpoint
    f_multi = run("ft_multi", "finetune", ["movies", "books"], 0)
    f_movies = run("ft_movies", "finetune", ["movies"], 0)
    other = run("ft_img", "finetune", ["movies"], 0, mods=("image", "text"))   # other modalities: no scratch
    groups = _collect([s0, f_multi, f_movies, other])
    assert groups["movies+books -> shop [text]"] == {"finetune": {0: f_multi}, "scratch": {0: s0}}
    assert groups["movies -> shop [text]"] == {"finetune": {0: f_movies}, "scratch": {0: s0}}
    assert "scratch" not in groups["movies -> shop [image+text]"]
