"""LGMRec: local graph embeddings (collaborative + modality graphs) and global hypergraph embeddings.

Guo, Li, Li, Wang, Shi, Ruan, "LGMRec: Local and Global Graph Learning for Multimodal Recommendation",
AAAI 2024 (arXiv 2312.16400); official code ``georgeguo-cn/LGMRec`` (``models/lgmrec.py``, configs
``configs/model/LGMREC.yaml`` and ``configs/dataset/*.yaml``), the same file as MMRec's
``src/models/lgmrec.py``. Only the paper's abstract could be read here, so the equations are those of the
official code (see docs/models/lgmrec.md), for modalities ``m = 1..M`` (the code: image and text):

* collaborative graph embedding (CGE): ``E_c = mean_{l=0..n_ui_layers} Â^l [E_u; E_i]`` (LightGCN on the
  ID embeddings, ``Â = D^{-1/2} A D^{-1/2}``; ``cf_model="mf"``: ``E_c = [E_u; E_i]``);
* modality graph embedding (MGE): ``x_i^m = W_m f_i^m`` (frozen features, no bias), users the mean of
  their items ``x_u^m = (1/|N_u|) Σ_{i∈N_u} x_i^m``, then ``E_m = Â^{n_mm_layers} [X_U^m; X_I^m]`` (the last
  layer);
* local embeddings: ``E_local = E_c + Σ_m normalize(E_m)``;
* global hypergraph embedding (GHE): hyperedge dependencies ``H_i^m = f_i^m V_m`` (items x ``hyper_num``),
  ``H_u^m = R H_i^m`` (``R`` the binary interactions), each turned into soft assignments by
  ``gumbel_softmax(·, τ)`` over the hyperedges and dropped out (``1 − keep_rate``); then
  ``n_hyper_layer`` rounds of ``Λ = (H_i^m)^T Y``, ``Y ← H_i^m Λ`` from ``Y = E_c^{items}``, and users
  ``G_u^m = H_u^m Λ`` (with the last ``Λ``); ``E_g = Σ_m [G_u^m; G_i^m]``;
* fusion: ``E = E_local + alpha · normalize(E_g)``; ``ŷ_ui = e_u · e_i``;
* loss: ``BPR + cl_weight · L_hcl + reg_weight · (‖e_u‖ + ‖e_i⁺‖ + ‖e_i⁻‖) / batch``, with the
  hypergraph contrast ``L_hcl = Σ_{u∈batch} -log softmax_{v∈U}(cos(g_u^a, g_v^b)/τ)_u + Σ_{i∈pos} (the
  same over items)``
  between the global embeddings of modalities ``a`` and ``b`` (image → text in the code), every user /
  item of the catalogue a negative (:func:`~prismrec.models.contrastive.full_info_nce`).

Scoring is deterministic: the hyperedge assignments are ``softmax(H / τ)`` (``score_hyperedges =
"softmax"``) or one Gumbel draw from a fixed seed (``"gumbel"``); the code draws new noise at every
evaluation batch.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_norm_reg
from ..contrastive import full_info_nce
from ..layers import MaskedProjection, ModalityProjections, id_table


def hypergraph_propagate(item_assign: torch.Tensor, user_assign: torch.Tensor, items: torch.Tensor,
                         n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The code's ``HGNNLayer``: ``n_layers`` rounds of ``Λ = H_i^T Y``, ``Y = H_i Λ`` from ``Y = items``;
    users ``H_u Λ`` with the last ``Λ``. Returns ``(users (U, d), items (I, d))``."""
    y, lat = items, None
    for _ in range(n_layers):
        lat = item_assign.T @ y
        y = item_assign @ lat
    return user_assign @ lat, y


