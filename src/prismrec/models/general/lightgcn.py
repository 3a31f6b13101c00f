"""LightGCN: linear propagation of ID embeddings on the normalised user-item graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020. Layer rule ``E^{(k+1)} = D^{-1/2} A D^{-1/2} E^{(k)}`` (Eq. 7, matrix form), final
embedding the mean of layers 0..K (Eq. 8 with alpha_k = 1/(K+1)), score ``e_u . e_i`` (Eq. 5),
BPR loss on the propagated embeddings and L2 on the layer-0 embeddings of the batch (Eq. 15).
"""

from __future__ import annotations

from typing import ClassVar

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_norm_reg, l2_sq_reg
from ..layers import id_table


@MODELS.register("lightgcn", aliases=("lgcn",))
class LightGCN(DotProductRecommender):
    """LightGCN with BPR; see the module docstring."""

    #: MMRec LightGCN.yaml: n_layers [1, 2, 3, 4], reg_weight [1e-2 .. 1e-6]; both regulariser forms
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "n_layers": IntRange(1, 4),
                                    "reg_weight": FloatRange(1e-6, 1e-2, log=True),
                                    "reg_type": Choice(("mmrec", "l2"))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1)
        n_layers: int = Field(3, ge=0)
        reg_weight: float = Field(1e-4, ge=0)
        reg_type: Literal["mmrec", "l2"] = Field(
            "mmrec", description="'mmrec': sum of norms / batch (MMRec EmbLoss); 'l2': Eq. 15's squared norm"
        )

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)
        self._reg = l2_norm_reg if config.reg_type == "mmrec" else l2_sq_reg

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (users, items) embeddings, Eq. 7-8."""
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        out = propagate(self.adj, ego, self.config.n_layers, combine="mean")
        return out[: self.n_users], out[self.n_users:]

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        users, items = self.forward()
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue = users[u]
        rank = bpr_loss((ue * items[pos]).sum(-1), (ue * items[neg]).sum(-1))
        reg = self._reg(self.user_embedding[u], self.item_embedding[pos], self.item_embedding[neg])
        return {"loss": rank + self.config.reg_weight * reg, "bpr": rank, "reg": reg}

    def memory_hint(self) -> dict[str, int]:
        n = self.n_users + self.n_items
        return {"propagation (forward + backward)": 3 * (self.config.n_layers + 1) * n * self.config.embedding_size * 4}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward()
