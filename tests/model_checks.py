"""Shared checks for the multimodal model tests (VBPR, FREEDOM, BM3): learnable synthetic data with
group-structured features, and behaviour every model must have."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from prismrec.data import Modality, build_dataset
from prismrec.data.training import TrainingData
from prismrec.models import MODELS
from prismrec.runs import Run, train_run

from conftest import tiny_frame


N_ITEMS = 60
SMALL = ["train.batch_size=32", "train.learning_rate=0.01", "train.patience=1000", "train.topk=[5,10,20]",
         "train.valid_metric=recall@10"]


# --------------------------------------------------------------------------------- shared helpers
def group_features(dim: int, seed: int, n_groups: int = 4) -> np.ndarray:
    """Item r gets the one-hot of its group ``r % n_groups`` (first columns) plus a little noise."""
    rng = np.random.default_rng(seed)
    group = np.eye(n_groups, dim)[np.arange(N_ITEMS) % n_groups]
    return (group + 0.1 * rng.standard_normal((N_ITEMS, dim))).astype(np.float32)


def multimodal_dataset(dims: dict[str, int] | None = None, missing: dict[str, np.ndarray] | None = None):
    """The tiny interactions with one feature matrix per entry of ``dims`` (default image 16-d, text 12-d);
    ``missing[name]`` lists items whose ``name`` feature is unavailable."""
    dims = dims or {"image": 16, "text": 12}
    missing = missing or {}
    mods = {}
    for j, (name, dim) in enumerate(sorted(dims.items())):
        avail = np.ones(N_ITEMS, dtype=bool)
        avail[missing.get(name, [])] = False
        mods[name] = Modality(name, group_features(dim, seed=j), avail)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)]})
    return build_dataset("mm", tiny_frame(), items=items, modalities=mods)


def fit(name: str, ds, overrides: list[str], epochs: int, seed: int = 0) -> Run:
    return train_run(name, ds, None, overrides=[*SMALL, *overrides], seed=seed, epochs=epochs)


def scores(model, users: torch.Tensor | None = None) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
        return model.score(users if users is not None else torch.arange(model.n_users))


def check_learns(name: str, overrides: list[str], epochs: int, margin: float = 0.2) -> None:
    """Training for a few epochs beats the untrained model on validation recall@10 (random ~0.2)."""
    ds = multimodal_dataset()
    before = fit(name, ds, overrides, 0).metrics["valid"]["recall@10"]
    after = fit(name, ds, overrides, epochs).metrics["valid"]["recall@10"]
    assert after >= before + margin, (before, after)


def noise_feature_dataset():
    """The tiny interactions with pure-noise features (no group structure): image 16-d, text 12-d."""
    rng = np.random.default_rng(7)
    mods = {n: Modality(n, rng.standard_normal((N_ITEMS, dim)).astype(np.float32), np.ones(N_ITEMS, dtype=bool))
            for n, dim in (("image", 16), ("text", 12))}
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)]})
    return build_dataset("mm", tiny_frame(), items=items, modalities=mods)


def check_learns_past_content(name: str, overrides: list[str], *, gain: float, margin: float) -> None:
    """For models that rank well untrained on the group features (a content recommender before any step):
    on noise features training must add ``gain`` validation recall@10 to the untrained model, and on the
    group features it must gain at least ``margin`` (0: not get worse)."""
    ds = noise_feature_dataset()
    before = fit(name, ds, overrides, 0).metrics["valid"]["recall@10"]
    after = fit(name, ds, overrides, 6).metrics["valid"]["recall@10"]
    assert after >= before + gain, (before, after)
    check_learns(name, overrides, epochs=3, margin=margin)


def check_shapes_and_round_trip(name: str, overrides: list[str]) -> None:
    """Score shape; state_dict -> a freshly initialised model -> identical scores."""
    run = fit(name, multimodal_dataset(), overrides, 2)
    users = torch.tensor([0, 5, 7, 59])
    s = scores(run.model, users)
    assert s.shape == (4, N_ITEMS) and torch.isfinite(s).all()
    cls = MODELS.get(name)
    torch.manual_seed(12345)
    data = TrainingData.from_split(run.dataset, run.split)
    fresh = cls(cls.Config.build(run.config.params, where=name), data)
    assert not torch.allclose(scores(fresh, users), s)
    fresh.load_state_dict(run.model.state_dict())
    assert torch.equal(scores(fresh, users), s)


def check_missing_features(name: str, overrides: list[str]) -> None:
    """Items without an image feature: no NaN, and their projection is the learned missing vector
    (which training moved away from its zero init), never ``W . 0 + b``."""
    gone = np.arange(0, N_ITEMS, 5)
    run = fit(name, multimodal_dataset(missing={"image": gone}), overrides, 3)
    model = run.model
    assert torch.isfinite(scores(model)).all()
    proj = model.features.proj["image"]
    assert proj.missing.abs().sum() > 0, "the missing vector received no gradient"
    with torch.no_grad():
        out = model.features("image")
    assert torch.equal(out[gone], proj.missing.expand(len(gone), -1))
    assert not torch.allclose(out[gone + 1], proj.missing.expand(len(gone), -1))


def check_modality_counts(name: str, overrides: list[str]) -> None:
    """One modality and three modalities (any names) both train and score."""
    for dims in ({"audio": 8}, {"image": 16, "text": 12, "audio": 8}):
        run = fit(name, multimodal_dataset(dims), overrides, 2)
        assert run.model.features.names == sorted(dims)
        assert torch.isfinite(scores(run.model)).all()
        assert np.isfinite(run.metrics["valid"]["recall@10"])


# ------------------------------------------------------------------------------------------ VBPR
# reg_weight: MMRec's EmbLoss is ~1/sqrt(batch); at batch 32 the default 2.0 would shrink everything to 0
