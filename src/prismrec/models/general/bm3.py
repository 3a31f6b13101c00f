"""BM3: self-supervised multimodal recommendation without negatives, from dropout views.

Zhou et al., "Bootstrap Latent Representations for Multi-modal Recommendation", WWW 2023; official
code ``enoche/BM3`` = MMRec ``src/models/bm3.py``. Batches are (user, positive item) pairs only.

* Encoder: LightGCN (mean of layers 0..L, ``n_layers``) on the normalised user-item graph from the ID
  embeddings; items add their layer-0 embedding: ``h_u = e_u^LGCN``, ``h_i = e_i^LGCN + e_i``. Each
  modality is projected, ``h_i^m = W_m f_i^m + b_m``, to the same size.
* Contrastive view generator: the target view of any representation ``h`` is ``sg(dropout(h, p))``
  (stop-gradient, no target network); the online view is the shared predictor ``f_p(h)`` (a Linear).
* Multi-modal contrastive loss, with ``c(a, b) = 1 - mean cos(a, b)`` over the batch:
  - graph reconstruction: ``c(f_p(h_u), sg(h~_i)) + c(f_p(h_i), sg(h~_u))``;
  - inter-modality alignment: ``sum_m c(f_p(h_i^m), sg(h~_i))``;
  - intra-modality masked loss: ``sum_m c(f_p(h_i^m), sg(h~_i^m))``;
  total ``rec + cl_weight (align + masked) + reg_weight * (||H_u|| + ||H_i||) / n_items`` (MMRec's
  ``EmbLoss`` on the full propagated user and item matrices, not the batch).
* Score ``f_p(h_u) . f_p(h_i)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, l2_norm_reg
from ..layers import ModalityProjections, id_table


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean_r cos(online_r, target_r)``; the target carries no gradient."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


@MODELS.register("bm3")
class BM3(DotProductRecommender):
    """BM3: LightGCN + feature projections, trained with dropout views and cosine losses."""

    sampler = "positives"
    min_modalities = 1

    #: MMRec BM3.yaml: n_layers [1, 2], dropout [0.3, 0.5], reg_weight [0.1, 0.01] (cl_weight fixed)
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "n_layers": IntRange(1, 2),
                                    "dropout": Choice((0.3, 0.5)), "reg_weight": Choice((0.1, 0.01))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="ID embeddings, feature projections and predictor")
        n_layers: int = Field(1, ge=0, description="LightGCN layers")
        dropout: float = Field(0.5, ge=0, lt=1, description="dropout rate that makes the target views")
        reg_weight: float = Field(0.1, ge=0, description="weight of EmbLoss on the propagated embeddings")
        cl_weight: float = Field(2.0, ge=0, description="weight of the inter- and intra-modality losses")
        train_features: bool = Field(True, description="train the raw feature tables too (MMRec does)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.predictor = nn.Linear(d, d)
        self.features = ModalityProjections(data.modalities, d, finetune=config.train_features)
        for layer in [self.predictor, *self.features.linears()]:
            nn.init.xavier_normal_(layer.weight)  # MMRec: Xavier-normal weights, torch's default biases
        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``h_u`` and ``h_i = e_i^LGCN + e_i`` for all users and items."""
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        out = propagate(self.adj, ego, self.config.n_layers, combine="mean")
        return out[: self.n_users], out[self.n_users:] + self.item_embedding

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.config.dropout
        users, items = self.forward()
        u, i = batch["users"], batch["pos_items"]
        with torch.no_grad():  # target views: dropout on the whole matrix, as MMRec, then the batch rows
            u_target, i_target = F.dropout(users, p)[u], F.dropout(items, p)[i]
        rec = (cosine_loss(self.predictor(users[u]), i_target)
               + cosine_loss(self.predictor(items[i]), u_target))
        # features of each distinct batch item once, so repeated items share one dropout mask (as MMRec)
        uniq, inv = torch.unique(i, return_inverse=True)
        align = masked = torch.zeros((), device=users.device)
        for name in self.features.names:
            h_m = self.features(name, uniq)
            online = self.predictor(h_m)[inv]
            align = align + cosine_loss(online, i_target)
            masked = masked + cosine_loss(online, F.dropout(h_m.detach(), p)[inv])
        reg = l2_norm_reg(users, items)
        total = rec + self.config.reg_weight * reg + self.config.cl_weight * (align + masked)
        return {"loss": total, "reconstruction": rec, "alignment": align, "masked": masked, "reg": reg}

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.item_embedding], "feature": self.features.projection_parameters()}

    def memory_hint(self) -> dict[str, int]:
        n, d = self.n_users + self.n_items, self.config.embedding_size
        return {"propagation (forward + backward)": 3 * (self.config.n_layers + 1) * n * d * 4,
                "dropout target views": n * d * 4}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides through the predictor (MMRec's ``full_sort_predict``)."""
        users, items = self.forward()
        return self.predictor(users), self.predictor(items)
