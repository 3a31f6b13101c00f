"""What a model may see while it trains: training interactions and item content, never valid/test."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .dataset import Dataset, Modality
from .split import History, Split


@dataclass
class TrainingData:
    """The training view of a dataset under a split.

    ``train`` is the binary user x item matrix of training interactions; ``modalities`` are the item
    features (all items, including those never seen in training); ``sequences`` gives each user's
    chronological training sequence as ``(indptr, items)``.
    """

    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    modalities: dict[str, Modality] = field(default_factory=dict)
    items: pd.DataFrame | None = None
    train_items: np.ndarray | None = None
    history: History | None = field(default=None, repr=False)

    @classmethod
    def from_split(cls, ds: Dataset, split: Split) -> "TrainingData":
        return cls(name=ds.name, n_users=ds.n_users, n_items=ds.n_items, train=split.train,
                   modalities=dict(ds.modalities), items=ds.items, train_items=split.train_items(),
                   history=split.history("valid"))

    def __post_init__(self) -> None:
        if self.history is None:  # no chronology given: the training matrix alone
            self.history = History(self.train, self._no_sequences, stage="train")

    @staticmethod
    def _no_sequences() -> tuple[np.ndarray, np.ndarray]:
        raise ValueError("this TrainingData was built without training sequences (pass history=History(...))")

    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """Chronological training sequences ``(indptr, items)`` (see :meth:`Split.sequences`)."""
        return self.history.sequences

    def item_popularity(self) -> np.ndarray:
        return np.asarray(self.train.sum(axis=0)).ravel()
