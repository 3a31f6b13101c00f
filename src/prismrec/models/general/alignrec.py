"""AlignRec: three alignments (content-content, content-ID, user-item) on an MGCN-style backbone.

Liu et al., "AlignRec: Aligning and Training in Multimodal Recommendations", CIKM 2024 (arXiv
2403.12384); official code sjtulyf123/AlignRec_CIKM24 (``src/models/alignrec.py``), which this module
follows. Stage 1 (Inter-Content Alignment) produces ONE unified item feature ``F`` (see
``alignrec_stage1``); stage 2, here:

* purifier (MGCN's behaviour-guided purifier): ``h_i = e_i * sigmoid(W_g (W_t m_i + b_t) + b_g)``, with
  ``m_i`` a trainable copy of ``F`` (the code's ``freeze=False``);
* ID view: LightGCN on ``[E_u; E_i]``, layer MEAN of layers 0..L (``n_ui_layers``);
* content view: ``h_I <- S h_I`` (``n_layers`` times) on the kNN graph of the frozen ``F``
  (top-k cosine, similarity-weighted edges, ``D^{-1/2} S D^{-1/2}``), users ``h_U = R_hat h_I`` with
  ``R_hat = D_u^{-1/2} R D_i^{-1/2}``;
* fuser: plain sum ``z = id_view + content_view``; score ``z_u . z_i``.

Loss (``calculate_loss`` of the code): ``L_BPR + reg * L_reg + w_uia * L_UIA + cl * L_CCA + sim * L_sim``
with ``L_reg = 0.5 sum(||z_u||^2 + ||z_i+||^2 + ||z_i-||^2) / batch_size`` (configured batch size),
``L_UIA = 1 - mean cos(z_u, z_i+)``, ``L_CCA = NCE_0.2(h_i+, id_i+) + NCE_0.2(h_u, id_u)`` and
``L_sim = ||h_i+ h_i+^T - cos(F_i+)||_F / B`` (MMRec's EmbLoss: a norm, not squared).
"""

from __future__ import annotations

from typing import ClassVar

import hashlib
import logging
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ...data.training import TrainingData
from ...errors import ConfigError
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...graphs.knn import knn_graph
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss, l2_norm_reg, l2_sq_reg
from ..layers import MaskedProjection, id_table, info_nce
from .alignrec_stage1 import AlignConfig, concat_modalities, train_alignment

log = logging.getLogger("prismrec")


