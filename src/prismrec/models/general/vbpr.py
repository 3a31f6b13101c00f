"""VBPR: matrix factorisation whose item factors include a linear projection of the item features.

He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016, as
implemented in MMRec (``src/models/vbpr.py``). The paper's predictor (Eq. 2) is
``x_ui = alpha + beta_u + beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i``; MMRec keeps
only the two inner products, written as one:

* item ``q_i = [gamma_i ; E f_i]`` (ID embedding of size d, projection of the features to size d),
  where ``f_i`` is the concatenation of every modality's feature (MMRec: text then image);
* user ``p_u = [gamma_u ; theta_u]`` (one table of size 2d);
* score ``p_u . q_i``; loss BPR (the paper's "Model Learning Using BPR") plus ``reg_weight`` times
  MMRec's ``EmbLoss`` (sum of the Frobenius norms of the batch's ``p_u, q_i, q_j`` over the batch size).

``E f_i`` over the concatenation equals ``sum_m E_m f_i^m + b``; each block ``E_m`` is a
:class:`MaskedProjection`, so an item without modality ``m`` gets a learned vector for that block
instead of ``E_m . 0``. :class:`ModalityProjections` is the per-modality feature table + projection
that FREEDOM and BM3 use as well.
"""

from __future__ import annotations

from typing import ClassVar

import math

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_norm_reg
from ..layers import ModalityProjections, id_table


@MODELS.register("vbpr")
class VBPR(DotProductRecommender):
    """VBPR as in MMRec: [ID ; projected features] items, 2d users, BPR; see the module docstring."""

    min_modalities = 1

    #: MMRec configs/model/VBPR.yaml: reg_weight [2.0, 1.0, 0.1, .., 1e-5] (docs/models/vbpr.md)
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE,
                                    "reg_weight": FloatRange(1e-5, 2.0, log=True)}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="d: size of gamma_i and of E f_i (users have 2d)")
        reg_weight: float = Field(2.0, ge=0, description="weight of MMRec's EmbLoss on batch p_u, q_i, q_j")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, 2 * d)
        self.item_embedding = id_table(self.n_items, d)
        self.features = ModalityProjections(data.modalities, d, bias=False)
        self.feature_bias = nn.Parameter(torch.zeros(d))
        # MMRec: one Linear over the concatenation, Xavier-normal (fan_in = all feature dims), bias 0
        std = math.sqrt(2.0 / (self.features.in_dim() + d))
        for layer in self.features.linears():
            nn.init.normal_(layer.weight, 0.0, std)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``q_i = [gamma_i ; sum_m E_m f_i^m + b]`` for ``items`` (all items when None)."""
        ids = self.item_embedding if items is None else self.item_embedding[items]
        feats = sum(self.features(n, items) for n in self.features.names) + self.feature_bias
        return torch.cat([ids, feats], dim=-1)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.user_embedding[batch["users"]]
        pos, neg = self.item_vectors(batch["pos_items"]), self.item_vectors(batch["neg_items"])
        rank = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        reg = l2_norm_reg(u, pos, neg)
        return {"loss": rank + self.config.reg_weight * reg, "bpr": rank, "reg": reg}

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        feature = [*self.features.projection_parameters(), self.feature_bias]
        return {"id": [self.item_embedding], "feature": feature}

    def extra_info(self) -> dict[str, object]:
        return {"modalities": {n: self.features.tables[n].dim for n in self.features.names},
                "missing_features": {n: self.features.tables[n].n_missing for n in self.features.names}}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding, self.item_vectors()
