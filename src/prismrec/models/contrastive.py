"""Contrastive losses whose negatives are a whole table (every user, every item), not the batch.

:func:`~prismrec.models.layers.info_nce` takes its negatives from the batch. Some models contrast each
anchor with *every* row of a table: LGMRec's hypergraph contrast (the batch's users against all users,
the positive items against all items), MENTOR's graph-perturbation contrast (all users against all
users). :func:`full_info_nce` computes that loss without an ``anchors x rows`` matrix when it would be
large: the log-sum-exp is taken block by block, each block recomputed in the backward pass
(``torch.utils.checkpoint``), so memory is one block (``block_bytes``) plus ``O(anchors x blocks)``.
:func:`softmax_cross_entropy` is the same machinery for plain dot-product logits (the full-softmax
next-item loss of the sequential models).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

BLOCK_BYTES = 64 * 2**20


def _block_logsumexp(a: torch.Tensor, c: torch.Tensor, inv_t: float) -> torch.Tensor:
    return torch.logsumexp((a * inv_t if inv_t != 1.0 else a) @ c.T, dim=1)


def blockwise_logsumexp(a: torch.Tensor, c: torch.Tensor, scale: float = 1.0,
                        block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """``logsumexp(scale * a @ c.T, dim=1)`` ``(n,)`` without the ``n x N`` matrix when it is larger than
    ``block_bytes``: blocks of rows x columns, each recomputed in the backward pass
    (``torch.utils.checkpoint``), so memory is one block plus ``O(n x blocks)``. Exact."""
    n, big_n = a.shape[0], c.shape[0]
    if 4 * n * big_n <= block_bytes:
        return _block_logsumexp(a, c, scale)
    cols = min(big_n, max(256, block_bytes // (4 * max(n, 1))))
    rows = min(n, max(1, block_bytes // (4 * cols)))
    grad = torch.is_grad_enabled() and (a.requires_grad or c.requires_grad)
    parts = []
    for r0 in range(0, n, rows):
        ar = a[r0:r0 + rows]
        blocks = [checkpoint(_block_logsumexp, ar, c[c0:c0 + cols], scale, use_reentrant=False) if grad
                  else _block_logsumexp(ar, c[c0:c0 + cols], scale) for c0 in range(0, big_n, cols)]
        parts.append(torch.logsumexp(torch.stack(blocks, dim=1), dim=1))
    return torch.cat(parts)


def _reduce(loss: torch.Tensor, reduction: Literal["mean", "sum", "none"]) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def softmax_cross_entropy(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor,
                          reduction: Literal["mean", "sum", "none"] = "mean",
                          block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """Full-softmax cross-entropy of the logits ``h @ table.T`` ``(n, N)`` with classes ``targets``.

    Up to ``block_bytes`` of logits it is ``F.cross_entropy(h @ table.T, targets)`` (bit for bit); above,
    the log-sum-exp is taken block by block (:func:`blockwise_logsumexp`), so memory stays bounded
    (the same loss to float tolerance, one more logits product in the backward pass)."""
    if 4 * h.shape[0] * table.shape[0] <= block_bytes:
        return F.cross_entropy(h @ table.T, targets, reduction=reduction)
    return _reduce(blockwise_logsumexp(h, table, 1.0, block_bytes) - (h * table[targets]).sum(-1), reduction)


def full_info_nce(anchors: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, temperature: float,
                  reduction: Literal["mean", "sum", "none"] = "mean",
                  block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """InfoNCE of ``anchors`` (n, d) against every row of ``table`` (N, d), row ``targets[r]`` positive:

    ``l_r = -log( exp(cos(a_r, t_{y_r})/τ) / Σ_{c=1..N} exp(cos(a_r, t_c)/τ) )``

    (the positive is among the ``N`` terms of the denominator, as in LGMRec's ``ssl_triple_loss`` and
    MENTOR's ``InfoNCE``; a cross-entropy with target ``y_r``). Exact; blockwise when ``4 n N`` bytes
    exceed ``block_bytes``.
    """
    a = F.normalize(anchors, dim=-1)
    c = F.normalize(table, dim=-1)
    inv_t = 1.0 / temperature
    pos = (a * c[targets]).sum(-1) * inv_t
    return _reduce(blockwise_logsumexp(a, c, inv_t, block_bytes) - pos, reduction)
