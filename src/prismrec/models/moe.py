"""Mixture-of-experts item encoders over frozen features, shared by the sequential and transfer families.

UniSRec (Hou et al., KDD'22, ``MoEAdaptorLayer`` / ``PWLayer`` in RUCAIBox/UniSRec) and ANT (Peng et al.,
arXiv 2309.10195, its "M2R" adaptor in ninglab/ANT) map a frozen feature ``x`` (e.g. a sentence embedding of
the item's text) to the model's width through ``E`` experts mixed by a softmax gate:

    h_k = W_k (drop(x) - b_k)                          parametric whitening expert (no output bias)
    g   = softmax(x G + [train] eps * (softplus(x N) + 0.01)),  eps ~ N(0, I)
    e   = sum_k g_k h_k

:class:`MoEAdaptor` is that layer (ANT's :class:`~prismrec.models.transfer.modules.ItemEncoder` builds one
per modality and fuses them); :class:`MoEProjections` gives SASRec-F's item tokens the same interface as the
linear :class:`~prismrec.models.layers.ModalityProjections` (``feature_encoder: moe``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..data.dataset import Modality
from .layers import FeatureTable


class MoEAdaptor(nn.Module):
    """``E`` experts from ``d_in`` to ``d`` with a (noisy, dense) softmax gate over the experts.

    ``kind="whiten"``: expert ``k`` is ``W_k (x - b_k)`` (UniSRec's PWLayer, no output bias);
    ``kind="linear"``: expert ``k`` is ``W_k x + c_k`` (ANT's price experts).
    ``expert_dropout="per_expert"``: every expert draws its own dropout mask, as UniSRec's and ANT's code (one
    ``nn.Dropout`` inside each expert module); ``"shared"``: one mask for all experts of a row (the toolkit's
    default until this option existed; the tables of docs/benchmarks.md ran with it). Per-expert masks hold an
    ``(n, E, d_in)`` tensor while training.
    """

    def __init__(self, d_in: int, d: int, n_experts: int = 8, kind: Literal["whiten", "linear"] = "whiten",
                 dropout: float = 0.2, expert_dropout: Literal["shared", "per_expert"] = "shared"):
        super().__init__()
        if expert_dropout not in ("shared", "per_expert"):
            raise ValueError(f"expert_dropout is 'shared' or 'per_expert', not {expert_dropout!r}")
        self.d_in, self.d, self.n_experts, self.kind = d_in, d, n_experts, kind
        self.per_expert = expert_dropout == "per_expert"
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, d))
        if kind == "whiten":
            self.bias_in = nn.Parameter(torch.zeros(n_experts, d_in))
        else:
            self.bias_out = nn.Parameter(torch.zeros(n_experts, d))
        self.gate = nn.Parameter(torch.zeros(d_in, n_experts))
        self.noise = nn.Parameter(torch.zeros(d_in, n_experts))
        self.dropout = nn.Dropout(dropout)
        self.reset("normal")

    def reset(self, init: Literal["normal", "xavier"] = "normal", *, keep_output_bias: bool = False) -> None:
        """Re-initialise the experts (N(0, 0.02) as ANT's pre-training, or xavier-normal as its
        re-learning), zero the whitening biases and the gates. ``keep_output_bias`` keeps the linear
        experts' bias (ANT's re-learning does not reset the price experts' ``nn.Linear`` bias)."""
        with torch.no_grad():
            if init == "xavier":
                std = math.sqrt(2.0 / (self.d_in + self.d))
                self.weight.normal_(0.0, std)
            else:
                self.weight.normal_(0.0, 0.02)
            if self.kind == "whiten":
                self.bias_in.zero_()
            elif not keep_output_bias:
                self.bias_out.zero_()
            self.gate.zero_()
            self.noise.zero_()

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.gate
        if self.training:
            logits = logits + torch.randn_like(logits) * (nn.functional.softplus(x @ self.noise) + 0.01)
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(n, d_in)`` -> ``(n, d)``."""
        g = self.gates(x)                                                     # (n, E)
        if self.per_expert and self.training and self.dropout.p > 0:
            xd = self.dropout(x.unsqueeze(1).expand(len(x), self.n_experts, self.d_in))   # a mask per expert
            h = torch.einsum("nei,eio->neo", xd, self.weight)
        else:
            xd = self.dropout(x)
            h = (xd @ self.weight.permute(1, 0, 2).reshape(self.d_in, -1)).view(len(x), self.n_experts, self.d)
        if self.kind == "whiten":
            h = h - torch.einsum("ed,edk->ek", self.bias_in, self.weight)[None]
        else:
            h = h + self.bias_out[None]
        return (g.unsqueeze(-1) * h).sum(1)


class MoEProjections(nn.Module):
    """One frozen feature table and one whitening :class:`MoEAdaptor` to ``out_dim`` per modality (sorted by
    name), with a learned vector for items whose feature is missing: the drop-in MoE counterpart of
    :class:`~prismrec.models.layers.ModalityProjections` (``self(name, items)`` projects the rows ``items``,
    all rows when None). Experts N(0, 0.02), whitening biases and gates zero, as UniSRec/ANT initialise them."""

    def __init__(self, modalities: dict[str, Modality], out_dim: int, *, n_experts: int = 8, dropout: float = 0.2,
                 expert_dropout: Literal["shared", "per_expert"] = "shared"):
        super().__init__()
        self.names = sorted(modalities)
        self.tables = nn.ModuleDict({n: FeatureTable(modalities[n]) for n in self.names})
        self.adaptors = nn.ModuleDict({n: MoEAdaptor(self.tables[n].dim, out_dim, n_experts, "whiten", dropout,
                                                     expert_dropout) for n in self.names})
        self.missing = nn.ParameterDict({n: nn.Parameter(torch.empty(out_dim).normal_(0.0, 0.02))
                                         for n in self.names})

    def forward(self, name: str, items: torch.Tensor | None = None) -> torch.Tensor:
        t = self.tables[name]
        values, avail = (t.values, t.available) if items is None else (t.values[items], t.available[items])
        e = self.adaptors[name](values)
        return torch.where(avail.unsqueeze(-1), e, self.missing[name].expand_as(e))

    def projection_parameters(self) -> list[nn.Parameter]:
        """Experts, gates and missing vectors (not the feature tables)."""
        return list(self.adaptors.parameters()) + list(self.missing.parameters())

    def in_dim(self) -> int:
        return sum(self.tables[n].dim for n in self.names)
