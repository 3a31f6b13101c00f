"""What every sequential (next-item) recommender shares: histories, prefix batches, softmax losses.

Data. A user's history is their interactions in time order (``Split.sequences``). Training uses
**every prefix** of each training sequence: for ``s_1 .. s_n`` the samples are
``(s_1..s_{t-1}) -> s_t`` for ``t = 2..n`` (UniSRec/RecBole's augmentation), each history cut to its
last ``max_len`` items and **left-padded** with 0; item ``i`` is token ``i + 1``. Causal encoders
(``causal = True``) get the same prefixes from windows of ``max_len + 1`` items trained at every
position in one pass (:class:`WindowSampler`); other encoders get one sample per prefix
(:class:`SequenceSampler`). A window position equals its prefix exactly when the encoder's positions
do not depend on where the prefix ends (GRU4Rec; SASRec with ``positions: from_start``) and the window
holds the whole prefix (``tests/test_sequential_windows.py``).

Evaluation. ``prepare_scoring(history)`` gives the model the sequences known at that point (train for
validation, train + valid for test, everything when serving); ``score(users)`` encodes each user's
last ``max_len`` items. ``session_vectors``/``score_sequences`` encode and score arbitrary sessions
(serving, explanations).

Loss. Full softmax cross-entropy over all items (default; above ``logits_block_bytes`` of logits it is
computed in blocks, so memory stays bounded), or sampled softmax with uniform
negatives (``loss_type: sampled``; the positive is logit 0 among ``num_sampled`` negatives; a
negative equal to the target is masked out).

Family defaults (``defaults``): leave-one-out split when the data has none, repeats kept
(``dedup: none``), NDCG@10 for model selection, cut-offs 5/10/20/50, the validation item masked when
scoring test (it is part of the history). Masking the history is ``train.mask_history`` (on).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar, ContextManager, Iterator, Literal, Sequence

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ...data.split import History
from ...data.training import TrainingData
from ..base import Batch, ModelConfig, Recommender
from ..contrastive import softmax_cross_entropy

PAD = 0


def pad_windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """The last ``max_len`` items of ``items[starts[b]:ends[b]]`` for every ``b``, left-padded with 0.

    Returns tokens (item id + 1), shape ``(len(starts), W)`` with ``W = min(max_len, longest window)``:
    columns that would be padding in every row are not built (positions count from the end, so this
    changes no result, and short-history batches cost a fraction). Vectorised, no Python loop.
    """
    longest = int((ends - starts).max()) if len(starts) else 1
    max_len = max(1, min(max_len, longest))
    pos = ends[:, None] - max_len + np.arange(max_len)[None, :]
    valid = pos >= starts[:, None]
    tokens = items[np.clip(pos, 0, max(len(items) - 1, 0))] + 1 if len(items) else np.zeros_like(pos)
    return np.where(valid, tokens, PAD).astype(np.int64)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   bucket: int = 32) -> Iterator[np.ndarray]:
    """Shuffled batches of sample indices in which samples of similar length travel together.

    The samples are shuffled, cut into chunks of ``bucket`` batches, sorted by length inside each
    chunk, split into batches, and the batches are shuffled: every sample is seen once per epoch,
    and a batch is padded only to its own longest sample.
    """
    perm = rng.permutation(len(lengths))
    chunk = batch_size * bucket
    batches = []
    for c in range(0, len(perm), chunk):
        part = perm[c:c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[s:s + batch_size] for s in range(0, len(part), batch_size)]
    for b in rng.permutation(len(batches)):
        yield batches[b]


class _SampleSource:
    """Size and batch count of a sampler with one sample per entry of ``users``."""

    users: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.users) // batch_size)


class SequenceSampler(_SampleSource):
    """All prefixes of every training sequence, shuffled per epoch, as ``users``, ``seqs``, ``targets``."""

    def __init__(self, indptr: np.ndarray, items: np.ndarray, max_len: int):
        lens = np.diff(indptr)
        users = np.repeat(np.arange(len(lens)), np.maximum(lens - 1, 0))
        # target position t = 1..len-1 inside each user's sequence
        first = np.repeat(indptr[:-1] + 1, np.maximum(lens - 1, 0))
        offset = np.arange(len(users)) - np.repeat(np.cumsum(np.maximum(lens - 1, 0)) - np.maximum(lens - 1, 0),
                                                   np.maximum(lens - 1, 0))
        self.users = users
        self.ends = first + offset           # global index of the target
        self.starts = indptr[:-1][users]
        self.items = items
        self.max_len = max_len

    def epoch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> Iterator[Batch]:
        for idx in length_batches(np.minimum(self.ends - self.starts, self.max_len), batch_size, rng):
            seqs = pad_windows(self.items, self.starts[idx], self.ends[idx], self.max_len)
            yield {"users": torch.as_tensor(self.users[idx], device=device),
                   "seqs": torch.as_tensor(seqs, device=device),
                   "targets": torch.as_tensor(self.items[self.ends[idx]], device=device)}


class WindowSampler(_SampleSource):
    """Each training sequence cut into windows of ``max_len + 1`` items from its end; a batch holds
    ``seqs`` (inputs, left-padded) and ``targets`` (the next item at every position, -1 on padding).

    With a causal encoder, position ``t`` of a window only sees items before it, so training every
    position at once trains on the prefixes of the sequence in one forward pass per window instead of
    one per prefix. It is exactly :class:`SequenceSampler`'s training when (1) the encoder counts
    positions from the oldest visible item (a prefix's items then have the same positions in the window
    as when the prefix is scored; SASRec's ``positions: from_start``, GRU4Rec) and (2) the prefix fits
    in the window: always for sequences of up to ``max_len + 1`` items; in a longer sequence's earlier
    windows, position ``t`` sees only the window's items where the prefix sample would see the last
    ``max_len`` (the last position of every full window is exact).
    """

    def __init__(self, indptr: np.ndarray, items: np.ndarray, max_len: int):
        lens = np.diff(indptr)
        n_win = np.where(lens >= 2, -(-(lens - 1) // max_len), 0)
        users = np.repeat(np.arange(len(lens)), n_win)
        k = np.arange(len(users)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # window index from the end
        self.users = users
        self.ends = indptr[1:][users] - k * max_len          # exclusive end of the targets
        self.starts = indptr[:-1][users]
        self.items = items
        self.max_len = max_len

    def epoch(self, rng: np.random.Generator, batch_size: int, device: torch.device) -> Iterator[Batch]:
        for idx in length_batches(np.minimum(self.ends - self.starts, self.max_len + 1), batch_size, rng):
            ends, starts = self.ends[idx], self.starts[idx]
            seqs = pad_windows(self.items, starts, ends - 1, self.max_len)
            targets = pad_windows(self.items, starts + 1, ends, self.max_len) - 1  # -1 where padded
            yield {"users": torch.as_tensor(self.users[idx], device=device),
                   "seqs": torch.as_tensor(seqs, device=device),
                   "targets": torch.as_tensor(targets, device=device)}


class SequentialConfig(ModelConfig):
    """Settings every sequential model has."""

    max_len: int = Field(50, ge=1, description="history length the model sees (the most recent items)")
    embedding_size: int = Field(64, ge=1)
    loss_type: Literal["ce", "sampled"] = Field("ce", description="full softmax or sampled softmax")
    num_sampled: int = Field(256, ge=1, description="uniform negatives per batch for loss_type=sampled")


class SequentialRecommender(Recommender):
    """Base of the next-item models: subclasses implement ``encode`` and ``item_embeddings``."""

    family: ClassVar[str] = "sequential"
    sampler: ClassVar[str] = "sequence"
    Config: ClassVar[type[ModelConfig]] = SequentialConfig
    defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "data": {"default_split": "loo", "dedup": "none"},
        "train": {"valid_metric": "ndcg@10", "topk": [5, 10, 20, 50], "mask_valid_in_test": True,
                  "batch_size": 256},
    }

    def __init__(self, config: SequentialConfig, data: TrainingData):
        super().__init__(config, data)
        self.max_len = config.max_len
        indptr, items = data.sequences()
        self._history: tuple[np.ndarray, np.ndarray] = (indptr, items)
        self._item_cache: torch.Tensor | None = None

    # to implement ----------------------------------------------------------------------------------
    def input_parts(self, seqs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inputs of the sequence encoder split by source, each ``(B, L, d)``: ``"id"`` for item ID
        embeddings and one entry per modality (its projected features). Attribution
        (:mod:`~prismrec.models.sequential.attribution`) takes gradient x input on each part, so every
        model gets per-item and per-modality contributions from the same code. Default: the parts of
        the model's :class:`~prismrec.models.sequential.layers.ItemTokens` (``self.tokens``)."""
        return self.tokens.parts(seqs)

    def encode_parts(self, parts: dict[str, torch.Tensor], seqs: torch.Tensor, *,
                     all_positions: bool = False) -> torch.Tensor:
        """User representations ``(B, d)`` (or ``(B, L, d)`` with ``all_positions``) from ``input_parts``.
        The default sums the parts and runs :meth:`encode_inputs`."""
        return self.encode_inputs(sum(parts.values()), seqs, all_positions=all_positions)

    def encode_inputs(self, x: torch.Tensor, seqs: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        """The sequence encoder on summed input embeddings ``x`` ``(B, L, d)``."""
        raise NotImplementedError

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """User representations ``(B, d)`` from left-padded token sequences ``(B, max_len)``."""
        return self.encode_parts(self.input_parts(seqs), seqs)

    def item_embeddings(self) -> torch.Tensor:
        """Output embeddings of all items, ``(n_items, d)`` (logits are ``encode(seqs) @ items.T``).
        Default: the token table of ``self.tokens`` without the padding row (shared input/output)."""
        return self.tokens.table()[1:]

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        tokens = getattr(self, "tokens", None)
        return tokens.diagnostic_groups() if tokens is not None else {}

    # training --------------------------------------------------------------------------------------
    #: True when ``encode_positions`` is causal, so windows train every prefix in one pass
    causal: ClassVar[bool] = False

    def encode_positions(self, seqs: torch.Tensor) -> torch.Tensor:
        """Representations at every position ``(B, L, d)`` (causal models only)."""
        return self.encode_parts(self.input_parts(seqs), seqs, all_positions=True)

    @property
    def window_training(self) -> bool:
        """Train on windows (:class:`WindowSampler`, every position in one pass) instead of one sample per
        prefix (:class:`SequenceSampler`): what causal encoders do."""
        return self.causal

    def build_sampler(self, data: TrainingData, train_cfg: Any) -> SequenceSampler | WindowSampler:
        indptr, items = data.sequences()
        return (WindowSampler if self.window_training else SequenceSampler)(indptr, items, self.max_len)

    #: the full softmax holds at most this many bytes of logits at once; a larger batch (rows x items) is
    #: computed in blocks (:func:`~prismrec.models.contrastive.softmax_cross_entropy`, the same loss)
    logits_block_bytes: ClassVar[int] = 256 * 2**20

    def logits_loss(self, h: torch.Tensor, targets: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next item: full softmax (in memory-bounded blocks), or sampled softmax with
        uniform negatives."""
        if self.config.loss_type == "ce":
            return softmax_cross_entropy(h, items, targets, block_bytes=self.logits_block_bytes)
        neg = torch.randint(0, self.n_items, (self.config.num_sampled,), device=h.device)
        pos_logit = (h * items[targets]).sum(-1, keepdim=True)
        neg_logit = h @ items[neg].T
        neg_logit = neg_logit.masked_fill(neg[None, :] == targets[:, None], -1e9)
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return nn.functional.cross_entropy(logits, torch.zeros(len(h), dtype=torch.long, device=h.device))

    def shared_item_tables(self) -> ContextManager[None]:
        """A block in which the item-side tables are computed once (one training step): ``input_parts``
        and ``item_embeddings`` both read the projected features of all items. Models whose item side is
        an :class:`~prismrec.models.sequential.layers.ItemTokens` (``self.tokens``) get it for free."""
        share = getattr(getattr(self, "tokens", None), "shared_tables", None)
        return share() if share is not None else nullcontext()

    def loss(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """Next-item cross-entropy: at the last position (prefix batches) or at every non-padded
        position (window batches of causal models). The item tables are computed once per step."""
        targets = batch["targets"]
        with self.shared_item_tables():
            if targets.dim() == 1:
                return self.logits_loss(self.encode(batch["seqs"]), targets, self.item_embeddings())
            h = self.encode_positions(batch["seqs"])
            keep = targets >= 0
            return self.logits_loss(h[keep], targets[keep], self.item_embeddings())

    # scoring ---------------------------------------------------------------------------------------
    #: ``score(u) == encode(u's history) @ item_embeddings().T``
    dot_product: ClassVar[bool] = True

    def user_sequences(self, users: np.ndarray, history: History | None = None) -> np.ndarray:
        """Left-padded token windows of the histories of ``users`` (the last scoring history by default)."""
        indptr, items = history.sequences if history is not None else self._history
        return pad_windows(items, indptr[users], indptr[users + 1], self.max_len)

    @torch.no_grad()
    def prepare_scoring(self, history: History | None = None) -> None:
        """Keep ``history``'s sequences (the users' inputs) and compute the item table once."""
        if history is not None:
            self._history = history.sequences
        tokens = getattr(self, "tokens", None)
        if hasattr(tokens, "hold_for_scoring"):  # the encoder's inputs read the same feature tables
            tokens.hold_for_scoring()
        self._item_cache = self.item_embeddings()

    def clear_scoring(self) -> None:
        self._item_cache = None
        tokens = getattr(self, "tokens", None)
        if hasattr(tokens, "release"):
            tokens.release()

    def _items(self) -> torch.Tensor:
        return self._item_cache if self._item_cache is not None else self.item_embeddings()

    #: users encoded together when scoring; they are grouped by history length, so a group is padded only
    #: to its own longest history (most histories are far shorter than ``max_len``)
    encode_group: ClassVar[int] = 256

    def encode_users(self, users: np.ndarray, history: History | None = None) -> torch.Tensor:
        """``encode`` of the histories of ``users`` ``(len(users), d)``, in the order given: the users are
        sorted by history length and encoded in groups of ``encode_group``, each group padded only to its
        own longest history (padding changes no result: it is masked, positions do not depend on it)."""
        indptr, _ = history.sequences if history is not None else self._history
        users = np.asarray(users, dtype=np.int64)
        order = np.argsort(np.minimum(indptr[users + 1] - indptr[users], self.max_len), kind="stable")
        out: torch.Tensor | None = None
        for s in range(0, len(order), self.encode_group):
            part = order[s:s + self.encode_group]
            h = self.encode(torch.as_tensor(self.user_sequences(users[part], history), device=self.device))
            if out is None:
                out = h.new_empty((len(users), *h.shape[1:]))
            out[torch.as_tensor(part, device=h.device)] = h
        if out is None:  # no user
            out = self.encode(torch.as_tensor(self.user_sequences(users, history), device=self.device))
        return out

    def query_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """The encoded scoring histories of ``users``."""
        return self.encode_users(users.cpu().numpy()).to(users.device)

    def item_vectors(self) -> torch.Tensor:
        return self._items()

    @torch.no_grad()
    def user_item_vectors(self, history: History | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's encoded history (``history``, else the last scoring history) and the item table."""
        items = self._items()
        users = self.encode_users(np.arange(self.n_users), history) if self.n_users else items.new_zeros(0, items.shape[1])
        return users, items

    def session_vectors(self, sessions: Sequence[Sequence[int]]) -> torch.Tensor:
        """Query vectors ``(len(sessions), d)`` of arbitrary sessions (internal item ids, oldest first)."""
        lens = np.asarray([len(s) for s in sessions])
        flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions]) if lens.sum() else np.zeros(0, np.int64)
        ends = np.cumsum(lens)
        seqs = pad_windows(flat, ends - lens, ends, self.max_len)
        return self.encode(torch.as_tensor(seqs, device=self.device))

    def score_sequences(self, sessions: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores of all items after each session (a list of internal item ids, oldest first)."""
        return self.session_vectors(sessions) @ self._items().T
