"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.
Score ``s(u, i) = p_u . q_i (+ b_i)`` (Eq. 1 of the MF model, plus an optional item bias as in
Cornac's BPR); loss ``-log sigmoid(s(u,i) - s(u,j))`` over sampled triples (Eq. 6) plus an L2 term.
"""

from __future__ import annotations

from typing import ClassVar

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_norm_reg, l2_sq_reg
from ..layers import id_table


@MODELS.register("bpr", aliases=("bprmf", "mf"))
class BPR(DotProductRecommender):
    """Matrix factorisation with the BPR loss; see the module docstring."""

    #: MMRec configs/model/BPR.yaml: reg_weight in [2.0 .. 1e-5]; both regulariser forms (docs/models/bpr.md)
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE,
                                    "reg_weight": FloatRange(1e-5, 2.0, log=True),
                                    "reg_type": Choice(("mmrec", "l2"))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1)
        reg_weight: float = Field(1e-4, ge=0, description="weight of the L2 term")
        reg_type: Literal["mmrec", "l2"] = Field(
            "mmrec", description="'mmrec': sum of norms / batch (MMRec EmbLoss); 'l2': 0.5 sum of squares / batch"
        )
        item_bias: bool = Field(False, description="add a learned item bias b_i (Cornac's BPR has one)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d, "xavier_normal")
        self.item_embedding = id_table(self.n_items, d, "xavier_normal")
        self.item_bias = nn.Parameter(torch.zeros(self.n_items)) if config.item_bias else None
        self._reg = l2_norm_reg if config.reg_type == "mmrec" else l2_sq_reg

    def _item_score(self, u: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        s = (u * self.item_embedding[items]).sum(-1)
        return s + self.item_bias[items] if self.item_bias is not None else s

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        u = self.user_embedding[batch["users"]]
        pos, neg = batch["pos_items"], batch["neg_items"]
        rank = bpr_loss(self._item_score(u, pos), self._item_score(u, neg))
        reg = self._reg(u, self.item_embedding[pos], self.item_embedding[neg])
        return {"loss": rank + self.config.reg_weight * reg, "bpr": rank, "reg": reg}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``p_u`` and ``q_i``; with an item bias, ``[p_u; 1]`` and ``[q_i; b_i]`` (the bias folded in)."""
        if self.item_bias is None:
            return self.user_embedding, self.item_embedding
        ones = torch.ones(self.n_users, 1, device=self.user_embedding.device)
        return (torch.cat([self.user_embedding, ones], 1),
                torch.cat([self.item_embedding, self.item_bias.unsqueeze(1)], 1))