@MODELS.register("lgmrec")
class LGMRec(DotProductRecommender):
    """LGMRec (AAAI'24): local collaborative + modality graph embeddings, global hypergraph embeddings,
    hypergraph contrast between modalities, BPR."""

    min_modalities = 1
    # overall.yaml: Adam lr 1e-3, batch 2048, learning_rate_scheduler [1.0, 50] = our train defaults

    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "n_ui_layers": IntRange(1, 4),
                                    "n_mm_layers": IntRange(1, 4), "hyper_num": Choice((2, 4, 8, 16, 32, 64)),
                                    "keep_rate": FloatRange(0.1, 1.0), "alpha": FloatRange(0.0, 1.0),
                                    "cl_weight": Choice((0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)),
                                    "reg_weight": Choice((0.0, 1e-6, 1e-5, 1e-4, 1e-3))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="ID embeddings and modality projections (the code's "
                                                          "embedding_size = feat_embed_dim: they are added)")
        cf_model: Literal["lightgcn", "mf"] = Field("lightgcn", description="collaborative graph embedding")
        n_ui_layers: int = Field(2, ge=0, description="LightGCN layers of the collaborative graph (layer mean)")
        n_mm_layers: int = Field(2, ge=0, description="propagation rounds of the modality graphs (last layer)")
        n_hyper_layer: int = Field(1, ge=1, description="hypergraph propagation rounds")
        hyper_num: int = Field(4, ge=1, description="hyperedges per modality")
        keep_rate: float = Field(0.5, gt=0, le=1, description="1 - dropout on the hyperedge assignments")
        alpha: float = Field(0.3, ge=0, description="weight of the global (hypergraph) embeddings")
        cl_weight: float = Field(1e-4, ge=0, description="weight of the hypergraph contrast (a batch sum)")
        reg_weight: float = Field(1e-6, ge=0, description="weight of the norm term on the batch's embeddings")
        tau: float = Field(0.2, gt=0, description="Gumbel-softmax and contrast temperature (hard-coded 0.2)")
        score_hyperedges: Literal["softmax", "gumbel"] = Field(
            "softmax", description="hyperedge assignments when scoring: softmax(H/tau), or one Gumbel draw "
                                   "from score_seed (the code draws new noise at every evaluation)")
        score_seed: int = Field(0, description="seed of the scoring Gumbel draw (score_hyperedges=gumbel)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        # W_m (the code's item_*_trs) on the frozen features; V_m (the code's *_hyper): hyperedge dependencies
        self.features = ModalityProjections(data.modalities, d, finetune=False, bias=False)
        names = self.features.names
        self.hyper = nn.ModuleDict({n: MaskedProjection(self.features.tables[n].dim, config.hyper_num, bias=False)
                                    for n in names})
        for lin in [*self.features.linears(), *(self.hyper[n].net for n in names)]:
            nn.init.xavier_uniform_(lin.weight)
        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)
        self.r = SparseOperator(data.train, symmetric=False)
        deg = np.asarray(data.train.sum(axis=1), dtype=np.float32).ravel()
        self.register_buffer("_inv_user_degree", torch.from_numpy(1.0 / (deg + 1e-7)).unsqueeze(1),
                             persistent=False)
        self.pairs = list(combinations(names, 2))

    # ------------------------------------------------------------------------------------------- model
    def _assign(self, logits: torch.Tensor, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        """Soft hyperedge assignments (rows sum to 1), dropped out in training."""
        tau = self.config.tau
        if train:
            return F.dropout(F.gumbel_softmax(logits, tau=tau, hard=False, dim=1), 1.0 - self.config.keep_rate,
                             training=True)
        if gen is None:
            return torch.softmax(logits / tau, dim=1)
        g = -torch.empty_like(logits).exponential_(generator=gen).log()
        return torch.softmax((logits + g) / tau, dim=1)

    def forward(self, train: bool) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Final embeddings ``(U + I, d)`` and each modality's global embeddings ``(users, items)``;
        ``train``: Gumbel noise and dropout on the hyperedge assignments (else the scoring rule)."""
        cfg, n_u = self.config, self.n_users
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        cge = propagate(self.adj, ego, cfg.n_ui_layers, combine="mean") if cfg.cf_model == "lightgcn" else ego
        gen = None
        if not train and cfg.score_hyperedges == "gumbel":
            gen = torch.Generator(device=ego.device).manual_seed(cfg.score_seed)
        local, glob = cge, None
        views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for n in self.features.names:
            x = self.features(n)                                          # (I, d): f W
            mge = propagate(self.adj, torch.cat([self.r(x) * self._inv_user_degree, x]), cfg.n_mm_layers,
                            combine="last")
            local = local + F.normalize(mge, dim=1)
            t = self.features.tables[n]
            h_items = self.hyper[n](t.values, t.available)                # (I, hyper_num): f V
            h_users = self.r(h_items)                                     # (U, hyper_num): R f V
            a_items, a_users = self._assign(h_items, train, gen), self._assign(h_users, train, gen)
            g_users, g_items = hypergraph_propagate(a_items, a_users, cge[n_u:], cfg.n_hyper_layer)
            views[n] = (g_users, g_items)
            g = torch.cat([g_users, g_items], dim=0)
            glob = g if glob is None else glob + g
        return local + cfg.alpha * F.normalize(glob, dim=1), views

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, n_u = self.config, self.n_users
        final, views = self.forward(self.training)
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue, pe, ne = final[u], final[n_u + pos], final[n_u + neg]
        rank = bpr_loss((ue * pe).sum(-1), (ue * ne).sum(-1))
        reg = l2_norm_reg(ue, pe, ne)
        total = rank + cfg.reg_weight * reg
        out = {"bpr": rank, "reg": reg}
        if self.pairs and cfg.cl_weight > 0:
            cl = sum(full_info_nce(views[a][0][u], views[b][0], u, cfg.tau, reduction="sum")
                     + full_info_nce(views[a][1][pos], views[b][1], pos, cfg.tau, reduction="sum")
                     for a, b in self.pairs) / len(self.pairs)
            total = total + cfg.cl_weight * cl
            out["cl"] = cl
        return {"loss": total, **out}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        final = self.forward(train=False)[0]
        return final[: self.n_users], final[self.n_users:]

    # ---------------------------------------------------------------------------------------- reporting
    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.user_embedding, self.item_embedding],
                "feature": [*self.features.projection_parameters(), *self.hyper.parameters()]}

    def memory_hint(self) -> dict[str, int]:
        n, d, m = self.n_users + self.n_items, self.config.embedding_size, len(self.features.names)
        layers = self.config.n_ui_layers + 1 + m * (self.config.n_mm_layers + 2 * self.config.n_hyper_layer + 3)
        return {"propagation (forward + backward)": 3 * layers * n * d * 4,
                "feature projections of all items": 2 * self.n_items * (self.features.in_dim() + m * d) * 4}

    def extra_info(self) -> dict[str, Any]:
        return {"contrast_pairs": [f"{a}->{b}" for a, b in self.pairs],
                "items_without_feature": {n: int((~self.features.tables[n].available).sum())
                                          for n in self.features.names}}
