"""The contract every recommender follows, and the registry they join.

A model is a small ``torch.nn.Module`` with a typed ``Config`` and a few methods::

    @MODELS.register("mymodel")
    class MyModel(DotProductRecommender):
        class Config(ModelConfig):
            embedding_size: int = 64

        def __init__(self, config, data: TrainingData): ...   # build parameters and graphs
        def loss(self, batch) -> Tensor | dict[str, Tensor]   # one training step's loss
        def user_item_vectors(self, history=None)              # final (users, items) vectors

Training. The trainer feeds ``loss`` with the batches named by ``sampler`` (``"bpr"``: users, positive
and negative items; ``"positives"``: users and positive items) or by ``build_sampler``; it calls
``on_epoch_start`` before each epoch. Everything a model learns lives in its ``state_dict`` so
checkpoints restore it exactly.

Scoring (the contract evaluation, ``recommend``, export and serving use, and nothing else):

* ``prepare_scoring(history)`` computes what ``score`` reuses across user chunks. ``history``
  (:class:`~prismrec.data.split.History`) is what is known about every user at that point: train for
  validation, train + valid for test, everything when serving (``split.history(stage)``); ``None``
  keeps the last one given (the training history at first). General models score from what they
  learned and ignore it; sequential models encode it.
* ``score(users)`` is ``(len(users), n_items)``.
* ``user_item_vectors(history)`` (``dot_product = True``): ``(U, d)`` and ``(I, d)`` with
  ``score(u) == users[u] @ items.T`` exactly, biases folded into the vectors (as Cornac's
  ``ANNMixin``). :class:`DotProductRecommender` builds ``prepare_scoring``/``score`` from it.
* ``query_vectors(users)`` and ``item_vectors()`` (``dot_product = True``, after ``prepare_scoring``):
  the same vectors for a chunk of users and for the catalogue, ``score(u) == query_vectors(u) @
  item_vectors().T``; evaluation multiplies them tile by tile of items (sequential models encode the
  chunk's histories once for all tiles).
* ``place_items(features)`` (``can_place_items()``): vectors for items that are not in the catalogue,
  from their content alone, in the space of ``user_item_vectors``' items.
* Sequential models add ``session_vectors(sessions)`` (query vectors of arbitrary sessions).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from ..config import StrictConfig
from ..data.split import History
from ..data.training import TrainingData
from ..errors import PrismrecError
from ..registry import Registry
from ..search_space import LEARNING_RATE

Batch = dict[str, torch.Tensor]


class ModelConfig(StrictConfig):
    """Base of every model's config; subclasses add their hyper-parameters with defaults."""


