"""MGCN: purified modality features, a user-item view and item-item views, an attentive fuser, and InfoNCE.

Yu, Li, Li, Shen, "Multi-View Graph Convolutional Network for Multimedia Recommendation", ACM MM 2023
(arXiv 2308.03588); official code ``demonph10/MGCN`` (``src/models/mgcn.py``, the same file as MMRec's
``src/models/mgcn.py``), config ``src/configs/model/MGCN.yaml``. Equations as the code computes them,
for modalities ``m = 1..M`` (the code: image and text); the paper's PDF was not readable here, so
components are named as in the paper and the equations follow the code (see docs/models/mgcn.md):

* behaviour-guided purifier: ``x_i^m = W_m f_i^m + b_m`` (``f`` fine-tuned), ``ē_i^m = e_i * sigmoid(W_g^m x_i^m + b_g^m)``;
* user-item view: ``[E_u; E_i]_id = mean_{l=0..n_ui_layers} Â^l [E_u; E_i]`` (LightGCN);
* item-item views: ``ē_I^m <- S^m ē_I^m`` (``n_layers`` times) on the frozen kNN graph of
  the raw features (top-``knn_k`` cosine, similarity-weighted, ``D^{-1/2} S D^{-1/2}``), users
  ``ē_U^m = R̂ ē_I^m`` with ``R̂`` the user-item block of ``Â``;
* behaviour-aware fuser: ``α = softmax_m(q^T tanh(W_q ē^m + b_q))``, ``common = Σ_m α_m ē^m``,
  ``sep^m = sigmoid(W_p^m e_id + b_p^m) * (ē^m − common)``, ``side = (Σ_m sep^m + common) / (M + 1)``;
* prediction: ``e = e_id + side``, ``ŷ_ui = e_u . e_i``;
* loss (BPR, L2, self-supervised auxiliary task): ``BPR + reg_weight * 0.5 (||e_u||² + ||e_i+||² + ||e_i−||²) / batch_size
  + cl_loss * (NCE_0.2(side_i+, id_i+) + NCE_0.2(side_u, id_u))``.

The kNN graphs come from :func:`prismrec.graphs.knn.knn_graph`; propagation from :func:`propagate`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...graphs.knn import knn_graph
from ...search_space import LEARNING_RATE, Choice
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_sq_reg
from ..layers import ModalityProjections, id_table, info_nce


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@MODELS.register("mgcn")
class MGCN(DotProductRecommender):
    """MGCN (MM'23): behaviour-guided purifier, user-item + item-item views, behaviour-aware fuser, InfoNCE."""

    min_modalities = 1
    #: MGCN.yaml: ``learning_rate_scheduler: [0.96, 50]`` (lr 1e-3, batch 2048 are our train defaults)
    defaults = {"train": {"lr_scheduler": [0.96, 50]}}

    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "cl_loss": Choice((0.001, 0.01, 0.1))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="ID embeddings, feature projections, gates")
        n_ui_layers: int = Field(2, ge=0, description="LightGCN layers of the user-item view (layer mean)")
        n_layers: int = Field(1, ge=0, description="propagation rounds on each modality's item-item graph")
        knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's kNN graph")
        reg_weight: float = Field(1e-4, ge=0, description="weight of the L2 term on the batch's final embeddings")
        reg_batch_size: int = Field(
            0, ge=0, description="divisor of the L2 term; 0 = the configured train.batch_size (the code's "
                                 "self.batch_size, also for the last, smaller batch)")
        cl_loss: float = Field(0.01, ge=0, description="lambda_C, weight of the InfoNCE term (grid 0.001, 0.01, 0.1)")
        temperature: float = Field(0.2, gt=0, description="InfoNCE temperature (hard-coded 0.2 in the code)")
        train_features: bool = Field(True, description="fine-tune the raw feature tables (freeze=False in the code)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.features = ModalityProjections(data.modalities, d, finetune=config.train_features)
        names = self.features.names
        self.gates = nn.ModuleDict({n: _gate(d) for n in names})          # behaviour-guided purifier
        self.prefer = nn.ModuleDict({n: _gate(d) for n in names})         # fuser: modality-specific preference gates
        self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))  # fuser: attention
        adj = normalized_bipartite(data.train)
        self.adj = SparseOperator(adj, symmetric=True)
        self.r_hat = SparseOperator(adj[: self.n_users, self.n_users:], symmetric=False)
        self.item_graphs = nn.ModuleDict({n: SparseOperator(self.item_graph(data.modalities[n], config.knn_k),
                                                            symmetric=False) for n in names})
        self._reg_divisor = config.reg_batch_size or None

    @staticmethod
    def item_graph(modality, k: int) -> sp.csr_matrix:
        """``S^m``: similarity-weighted top-``k`` cosine graph, ``D^{-1/2} S D^{-1/2}`` (the code's
        ``build_knn_normalized_graph(norm_type='sym')``). Items without the feature are nobody's neighbour
        and keep their own purified vector (an identity row), so the learned missing vector is what
        their modality view carries instead of a zero row."""
        graph = knn_graph(modality.values, k, weighted=True, norm="sym", available=modality.available)
        missing = ~np.asarray(modality.available, dtype=bool)
        if missing.any():
            graph = (graph + sp.diags(missing.astype(np.float32))).tocsr()
        return graph

    def build_sampler(self, data: TrainingData, train_cfg: Any) -> None:
        """No custom sampler; records the configured batch size, the code's divisor of the L2 term."""
        if not self.config.reg_batch_size:
            self._reg_divisor = train_cfg.batch_size
        return None

    # ------------------------------------------------------------------------------------------- model
    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(final, user-item view ``e_id``, fused side view), each ``(U + I) x d``."""
        cfg = self.config
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        id_view = propagate(self.adj, ego, cfg.n_ui_layers, combine="mean")
        views = []
        for n in self.features.names:
            purified = self.item_embedding * self.gates[n](self.features(n))
            items = propagate(self.item_graphs[n], purified, cfg.n_layers, combine="last")
            views.append(torch.cat([self.r_hat(items), items], dim=0))
        stacked = torch.stack(views, dim=1)                                  # (U+I, M, d)
        alpha = torch.softmax(self.query_common(stacked).squeeze(-1), dim=-1)  # (U+I, M)
        common = (alpha.unsqueeze(-1) * stacked).sum(dim=1)
        side = common
        for j, n in enumerate(self.features.names):
            side = side + self.prefer[n](id_view) * (stacked[:, j] - common)
        side = side / (len(views) + 1)
        return id_view + side, id_view, side

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, n_u = self.config, self.n_users
        final, id_view, side = self.forward()
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue, pe, ne = final[u], final[n_u + pos], final[n_u + neg]
        rank = bpr_loss((ue * pe).sum(-1), (ue * ne).sum(-1))
        reg = l2_sq_reg(ue, pe, ne) * (len(u) / (self._reg_divisor or len(u)))
        cl = (info_nce(side[n_u + pos], id_view[n_u + pos], cfg.temperature)
              + info_nce(side[u], id_view[u], cfg.temperature))
        total = rank + cfg.reg_weight * reg + cfg.cl_loss * cl
        return {"loss": total, "bpr": rank, "reg": reg, "cl": cl}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        final = self.forward()[0]
        return final[: self.n_users], final[self.n_users:]

    # ---------------------------------------------------------------------------------------- reporting
    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.user_embedding, self.item_embedding],
                "feature": [*self.features.projection_parameters(), *self.gates.parameters()]}

    def memory_hint(self) -> dict[str, int]:
        n, d, m = self.n_users + self.n_items, self.config.embedding_size, len(self.features.names)
        return {"views (forward + backward)": 3 * (self.config.n_ui_layers + 1 + 3 * m) * n * d * 4,
                "feature projection of all items": 2 * self.n_items * (self.features.in_dim() + 2 * m * d) * 4}

    def extra_info(self) -> dict[str, Any]:
        return {"item_graph_edges": {n: g.nnz for n, g in self.item_graphs.items()},
                "items_without_feature": {n: int((~self.features.tables[n].available).sum())
                                          for n in self.features.names}}
