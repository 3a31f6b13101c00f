"""Exact top-k of score rows without sorting or copying them: the one rule behind evaluation's ranking and
the kNN item graphs (it gives ``torch.topk``'s answer, ties included)."""

from __future__ import annotations

import math

import torch


def topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``torch.topk(scores, k, dim=1)`` (largest first), in one pass over the scores on a CPU.

    The columns are cut into buckets of ``B ~ sqrt(n / (k + 1))`` (rounded up to 16; rows shorter than
    ``16 (k + 1) B`` go to ``torch.topk``, faster there); each row's bucket maxima (one
    vectorised reduction, no allocation of the row's size) pick its ``k + 1`` best buckets, which hold
    the row's ``k + 1`` largest scores (an item outside them is at most its bucket's maximum, and each of
    the ``k + 1`` picked maxima is at least that); those ``(k + 1) B`` candidates are ranked. Where a row's
    ``k + 1`` largest values are all distinct (and not NaN) the top k and their order are unique, so this
    is torch's answer; rows with a tie among them (equal scores, several ``-inf``, NaN), where the order
    among equal values is the algorithm's choice, are answered by ``torch.topk`` itself.
    """
    n = scores.shape[1] if scores.dim() == 2 else 0
    if scores.device.type != "cpu" or scores.dtype != torch.float32 or k < 1 or k + 1 >= n or scores.requires_grad:
        return torch.topk(scores, k, dim=1)
    x = scores.detach()
    if not x.is_contiguous():
        x = x.contiguous()
    m = x.shape[0]
    # buckets of a multiple of 16 columns (the maxima vectorise: 31 columns took twice the time of 32)
    width = -(-max(16, int(math.sqrt(n / (k + 1)))) // 16) * 16
    if n < 16 * (k + 1) * width:  # the candidates would be a large share of the row: torch.topk is faster
        return torch.topk(scores, k, dim=1)
    n_full = n // width
    bmax = x[:, :n_full * width].view(m, n_full, width).amax(dim=2)
    if n % width:
        bmax = torch.cat([bmax, x[:, n_full * width:].amax(dim=1, keepdim=True)], dim=1)
    buckets = torch.topk(bmax, k + 1, dim=1).indices                      # (m, k + 1)
    cols = (buckets.unsqueeze(2) * width + torch.arange(width)).view(m, -1)  # (m, (k + 1) B)
    outside = cols >= n                                                     # the short last bucket's padding
    cand = torch.gather(x, 1, cols.clamp_(max=n - 1))
    cand[outside] = -torch.inf
    return _topk_ranked(cand, cols, x, k)


def _topk_ranked(cand: torch.Tensor, cols: torch.Tensor, scores: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` of candidate values ``cand`` (columns ``cols`` of ``scores``), torch's answer where
    the ``k + 1`` best are distinct, ``torch.topk`` on ``scores`` for the other rows."""
    vals, pos = torch.topk(cand, k + 1, dim=1)
    idx = torch.gather(cols, 1, pos)
    ties = (vals[:, :-1] == vals[:, 1:]).any(dim=1) | torch.isnan(vals).any(dim=1)
    values, indices = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    if bool(ties.any()):
        rows = torch.nonzero(ties).squeeze(1)
        exact = torch.topk(scores[rows], k, dim=1)
        values[rows], indices[rows] = exact.values, exact.indices
    return values, indices
