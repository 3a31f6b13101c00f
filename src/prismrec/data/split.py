"""Train / validation / test splits, the rules that make them, and their on-disk form.

A :class:`Split` labels every kept interaction 0 (train), 1 (valid) or 2 (test) and exposes each part
as a binary sparse user x item matrix. Rules (``data.split``):

``given``
    the labels shipped with the data (MMRec ``x_label``, UniSRec train/valid/test files).
``mmrec``
    MMRec's per-user random rule, as its ``1splitting.ipynb`` does it: shuffle all rows, group by user,
    then for a user with ``n`` interactions: ``n < 10`` -> the last one to test, the one before to
    valid, the rest to train; otherwise ``v+t = int(0.2 n)`` go to valid+test (valid ``(v+t)//2``, test
    the rest). Other ratios scale the same way. A user with a single interaction stays in train.
``user_temporal``
    the same counts, but each user's interactions are taken in time order (latest to test).
``global_temporal``
    MMRec's ``0rating2inter`` rule: timestamps below the 0.8 quantile train, below 0.9 valid, rest test.
``loo``
    leave-one-out in time order: last to test, second-to-last to valid (users with two interactions:
    one train, one test; with one: train).
``cold_items``
    a random ``data.cold_item_ratio`` of the items that have interactions is held out: half of them
    (and all their interactions) form the validation set, the other half the test set, so test items
    are never seen in training.

Random rules use ``data.split_seed`` (not the model seed), so every model and seed sees one split.
The split is saved with each run (``split.npz``) and reloaded by ``evaluate`` and ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry
from ..utils.io import write_npz
from .dataset import Dataset

log = logging.getLogger("prismrec")

TRAIN, VALID, TEST = 0, 1, 2
STAGES = {"train": TRAIN, "valid": VALID, "test": TEST}

SPLIT_RULES: Registry[Callable[[Dataset, DataConfig], np.ndarray]] = Registry("split rule")


HISTORY_STAGES: dict[str, tuple[str, ...]] = {"valid": ("train",), "test": ("train", "valid"), "all": ("all",)}


class History:
    """What is known about every user at scoring time: the input of a model's ``prepare_scoring``.

    ``matrix`` is the binary user x item CSR matrix of the known interactions and ``sequences`` each
    user's chronological items as ``(indptr, items)`` (``items[indptr[u]:indptr[u + 1]]``). Either may be
    given as an array or as a function that builds it on first use (general models never read the
    sequences, sequential models never the matrix).
    """

    def __init__(self, matrix: sp.csr_matrix | Callable[[], sp.csr_matrix],
                 sequences: tuple[np.ndarray, np.ndarray] | Callable[[], tuple[np.ndarray, np.ndarray]],
                 *, stage: str = "custom"):
        self._matrix, self._sequences, self.stage = matrix, sequences, stage

    @property
    def matrix(self) -> sp.csr_matrix:
        if callable(self._matrix):
            self._matrix = self._matrix()
        return self._matrix

    @property
    def sequences(self) -> tuple[np.ndarray, np.ndarray]:
        if callable(self._sequences):
            self._sequences = self._sequences()
        return self._sequences

    def __repr__(self) -> str:
        return f"History(stage={self.stage!r})"


def _binary_sum(mats: list[sp.csr_matrix]) -> sp.csr_matrix:
    out = mats[0] if len(mats) == 1 else sum(mats[1:], mats[0]).tocsr()
    if len(mats) > 1:
        out.sum_duplicates()
        out.data[:] = 1.0
    return out


@dataclass
class Split:
    """Labelled interactions of one dataset; see the module docstring for the rules."""

    rule: str
    n_users: int
    n_items: int
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    seq_key: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.int8)
        self.seq_key = np.asarray(self.seq_key, dtype=np.float64)
        self._mats: dict[int, sp.csr_matrix] = {}

    def matrix(self, stage: str | int) -> sp.csr_matrix:
        """Binary user x item CSR matrix of one part (repeated pairs count once)."""
        label = STAGES[stage] if isinstance(stage, str) else stage
        if label not in self._mats:
            m = self.labels == label
            mat = sp.csr_matrix(
                (np.ones(int(m.sum()), dtype=np.float32), (self.users[m], self.items[m])),
                shape=(self.n_users, self.n_items),
            )
            mat.sum_duplicates()
            mat.data[:] = 1.0
            self._mats[label] = mat
        return self._mats[label]

    @property
    def train(self) -> sp.csr_matrix:
        return self.matrix(TRAIN)

    @property
    def valid(self) -> sp.csr_matrix:
        return self.matrix(VALID)

    @property
    def test(self) -> sp.csr_matrix:
        return self.matrix(TEST)

    def train_items(self) -> np.ndarray:
        """Items with at least one training interaction (MMRec draws negatives from these)."""
        return np.unique(self.items[self.labels == TRAIN])

    def eval_users(self, stage: str, filter_cold_users: bool = True) -> np.ndarray:
        """Users with at least one interaction in ``stage`` (and, by default, one in train)."""
        truth = self.matrix(stage)
        has_truth = np.diff(truth.indptr) > 0
        if filter_cold_users:
            has_truth &= np.diff(self.train.indptr) > 0
        return np.flatnonzero(has_truth)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == lab).sum()) for name, lab in STAGES.items()}

    def history(self, stage: str) -> "History":
        """The interactions known when scoring ``stage``: train for ``valid``, train + valid for ``test``,
        everything for ``all`` (serving). Cached per stage; its parts are built on first use."""
        if stage not in HISTORY_STAGES:
            raise ValueError(f"unknown scoring stage {stage!r}; one of {', '.join(HISTORY_STAGES)}")
        cache = self.__dict__.setdefault("_histories", {})
        if stage not in cache:
            parts = HISTORY_STAGES[stage]
            cache[stage] = History(
                lambda: _binary_sum([self.matrix(p) for p in (("train", "valid", "test") if parts == ("all",) else parts)]),
                lambda: self.sequences(parts), stage=stage)
        return cache[stage]

    def sequences(self, stages: tuple[str, ...] = ("train",)) -> tuple[np.ndarray, np.ndarray]:
        """Interactions of the given stages in (user, time) order: returns (indptr, items).

        ``items[indptr[u]:indptr[u+1]]`` is user ``u``'s chronological sequence.
        """
        mask = np.isin(self.labels, [STAGES[s] for s in stages]) if stages != ("all",) else np.ones(len(self.labels), bool)
        order = np.lexsort((self.seq_key[mask], self.users[mask]))
        users = self.users[mask][order]
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=indptr[1:])
        return indptr, self.items[mask][order]

    # persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return write_npz(
            path, users=self.users, items=self.items, labels=self.labels, seq_key=self.seq_key,
            meta=np.array(json.dumps({
                "rule": self.rule, "n_users": self.n_users, "n_items": self.n_items,
                "params": self.params, "fingerprint": self.fingerprint,
            })),
        )

    @classmethod
    def load(cls, path: str | Path, ds: Dataset | None = None) -> "Split":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no saved split at {path}.", file=str(path))
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            split = cls(meta["rule"], meta["n_users"], meta["n_items"], z["users"], z["items"], z["labels"],
                        z["seq_key"], meta.get("params", {}), meta.get("fingerprint", ""))
        if ds is not None and split.fingerprint and split.fingerprint != dataset_fingerprint(ds):
            raise DataError(
                f"the saved split {path} was made from different data than '{ds.name}' holds now "
                "(users, items or interactions changed).", file=str(path),
                fix="train a new run on the current data, or restore the data the run was made from.",
            )
        return split


def dataset_fingerprint(ds: Dataset) -> str:
    """A short hash of ids and interactions: a saved split is only valid for the same data."""
    h = hashlib.sha1()
    h.update(str((ds.n_users, ds.n_items, ds.n_interactions)).encode())
    h.update(np.ascontiguousarray(ds.interactions["user"].to_numpy(np.int64)).tobytes())
    h.update(np.ascontiguousarray(ds.interactions["item"].to_numpy(np.int64)).tobytes())
    h.update("\x1f".join(map(str, ds.item_ids[:1000])).encode())
    return h.hexdigest()[:16]


def _seq_key(ds: Dataset) -> np.ndarray:
    inter = ds.interactions
    if "timestamp" in inter.columns:
        key = inter["timestamp"].to_numpy(np.float64)
        if "order" in inter.columns:  # break timestamp ties by the given order
            o = inter["order"].to_numpy(np.float64)
            key = key + o / (o.max() + 1.0) * 1e-3
        return key
    if "order" in inter.columns:
        return inter["order"].to_numpy(np.float64)
    return np.arange(len(inter), dtype=np.float64)


def _require_order(ds: Dataset, rule: str) -> None:
    if not ds.has_order:
        raise DataError(
            f"split rule '{rule}' needs timestamps or a sequence order, and dataset '{ds.name}' has neither.",
            fix="add a timestamp column, or use --set data.split=mmrec (random per-user split).",
        )


def _within_user_rank(users: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows taken in ``order`` (a permutation), each row's rank inside its user and the user's count."""
    u_sorted = users[order]
    counts = np.bincount(users)
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    rank_sorted = np.arange(len(order)) - starts[u_sorted]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = rank_sorted
    return rank, counts[users]


