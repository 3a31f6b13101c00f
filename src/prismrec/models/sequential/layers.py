"""Sequence encoders shared by the sequential models (SASRec, SASRec with features, MDSRec, Demure, ANT)."""

from __future__ import annotations

import torch
from torch import nn

from .base import PAD


class CausalTransformer(nn.Module):
    """SASRec's encoder: learned positions, ``n_layers`` causal self-attention blocks, last position out.

    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (Sec. III-B/C): input
    ``E + P`` (item + position embeddings), dropout, blocks of multi-head causal self-attention and a
    point-wise feed-forward network with residual connections and layer norm; the representation of
    a sequence is the output at its last (most recent) position. Sequences are left-padded, so the
    last position always holds the latest item. Padded keys are masked with a large negative number;
    a position always sees itself, so padded rows stay finite.
    """

    def __init__(self, dim: int, max_len: int, n_layers: int = 2, n_heads: int = 2, dropout: float = 0.2,
                 ff_mult: int = 4):
        super().__init__()
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

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, *, all_positions: bool = False) -> torch.Tensor:
        """``x``: item inputs ``(B, L, d)``; ``tokens``: the padded token ids ``(B, L)`` (0 = padding)."""
        B, L, _ = x.shape
        h = self.dropout(self.norm_in(x + self.position.weight[-L:][None]))
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
