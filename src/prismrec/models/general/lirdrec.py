"""LIRDRec: item representations learned directly from multimodal features, with no item ID embeddings.

Zhou, Zhang, Niyato, Shen, "Learning Item Representations Directly from Multimodal Features for
Effective Recommendation", arXiv 2505.04960 (2025); official code enoche/LIRDRec, src/models/lirdrec.py.

Channels: one per modality (sorted by name; a caption modality is just one more) plus a shared one.

* Multimodal feature transformation: item input of modality channel m is the MLP
  ``X̂_m = φ(X_m W_m1 + b_m1) W_m2`` (φ = LeakyReLU); the shared channel applies such an MLP to the
  concatenated DCT-II spectra of all modalities (``dct_mode``: per item over features as the code,
  the paper's 2-D DCT over items x features, or none). The per-item DCT is linear, ``X_m D_mᵀ``, so its
  first layer is taken as ``Σ_m X_m (W_s,m D_m)ᵀ``: the same numbers, and no second items x features table.
* Users have one free preference table per channel. Layer 0 is the row-L2-normalised ``[P_c; X̂_c]``
  of each channel; LightGCN propagation on the user-item graph with the layers **summed**.
* Items: residual item-item step ``H_i + A_mm H_i``, ``A_mm`` a weighted sum of per-modality top-k
  cosine graphs. Users: progressive weight copying (PWC) weighs the channels per user.
* Score ``<u, i>`` over the concatenated channels; loss BPR + ``λ (mean(U²) + mean(I²))`` over all
  final user and item representations (the code's regulariser).

``id_hybrid`` adds learned item ID embeddings to the item inputs (the paper's "ID + features"
baseline) so the gradient-bias argument can be measured with the trainer's id/feature gradient ratio.
"""

from __future__ import annotations

from typing import ClassVar

import math
from typing import Any, Literal

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...data.dataset import Modality
from ...data.training import TrainingData
from ...errors import ConfigError
from ...graphs import SparseOperator, normalized_bipartite, propagate
from ...registry import suggest
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch, DotProductRecommender, ModelConfig, bpr_loss
from ..layers import MaskedProjection, feature_tables
from ...graphs.knn import modality_weights, multimodal_knn_graph

SHARED = "shared"


