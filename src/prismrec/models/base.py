"""The contract every recommender follows, and the registry they join.

A model is a small ``torch.nn.Module`` with a typed ``Config`` and four methods::

    @MODELS.register("mymodel")
    class MyModel(Recommender):
        class Config(ModelConfig):
            embedding_size: int = 64

        def __init__(self, config, data: TrainingData): ...   # build parameters and graphs
        def loss(self, batch) -> Tensor | dict[str, Tensor]   # one training step's loss
        def prepare_scoring(self) -> None                      # cache final embeddings (optional)
        def score(self, users) -> Tensor                       # (len(users), n_items) scores

The trainer feeds ``loss`` with the batches named by ``sampler`` (``"bpr"``: users, positive and
negative items; ``"positives"``: users and positive items for cross-entropy over all items); it
calls ``on_epoch_start`` before each epoch and ``prepare_scoring`` before each evaluation.
Everything a model learns must live in its ``state_dict`` so checkpoints restore it exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from ..config import StrictConfig
from ..data.training import TrainingData
from ..registry import Registry

Batch = dict[str, torch.Tensor]


class ModelConfig(StrictConfig):
    """Base of every model's config; subclasses add their hyper-parameters with defaults."""


class Recommender(nn.Module):
    """Base class; see the module docstring for the contract."""

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    sampler: ClassVar[str] = "bpr"
    trainable: ClassVar[bool] = True
    family: ClassVar[str] = "general"
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
    def use_history(self, stage: str, split: Any) -> None:
        """Called before scoring ``stage`` ('valid', 'test' or 'all'): the interactions known at that point
        are train (valid), train + valid (test) or everything (serving). Sequential models read the users' sequences here;
        general models ignore it (they score from what they learned)."""

    @torch.no_grad()
    def prepare_scoring(self) -> None:
        """Compute whatever ``score`` reuses across user chunks (e.g. propagated embeddings)."""

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user in ``users``: shape ``(len(users), n_items)``."""
        raise NotImplementedError

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