class Recommender(nn.Module):
    """Base class; see the module docstring for the contract."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    sampler: ClassVar[str] = "bpr"
    trainable: ClassVar[bool] = True
    family: ClassVar[str] = "general"
    #: hyper-parameters ``prismrec tune`` searches (``prismrec.search_space``): the model's own keys bare,
    #: ``train.KEY`` for training settings; subclasses declare theirs, with the source, next to their Config
    search_space: ClassVar[dict[str, Any]] = {"train.learning_rate": LEARNING_RATE}

    @classmethod
    def resolve_run_settings(cls, params: Any, seed: int) -> None:
        """Fill settings that follow the run (called once the configuration is resolved); e.g. AlignRec's
        stage-1 seed follows the run seed unless it is set."""
    min_modalities: ClassVar[int] = 0
    registry_name: ClassVar[str] = ""
    #: family defaults for the train / data sections, applied before config files and overrides
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: ModelConfig, data: TrainingData):
        super().__init__()
        self.config = config
        self.n_users = data.n_users
        self.n_items = data.n_items

    # training --------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss of one batch; a dict must hold ``"loss"`` (the total) and may hold its terms."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Hook run before each training epoch (1-based)."""

    def build_sampler(self, data: TrainingData, train_cfg: Any) -> Any:
        """A custom batch source (an object with ``epoch(rng, batch_size, device)`` and
        ``n_batches(batch_size)``), or None to use the sampler named by ``sampler``."""
        return None

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups whose gradient norms the trainer logs: ``{"id": [...], "feature": [...]}``.

        Models that have both item ID embeddings and feature projections return both groups, and the
        trainer logs the ratio ||grad id|| / ||grad feature|| (LIRDRec's argument, Sec. 3).
        """
        return {}

    # scoring ---------------------------------------------------------------------------------------
    #: True when ``score`` is the dot product of ``user_item_vectors`` (exportable for serving)
    dot_product: ClassVar[bool] = False

    @torch.no_grad()
    def prepare_scoring(self, history: History | None = None) -> None:
        """Compute whatever ``score`` reuses across user chunks, given what is known (``history``)."""

    def score(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item for each user in ``users``: shape ``(len(users), n_items)``. Here, for
        ``dot_product`` models: ``query_vectors(users) @ item_vectors().T`` (written into ``out`` when given,
        :func:`dot_scores`); other models override it."""
        return dot_scores(self.query_vectors(users), self.item_vectors(), out)

    def clear_scoring(self) -> None:
        """Drop what ``prepare_scoring`` cached (called when the model goes back to training)."""

    def train(self, mode: bool = True) -> "Recommender":
        if mode:
            self.clear_scoring()
        return super().train(mode)

    def user_item_vectors(self, history: History | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (U, d), items (I, d))`` whose dot products are this model's scores."""
        raise PrismrecError(f"model {type(self).__name__} does not score by a dot product of user and item "
                            "vectors, so it cannot be exported for serving.")

    def query_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``(len(users), d)`` vectors whose products with :meth:`item_vectors` are the users' scores
        (``dot_product`` models, after ``prepare_scoring``)."""
        self.user_item_vectors()  # raises the model's own explanation
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """``(n_items, d)``: the item side of :meth:`query_vectors` (``dot_product`` models)."""
        self.user_item_vectors()
        raise NotImplementedError

    def can_place_items(self) -> bool:
        """True when :meth:`place_items` can embed new items from their content."""
        return False

    def place_items(self, features: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
        """Item vectors ``(n, d)`` for ``n`` new items from their features: ``{modality: (values (n, dim),
        available (n,) bool)}``; a modality that is absent or unavailable is missing for that item."""
        raise PrismrecError(f"model {type(self).__name__} cannot place new items from their content.")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def memory_hint(self) -> dict[str, int]:
        """Bytes of the largest transient tensors of one training step (printed before training)."""
        return {}

    def extra_info(self) -> dict[str, Any]:
        """Model-specific facts worth recording in metrics.json (e.g. chosen DCT mode)."""
        return {}


class DotProductRecommender(Recommender):
    """A model whose scores are ``<user vector, item vector>``: it implements ``user_item_vectors`` and
    gets ``prepare_scoring`` (the vectors, computed once per evaluation) and ``score`` from here."""

    dot_product: ClassVar[bool] = True

    def __init__(self, config: ModelConfig, data: TrainingData):
        super().__init__(config, data)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def user_item_vectors(self, history: History | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def prepare_scoring(self, history: History | None = None) -> None:
        self._cache = self.user_item_vectors(history)

    def clear_scoring(self) -> None:
        self._cache = None

    def query_vectors(self, users: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        return self._cache[0][users]

    def item_vectors(self) -> torch.Tensor:
        if self._cache is None:
            self.prepare_scoring()
        return self._cache[1]


def dot_scores(users: torch.Tensor, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``users @ items.T``; ``out`` (at least that many rows and columns, the vectors' dtype and device)
    receives it, so evaluation reuses one buffer for every chunk instead of allocating each (a fresh
    buffer per chunk costs page faults: ~2x slower). An ``out`` that does not fit is ignored."""
    if out is None or out.dtype != users.dtype or out.device != users.device or out.shape[0] < len(users) \
            or out.shape[1] < len(items):
        return users @ items.T
    return torch.mm(users, items.T, out=out[:len(users), :len(items)])


MODELS: Registry[type[Recommender]] = Registry("model")


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR (Rendle et al., UAI'09, Eq. 6): ``mean(-log sigmoid(s_pos - s_neg))`` (softplus form)."""
    return nn.functional.softplus(neg - pos).mean()


def l2_norm_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """MMRec's ``EmbLoss``: sum of the Frobenius norms (not squared) divided by the batch size."""
    return sum(torch.linalg.vector_norm(t) for t in tensors) / tensors[-1].shape[0]


def l2_sq_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """LightGCN's regulariser (Eq. 15): ``0.5 * sum ||e||^2`` over the batch, divided by the batch size."""
    return 0.5 * sum(t.pow(2).sum() for t in tensors) / tensors[-1].shape[0]
