"""MENTOR: per-modality graph encoders, an item-item graph, multilevel alignment and feature enhancement.

Xu, Chen, Yang, Li, Wang, Ngai, "MENTOR: Multi-level Self-supervised Learning for Multimodal
Recommendation", AAAI 2025 (arXiv 2402.19407); official code ``Jinfeng-Xu/MENTOR`` (``src/models/mentor.py``,
``src/configs/model/MENTOR.yaml``). Only the paper's abstract could be read here, so the equations are
those of the official code (see docs/models/mentor.md), for modalities ``m = 1..M`` (the code: image v
and text t) and ``L = n_ui_layers``:

* modality encoders (the code's ``GCN``): ``x^m = normalize([P_m; MLP_m(f^m)])`` (user preferences ``P_m``,
  ``MLP_m = Linear(4d) → LeakyReLU → Linear(d)`` on the frozen features), ``h^m = Σ_{l=0..L} Â^l x^m``
  on the user-item graph ``Â = D^{-1/2} A D^{-1/2}``; the ID encoder is the same on learned item ID
  features ``MLP_id(E_id)``;
* item semantic graph: ``S = Σ_m w_m S^m``, ``S^m`` the normalised top-``knn_k`` cosine graph of the raw
  features (binary, self included; ``w``: ``mm_image_weight`` for image), built once; every item table
  ``Y`` becomes ``Y + S^{n_mm_layers} Y``;
* fused representation (scoring): users ``[w_u1 h_u^1, …, w_uM h_u^M]`` (per-user modality weights),
  items ``[h_i^1, …, h_i^M] + S^{n_mm_layers}[…]``; ``ŷ_ui = e_u · e_i``;
* loss: ``BPR (log2) + reg + align_weight · L_align + mask_weight_g · L_g (+ mask_weight_f · L_f)``:
  ``reg = reg_weight (Σ_m mean(P_m[batch]²) + mean(W_u²))``; multilevel alignment ``L_align = Σ_{a<b}
  |σ²_a − σ²_b| + |μ_a − μ_b|`` over the mean and variance of the tables {fused, ID, each modality}
  (ID guidance: the pairs with the ID table); graph perturbation ``L_g = InfoNCE_temp(users¹, users²) +
  InfoNCE_temp(items¹, items²)`` between two fused tables from two more encoders per modality whose
  propagated layers get SimGCL noise ``h += sign(h) · normalize(U[0,1)) · noise_eps``, every user (item)
  a negative; feature masking ``L_f = Σ_{users, items} 1 − mean cos(dropout(e), MLP(e))``, which the
  code computes under ``torch.no_grad()`` (no gradient, no effect on training): left out unless
  ``feature_mask_grad``.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ...data.dataset import Modality
from ...data.training import TrainingData
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...graphs.knn import modality_weights, multimodal_knn_graph
from ...search_space import LEARNING_RATE, Choice
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss
from ..contrastive import full_info_nce
from ..layers import MaskedProjection, feature_tables, id_table


class FeatureMLPs(nn.Module):
    """Frozen feature tables and one ``Linear → LeakyReLU → Linear`` per modality (missing items: a
    learned vector); ``self(name, items)`` projects the rows ``items`` (all rows when None)."""

    def __init__(self, modalities: dict[str, Modality], out_dim: int, hidden: int,
                 tables: nn.ModuleDict | None = None):
        super().__init__()
        self.names = sorted(modalities)
        self._tables = [tables if tables is not None else feature_tables(modalities, self.names)]
        if tables is None:
            self.tables = self._tables[0]
        self.proj = nn.ModuleDict({n: MaskedProjection(modalities[n].dim, out_dim, hidden=hidden)
                                   for n in self.names})

    def forward(self, name: str, items: torch.Tensor | None = None) -> torch.Tensor:
        t = self._tables[0][name]
        if items is None:
            return self.proj[name](t.values, t.available)
        return self.proj[name](t.values[items], t.available[items])

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.proj.parameters())


def _moments(x: torch.Tensor, copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of all entries of ``x`` repeated ``copies`` times along dim 1 (the
    code's ``torch.cat((rep, rep), dim=1)`` tables) without forming the copies."""
    mean = x.mean()
    ss = (x - mean).pow(2).sum() * copies
    return mean, ss / (copies * x.numel() - 1)


