"""Building blocks of the transferable (ID-free) item encoder: MoE adaptors, price features, fusion.

ANT (Peng, Parthasarathy & Ning, arXiv 2309.10195; official code ninglab/ANT) and UniSRec (Hou et al.,
KDD'22) represent an item only by frozen pre-extracted features. Each modality ``m`` goes through a
mixture of ``E`` experts (the "M2R" adaptor), and the modalities are fused:

    h^m_k = W^m_k (drop(x^m) - b^m_k)                  text / image experts: parametric whitening
    h^p_k = W^p_k drop(x^p) + c^p_k                     price experts: plain linear
    g^m   = softmax(x^m G^m + [train] eps * (softplus(x^m N^m) + 0.01)),  eps ~ N(0, I)
    e^m   = sum_k g^m_k h^m_k
    e     = sum_m e^m + beta * (e^image * e^text)

The gate reads the raw feature (no dropout), G and N start at zero (uniform gates). See
docs/models/ant.md for every choice and deviation.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...data.dataset import Modality
from ..moe import MoEAdaptor  # shared with SASRec-F's MoE item encoder (models/moe.py)

__all__ = ["MoEAdaptor", "ItemEncoder", "encode_prices", "price_encoder_name", "price_modality"]


class ItemEncoder(nn.Module):
    """Fused item representations from frozen modality features, one :class:`MoEAdaptor` per modality.

    Items whose feature of modality ``m`` is unavailable get a learned per-modality vector instead of
    the adaptor's output on a zero vector (the toolkit's rule; ANT feeds zeros, see docs/models/ant.md).
    """

    def __init__(self, dims: dict[str, int], d: int, n_experts: int = 8, dropout: float = 0.2,
                 beta: float = 0.1, pair: tuple[str, str] = ("image", "text"), expert_dropout: str = "shared"):
        super().__init__()
        self.names = sorted(dims)
        self.adaptors = nn.ModuleDict({
            n: MoEAdaptor(dims[n], d, n_experts, "linear" if n == "price" else "whiten", dropout, expert_dropout)
            for n in self.names
        })
        self.missing = nn.ParameterDict({n: nn.Parameter(torch.empty(d)) for n in self.names})
        self.beta = beta
        self.pair = tuple(pair) if len(pair) == 2 and all(p in dims for p in pair) else None
        self.reset_missing()

    def reset_missing(self) -> None:
        with torch.no_grad():
            for p in self.missing.values():
                p.normal_(0.0, 0.02)

    def modality_outputs(self, tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
                         rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``e^m`` of every item (or of ``rows``) per modality: ``tables[m] = (values, available)``."""
        out = {}
        for n in self.names:
            values, avail = tables[n]
            if rows is not None:
                values, avail = values[rows], avail[rows]
            e = self.adaptors[n](values)
            out[n] = torch.where(avail.unsqueeze(-1), e, self.missing[n].expand_as(e))
        return out

    def fuse(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The summands of ``e``: every modality's ``e^m`` plus ``"fusion"`` = beta * e^image * e^text."""
        out = dict(parts)
        if self.pair is not None and self.beta != 0:
            out["fusion"] = self.beta * parts[self.pair[0]] * parts[self.pair[1]]
        return out

    def forward(self, tables: dict[str, tuple[torch.Tensor, torch.Tensor]],
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(fused ``(n, d)``, the per-modality ``e^m`` before fusion)."""
        parts = self.modality_outputs(tables, rows)
        return sum(self.fuse(parts).values()), parts


# ------------------------------------------------------------------------------------------ price
def price_encoder_name(kind: str, dim: int, buckets: int) -> str:
    """The provenance 'encoder' of a price feature (equal settings give equal feature spaces)."""
    return f"prismrec price: sinusoidal(log1p(price), {dim})" if kind == "sinusoidal" else \
        f"prismrec price: quantile bucket one-hot ({buckets}, per dataset)"


def encode_prices(prices: np.ndarray, kind: Literal["sinusoidal", "bucket"] = "sinusoidal", dim: int = 64,
                  buckets: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Frozen price features ``(n, dim)`` and the availability mask (finite price >= 0).

    ``sinusoidal``: ``z = log1p(price)``; ``[sin(w_j z), cos(w_j z)]`` for ``dim / 2`` frequencies
    ``w_j`` geometric from 0.5 to 50 radians per unit of log-price (a price ratio of e^(2 pi / 50) ~ 13 %
    turns the fastest pair a full cycle; the slowest separates 1 $ from 1000 $ monotonically).
    ``bucket``: one-hot of the price's quantile bucket among the dataset's own prices (``buckets``
    equal-frequency buckets), i.e. the item's *relative* price level in its domain.
    """
    p = pd.to_numeric(pd.Series(prices), errors="coerce").to_numpy(dtype=np.float64)
    avail = np.isfinite(p) & (p >= 0)
    if kind == "sinusoidal":
        half = dim // 2
        w = np.exp(np.linspace(np.log(0.5), np.log(50.0), half))
        z = np.log1p(np.where(avail, p, 0.0))[:, None] * w[None]
        out = np.concatenate([np.sin(z), np.cos(z)], axis=1)
        if out.shape[1] < dim:
            out = np.pad(out, ((0, 0), (0, dim - out.shape[1])))
    else:
        out = np.zeros((len(p), buckets))
        if avail.any():
            edges = np.quantile(p[avail], np.linspace(0, 1, buckets + 1)[1:-1])
            idx = np.searchsorted(edges, p[avail], side="right")
            out[np.flatnonzero(avail), idx] = 1.0
    out[~avail] = 0.0
    return out.astype(np.float32), avail


def price_modality(items: pd.DataFrame | None, kind: str, dim: int, buckets: int) -> Modality | None:
    """The ``price`` modality of an item table with a ``price`` column (None when no item has a price)."""
    if items is None or "price" not in items.columns or kind == "none":
        return None
    values, avail = encode_prices(items["price"].to_numpy(), kind, dim, buckets)  # type: ignore[arg-type]
    if not avail.any():
        return None
    return Modality("price", values, avail, {"encoder": price_encoder_name(kind, dim, buckets), "source": "items.price"})