@MODELS.register("alignrec")
class AlignRec(DotProductRecommender):
    """AlignRec (CIKM'24): stage-1 aligned item feature + ID/content views with CCA, UIA and similarity losses."""

    min_modalities = 1

    #: official ALIGNREC.yaml: learning_rate [1e-4 .. 5e-3], cl_loss [1e-4 .. 0.1], sim_weight [0.1 .. 0.5]
    search_space: ClassVar[dict] = {"train.learning_rate": FloatRange(1e-4, 5e-3, log=True),
                                    "cl_loss": FloatRange(1e-4, 0.1, log=True), "sim_weight": FloatRange(0.1, 0.5)}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1)
        n_ui_layers: int = Field(2, ge=0, description="LightGCN layers of the ID view (layer mean)")
        n_layers: int = Field(1, ge=0, description="propagation rounds on the item-item kNN graph")
        knn_k: int = Field(10, ge=1, description="neighbours per item in the item-item graph")
        reg_weight: float = Field(1e-4, ge=0, description="weight of L_reg on the fused batch embeddings")
        reg_batch_size: int = Field(
            0, ge=0, description="divisor of L_reg; 0 = the configured train.batch_size (the code divides by it, "
                                 "also for the last, smaller batch)")
        cl_loss: float = Field(0.01, ge=0, description="lambda_cl, weight of L_CCA (grid 1e-4..0.1)")
        sim_weight: float = Field(0.1, ge=0, description="lambda_sim, weight of L_sim (grid 0.1..0.5)")
        ui_cosine_loss_weight: float = Field(0.1, ge=0, description="weight of L_UIA (0 = the flag off)")
        temperature: float = Field(0.2, gt=0, description="InfoNCE temperature of L_CCA")
        train_features: bool = Field(True, description="fine-tune the copy of the feature table (freeze=False)")
        sim_target: Literal["trainable", "frozen"] = Field(
            "trainable", description="L_sim target: cosine of the current trainable copy (what the code computes, "
                                     "the copy shares storage with v_feat) or of the frozen stage-1 feature")
        stage1: Literal["train", "precomputed", "concat"] = Field(
            "train", description="'train': stage-1 alignment of all modalities; 'precomputed': the modality named "
                                 "by 'feature'; 'concat': L2-normalised modalities concatenated (no alignment)")
        feature: str | None = Field(None, description="modality used as the unified feature when stage1=precomputed")
        stage1_dim: int = Field(128, ge=2, description="stage 1: dimension of the aligned feature")
        stage1_epochs: int = Field(100, ge=0, description="stage 1: maximum epochs (early-stopped)")
        stage1_learning_rate: float = Field(1e-3, gt=0, description="stage 1: Adam learning rate")
        stage1_temperature: float = Field(0.1, gt=0, description="stage 1: InfoNCE temperature")
        stage1_seed: int | None = Field(
            None, description="stage 1: seed; None (default) = the run seed, so seeds vary stage 1 too (its variance is "
                              "in the spread); set a number to fix stage 1 across run seeds, like a released feature")

    @classmethod
    def resolve_run_settings(cls, params: Any, seed: int) -> None:
        if params.stage1 == "train" and params.stage1_seed is None:
            params.stage1_seed = seed

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        d = config.embedding_size
        values, available, self._stage1_report = self._unified_feature(config, data)
        # the frozen unified feature is part of the state, so a checkpoint restores it exactly
        self.register_buffer("mm_feature", torch.from_numpy(values))
        self.register_buffer("mm_available", torch.from_numpy(available))
        self.user_embedding = id_table(self.n_users, d)
        self.item_embedding = id_table(self.n_items, d)
        self.mm_embedding = nn.Parameter(torch.from_numpy(values.copy()), requires_grad=config.train_features)
        self.mm_trs = MaskedProjection(values.shape[1], d)
        self.gate_v = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        adj = normalized_bipartite(data.train)
        self.adj = SparseOperator(adj, symmetric=True)
        self.r_hat = SparseOperator(adj[: self.n_users, self.n_users:], symmetric=False)
        self._build_item_graph()
        self.register_load_state_dict_post_hook(lambda module, keys: module._build_item_graph())
        self._reg_divisor = config.reg_batch_size or None

    # ----------------------------------------------------------------------------------- features, graphs
    @staticmethod
    def _unified_feature(cfg: Config, data: TrainingData) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The single multimodal input of stage 2 (``v_feat`` of the code) and how it was obtained."""
        mods = data.modalities
        if cfg.stage1 == "precomputed":
            name = cfg.feature or (next(iter(mods)) if len(mods) == 1 else None)
            if name not in mods:
                raise ConfigError(f"alignrec.stage1=precomputed needs alignrec.feature, one of: {', '.join(sorted(mods))} "
                                  f"(got {cfg.feature!r}). A stage-1 file attaches with "
                                  "--set 'data.extra_features={aligned: FILE.npz}'.")
            m = mods[name]
            return m.values.copy(), m.available.copy(), {"stage1": "precomputed", "feature": name}
        if cfg.stage1 == "concat":
            values, available = concat_modalities(mods)
            return values, available, {"stage1": "concat", "modalities": sorted(mods)}
        res = train_alignment(mods, AlignConfig.from_prefixed(cfg, "stage1_"))
        return res.values, res.available, {"stage1": "train", **res.report}

    def _build_item_graph(self) -> None:
        """Item-item graph of the frozen feature (rebuilt when a checkpoint replaces that feature)."""
        values = self.mm_feature.detach().cpu().numpy()
        available = self.mm_available.cpu().numpy()
        key = hashlib.blake2b(values.tobytes() + available.tobytes(), digest_size=16).hexdigest()
        if getattr(self, "_graph_key", None) == key:
            return
        graph = knn_graph(values, self.config.knn_k, weighted=True, norm="sym", available=available)
        self.mm_adj = SparseOperator(graph, symmetric=False).to(self.mm_feature.device)
        self._graph_key = key

    def build_sampler(self, data: TrainingData, train_cfg: Any) -> None:
        """No custom sampler; records the configured batch size, the code's divisor of L_reg."""
        if not self.config.reg_batch_size:
            self._reg_divisor = train_cfg.batch_size
        return None

    # ------------------------------------------------------------------------------------------- model
    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused, ID view, content view), each ``(U + I) x d``: purifier, both views and the sum fuser."""
        gate = self.gate_v(self.mm_trs(self.mm_embedding, self.mm_available))
        h_items = self.item_embedding * gate
        ego = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        id_view = propagate(self.adj, ego, self.config.n_ui_layers, combine="mean")
        h_items = propagate(self.mm_adj, h_items, self.config.n_layers, combine="last")
        content_view = torch.cat([self.r_hat(h_items), h_items], dim=0)
        return id_view + content_view, id_view, content_view

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, n_u = self.config, self.n_users
        fused, id_view, content = self.forward()
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue, pe, ne = fused[u], fused[n_u + pos], fused[n_u + neg]
        rank = bpr_loss((ue * pe).sum(-1), (ue * ne).sum(-1))
        reg = l2_sq_reg(ue, pe, ne) * (len(u) / (self._reg_divisor or len(u)))
        uia = 1.0 - nn.functional.cosine_similarity(ue, pe, dim=-1).mean()
        cca = (info_nce(content[n_u + pos], id_view[n_u + pos], cfg.temperature)
               + info_nce(content[u], id_view[u], cfg.temperature))
        sim = self._sim_loss(content[n_u + pos], pos)
        total = (rank + cfg.reg_weight * reg + cfg.ui_cosine_loss_weight * uia + cfg.cl_loss * cca
                 + cfg.sim_weight * sim)
        return {"loss": total, "bpr": rank, "reg": reg, "uia": uia, "cca": cca, "sim": sim}

    def _sim_loss(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``||h h^T - cos(F_items)||_F / B``; pairs with an item without a feature are left out."""
        source = self.mm_feature if self.config.sim_target == "frozen" else self.mm_embedding.detach()
        f = nn.functional.normalize(source[items], dim=-1)
        diff = h @ h.T - f @ f.T
        avail = self.mm_available[items]
        if not bool(avail.all()):
            diff = diff * (avail[:, None] & avail[None, :])
        return l2_norm_reg(diff)

    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.forward()[0]
        return fused[: self.n_users], fused[self.n_users:]

    # ---------------------------------------------------------------------------------------- reporting
    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"id": [self.user_embedding, self.item_embedding],
                "feature": [*self.mm_trs.parameters(), *self.gate_v.parameters()]}

    def memory_hint(self) -> dict[str, int]:
        n, d, f = self.n_users + self.n_items, self.config.embedding_size, self.mm_feature.shape[1]
        return {"ID view propagation (forward + backward)": 3 * (self.config.n_ui_layers + 1) * n * d * 4,
                "feature projection of all items": 2 * self.n_items * (f + 2 * d) * 4}

    def extra_info(self) -> dict[str, Any]:
        rep = self._stage1_report
        info: dict[str, Any] = {"stage1": rep.get("stage1"), "feature_dim": int(self.mm_feature.shape[1]),
                                "items_without_feature": int((~self.mm_available).sum()),
                                "item_graph_edges": self.mm_adj.nnz}
        for key in ("feature", "modalities", "epochs_run", "best_epoch", "retrieval_before", "retrieval_after"):
            if key in rep:
                info[f"stage1_{key}"] = rep[key]
        return info
