"""Training batches: BPR triples with vectorised negative sampling, and positive pairs for softmax losses.

Negatives follow MMRec: one (or ``num_negatives``) uniform draw per training interaction from the
items that occur in training, redrawn while it is one of the user's training items. Membership is
tested for the whole epoch at once with a sorted array of ``user * n_items + item`` keys, so the
cost is a few ``searchsorted`` calls instead of a Python loop per interaction.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import DataError

Batch = dict[str, torch.Tensor]


class PairSampler:
    """Shuffled (user, positive item) pairs of the training matrix, in batches."""

    def __init__(self, train: sp.csr_matrix):
        coo = sp.coo_matrix(train)
        order = np.lexsort((coo.col, coo.row))
        self.users = coo.row[order].astype(np.int64)
        self.items = coo.col[order].astype(np.int64)
        self.n_items = train.shape[1]

    def __len__(self) -> int:
        return len(self.users)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)

    def epoch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> Iterator[Batch]:
        perm = rng.permutation(len(self.users))
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            yield {"users": torch.as_tensor(self.users[idx], device=device),
                   "pos_items": torch.as_tensor(self.items[idx], device=device)}


class BPRSampler(PairSampler):
    """(user, positive, negative) triples; negatives exclude the user's training items."""

    def __init__(self, train: sp.csr_matrix, candidates: np.ndarray | None = None, num_negatives: int = 1):
        super().__init__(train)
        self.keys = np.sort(self.users * self.n_items + self.items)
        self.candidates = np.asarray(candidates if candidates is not None else np.arange(self.n_items), np.int64)
        self.num_negatives = num_negatives
        n_cand = len(np.unique(self.candidates))
        per_user = np.bincount(self.users[np.isin(self.items, self.candidates)], minlength=train.shape[0])
        if n_cand and per_user.max(initial=0) >= n_cand:
            raise DataError(
                f"a user has interacted with all {n_cand} candidate items, so no negative item exists.",
                fix="remove such users or use a model trained with a softmax loss.",
            )

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform negative per entry of ``users``, never one of that user's training items."""
        neg = self.candidates[rng.integers(0, len(self.candidates), size=len(users))]
        todo = np.arange(len(users))
        for _ in range(1000):
            keys = users[todo] * self.n_items + neg[todo]
            pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
            clash = self.keys[pos] == keys
            if not clash.any():
                return neg
            todo = todo[clash]
            neg[todo] = self.candidates[rng.integers(0, len(self.candidates), size=len(todo))]
        raise RuntimeError("negative sampling did not converge")  # unreachable unless a user owns ~all items

    def epoch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> Iterator[Batch]:
        perm = rng.permutation(len(self.users))
        users = self.users[perm]
        if self.num_negatives == 1:
            negs = self.sample_negatives(users, rng)
        else:
            negs = self.sample_negatives(np.repeat(users, self.num_negatives), rng).reshape(-1, self.num_negatives)
        items = self.items[perm]
        for start in range(0, len(perm), batch_size):
            sl = slice(start, start + batch_size)
            yield {"users": torch.as_tensor(users[sl], device=device),
                   "pos_items": torch.as_tensor(items[sl], device=device),
                   "neg_items": torch.as_tensor(negs[sl], device=device)}


def make_sampler(kind: str, train: sp.csr_matrix, candidates: np.ndarray | None, num_negatives: int):
    if kind == "bpr":
        return BPRSampler(train, candidates, num_negatives)
    if kind == "positives":
        return PairSampler(train)
    raise ValueError(f"unknown sampler {kind!r}")