def dct2_spectrum(modality: Modality) -> np.ndarray:
    """Input of the shared branch for one modality under ``dct_mode: 2d``: the orthonormal 2-D DCT-II
    over items and features (the paper's). Row ``μ`` is the ``μ``-th frequency along the item axis, so it
    depends on the item order; missing rows are filled with the mean of the available rows first (a zero
    row would leak into every frequency). (``1d``, the code's per-item DCT, is folded into the weights.)
    """
    x = modality.float32()  # a fresh copy (cast block by block from storage), changed below
    avail = modality.available
    if avail.any() and not avail.all():
        x[~avail] = x[avail].mean(axis=0)
    return scipy.fft.dctn(x, type=2, norm="ortho", axes=(0, 1)).astype(np.float32, copy=False)


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (``n x n``, float32): ``scipy.fft.dct(x, norm="ortho") = x @ Dᵀ``."""
    return scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0).astype(np.float32)


def xavier_blocks(rows: int, n_blocks: int, dim: int) -> torch.Tensor:
    """``n_blocks`` Xavier-normal ``rows x dim`` tables side by side (the code's per-channel init)."""
    return torch.cat([nn.init.xavier_normal_(torch.empty(rows, dim)) for _ in range(n_blocks)], dim=1)


class ProgressiveWeightCopying(nn.Module):
    """PWC fusion (the code's ``PWC``): per-user channel weights
    ``a_u = softmax(w1 · [f_c(u_c)]_c + w2 · θ_u)``, ``f_c`` a small MLP per channel.

    Before epoch ``e``: ``w1 ← w1 b^e / (w1 b^e + w2)``, ``w2 ← w2 / (w1 b^e + w2)`` (``b`` =
    ``decay_base``), then θ is overwritten by the attention of the last training batch (``last_att``).
    θ is a parameter (Adam also updates it inside an epoch); ``last_att`` and the current
    ``(w1, w2)`` are persistent buffers, so a checkpoint resumes exactly.
    """

    def __init__(self, n_users: int, n_channels: int, dim: int, hidden: int, decay_weight: float,
                 decay_base: float):
        super().__init__()
        self.scorers = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, 1)) for _ in range(n_channels)
        )
        self.theta = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, n_channels)))
        self.register_buffer("last_att", self.theta.detach().clone())
        self.register_buffer("mix", torch.tensor([decay_weight, 1.0 - decay_weight]))
        self.decay_weight, self.decay_base = decay_weight, decay_base

    def mix_at(self, epoch: int) -> tuple[float, float]:
        """``(w1, w2)`` after the updates of epochs ``1..epoch``, in double precision as the code."""
        w1, w2 = self.decay_weight, 1.0 - self.decay_weight
        for e in range(1, epoch + 1):
            a = w1 * math.pow(self.decay_base, e)
            w1, w2 = a / (a + w2), w2 / (a + w2)
        return w1, w2

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> None:
        """The code's ``update_w``: decay the mixing weights, copy the last attention into θ."""
        self.mix.copy_(torch.tensor(self.mix_at(epoch)))
        self.theta.copy_(self.last_att)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(U, C)`` from the propagated user channels ``(U, C, d)``."""
        logits = torch.cat([f(users[:, c]) for c, f in enumerate(self.scorers)], dim=1)
        return torch.softmax(self.mix[0] * logits + self.mix[1] * self.theta, dim=1)


@MODELS.register("lirdrec")
class LIRDRec(DotProductRecommender):
    """ID-free items from multimodal MLPs + DCT shared branch, LightGCN (layer sum), PWC fusion."""

    min_modalities = 1

    #: official LIRDRec.yaml: lr 1e-4 (one value: searched around it), n_ui_layers [2, 3, 4], mm_image_weight
    #: [0.1, 0.2] (widened: any modality may dominate), reg_weight [1e-2, 1e-3, 1e-4], decay_weight [0.9, 0.95, 0.99]
    search_space: ClassVar[dict] = {"train.learning_rate": FloatRange(3e-5, 3e-3, log=True),
                                    "n_ui_layers": IntRange(2, 4), "mm_image_weight": FloatRange(0.05, 0.95),
                                    "reg_weight": FloatRange(1e-4, 1e-2, log=True),
                                    "decay_weight": Choice((0.9, 0.95, 0.99))}

    class Config(ModelConfig):
        embedding_size: int = Field(64, ge=1, description="d: width of each channel (final vectors: channels x d)")
        hidden_size: int | None = Field(None, ge=1, description="hidden width of the item MLPs; None = 4 x d (code)")
        n_ui_layers: int = Field(2, ge=0, description="LightGCN layers on the user-item graph (grid [2, 3, 4])")
        n_mm_layers: int = Field(1, ge=0, description="item-item layers in the residual step H + A_mm H")
        knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's kNN graph")
        mm_image_weight: float = Field(
            0.1, ge=0, le=1, description="weight of the 'image' kNN graph (grid [0.1, 0.2]); the other "
                                         "modalities share the rest equally"
        )
        mm_weights: dict[str, float] | None = Field(
            None, description="explicit kNN-graph weight per modality (normalised); overrides mm_image_weight"
        )
        reg_weight: float = Field(1e-2, ge=0, description="λ of mean(U²) + mean(I²) (grid [1e-2, 1e-3, 1e-4])")
        decay_weight: float = Field(0.9, gt=0, lt=1, description="PWC's initial w1 (grid [0.9, 0.95, 0.99])")
        decay_base: float = Field(0.9, gt=0, le=1, description="PWC's decay base b: w1 shrinks by b^epoch")
        pwc_hidden: int | None = Field(None, ge=1, description="hidden width of PWC's channel MLPs; None = d // 4")
        dct_mode: Literal["1d", "2d", "none"] = Field(
            "1d", description="shared-branch DCT: '1d' per item (code), '2d' items x features (paper), 'none'"
        )
        modalities: list[str] | None = Field(None, description="modalities used as channels; None = all")
        id_hybrid: bool = Field(False, description="add learned item ID embeddings (ablation of the ID-free design)")
        item_chunk: int | None = Field(
            None, ge=1, description="recompute the item MLPs in blocks of this many items during backward "
                                    "(activation checkpointing): their activations take O(block) memory "
                                    "instead of O(items), for ~1/3 more MLP compute; None = keep them"
        )
        legacy_stale_eval: bool = Field(
            False, description="score with the last training forward of the epoch (official code) instead of "
                               "recomputing"
        )

    def __init__(self, config: Config, data: TrainingData):
        super().__init__(config, data)
        mods = {n: data.modalities[n] for n in self._modality_names(config, data)}
        d = config.embedding_size
        hidden = config.hidden_size or 4 * d
        self.channels = [*mods, SHARED]
        n_ch = len(self.channels)

        self.features = feature_tables(mods)
        self.projections = nn.ModuleDict(
            {n: MaskedProjection(t.dim, d, hidden=hidden, out_bias=False) for n, t in self.features.items()}
        )
        for proj in self.projections.values():  # a zero missing vector would sit at F.normalize's kink
            nn.init.normal_(proj.missing, std=d ** -0.5)
        # shared branch input: the 2-D spectrum mixes items, so it is a table; the per-item DCT (and 'none')
        # is folded into the first layer's weights (dct_basis: one orthonormal DCT-II matrix per modality)
        width = sum(m.dim for m in mods.values())
        table = None if config.dct_mode != "2d" else torch.from_numpy(
            np.concatenate([dct2_spectrum(m) for m in mods.values()], axis=1))
        self.register_buffer("shared_table", table, persistent=False)
        self.dct_basis = nn.Module()  # buffers basis_0.. in feature order (1d only): rebuilt, never saved
        for j, m in enumerate(mods.values() if config.dct_mode == "1d" else ()):
            self.dct_basis.register_buffer(f"basis_{j}", torch.from_numpy(dct_matrix(m.dim)), persistent=False)
        blocks = np.stack([~m.available for m in mods.values()], axis=1)
        if config.dct_mode == "2d":  # rows of the 2-D spectrum are frequencies, not items
            blocks[:] = False
        self.register_buffer("shared_missing_blocks", torch.from_numpy(blocks.astype(np.float32)), persistent=False)
        self._any_missing_block = bool(blocks.any())  # none: the missing-block term is exactly zero, skipped
        self.shared = nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(),
                                    nn.Linear(hidden, d, bias=False))
        self.shared_missing = nn.Parameter(torch.zeros(len(mods), hidden))

        self.user_preference = nn.Parameter(xavier_blocks(self.n_users, n_ch, d))
        self.item_id_embedding = nn.Parameter(xavier_blocks(self.n_items, n_ch, d)) if config.id_hybrid else None
        self.pwc = ProgressiveWeightCopying(self.n_users, n_ch, d, config.pwc_hidden or max(d // 4, 1),
                                            config.decay_weight, config.decay_base)

        self.adj = SparseOperator(normalized_bipartite(data.train), symmetric=True)
        self.mm_weights = modality_weights(list(mods), config.mm_image_weight, "image", config.mm_weights)
        # A_mm = sum_m w_m A_m: binary top-k cosine graphs (self included), D^-1/2 S D^-1/2 (each edge 1/k),
        # rows of items missing a modality renormalised over the modalities they have (FREEDOM's helper)
        self.item_adj = SparseOperator(multimodal_knn_graph(mods, config.knn_k, self.mm_weights))
        if config.legacy_stale_eval:
            self.register_buffer("stale", torch.zeros(self.n_users + self.n_items, n_ch * d))
            self.register_buffer("stale_ready", torch.tensor(False))
        self.n_cold_items = int((np.diff(data.train.tocsc().indptr) == 0).sum())

    @staticmethod
    def _modality_names(config: Config, data: TrainingData) -> list[str]:
        names = sorted(data.modalities) if config.modalities is None else sorted(set(config.modalities))
        for n in names:
            if n not in data.modalities:
                raise ConfigError(
                    f"lirdrec.modalities names '{n}', which dataset '{data.name}' does not have."
                    f"{suggest(n, set(data.modalities))} Available: {', '.join(sorted(data.modalities))}."
                )
        if not names:
            raise ConfigError("lirdrec.modalities is empty. Fix: name at least one modality, or leave it unset.")
        return names

    # forward ---------------------------------------------------------------------------------------
    def shared_weights(self) -> list[torch.Tensor]:
        """The shared branch's first-layer weight per modality block, with the per-item DCT folded in:
        ``W_s,m D_m`` (``dct_mode: 1d``), ``W_s,m`` (``none``, ``2d``); ``spectrum @ Wᵀ`` = ``X_m @ (W D)ᵀ``."""
        blocks = torch.split(self.shared[0].weight, [t.dim for t in self.features.values()], dim=1)
        bases = list(self.dct_basis.buffers())
        return [w @ b for w, b in zip(blocks, bases)] if bases else list(blocks)

    def shared_spectrum(self) -> torch.Tensor:
        """The shared branch's input ``(I, Σ dims)``: the concatenated spectra (for inspection and tests)."""
        if self.shared_table is not None:
            return self.shared_table
        bases = list(self.dct_basis.buffers())
        values = [t.values for t in self.features.values()]
        return torch.cat([v @ b.T for v, b in zip(values, bases)] if bases else values, dim=1)

    def shared_branch(self, values: list[torch.Tensor], shared_w: list[torch.Tensor],
                      missing: torch.Tensor | None) -> torch.Tensor:
        """The shared channel ``(n, d)`` from each modality's feature rows (zero where missing), the folded
        first-layer weights (:meth:`shared_weights`) and the missing-block flags ``(n, M)`` (None: none)."""
        lin, act, last = self.shared
        hidden = lin.bias + sum(v @ w.T for v, w in zip(values, shared_w))
        if missing is not None:
            hidden = hidden + missing @ self.shared_missing
        return last(act(hidden))

    def _layer0(self, start: int, stop: int, shared_w: list[torch.Tensor]) -> torch.Tensor:
        """Layer-0 inputs ``(stop - start, C, d)`` of items ``start..stop-1``."""
        rows = slice(start, stop)
        out = [self.projections[n](t.values[rows], t.available[rows]) for n, t in self.features.items()]
        missing = self.shared_missing_blocks[rows] if self._any_missing_block else None
        if self.shared_table is not None:  # 2d: the spectrum's rows are frequencies, fed as they are
            lin, act, last = self.shared
            hidden = lin(self.shared_table[rows])
            out.append(last(act(hidden if missing is None else hidden + missing @ self.shared_missing)))
        else:
            out.append(self.shared_branch([t.values[rows] for t in self.features.values()], shared_w, missing))
        return torch.stack(out, dim=1)

    def item_inputs(self) -> torch.Tensor:
        """Layer-0 item inputs ``(I, C, d)``: modality MLPs and the shared MLP on the DCT spectra (MFT).

        In the shared branch a missing modality's block adds a learned hidden vector instead of the
        block's (zero) features. With ``id_hybrid`` each channel also gets the item's ID embedding.
        With ``item_chunk`` (training only) the MLPs run in blocks whose activations are recomputed in
        the backward pass (``torch.utils.checkpoint``): the same values and gradients.
        """
        shared_w = self.shared_weights()
        step = self.config.item_chunk
        if step and step < self.n_items and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            x = torch.cat([checkpoint(self._layer0, a, min(a + step, self.n_items), shared_w, use_reentrant=False)
                           for a in range(0, self.n_items, step)])
        else:
            x = self._layer0(0, self.n_items, shared_w)
        if self.item_id_embedding is not None:
            x = x + self.item_id_embedding.view(self.n_items, len(self.channels), -1)
        return x

    def propagated(self) -> torch.Tensor:
        """Layer-summed LightGCN output ``(U + I, C·d)`` on the normalised layer-0 inputs."""
        n_u, n_ch, d = self.n_users, len(self.channels), self.config.embedding_size
        x = torch.cat([self.user_preference.view(n_u, n_ch, d), self.item_inputs()], dim=0)
        x = F.normalize(x, dim=-1).reshape(-1, n_ch * d)
        return propagate(self.adj, x, self.config.n_ui_layers, combine="sum")

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final (users ``(U, C·d)``, items ``(I, C·d)``, PWC weights ``(U, C)``); see the module docstring."""
        n_u, n_ch, d = self.n_users, len(self.channels), self.config.embedding_size
        # split, not two slices: the backward of a slice zero-fills a (U + I)-row gradient and adds the two
        users, items = torch.split(self.propagated(), [n_u, self.n_items])
        users = users.view(n_u, n_ch, d)
        hop = items
        for _ in range(self.config.n_mm_layers):
            hop = self.item_adj(hop)
        items = items + hop
        att = self.pwc(users)
        return (users * att.unsqueeze(-1)).reshape(n_u, n_ch * d), items, att

    # training --------------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """PWC's per-epoch update (the code's ``pre_epoch_processing``)."""
        self.pwc.start_epoch(epoch)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """BPR on the batch + ``reg_weight · (mean(U²) + mean(I²))`` over all users and items (code)."""
        users, items, att = self.forward()
        self.pwc.last_att.copy_(att.detach())
        if self.config.legacy_stale_eval:
            self.stale.copy_(torch.cat([users, items]).detach())
            self.stale_ready.fill_(True)
        u, pos, neg = batch["users"], batch["pos_items"], batch["neg_items"]
        ue = users[u]
        rank = bpr_loss((ue * items[pos]).sum(-1), (ue * items[neg]).sum(-1))
        reg = users.pow(2).mean() + items.pow(2).mean()
        return {"loss": rank + self.config.reg_weight * reg, "bpr": rank, "reg": reg}

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        """With ``id_hybrid``: the item ID table vs the item MLPs (modality and shared branches)."""
        if self.item_id_embedding is None:
            return {}
        feature = [*self.projections.parameters(), *self.shared.parameters(), self.shared_missing]
        return {"id": [self.item_id_embedding], "feature": feature}

    # scoring ---------------------------------------------------------------------------------------
    def user_item_vectors(self, history=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The final embeddings, or (``legacy_stale_eval``) those of the last training forward."""
        if self.config.legacy_stale_eval and bool(self.stale_ready):
            return self.stale[: self.n_users], self.stale[self.n_users:]
        users, items, _ = self.forward()
        return users, items

    # new items ---------------------------------------------------------------------------------------
    def can_place_items(self) -> bool:
        """The item tower places new items unless items carry IDs (``id_hybrid``) or the shared branch's
        spectrum mixes items (``dct_mode: 2d``)."""
        return not self.config.id_hybrid and self.config.dct_mode != "2d"

    def clear_scoring(self) -> None:
        super().clear_scoring()
        self._placement: torch.Tensor | None = None

    @torch.no_grad()
    def place_items(self, features) -> torch.Tensor:
        """Vectors of new items from their features, by the model's own item tower.

        Layer 0 is the modality MLPs and the shared DCT branch on the item's features (a missing modality
        uses the learned missing vectors), L2-normalised per channel. A new item has no interactions, so
        user-item propagation leaves it unchanged; the item-item step adds ``sum_m w_m / k (x + sum of its
        k - 1 nearest catalogue items' propagated vectors)`` over the modalities it has, normalised by their
        weight, as ``A_mm`` does for a catalogue item. Catalogue vectors are not changed.
        """
        if not self.can_place_items():
            return super().place_items(features)
        if getattr(self, "_placement", None) is None:
            self._placement = self.propagated()[self.n_users:]
        n = len(next(iter(features.values()))[0]) if features else 0
        chans, inputs, missing, have = [], [], [], {}
        for name, table in self.features.items():
            vals, ok = features.get(name, (np.zeros((n, table.dim), np.float32), np.zeros(n, bool)))
            vals = np.asarray(vals, np.float32).reshape(n, table.dim)
            ok = np.asarray(ok, bool).reshape(n)
            have[name] = (vals, ok)
            chans.append(self.projections[name](torch.from_numpy(vals).to(self.device),
                                                torch.from_numpy(ok).to(self.device)))
            inputs.append(torch.from_numpy(np.where(ok[:, None], vals, 0.0).astype(np.float32)).to(self.device))
            missing.append((~ok).astype(np.float32))
        chans.append(self.shared_branch(inputs, self.shared_weights(),
                                        torch.from_numpy(np.stack(missing, axis=1)).to(self.device)))
        x = F.normalize(torch.stack(chans, dim=1), dim=-1).reshape(n, -1)
        k = self.config.knn_k
        hop, total = torch.zeros_like(x), torch.zeros(n, 1, device=x.device)
        for name, w in self.mm_weights.items():
            vals, ok = have[name]
            if not ok.any():
                continue
            table = self.features[name]
            rows = torch.nonzero(table.available).squeeze(1)
            sims = F.normalize(torch.from_numpy(vals).to(self.device), dim=-1) @ F.normalize(table.values[rows], dim=-1).T
            nearest = rows[torch.topk(sims, min(k - 1, len(rows)), dim=1).indices]
            use = torch.from_numpy(ok).to(self.device).unsqueeze(1)
            hop += use * (w / k) * (x + self._placement[nearest].sum(1))
            total += use * w
        return x + hop / total.clamp_min(1e-12)

    def memory_hint(self) -> dict[str, int]:
        width = len(self.channels) * self.config.embedding_size
        hidden = self.config.hidden_size or 4 * self.config.embedding_size
        return {
            "propagation (forward + backward)": 3 * (self.config.n_ui_layers + 1) * (self.n_users + self.n_items)
                                                * width * 4,
            "item MLP activations": 2 * len(self.channels) * min(self.config.item_chunk or self.n_items,
                                                                 self.n_items) * hidden * 4,
        }

    def extra_info(self) -> dict[str, Any]:
        mean_att = self.pwc.last_att.mean(dim=0).tolist()
        return {
            "channels": self.channels,
            "dct_mode": self.config.dct_mode,
            "graph_weights": self.mm_weights,
            "pwc_w1_w2": [float(w) for w in self.pwc.mix],
            "pwc_mean_channel_weight": dict(zip(self.channels, mean_att)),
            "items_without_training_interactions": self.n_cold_items,
            "id_hybrid": self.config.id_hybrid,
        }
