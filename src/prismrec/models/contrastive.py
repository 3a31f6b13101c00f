"""Contrastive losses whose negatives are a whole table (every user, every item), not the batch.

:func:`~prismrec.models.layers.info_nce` takes its negatives from the batch. Some models contrast each
anchor with *every* row of a table: LGMRec's hypergraph contrast (the batch's users against all users,
the positive items against all items), MENTOR's graph-perturbation contrast (all users against all
users). :func:`full_info_nce` computes that loss without an ``anchors x rows`` matrix when it would be
large: the log-sum-exp is taken block by block, each block recomputed in the backward pass
(``torch.utils.checkpoint``), so memory is one block (``block_bytes``) plus ``O(anchors x blocks)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

BLOCK_BYTES = 64 * 2**20


def _block_logsumexp(a: torch.Tensor, c: torch.Tensor, inv_t: float) -> torch.Tensor:
    return torch.logsumexp((a * inv_t) @ c.T, dim=1)


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
    n, big_n = a.shape[0], c.shape[0]
    if 4 * n * big_n <= block_bytes:
        lse = _block_logsumexp(a, c, inv_t)
    else:
        cols = min(big_n, max(256, block_bytes // (4 * max(n, 1))))
        rows = min(n, max(1, block_bytes // (4 * cols)))
        grad = torch.is_grad_enabled() and (a.requires_grad or c.requires_grad)
        parts = []
        for r0 in range(0, n, rows):
            ar = a[r0:r0 + rows]
            blocks = [checkpoint(_block_logsumexp, ar, c[c0:c0 + cols], inv_t, use_reentrant=False) if grad
                      else _block_logsumexp(ar, c[c0:c0 + cols], inv_t) for c0 in range(0, big_n, cols)]
            parts.append(torch.logsumexp(torch.stack(blocks, dim=1), dim=1))
        lse = torch.cat(parts)
    loss = lse - pos
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
