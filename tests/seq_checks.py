"""Shared checks for the sequential models: synthetic sessions whose next item is learnable.

Every user walks ``N_ITEMS`` items in a fixed cyclic order (item ``k`` is followed by ``k + 1 mod N``),
starting at a random item, so the next item is a function of the last one: a working sequential model
reaches high validation recall@10 in a few epochs, an untrained one sits at ~10 / N_ITEMS. Item
features are a noisy one-hot of ``k % 4`` (image) and of ``k % 3`` (text).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from prismrec.data import Modality, build_dataset
from prismrec.data.training import TrainingData
from prismrec.models import MODELS
from prismrec.runs import Run, train_run

N_ITEMS, N_USERS, LENGTH = 40, 120, 9
SMALL = ["train.batch_size=64", "train.learning_rate=0.005", "train.patience=1000", "train.topk=[5,10,20]",
         "train.valid_metric=recall@10", "max_len=8", "embedding_size=32"]


def cyclic_dataset(seed: int = 0, missing: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, N_ITEMS, N_USERS)
    users = np.repeat(np.arange(N_USERS), LENGTH)
    pos = np.tile(np.arange(LENGTH), N_USERS)
    items = (starts[users] + pos) % N_ITEMS
    frame = pd.DataFrame({"user": [f"u{u}" for u in users], "item": [f"i{i}" for i in items], "timestamp": pos})
    k = np.arange(N_ITEMS)
    image_avail = np.ones(N_ITEMS, bool)
    if missing is not None:
        image_avail[missing] = False
    mods = {
        "image": Modality("image", (np.eye(4, 16)[k % 4] + 0.1 * rng.standard_normal((N_ITEMS, 16))).astype(np.float32),
                          image_avail),
        "text": Modality("text", (np.eye(3, 12)[k % 3] + 0.1 * rng.standard_normal((N_ITEMS, 12))).astype(np.float32), np.ones(N_ITEMS, bool)),
    }
    items_table = pd.DataFrame({"item_id": [f"i{i}" for i in k], "title": [f"item {i}" for i in k]})
    return build_dataset("cyclic", frame, items=items_table, modalities=mods)


def fit(name: str, ds, overrides: list[str], epochs: int, seed: int = 0) -> Run:
    return train_run(name, ds, None, overrides=[*SMALL, *overrides], seed=seed, epochs=epochs)


def check_learns(name: str, overrides: list[str] = (), epochs: int = 15, floor: float = 0.6) -> None:
    """Trained: valid recall@10 well above chance; untrained: near chance (10 / 40)."""
    ds = cyclic_dataset()
    before = fit(name, ds, list(overrides), 0).metrics["valid"]["recall@10"]
    after = fit(name, ds, list(overrides), epochs).metrics["valid"]["recall@10"]
    assert before < 0.45 and after >= floor, (before, after)


def check_round_trip_and_sessions(name: str, overrides: list[str] = ()) -> None:
    """state_dict into a fresh model gives identical scores; score_sequences agrees with score()."""
    run = fit(name, cyclic_dataset(), list(overrides), 2)
    model = run.model
    cls = MODELS.get(name)
    torch.manual_seed(4321)
    fresh = cls(cls.Config.build(run.config.params, where=name), TrainingData.from_split(run.dataset, run.split))
    fresh.load_state_dict(model.state_dict())
    users = torch.tensor([0, 3, 17])
    for m in (model, fresh):
        m.eval()
        m.prepare_scoring(run.split.history("test"))
    with torch.no_grad():
        a, b = model.score(users), fresh.score(users)
        assert a.shape == (3, N_ITEMS) and torch.isfinite(a).all() and torch.equal(a, b)
        indptr, items = run.split.sequences(("train", "valid"))
        sessions = [items[indptr[u]:indptr[u + 1]].tolist() for u in users.tolist()]
        assert torch.allclose(model.score_sequences(sessions), a, atol=1e-5)
        # a short session (padding) stays finite
        assert torch.isfinite(model.score_sequences([[1]])).all()
