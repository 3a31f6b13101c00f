"""LATTICE: learned + frozen modality item graphs, LightGCN on them for item IDs, then a user-item backbone.

Zhang, Zhu, Liu, Wu, Wang, Wang, "Mining Latent Structures for Multimedia Recommendation", ACM MM 2021
(arXiv 2104.09036); official code ``CRIPAC-DIG/LATTICE`` (``codes/Models.py``, ``codes/main.py``), also
MMRec ``src/models/lattice.py`` (same model). Equations as the code computes them (the paper's PDF was not
readable here; see docs/models/lattice.md), modalities ``m = 1..M``:

* frozen modality graphs (on the raw features, built once): ``S^m``: cosine top-``knn_k`` (self
  included), similarity-weighted, ``Ŝ^m = D^{-1/2} S^m D^{-1/2}`` (row sums);
* learned graphs (graph structure learning): ``x_i^m = W_m f_i^m + b_m`` (``f`` fine-tuned),
  ``A^m`` = cosine top-``knn_k`` of ``x^m``, similarity-weighted, built blockwise without a dense
  items x items matrix (:func:`prismrec.graphs.knn.topk_similarity`), the kept values differentiable;
* mixing (skip connection to the frozen graph, modality aggregation): ``α = softmax(modal_weight)``, ``Â = norm(Σ_m α_m A^m)``,
  ``S = (1 − λ) Â + λ Σ_m α_m Ŝ^m`` (``λ = lambda_coeff``);
* item-graph convolution: ``h = S^{n_layers} E_i`` (item ID embeddings);
* backbone (``cf_model``): LightGCN ``[E_u; Ẽ_i] = mean_{l=0..n_ui_layers} Ā^l [E_u; E_i]`` with
  the code's ``Ā = D^{-1}(A + I)``; ``e_u``, ``e_i = ẽ_i + h_i / ||h_i||``; score ``e_u . e_i``;
* loss: ``BPR + reg_weight * 0.5 (||e_u||² + ||e_i+||² + ||e_i−||²) / batch_size``.

As in the code, the learned graph is rebuilt (with gradients) at the first batch of every epoch and
used detached by the epoch's other batches (``graph_update = "epoch"``); ``"step"`` rebuilds it at
every batch. Scoring rebuilds it from the current projections (the code's ``test``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...graphs import SparseOperator, bipartite_adjacency, propagate
from ...graphs.knn import edge_matmul, knn_graph, merge_edges, sym_normalize_edges, topk_similarity
from ...search_space import Choice, FloatRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_sq_reg
from ..layers import ModalityProjections, id_table


def row_normalized_with_self_loops(r: sp.spmatrix) -> sp.csr_matrix:
    """LATTICE's (NGCF's) ``norm_adj``: ``D^{-1}(A + I)`` for the bipartite adjacency ``A`` of ``r``."""
    a = bipartite_adjacency(r) + sp.eye(sum(r.shape), dtype=np.float32, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags((1.0 / deg).astype(np.float32)) @ a).tocsr()


@MODELS.register("lattice")
class LATTICE(DotProductRecommender):
    """LATTICE (MM'21): learned + frozen modality item graphs on item IDs, LightGCN backbone, BPR."""

    min_modalities = 1
    #: codes/main.py: Adam lr 5e-4 (parser default), LambdaLR 0.96 ** (epoch / 50)
    defaults = {"train": {"learning_rate": 5e-4, "lr_scheduler": [0.96, 50]}}

    search_space: ClassVar[dict] = {"train.learning_rate": FloatRange(1e-4, 5e-3, log=True),
                                    "reg_weight": Choice((0.0, 1e-5, 1e-4, 1e-3))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="ID embeddings (embed_size)")
        feat_embed_dim: int = Field(64, ge=1, description="projection size of the features for the learned graphs")
        n_ui_layers: int = Field(2, ge=0, description="backbone layers (len(weight_size) = 2)")
        n_layers: int = Field(1, ge=0, description="convolutions on the item-item graph")
        knn_k: int = Field(10, ge=1, description="neighbours per item in the frozen and learned graphs (topk)")
        lambda_coeff: float = Field(0.9, ge=0, le=1, description="weight of the frozen graph in the mix")
        reg_weight: float = Field(1e-5, ge=0, description="L2 weight on the batch's final embeddings (regs[0])")
        reg_batch_size: int = Field(
            0, ge=0, description="divisor of the L2 term; 0 = the configured train.batch_size (the code's)")
        cf_model: Literal["lightgcn", "mf"] = Field("lightgcn", description="user-item backbone")
        graph_update: Literal["epoch", "step"] = Field(
            "epoch", description="rebuild the learned graph at each epoch's first batch (the code) or every batch")
        train_features: bool = Field(True, description="fine-tune the raw feature tables (freeze=False in the code)")
        block_bytes: int = Field(128 * 2**20, ge=2**16, description="memory of one block of the learned top-k")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.features = ModalityProjections(data.modalities, config.feat_embed_dim, finetune=config.train_features)
        names = self.features.names
        self.modal_weight = nn.Parameter(torch.full((len(names),), 0.5))
        self.adj = SparseOperator(row_normalized_with_self_loops(data.train), symmetric=False)
        # frozen graphs as edge lists (not saved: rebuilt from the data), one per modality
        for j, n in enumerate(names):
            mod = data.modalities[n]
            g = knn_graph(mod.values, config.knn_k, weighted=True, norm="sym", available=mod.available).tocoo()
            self.register_buffer(f"_frozen_{j}", torch.from_numpy(np.vstack([g.row, g.col]).astype(np.int64)),
                                 persistent=False)
            self.register_buffer(f"_frozen_val_{j}", torch.from_numpy(g.data.astype(np.float32)), persistent=False)
        avail = np.stack([np.asarray(data.modalities[n].available, dtype=bool) for n in names], axis=1)
        self.register_buffer("_available", torch.from_numpy(avail), persistent=False)
        self._all_available = bool(avail.all())
        self._reg_divisor = config.reg_batch_size or None
        self._item_adj: tuple[torch.Tensor, torch.Tensor] | None = None   # the epoch's graph, detached after its first batch
        self._rebuild = True

    # ------------------------------------------------------------------------------------------ graphs
    def build_sampler(self, data: TrainingData, train_cfg: Any) -> None:
        """No custom sampler; records the configured batch size, the code's divisor of the L2 term."""
        if not self.config.reg_batch_size:
            self._reg_divisor = train_cfg.batch_size
        return None

    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True   # the code's build_item_graph = True

    def learned_edges(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``Â = norm(Σ_m α_m A^m)`` as edges; values differentiable w.r.t. projections, features, ``α``."""
        rows, cols, vals = [], [], []
        for j, n in enumerate(self.features.names):
            x = self.features(n)
            r, c, v = topk_similarity(x, self.config.knn_k, available=self._available[:, j],
                                      block_bytes=self.config.block_bytes)
            rows.append(r)
            cols.append(c)
            vals.append(weights[j] * v)
        r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
        return r, c, sym_normalize_edges(r, c, v, self.n_items)

    def item_adjacency(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``S = (1 − λ) Â + λ Σ_m α_m Ŝ^m`` as merged edges ``(indices (2, nnz), values)``, the values
        differentiable (for :func:`~prismrec.graphs.knn.edge_matmul`; no dense items x items matrix).

        An item without modality ``m`` has no row in ``Ŝ^m``; its frozen row is divided by the weight of
        the modalities it has (as :func:`~prismrec.graphs.knn.multimodal_knn_graph`).
        """
        lam, n = self.config.lambda_coeff, self.n_items
        weights = torch.softmax(self.modal_weight, dim=0)
        r, c, v = self.learned_edges(weights)
        idx, vals = [torch.stack([r, c])], [(1.0 - lam) * v]
        scale = None
        if not self._all_available:
            have = (self._available.float() * weights).sum(dim=1)
            scale = torch.where(have > 0, 1.0 / have.clamp_min(1e-12), torch.zeros_like(have))
        for j in range(len(self.features.names)):
            e, w = getattr(self, f"_frozen_{j}"), getattr(self, f"_frozen_val_{j}")
            w = lam * weights[j] * w
            if scale is not None:
                w = w * scale[e[0]]
            idx.append(e)
            vals.append(w)
        rows, cols = torch.cat(idx, dim=1)
        return merge_edges(rows, cols, torch.cat(vals), n)

    # ------------------------------------------------------------------------------------------- model
    def forward(self, item_adj: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item_embedding
        for _ in range(self.config.n_layers):
            h = edge_matmul(*item_adj, h, self.n_items)
        h = nn.functional.normalize(h, dim=1)
        if self.config.cf_model == "mf":
            return self.user_embedding, self.item_embedding + h
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        out = propagate(self.adj, ego, self.config.n_ui_layers, combine="mean")
        return out[: self.n_users], out[self.n_users:] + h

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._rebuild or self._item_adj is None or self.config.graph_update == "step":
            item_adj = self.item_adjacency()           # with gradients (the code's build_item_graph=True)
            self._item_adj = (item_adj[0], item_adj[1].detach())
            self._rebuild = False
        else:
            item_adj = self._item_adj                  # the code's self.item_adj.detach()
        users, items = self.forward(item_adj)
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue, pe, ne = users[u], items[pos], items[neg]
        rank = bpr_loss((ue * pe).sum(-1), (ue * ne).sum(-1))
        reg = l2_sq_reg(ue, pe, ne) * (len(u) / (self._reg_divisor or len(u)))
        return {"loss": rank + self.config.reg_weight * reg, "bpr": rank, "reg": reg}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned graph is rebuilt from the current projections (the code's ``test``)."""
        return self.forward(self.item_adjacency())

    # ---------------------------------------------------------------------------------------- reporting
    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.item_embedding], "feature": self.features.projection_parameters()}

    def memory_hint(self) -> dict[str, int]:
        n, d = self.n_users + self.n_items, self.config.embedding_size
        m = len(self.features.names)
        return {"backbone propagation (forward + backward)": 3 * (self.config.n_ui_layers + 1) * n * d * 4,
                "one block of the learned top-k": min(self.config.block_bytes, 4 * self.n_items ** 2),
                "item graph edges (learned + frozen)": 2 * m * self.n_items * self.config.knn_k * (16 + 4)}

    def extra_info(self) -> dict[str, Any]:
        return {"frozen_graph_edges": {n: int(getattr(self, f"_frozen_val_{j}").numel())
                                       for j, n in enumerate(self.features.names)},
                "modality_weights": dict(zip(self.features.names,
                                             torch.softmax(self.modal_weight.detach(), 0).tolist())),
                "graph_update": self.config.graph_update}
