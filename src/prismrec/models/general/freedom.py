"""FREEDOM: a frozen multimodal item-item graph and a degree-sensitively pruned user-item graph.

Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023; official code ``enoche/FREEDOM`` = MMRec ``src/models/freedom.py``.

* Frozen item-item graph (Sec. 3.1), built once: per modality the top-``knn_k`` cosine neighbours of
  the raw features (self included), binary edges, ``D^{-1/2} S^m D^{-1/2}`` with ``D`` the row degrees;
  then ``S = sum_m w_m S^m`` (MMRec: ``mm_image_weight`` for image, the rest for text).
* Degree-sensitive edge pruning (Sec. 3.2): before each epoch keep ``int((1 - dropout) |E|)`` training
  edges, sampled without replacement with probability proportional to ``1/sqrt(d_u d_i)``, and
  re-normalise the kept graph as LightGCN's ``A_hat``. Scoring uses the unpruned graph (MMRec).
* Representations (Sec. 3.3): ``h_i = S^L e_i`` (``n_mm_layers``, ID embeddings), LightGCN mean over
  ``n_ui_layers`` on the (pruned) graph; users ``e_u^LGCN``, items ``e_i^LGCN + h_i``; score ``e_u . e_i``.
* Loss (Sec. 3.4): BPR on the final embeddings plus ``reg_weight * sum_m BPR(e_u, W_m f_i^m + b_m)``, a
  BPR term per modality on the projected features (which need the projection size ``embedding_size``).
"""

from __future__ import annotations

from typing import ClassVar

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...graphs.knn import modality_weights, multimodal_knn_graph
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss
from ..layers import ModalityProjections, id_table


def sample_edges(weights: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of ``n_keep`` edges drawn without replacement with probability proportional to ``weights``.

    The exponential-race form of ``torch.multinomial(weights, n_keep)`` (the algorithm torch uses):
    keep the ``n_keep`` largest ``w / E``, ``E ~ Exp(1)``; vectorised, no category limit, global RNG.
    """
    keys = weights / torch.empty_like(weights).exponential_()
    return torch.topk(keys, n_keep, sorted=False).indices


@MODELS.register("freedom")
class FREEDOM(DotProductRecommender):
    """FREEDOM: frozen kNN item graph + degree-sensitive edge pruning; see the module docstring."""

    min_modalities = 1

    #: MMRec FREEDOM.yaml: dropout [0.8, 0.9], reg_weight [0, 1e-5, 1e-4, 1e-3]; the image graph's weight is
    #: searched (FREEDOM.yaml fixes 0.1) so that no modality's share is set by its name
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "dropout": Choice((0.8, 0.9)),
                                    "reg_weight": Choice((0.0, 1e-5, 1e-4, 1e-3)),
                                    "mm_image_weight": FloatRange(0.05, 0.95)}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="ID embeddings and feature projections")
        knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's item graph")
        n_mm_layers: int = Field(1, ge=0, description="propagation steps on the item-item graph")
        n_ui_layers: int = Field(2, ge=0, description="LightGCN layers on the user-item graph")
        reg_weight: float = Field(0.0, ge=0, description="weight of the per-modality feature BPR terms")
        dropout: float = Field(0.8, ge=0, lt=1, description="share of training edges pruned each epoch")
        mm_image_weight: float = Field(0.1, ge=0, le=1, description="weight of the 'image' item graph")
        mm_weighting: Literal["image", "equal"] = Field(
            "image", description="'image': mm_image_weight for 'image', the rest shared; 'equal': 1/M"
        )
        train_features: bool = Field(True, description="train the raw feature tables too (MMRec does)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.features = ModalityProjections(data.modalities, d, finetune=config.train_features)
        self.modality_weights = modality_weights(self.features.names, config.mm_image_weight,
                                                 config.mm_weighting)
        self.mm_adj = SparseOperator(multimodal_knn_graph(data.modalities, config.knn_k, self.modality_weights))
        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)
        self.masked_adj = self.adj
        coo = sp.coo_matrix(data.train)
        self._edges = (coo.row.astype(np.int64), coo.col.astype(np.int64))
        deg_u = np.asarray(data.train.sum(axis=1)).ravel() + 1e-7
        deg_i = np.asarray(data.train.sum(axis=0)).ravel() + 1e-7
        self._edge_weight = torch.from_numpy((deg_u[coo.row] * deg_i[coo.col]) ** -0.5)  # CPU, float64

    # graphs ----------------------------------------------------------------------------------------
    def n_kept_edges(self) -> int:
        """Edges kept per epoch: ``int(|E| (1 - dropout))`` (at least one), as the code's ``degree_len``."""
        return max(1, int(len(self._edge_weight) * (1.0 - self.config.dropout)))

    def on_epoch_start(self, epoch: int) -> None:
        """Degree-sensitive edge pruning (Sec. 3.2): a new sparsified, re-normalised user-item graph."""
        if self.config.dropout <= 0:
            self.masked_adj = self.adj
            return
        keep = sample_edges(self._edge_weight, self.n_kept_edges()).numpy()
        rows, cols = self._edges[0][keep], self._edges[1][keep]
        kept = sp.csr_matrix((np.ones(len(keep), np.float32), (rows, cols)),
                             shape=(self.n_users, self.n_items))
        self.masked_adj = SparseOperator(normalized_bipartite(kept), symmetric=True).to(self.device)

    # model -----------------------------------------------------------------------------------------
    def forward(self, adj: SparseOperator) -> tuple[torch.Tensor, torch.Tensor]:
        """Users ``e_u`` and items ``e_i + S^L e_i^0`` on the user-item graph ``adj`` (Sec. 3.3)."""
        h = propagate(self.mm_adj, self.item_embedding, self.config.n_mm_layers, combine="last")
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        out = propagate(adj, ego, self.config.n_ui_layers, combine="mean")
        return out[: self.n_users], out[self.n_users:] + h

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        users, items = self.forward(self.masked_adj)
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue = users[u]
        rank = bpr_loss((ue * items[pos]).sum(-1), (ue * items[neg]).sum(-1))
        out = {"bpr": rank}
        total = rank
        if self.config.reg_weight > 0:  # a zero weight gives zero gradients: skip the work
            feat = sum(bpr_loss((ue * self.features(n, pos)).sum(-1), (ue * self.features(n, neg)).sum(-1))
                       for n in self.features.names)
            total = total + self.config.reg_weight * feat
            out["feature_bpr"] = feat
        return {"loss": total, **out}

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.item_embedding], "feature": self.features.projection_parameters()}

    def memory_hint(self) -> dict[str, int]:
        n, d = self.n_users + self.n_items, self.config.embedding_size
        return {"propagation (forward + backward)": 3 * (self.config.n_ui_layers + 1) * n * d * 4,
                "pruned graph": self.n_kept_edges() * 2 * 8}

    def extra_info(self) -> dict[str, Any]:
        kept = self.n_kept_edges() if self.config.dropout > 0 else len(self._edge_weight)
        return {"modality_weights": self.modality_weights, "item_graph_edges": self.mm_adj.nnz,
                "kept_edges_per_epoch": kept}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scoring uses the full user-item graph (training uses the degree-pruned one)."""
        return self.forward(self.adj)
