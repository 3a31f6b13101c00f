"""Contrastive losses whose negatives are a whole table (every user, every item), not the batch.

:func:`~prismrec.models.layers.info_nce` takes its negatives from the batch. Some models contrast each
anchor with *every* row of a table: LGMRec's hypergraph contrast (the batch's users against all users,
the positive items against all items), MENTOR's graph-perturbation contrast (all users against all
users). :func:`full_info_nce` computes that loss without an ``anchors x rows`` matrix when it would be
large: the log-sum-exp is taken tile by tile with a hand-written backward (:func:`blockwise_logsumexp`);
above ``keep_bytes`` each tile is recomputed in the backward pass, so memory is one tile (``block_bytes``)
plus ``O(anchors)``.
:func:`softmax_cross_entropy` is the same machinery for plain dot-product logits (the full-softmax
next-item loss of the sequential models).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

BLOCK_BYTES = 64 * 2**20


KEEP_BYTES = 256 * 2**20


def _tiles(n: int, big_n: int, block_bytes: int) -> tuple[int, int]:
    """Rows and columns of one logits tile of at most ``block_bytes`` (float32)."""
    cols = min(big_n, max(256, block_bytes // (4 * max(n, 1))))
    return min(n, max(1, block_bytes // (4 * cols))), cols


class _MatmulLogSumExp(torch.autograd.Function):
    """``logsumexp(scale * a @ c.T, dim=1)`` tile by tile, with a hand-written backward.

    Forward: per tile ``S = (scale a) c_blk^T``, then in place ``S - max``, ``exp``, a row sum; the tiles'
    log-sums are combined with ``logaddexp``. Backward (``∂lse_r/∂S_rj = softmax_rj``): the softmax tile
    ``exp(S - lse) * g`` and two products, ``∂a = scale P c``, ``∂c = P^T (scale a)``. When the whole
    ``n x N`` matrix fits in ``keep_bytes`` the exponentiated tiles are kept from the forward pass
    (no second product, no second ``exp``); above, each tile is recomputed, so memory is one tile.
    Against autograd through ``torch.logsumexp`` this drops the allocated temporaries and one or two of
    the five passes over each tile (measured in docs/benchmarks.md §7.8).
    """

    @staticmethod
    def forward(ctx, a, c, scale, block_bytes, keep_bytes):  # noqa: D102
        n, big_n = a.shape[0], c.shape[0]
        a_s = a * scale if scale != 1.0 else a
        rows, cols = _tiles(n, big_n, block_bytes)
        keep = 4 * n * big_n <= keep_bytes
        lse = torch.empty(n, dtype=a.dtype, device=a.device)
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        for r0 in range(0, n, rows):
            ar, acc = a_s[r0:r0 + rows], None
            for c0 in range(0, big_n, cols):
                s = ar @ c[c0:c0 + cols].T
                m = s.amax(dim=1)
                s.sub_(m.unsqueeze(1)).exp_()
                part = s.sum(dim=1).log_().add_(m)
                acc = part if acc is None else torch.logaddexp(acc, part)
                if keep:
                    kept.append((s, m))
            lse[r0:r0 + rows] = acc
        ctx.scale, ctx.tiles, ctx.kept = scale, (rows, cols), kept if keep else None
        ctx.save_for_backward(a_s, c, lse)
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        a_s, c, lse = ctx.saved_tensors
        (rows, cols), kept = ctx.tiles, ctx.kept
        n, big_n = a_s.shape[0], c.shape[0]
        need_a, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ga = torch.zeros_like(a_s) if need_a else None
        gc = torch.zeros_like(c) if need_c else None
        t = 0
        for r0 in range(0, n, rows):
            ar, lr, gr = a_s[r0:r0 + rows], lse[r0:r0 + rows], grad[r0:r0 + rows]
            for c0 in range(0, big_n, cols):
                cb = c[c0:c0 + cols]
                if kept is not None:                      # exp(S - m): rescale to the softmax, times g
                    e, m = kept[t]                        # not in place: a retained graph reruns this
                    p = e * ((m - lr).exp_() * gr).unsqueeze(1)
                else:
                    p = (ar @ cb.T).sub_(lr.unsqueeze(1)).exp_().mul_(gr.unsqueeze(1))
                t += 1
                if need_a:
                    ga[r0:r0 + rows].addmm_(p, cb)
                if need_c:
                    gc[c0:c0 + cols].addmm_(p.T, ar)
        if need_a and ctx.scale != 1.0:
            ga.mul_(ctx.scale)
        return ga, gc, None, None, None


def blockwise_logsumexp(a: torch.Tensor, c: torch.Tensor, scale: float = 1.0,
                        block_bytes: int = BLOCK_BYTES, keep_bytes: int = KEEP_BYTES) -> torch.Tensor:
    """``logsumexp(scale * a @ c.T, dim=1)`` ``(n,)`` computed in tiles of at most ``block_bytes``: the
    ``n x N`` matrix is never held when it exceeds ``keep_bytes`` (each tile is recomputed in the
    backward pass), so memory is one tile plus ``O(n)``. Exact to float rounding (:class:`_MatmulLogSumExp`)."""
    if a.shape[0] == 0:
        return a.new_zeros(0)
    return _MatmulLogSumExp.apply(a, c, float(scale), int(block_bytes), int(keep_bytes))


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
