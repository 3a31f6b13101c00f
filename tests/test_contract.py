"""The scoring contract (models/base.py) that evaluation, ``recommend``, export and serving rely on.

* every registered model that declares ``dot_product`` scores exactly by its ``user_item_vectors`` (and so do
  the settings that change how a model scores, ``VARIANTS``);
* the history is an input of ``prepare_scoring``: sequential scores follow it, general ones ignore it;
* an exported bundle's vectors give the run's own scores (general and sequential);
* a model that places items from content (LIRDRec) puts a catalogue item where the model has it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.models import MODELS
from prismrec.runs import train_run

from seq_checks import cyclic_dataset

# small settings for each model that has them (names qualified by "model." = this model's section)
SMALL = {
    "alignrec": ["model.embedding_size=16", "model.knn_k=5", "model.stage1_dim=16", "model.stage1_epochs=2"],
    "lirdrec": ["model.embedding_size=16", "model.knn_k=5"],
    "freedom": ["model.embedding_size=16", "model.knn_k=5"],
    "bm3": ["model.embedding_size=16"],
    "mdsrec": ["model.embedding_size=16", "model.max_len=8"],
}
TRAIN = ["train.batch_size=64", "train.topk=[5,10]", "train.valid_metric=recall@10"]
# settings that change how a registered model scores, each checked as one more case: label -> (model, settings)
VARIANTS = {
    "sasrecf[moe]": ("sasrecf", ["model.embedding_size=16", "model.feature_encoder=moe", "model.scoring=cosine"]),
    "sasrecf[moe;no ids]": ("sasrecf", ["model.embedding_size=16", "model.feature_encoder=moe",
                                        "model.scoring=cosine", "model.use_ids=false"]),
}


@pytest.fixture(scope="module")
def dataset():
    return cyclic_dataset()


@pytest.fixture(scope="module")
def runs(dataset):
    """One briefly trained run of every registered model (one epoch: vectors that are not the init)."""
    out = {}
    for name in MODELS.names():
        cls = MODELS.get(name)
        sets = [*TRAIN, *SMALL.get(name, [])]
        if "embedding_size" in cls.Config.model_fields and name not in SMALL:
            sets.append("model.embedding_size=16")
        out[name] = train_run(name, dataset, None, overrides=sets, seed=0, epochs=1)
    for label, (name, sets) in VARIANTS.items():
        out[label] = train_run(name, dataset, None, overrides=[*TRAIN, *sets], seed=0, epochs=1)
    return out


def test_every_model_declares_how_it_scores(runs):
    assert set(runs) == set(MODELS.names()) | set(VARIANTS)
    for name, run in runs.items():
        assert isinstance(type(run.model).dot_product, bool), name


@pytest.mark.parametrize("stage", ["valid", "test", "all"])
def test_scores_are_the_dot_product_of_the_declared_vectors(runs, stage):
    for name, run in runs.items():
        model = run.model
        if not model.dot_product:
            continue
        history = run.split.history(stage)
        model.eval()
        with torch.no_grad():
            u, i = model.user_item_vectors(history)
            model.prepare_scoring(history)
            users = torch.arange(model.n_users)
            want = model.score(users)
        assert u.shape == (model.n_users, i.shape[1]) and i.shape[0] == model.n_items, name
        torch.testing.assert_close(u @ i.T, want, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def test_history_is_an_input_of_scoring(runs):
    """Sequential models encode the given history (test adds the valid item); general models ignore it."""
    for name, run in runs.items():
        model = run.model
        model.eval()
        users = torch.as_tensor(run.split.eval_users("test"))
        with torch.no_grad():
            model.prepare_scoring(run.split.history("valid"))
            a = model.score(users)
            model.prepare_scoring(run.split.history("test"))
            b = model.score(users)
        if model.family == "general":
            assert torch.equal(a, b), name
        else:
            assert not torch.allclose(a, b), name


@pytest.mark.parametrize("name", ["lightgcn", "bpr", "sasrec"])
def test_bundle_vectors_give_the_runs_scores(tmp_path, name):
    """Export goes through ``user_item_vectors(history 'all')``: the bundle scores every user as the run."""
    from prismrec.runs import load_run
    from prismrec.serve.bundle import export_bundle, load_bundle

    from conftest import write_mmrec

    folder, _ = write_mmrec(tmp_path / "data", n_users=40, n_items=30)
    run_dir = tmp_path / name
    train_run(name, str(folder), run_dir, overrides=[*TRAIN, "train.threads=1", "model.embedding_size=8"],
              seed=0, epochs=2)
    bundle = load_bundle(export_bundle(run_dir, tmp_path / "bundle"))
    run = load_run(run_dir)
    model = run.model
    with torch.no_grad():
        model.prepare_scoring(run.split.history("all"))
        want = model.score(torch.arange(model.n_users)).numpy()
    got = bundle.arrays["user_emb"] @ bundle.arrays["item_emb"].T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_place_items_puts_a_catalogue_item_where_the_model_has_it(runs):
    """LIRDRec's item tower on an item's own features, for an item without training interactions,
    gives (up to the item-item neighbours) its catalogue vector."""
    run = runs["lirdrec"]
    model = run.model
    assert model.can_place_items()
    cold = np.flatnonzero(np.diff(run.split.train.tocsc().indptr) == 0)
    model.eval()
    with torch.no_grad():
        _, items = model.user_item_vectors()
        if len(cold) == 0:  # every item was trained on: the tower still gives each item's layer-0 direction
            cold = np.arange(5)
        feats = {n: (t.values[cold].numpy(), t.available[cold].numpy()) for n, t in model.features.items()}
        placed = model.place_items(feats)
    assert placed.shape == (len(cold), items.shape[1])
    cos = torch.nn.functional.cosine_similarity(placed, items[cold], dim=1)
    assert float(cos.min()) > 0.5, cos
    # models without a content tower refuse, with a reason
    with pytest.raises(Exception, match="cannot place new items"):
        runs["lightgcn"].model.place_items(feats)
