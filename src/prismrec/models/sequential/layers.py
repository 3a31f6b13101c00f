"""Sequence encoders shared by the sequential models (SASRec, SASRec with features, MDSRec, Demure, ANT)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .base import PAD


def positions(table: nn.Embedding, tokens: torch.Tensor, from_start: bool) -> torch.Tensor:
    """Position embeddings of left-padded token rows ``(B, L)``: ``(B, L, d)`` counted from the oldest
    visible item (``from_start``, RecBole's: a prefix's items sit at the same positions in a window as when
    the prefix is scored alone) or ``(1, L, d)`` from the latest (the last slot is always the latest item)."""
    L = tokens.shape[1]
    if from_start:
        first = (tokens == PAD).sum(1, keepdim=True)
        return table((torch.arange(L, device=tokens.device)[None] - first).clamp(min=0))
    return table.weight[-L:][None]


class CausalTransformer(nn.Module):
    """SASRec's encoder: learned positions, ``n_layers`` causal self-attention blocks, last position out.

    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (Sec. III-B/C): input
    ``E + P`` (item + position embeddings), dropout, blocks of multi-head causal self-attention and a
    point-wise feed-forward network with residual connections and layer norm; the representation of
    a sequence is the output at its last (most recent) position. Sequences are left-padded, so the
    last position always holds the latest item. Padded keys are masked with a large negative number;
    a position always sees itself, so padded rows stay finite.

    Positions (``positions``): ``from_end`` (the paper's left-padded slots: the latest item always has
    the last position) or ``from_start`` (RecBole's: the oldest visible item has position 0). With
    ``from_start`` a causal pass over a window gives at every position exactly the representation of
    the prefix that ends there (when the window holds the whole prefix), so window training equals
    prefix training; with ``from_end`` a prefix's last item sits at another position in a window than
    when the prefix is scored.

    Feed-forward width ``ff_mult * dim`` (SASRec/RecBole: 4 x 64; ANT: 1 x). Initialisation (``init``):
    ``torch`` keeps torch's defaults for the blocks (xavier attention projections, Kaiming-uniform
    feed-forward layers); ``normal`` is RecBole's ``_init_weights`` as SASRec, UniSRec and ANT apply it:
    every linear weight, the attention's query/key/value projection included, from N(0, 0.02), biases 0,
    layer norms 1 / 0.
    """

    def __init__(self, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 2, dropout: float = 0.2,
                 ff_mult: int = 4, positions: str = "from_end", init: str = "torch"):
        super().__init__()
        if positions not in ("from_end", "from_start"):
            raise ValueError(f"positions is 'from_end' or 'from_start', not {positions!r}")
        if init not in ("torch", "normal"):
            raise ValueError(f"init is 'torch' or 'normal', not {init!r}")
        self.from_start = positions == "from_start"
        self.position = nn.Embedding(max_len, dim)
        # same scale as the item embeddings (N(0, 0.02), as SASRec/RecBole): at nn.Embedding's default
        # N(0, 1) the positions drown the items after the input layer norm and nothing is learned
        nn.init.normal_(self.position.weight, std=0.02)
        self.norm_in = nn.LayerNorm(dim, eps=1e-8)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim * ff_mult, dropout, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.n_heads = n_heads
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1),
                             persistent=False)
        if init == "normal":
            self.reset_normal()

    @torch.no_grad()
    def reset_normal(self) -> None:
        """RecBole's initialisation: N(0, 0.02) weights (positions, linear layers, the attention's packed
        query/key/value projection), zero biases, layer norms 1 / 0."""
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0.0, 0.02)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.MultiheadAttention):
                mod.in_proj_weight.normal_(0.0, 0.02)
                mod.in_proj_bias.zero_()
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
        self.position.weight.normal_(0.0, 0.02)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        """``x``: item inputs ``(B, L, d)``; ``tokens``: the padded token ids ``(B, L)`` (0 = padding)."""
        B, L, _ = x.shape
        h = self.dropout(self.norm_in(x + positions(self.position, tokens, self.from_start)))
        keep = (tokens != PAD).unsqueeze(-1)
        h = h * keep
        blocked = self.causal[-L:, -L:][None] | (tokens == PAD)[:, None, :]  # (B, L, L)
        # every position may attend to itself, so no row is fully masked (padded queries would
        # otherwise give NaN on torch's fused inference path)
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=blocked.device)[None]
        mask = torch.zeros(blocked.shape, dtype=h.dtype, device=h.device).masked_fill(blocked, -1e9)
        mask = mask.repeat_interleave(self.n_heads, dim=0)
        out = self.layers(h, mask=mask)
        return out if all_positions else out[:, -1]


class ItemTokens(nn.Module):
    """Input/output item embeddings of the ID and ID + feature models (SASRec(F), GRU4Rec(F), Demure).

    Token ``t`` (item ``t - 1``; 0 is padding) is ``E_id[t] + sum_m W_m x_m[t - 1]``: an ID embedding
    plus, with ``modalities``, a linear projection of each frozen modality feature (a learned vector
    where the feature is missing, :class:`~prismrec.models.layers.ModalityProjections`), or with
    ``feature_encoder="moe"`` UniSRec's/ANT's whitening mixture-of-experts adaptor per modality
    (:class:`~prismrec.models.moe.MoEProjections`, ``n_experts``, ``adaptor_dropout``). With
    ``use_ids=False`` the ID table is frozen at zero, so items are their features alone.

    The projected feature tables (all items through every modality's projection) are the expensive
    part. Inside :meth:`shared_tables` (one training step: the encoder's inputs and the output item
    table both read them) and between :meth:`hold_for_scoring` and :meth:`release` (one scoring pass)
    they are computed once.
    """

    def __init__(self, n_items: int, dim: int, modalities=None, *, use_ids: bool = True, init: str = "normal",
                 feature_encoder: str = "linear", n_experts: int = 8, adaptor_dropout: float = 0.2,
                 expert_dropout: str = "shared"):
        super().__init__()
        from ..layers import ModalityProjections
        from ..moe import MoEProjections

        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        if init == "xavier":
            nn.init.xavier_normal_(self.embedding.weight)
        else:
            nn.init.normal_(self.embedding.weight, std=0.02)
        if feature_encoder not in ("linear", "moe"):
            raise ValueError(f"feature_encoder is 'linear' or 'moe', not {feature_encoder!r}")
        if not modalities:
            self.features = None
        elif feature_encoder == "moe":
            self.features = MoEProjections(modalities, dim, n_experts=n_experts, dropout=adaptor_dropout,
                                           expert_dropout=expert_dropout)
        else:
            self.features = ModalityProjections(modalities, dim)
        self.use_ids = use_ids or self.features is None
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
            if not self.use_ids:
                self.embedding.weight.zero_()
        self.embedding.weight.requires_grad_(self.use_ids)
        self._step: list[dict[str, torch.Tensor]] | None = None   # inside shared_tables: [] or [tables]
        self._scoring: dict[str, torch.Tensor] | None = None      # held for a scoring pass

    def _project(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.features.names if self.features is not None else ():
            f = self.features(name)
            out[name] = torch.cat([torch.zeros_like(f[:1]), f], dim=0)
        return out

    def feature_tables(self) -> dict[str, torch.Tensor]:
        """Projected features of all tokens per modality ``(n_items + 1, d)``; the padding row is zero.

        Computed once per :meth:`shared_tables` block, and once per scoring pass (held tables are read only
        in evaluation mode without gradients, so a loss or an attribution always gets its own graph)."""
        if self._step is not None:
            if not self._step:
                self._step.append(self._project())
            return self._step[0]
        if self._scoring is not None and not self.training and not torch.is_grad_enabled():
            return self._scoring
        return self._project()

    @contextmanager
    def shared_tables(self) -> Iterator[None]:
        """Within the block, :meth:`feature_tables` is computed on first use and then reused (one
        autograd graph, so the gradients of every use add up as before). Nested blocks share the outer one."""
        if self._step is not None:
            yield
            return
        self._step = []
        try:
            yield
        finally:
            self._step = None

    @torch.no_grad()
    def hold_for_scoring(self) -> None:
        """Compute the feature tables once for the scoring pass that follows (until :meth:`release`)."""
        self._scoring = None
        self._scoring = self._project()

    def release(self) -> None:
        self._scoring = None

    def table(self) -> torch.Tensor:
        """All token embeddings ``(n_items + 1, d)``."""
        e = self.embedding.weight
        for f in self.feature_tables().values():
            e = e + f
        return e

    def parts(self, seqs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Input parts of ``seqs`` (see ``SequentialRecommender.input_parts``): one per modality, plus ``"id"``."""
        parts = {name: f[seqs] for name, f in self.feature_tables().items()}
        if self.use_ids:
            parts["id"] = self.embedding(seqs)
        return parts

    def diagnostic_groups(self) -> dict[str, list[nn.Parameter]]:
        """ID vs feature-projection parameters, for the trainer's gradient-norm ratio."""
        if self.features is None or not self.use_ids:
            return {}
        return {"id": [self.embedding.weight], "feature": self.features.projection_parameters()}