def _count_rule_labels(rank: np.ndarray, n: np.ndarray, ratios: tuple[float, float, float]) -> np.ndarray:
    """MMRec's per-user counts: n < 10 -> 1 valid + 1 test; else int(n*(rv+rt)) split valid/test."""
    _, rv, rt = ratios
    vt = np.floor(n * (rv + rt) + 1e-9).astype(np.int64)
    val = np.floor(vt * (rv / (rv + rt)) + 1e-9).astype(np.int64)
    small = n < 10
    vt = np.where(small, 2, vt)
    val = np.where(small, 1, val)
    n_train = n - vt
    labels = np.where(rank < n_train, TRAIN, np.where(rank < n_train + val, VALID, TEST)).astype(np.int8)
    labels[n == 1] = TRAIN
    return labels


@SPLIT_RULES.register("given")
def split_given(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    if not ds.has_given_split:
        raise DataError(
            f"dataset '{ds.name}' has no split of its own (no x_label / train-valid-test files).",
            fix="choose a rule: --set data.split=mmrec|user_temporal|global_temporal|loo|cold_items.",
        )
    return ds.interactions["label"].to_numpy(np.int8)


@SPLIT_RULES.register("mmrec", aliases=("random",))
def split_mmrec(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    users = ds.interactions["user"].to_numpy()
    rng = np.random.default_rng(cfg.split_seed)
    perm = rng.permutation(len(users))
    order = perm[np.argsort(users[perm], kind="stable")]
    rank, n = _within_user_rank(users, order)
    return _count_rule_labels(rank, n, cfg.split_ratios)


@SPLIT_RULES.register("user_temporal")
def split_user_temporal(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    _require_order(ds, "user_temporal")
    users = ds.interactions["user"].to_numpy()
    order = np.lexsort((_seq_key(ds), users))
    rank, n = _within_user_rank(users, order)
    return _count_rule_labels(rank, n, cfg.split_ratios)


@SPLIT_RULES.register("global_temporal")
def split_global_temporal(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    if not ds.has_timestamps:
        raise DataError(f"split rule 'global_temporal' needs timestamps; dataset '{ds.name}' has none.",
                        fix="use --set data.split=mmrec or user_temporal.")
    ts = ds.interactions["timestamp"].to_numpy(np.float64)
    r = np.asarray(cfg.split_ratios) / sum(cfg.split_ratios)
    q1, q2 = np.quantile(ts, np.cumsum(r)[:2])
    return np.where(ts < q1, TRAIN, np.where(ts < q2, VALID, TEST)).astype(np.int8)


@SPLIT_RULES.register("loo", aliases=("leave_one_out",))
def split_loo(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    _require_order(ds, "loo")
    users = ds.interactions["user"].to_numpy()
    order = np.lexsort((_seq_key(ds), users))
    rank, n = _within_user_rank(users, order)
    labels = np.full(len(users), TRAIN, dtype=np.int8)
    labels[(rank == n - 1) & (n >= 2)] = TEST
    labels[(rank == n - 2) & (n >= 3)] = VALID
    return labels


@SPLIT_RULES.register("cold_items", aliases=("cold",))
def split_cold_items(ds: Dataset, cfg: DataConfig) -> np.ndarray:
    items = ds.interactions["item"].to_numpy()
    active = np.unique(items)
    rng = np.random.default_rng(cfg.split_seed)
    n_cold = max(2, int(round(len(active) * cfg.cold_item_ratio)))
    if n_cold >= len(active):
        raise DataError(f"cold_item_ratio {cfg.cold_item_ratio} leaves no training items.",
                        fix="lower data.cold_item_ratio.")
    cold = rng.choice(active, size=n_cold, replace=False)
    half = n_cold // 2
    label_of_item = np.full(ds.n_items, TRAIN, dtype=np.int8)
    label_of_item[cold[:half]] = VALID
    label_of_item[cold[half:]] = TEST
    return label_of_item[items]


def make_split(ds: Dataset, cfg: DataConfig) -> Split:
    """Apply the configured rule (unset: ``given`` when the data has labels, else ``data.default_split``)."""
    rule = cfg.split or ("given" if ds.has_given_split else cfg.default_split)
    labels = SPLIT_RULES.get(rule)(ds, cfg)
    split = Split(
        rule=SPLIT_RULES.canonical(rule), n_users=ds.n_users, n_items=ds.n_items,
        users=ds.interactions["user"].to_numpy(), items=ds.interactions["item"].to_numpy(),
        labels=labels, seq_key=_seq_key(ds),
        params={"split_seed": cfg.split_seed, "split_ratios": list(cfg.split_ratios),
                "cold_item_ratio": cfg.cold_item_ratio},
        fingerprint=dataset_fingerprint(ds),
    )
    check_split(split, ds.name, cfg.filter_cold_users)
    return split


def check_split(split: Split, name: str, filter_cold_users: bool = True) -> None:
    """Empty parts are errors; evaluation users without training interactions are reported."""
    counts = split.counts()
    for stage, n in counts.items():
        if n == 0:
            raise DataError(
                f"the {stage} part of the '{split.rule}' split of '{name}' is empty "
                f"(train {counts['train']}, valid {counts['valid']}, test {counts['test']}).",
                fix="choose another split rule (--set data.split=...) or check the x_label column.",
            )
    train_users = np.diff(split.train.indptr) > 0
    for stage in ("valid", "test"):
        with_truth = np.diff(split.matrix(stage).indptr) > 0
        cold = int((with_truth & ~train_users).sum())
        if cold:
            action = "they are left out of evaluation" if filter_cold_users else "they are evaluated"
            log.warning("%s: %d %s users have no training interaction; %s (data.filter_cold_users).",
                        name, cold, stage, action)
        if not (with_truth & (train_users | (not filter_cold_users))).any():
            raise DataError(f"no {stage} user of '{name}' has a training interaction, so nothing can be evaluated.",
                            fix="use a per-user split rule such as --set data.split=mmrec.")
