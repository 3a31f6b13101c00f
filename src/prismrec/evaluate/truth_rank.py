"""Where each ground-truth item lands in its user's full ranking, without taking the top-k.

Ranking metrics only need the position of every ground-truth item: its rank is the number of items
scored above it. :class:`TruthRanks` counts that from tiles of score rows, reading each score once
through bucket maxima (32 columns a bucket; a bucket whose maximum is below the truth's score holds
nothing above it), so the scores are never sorted and, for dot-product models, a whole score row
never exists (evaluation scores tiles of items; `RankingEvaluator.evaluate`).

Exactness: the result is the hit matrix that ``torch.topk`` on the full score rows gives. Each truth
score ``g`` comes with a bound ``eps`` on how far the tile scores and the full-row scores may differ
from the exact products (0 when ``g`` is read from the same row; the floating-point bound of a
``d``-term dot product when the tiles are separate products). A score ``> g + eps`` is above the truth
item in any computation, one ``< g - eps`` below; the truth item itself falls in ``[g - eps, g + eps]``.
When anything else falls in that band (a tie, or a near-tie the bound cannot settle) or a row holds NaN,
the order is ``torch.topk``'s choice and the row is marked for the caller to rank with ``torch.topk``.
A truth item with ``kmax`` or more items above it is a miss whatever the ties.
"""

from __future__ import annotations

import torch

BUCKET = 32  #: columns per bucket (the maxima of 32 contiguous floats vectorise; 16 took 5-10x longer)


def pair_scores(users: torch.Tensor, items: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``<users[j], items[cols[j]]>`` and, per pair, a bound on how far any score of that user
    computed from these vectors (this product, or a matrix product in any summation order) lies from
    the exact value: ``gamma_d |u| max_i |i|`` (Cauchy-Schwarz and the rounding bound of a ``d``-term dot
    product; TF32 matrix products on a GPU count with TF32's precision)."""
    vals = (users * items[cols]).sum(dim=1)
    unit = torch.finfo(users.dtype).eps / 2
    if users.is_cuda and users.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        unit = 2.0 ** -11
    d = users.shape[1]
    gamma = d * unit / max(1.0 - d * unit, 1e-3)
    return vals, gamma * users.norm(dim=1) * items.norm(dim=1).max()


class TruthRanks:
    """Counts, tile by tile, how many scores of each (row, truth item) pair lie above the truth's score.

    ``rows`` (P,) is each pair's row in the chunk, ``g`` (P,) the truth's score (``-inf`` when masked),
    ``eps`` (P,) the bound described in the module docstring; ``n_rows`` the chunk's rows.
    """

    def __init__(self, rows: torch.Tensor, g: torch.Tensor, eps: torch.Tensor, kmax: int, n_rows: int):
        self.rows, self.kmax = rows, kmax
        self.lo, self.hi = g - eps, g + eps
        p = len(rows)
        self.hi_buckets = torch.zeros(p, dtype=torch.long, device=rows.device)  # buckets whose max > hi
        self.above = torch.zeros(p, dtype=torch.long, device=rows.device)       # scores > hi
        self.band = torch.zeros(p, dtype=torch.long, device=rows.device)        # scores in [lo, hi]
        self.ambiguous = torch.zeros(p, dtype=torch.bool, device=rows.device)
        self.bad_rows = torch.zeros(n_rows, dtype=torch.bool, device=rows.device)  # NaN somewhere

    def update(self, s: torch.Tensor) -> None:
        """Count the scores of one tile ``s`` (n_rows, T): every row's scores for the same T items.

        Only rows with an unsettled pair are read: once each of a row's truth items has ``kmax`` scores
        above it (a miss whatever follows, NaN included: ``torch.topk`` puts NaN first), its later tiles
        are skipped."""
        m, t = s.shape
        nb = t // BUCKET
        open_ = torch.nonzero((self.hi_buckets < self.kmax) & (self.above < self.kmax) & ~self.ambiguous).squeeze(1)
        if len(open_) == 0:
            return
        tail = s[:, nb * BUCKET:]
        main = s.as_strided((m, nb, BUCKET), (s.stride(0), BUCKET, s.stride(1)))
        r = self.rows[open_]
        rows, inv = torch.unique(r, return_inverse=True)
        if 2 * len(rows) < m:  # few rows left: copy them (one pass) rather than read every row
            main, tail, r = main[rows], tail[rows], inv
        else:
            rows = slice(None)
        bmax = main.amax(dim=2)  # (rows, nb): NaN propagates
        bad = torch.isnan(bmax).any(dim=1)
        if tail.shape[1]:
            bad |= torch.isnan(tail).any(dim=1)
        self.bad_rows[rows] |= bad
        lo, hi = self.lo[open_], self.hi[open_]
        bm = bmax[r]                                      # (A, nb)
        n_hi = (bm > hi.unsqueeze(1)).sum(dim=1)
        n_ge = (bm >= lo.unsqueeze(1)).sum(dim=1)
        self.hi_buckets[open_] += n_hi
        if tail.shape[1]:  # the last < 32 columns, counted directly
            ts = tail[r]
            t_hi = (ts > hi.unsqueeze(1)).sum(dim=1)
            self.hi_buckets[open_] += t_hi
            self.above[open_] += t_hi
            self.band[open_] += (ts >= lo.unsqueeze(1)).sum(dim=1) - t_hi
        still = (self.hi_buckets[open_] < self.kmax) & (self.above[open_] < self.kmax)
        # two buckets whose maxima lie in the band hold two scores in it: the order is a tie's
        two_in_band = (n_ge - n_hi) >= 2
        self.ambiguous[open_[still & two_in_band]] = True
        go = still & ~two_in_band
        if not bool(go.any()):
            return
        sel, r, lo, hi = open_[go], r[go], lo[go], hi[go]
        p, b = torch.nonzero(bm[go] >= lo.unsqueeze(1), as_tuple=True)  # < kmax + 1 buckets per pair
        vals = main[r[p], b]                                            # (K, 32)
        above = (vals > hi[p].unsqueeze(1)).sum(dim=1)
        self.above.index_add_(0, sel[p], above)
        self.band.index_add_(0, sel[p], (vals >= lo[p].unsqueeze(1)).sum(dim=1) - above)

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(hit (P,) bool, rank (P,) long, redo (n_rows,) bool)``: a hit's rank is its 0-based position
        in the top ``kmax``; ``redo`` marks the rows whose order only ``torch.topk`` can give."""
        miss = (self.hi_buckets >= self.kmax) | (self.above >= self.kmax)
        unsure = ~miss & (self.ambiguous | (self.band != 1))
        redo = self.bad_rows.clone()
        redo[self.rows[unsure]] = True
        hit = ~miss & ~unsure & ~redo[self.rows]
        return hit, self.above, redo