@MODELS.register("mentor")
class MENTOR(DotProductRecommender):
    """MENTOR (AAAI'25): modality graph encoders, item semantic graph, ID-guided multilevel alignment,
    graph-perturbation contrast, BPR."""

    min_modalities = 1
    #: MENTOR.yaml: learning_rate [0.0001] (Adam, batch 2048, no decay: overall.yaml)
    defaults = {"train": {"learning_rate": 1e-4}}

    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "mask_weight_g": Choice((1e-4, 1e-3, 1e-2)),
                                    "temp": Choice((0.2, 0.4, 0.6)), "align_weight": Choice((0.1, 0.2, 0.3)),
                                    "reg_weight": Choice((1e-4, 1e-3, 1e-2))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="encoder width per modality (the code's dim_latent)")
        n_ui_layers: int = Field(2, ge=0, description="user-item layers per encoder (hard-coded 2; sum)")
        knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's item graph")
        n_mm_layers: int = Field(1, ge=0, description="propagation rounds on the item semantic graph")
        mm_image_weight: float = Field(0.1, ge=0, le=1, description="weight of the 'image' item graph")
        mm_weighting: Literal["image", "equal"] = Field(
            "image", description="'image': mm_image_weight for 'image', the rest shared; 'equal': 1/M")
        reg_weight: float = Field(1e-3, ge=0, description="weight of the preference / modality-weight L2 term")
        align_weight: float = Field(0.1, ge=0, description="lambda_align, multilevel distribution alignment")
        mask_weight_g: float = Field(1e-3, ge=0, description="lambda_g, graph-perturbation contrast")
        temp: float = Field(0.4, gt=0, description="temperature of the graph contrast")
        noise_eps: float = Field(0.1, ge=0, description="size of the perturbation noise (hard-coded 0.1)")
        cl_scope: Literal["all", "batch"] = Field(
            "all", description="negatives of the graph contrast: every user / item (the code) or the batch's")
        mask_weight_f: float = Field(1.5, ge=0, description="lambda_f (feature_mask_grad only)")
        dropout: float = Field(0.5, ge=0, lt=1, description="feature-masking dropout (feature_mask_grad only)")
        feature_mask_grad: bool = Field(
            False, description="train the feature-masking term (the code computes it without gradient)")

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d, names = config.embedding_size, sorted(data.modalities)
        self.names = names
        # the code's v_gcn / t_gcn: user preferences and feature MLPs (missing features: a learned vector)
        self.features = FeatureMLPs(data.modalities, d, hidden=4 * d)
        self.preferences = nn.ParameterDict({n: id_table(self.n_users, d, "xavier_normal") for n in names})
        # the code's id_gcn on learned item ID features (id_feat)
        self.item_id_features = id_table(self.n_items, d, "xavier_normal")
        self.id_preference = id_table(self.n_users, d, "xavier_normal")
        self.id_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d))
        # the code's *_gcn_n1 / *_gcn_n2: two more encoders per modality for the perturbed views
        self.noisy = nn.ModuleList([FeatureMLPs(data.modalities, d, hidden=4 * d, tables=self.features.tables)
                                    for _ in range(2)])
        self.noisy_preferences = nn.ModuleList([
            nn.ParameterDict({n: id_table(self.n_users, d, "xavier_normal") for n in names}) for _ in range(2)])
        w = nn.init.xavier_normal_(torch.empty(self.n_users, len(names), 1))
        self.user_weight = nn.Parameter(torch.softmax(w, dim=1).squeeze(-1))   # the code's weight_u
        if config.feature_mask_grad:
            self.mask_mlp = nn.Linear(len(names) * d, len(names) * d)          # the code's mlp
        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)
        self.graph_weights = modality_weights(names, config.mm_image_weight, config.mm_weighting)
        self.item_graph = SparseOperator(multimodal_knn_graph(data.modalities, config.knn_k, self.graph_weights))

    # ------------------------------------------------------------------------------------------- model
    def encode(self, preference: torch.Tensor, items: torch.Tensor, perturb: bool = False) -> torch.Tensor:
        """One encoder (the code's ``GCN.forward``): ``x = normalize([P; items])``, ``Σ_{l=0..L} Â^l x``;
        ``perturb`` adds ``sign(h) · normalize(U[0,1)) · noise_eps`` to every propagated layer."""
        x = F.normalize(torch.cat([preference, items], dim=0), dim=1)
        if not perturb:
            return propagate(self.adj, x, self.config.n_ui_layers, combine="sum")
        total, h = x, x
        for _ in range(self.config.n_ui_layers):
            h = self.adj(h)
            h = h + torch.sign(h) * F.normalize(torch.rand_like(h), dim=-1) * self.config.noise_eps
            total = total + h
        return total

    def item_side(self, items: torch.Tensor) -> torch.Tensor:
        """``Y + S^{n_mm_layers} Y`` (the code's ``item_rep + buildItemGraph(item_rep)``)."""
        return items + propagate(self.item_graph, items, self.config.n_mm_layers, combine="last")

    def fused(self, reps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Users ``[w_u1 h_u^1, …]`` and items ``[h_i^1, …] + S^L[…]`` from the per-modality encodings."""
        n_u = self.n_users
        users = torch.cat([self.user_weight[:, j:j + 1] * r[:n_u] for j, r in enumerate(reps)], dim=1)
        items = torch.cat([self.item_side(r[n_u:]) for r in reps], dim=1)
        return users, items

    def modality_reps(self) -> list[torch.Tensor]:
        return [self.encode(self.preferences[n], self.features(n)) for n in self.names]

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, n_u, m = self.config, self.n_users, len(self.names)
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        reps = self.modality_reps()
        users, items = self.fused(reps)
        ue = users[u]
        rank = bpr_loss((ue * items[pos]).sum(-1), (ue * items[neg]).sum(-1)) / math.log(2.0)   # -mean log2 σ
        reg = sum((self.preferences[n][u] ** 2).mean() for n in self.names) + (self.user_weight ** 2).mean()
        total = rank + cfg.reg_weight * reg
        out = {"bpr": rank, "reg": reg}
        if cfg.align_weight > 0:
            id_rep = self.encode(self.id_preference, self.id_mlp(self.item_id_features))
            moments = [_moments(torch.cat([users, items], dim=0)),                              # fused (v+t)
                       _moments(torch.cat([id_rep[:n_u], self.item_side(id_rep[n_u:])]), copies=m)]  # ID guide
            moments += [_moments(torch.cat([r[:n_u], self.item_side(r[n_u:])]), copies=m) for r in reps]
            align = sum((va - vb).abs() + (ma - mb).abs() for (ma, va), (mb, vb) in combinations(moments, 2))
            total = total + cfg.align_weight * align
            out["align"] = align
        if cfg.mask_weight_g > 0:
            views = []
            for enc, prefs in zip(self.noisy, self.noisy_preferences):
                views.append(self.fused([self.encode(prefs[n], enc(n), perturb=True) for n in self.names]))
            (u1, i1), (u2, i2) = views
            if cfg.cl_scope == "batch":
                bu, bi = torch.unique(u), torch.unique(pos)
                u1, u2, i1, i2 = u1[bu], u2[bu], i1[bi], i2[bi]
            cl = (full_info_nce(u1, u2, torch.arange(len(u1), device=u1.device), cfg.temp)
                  + full_info_nce(i1, i2, torch.arange(len(i1), device=i1.device), cfg.temp))
            total = total + cfg.mask_weight_g * cl
            out["cl"] = cl
        if cfg.feature_mask_grad and cfg.mask_weight_f > 0:
            mask = sum(1.0 - F.cosine_similarity(F.dropout(e, cfg.dropout, training=True),
                                                 self.mask_mlp(e)).mean() for e in (users, items))
            total = total + cfg.mask_weight_f * mask
            out["mask"] = mask
        return {"loss": total, **out}

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fused(self.modality_reps())

    # ---------------------------------------------------------------------------------------- reporting
    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.item_id_features, *self.preferences.values()],
                "feature": self.features.projection_parameters()}

    def memory_hint(self) -> dict[str, int]:
        n, d, m = self.n_users + self.n_items, self.config.embedding_size, len(self.names)
        encoders = 3 * m + 1
        out = {"encoders (forward + backward)": 3 * encoders * (self.config.n_ui_layers + 2) * n * d * 4,
               "feature MLPs of all items": 3 * 2 * self.n_items * 4 * d * m * 4}
        if self.config.mask_weight_g > 0 and self.config.cl_scope == "all":
            out["graph contrast (blockwise)"] = 2 * 64 * 2**20
        return out

    def extra_info(self) -> dict[str, Any]:
        return {"item_graph_edges": self.item_graph.nnz, "modality_weights": self.graph_weights,
                "items_without_feature": {n: int((~self.features.tables[n].available).sum()) for n in self.names}}
