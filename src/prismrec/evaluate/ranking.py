"""Full-ranking evaluation over all items, in bounded chunks of users.

For each chunk of users the model scores every item, the user's training items (and optionally the
validation items, at test time) are masked to ``-inf``, and each ground-truth item's position in the
ranking is found: by counting the scores above it (:mod:`prismrec.evaluate.truth_rank`, one read of
each score, no sort) where only metrics are asked for, or from the top ``K_max`` items
(:func:`top_k`) where the top lists themselves are kept. Both give ``torch.topk``'s hits. A dot-product
model (general or sequential) is scored from its ``query_vectors`` and ``item_vectors`` in tiles of items
(:data:`ITEM_TILE` columns, more users per product) when its catalogue is larger than a tile; a chunk's
query vectors (a sequential model's encoded histories) are computed once for all its tiles. Memory is
``O(chunk x n_items)`` at most: the whole users x items score matrix never exists. Under ``torchrun``
each rank ranks a contiguous share of the users and the per-user hit rows are summed across ranks
(:mod:`prismrec.utils.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import scipy.sparse as sp
import torch

from ..data.split import Split
from ..models.base import dot_scores
from ..utils import distributed as dist
from ..utils.topk import topk_rows
from .metrics import METRICS, per_user_metrics, summarise
from .truth_rank import TruthRanks, pair_scores

if TYPE_CHECKING:
    from ..models.base import Recommender

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalResult:
    """Mean metrics, and (optionally) per-user metrics, top-K lists and segment reports."""

    metrics: dict[str, float]
    users: np.ndarray
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    topk: np.ndarray | None = None
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    segment_users: dict[str, int] = field(default_factory=dict)


def rows_of(mat: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position in ``users``, column) pairs of the non-zeros of ``mat[users]``, vectorised."""
    starts, ends = mat.indptr[users], mat.indptr[users + 1]
    lens = ends - starts
    rows = np.repeat(np.arange(len(users)), lens)
    offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    cols = mat.indices[np.repeat(starts, lens) + offsets]
    return rows, cols


def exclude_(scores: torch.Tensor, exclude: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor:
    """Set the ``(row, column)`` pairs ``exclude`` of ``scores`` to ``-inf``, in place."""
    if exclude is not None and len(exclude[0]):
        r, c = exclude
        scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = -torch.inf
    return scores


def top_k(scores: torch.Tensor, k: int, exclude: tuple[np.ndarray, np.ndarray] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The one "mask, then take the top k" rule of evaluation, ``recommend`` and the service.

    ``exclude`` holds ``(row, column)`` pairs set to ``-inf`` in ``scores`` (in place) first; ``k`` is
    clipped to the number of columns. Returns ``(values, indices)``, best first; excluded entries can
    only appear (with ``-inf``) when a row has fewer than ``k`` others.
    """
    return topk_rows(exclude_(scores, exclude), min(k, scores.shape[1]))


#: evaluation's memory budget for one chunk of scores: the float32 score rows (kept in one buffer that
#: every chunk reuses) and the model's temporaries while it scores them, counted as 8 bytes per score
EVAL_MEMORY_BYTES = 256 * 2**20
SCORE_BYTES = 8


#: items per scoring tile of a dot-product model whose catalogue is larger (4,096 users a product under the
#: budget above; scoring a 1M-item catalogue whole leaves 32 users a chunk, and the product then reads the
#: whole item matrix for every 32 users). Tiles are a multiple of 16 columns wide: a product whose output
#: rows are not (7,050 items) ran at 52 GFLOP/s here, one that is at 73 to 82 (d = 64, one thread).
ITEM_TILE = 4096


def auto_chunk(n_items: int, requested: int = 0, budget: int = EVAL_MEMORY_BYTES) -> int:
    """Users per scoring chunk: ``requested`` (``train.eval_batch_users``) when set, else as many as fit
    ``budget`` bytes at :data:`SCORE_BYTES` per score (at least 1, at most 4096)."""
    if requested > 0:
        return requested
    return int(max(1, min(4096, budget // max(SCORE_BYTES * n_items, 1))))


class RankingEvaluator:
    """Evaluates one split stage (``valid`` or ``test``) of a :class:`Split` by full ranking."""

    def __init__(self, split: Split, stage: str, ks: list[int], *, mask_valid: bool = False,
                 mask_history: bool = True, filter_cold_users: bool = True, chunk_users: int = 0,
                 metrics: tuple[str, ...] = METRICS, users: np.ndarray | None = None):
        self.stage = stage
        self.ks = sorted(set(ks))
        self.metrics = metrics
        self.n_items = split.n_items
        self.truth = split.matrix(stage)
        mask = split.train
        if stage == "test" and mask_valid:
            mask = (mask + split.valid).tocsr()
            mask.data[:] = 1.0
        self.mask = mask if mask_history else sp.csr_matrix(mask.shape, dtype=np.float32)
        self.users = split.eval_users(stage, filter_cold_users) if users is None else np.asarray(users)
        self.history = split.history(stage)
        self.chunk_request = chunk_users
        self._buffer: torch.Tensor | None = None
        self.chunk = auto_chunk(split.n_items, chunk_users)
        self.n_truth = np.diff(self.truth.indptr)[self.users]

    def evaluate_model(self, model: "Recommender", **kwargs) -> EvalResult:
        """Evaluate ``model`` through the scoring contract: ``prepare_scoring`` with what is known at this
        stage (``split.history(stage)``), then ``score`` on chunks of users (see :meth:`evaluate`)."""
        model.eval()
        with torch.no_grad():
            model.prepare_scoring(self.history)
            if model.dot_product:  # scored from its query and item vectors, tile by tile of items
                kwargs.setdefault("tiles", model)
            return self.evaluate(model.score, device=model.device, **kwargs)

    def evaluate(self, score_fn: ScoreFn, *, keep_per_user: bool = False, keep_topk: bool = False,
                 item_groups: dict[str, np.ndarray] | None = None, device: torch.device | None = None,
                 tiles: "Recommender | None" = None) -> EvalResult:
        """Score every evaluated user against all items and compute the metrics.

        ``item_groups`` (name -> boolean mask over items) adds segment reports: the metrics restricted
        to the ground-truth items in each group (e.g. items never seen in training), over the users
        that have such items. ``tiles``: a prepared dot-product model (``score_fn`` its ``score``): each
        chunk's ``query_vectors`` are multiplied with ``item_vectors`` tile by tile of items, into one
        buffer kept between evaluations (a fresh buffer per chunk costs page faults: ~2x slower), and the
        metrics are counted per tile.
        """
        kmax = min(max(self.ks), self.n_items)
        device = device or torch.device("cpu")
        all_hits = np.zeros((len(self.users), kmax), dtype=bool)
        keep_lists = keep_topk or bool(item_groups)
        top = np.zeros((len(self.users), kmax), dtype=np.int64) if keep_lists else None
        chunk, tile = self.scoring_shape(tiles is not None and not keep_lists)
        buf = None
        if tiles is not None:  # one score buffer for every chunk, kept for the next evaluation (every epoch's
            width = tile if tile == self.n_items else -(-tile // 16) * 16  # validation: no fresh pages)
            shape = (min(chunk, max(len(self.users), 1)), width)
            if self._buffer is None or tuple(self._buffer.shape) != shape or self._buffer.device != device:
                self._buffer = None  # free the old one before the new one is allocated
                self._buffer = torch.empty(shape, device=device)
            buf = self._buffer
        share = dist.user_share(len(self.users))  # under torchrun each rank ranks its share of the users
        with torch.no_grad():
            for start in range(share.start, share.stop, chunk):
                users = self.users[start:min(start + chunk, share.stop)]
                u = torch.as_tensor(users, dtype=torch.long, device=device)
                if keep_lists:
                    scores = (score_fn(u, out=buf) if buf is not None else score_fn(u)).float()
                    idx = top_k(scores, kmax, rows_of(self.mask, users))[1]
                    all_hits[start:start + len(users)] = self._hits(users, idx)
                    top[start:start + len(users)] = idx.cpu().numpy()
                else:
                    all_hits[start:start + len(users)] = self._counted_hits(
                        users, u, score_fn, kmax, tiles if tile < self.n_items else None, buf, tile)
        if dist.active():  # every rank's rows summed: all ranks hold every user's result
            all_hits = dist.sum_across(all_hits, device)
            top = dist.sum_across(top, device) if top is not None else None
        per_user = per_user_metrics(all_hits, self.n_truth, self.ks, self.metrics)
        result = EvalResult(summarise(per_user), self.users, per_user if keep_per_user else {},
                            top if keep_topk else None)
        for name, mask in (item_groups or {}).items():
            self._segment(result, name, np.asarray(mask, dtype=bool), all_hits, top)
        return result

    def scoring_shape(self, tiled: bool = True) -> tuple[int, int]:
        """(users, items) of one score product: the whole catalogue in chunks sized by the memory budget,
        or, for a dot-product model with a catalogue larger than :data:`ITEM_TILE`, tiles of items
        with as many users as the budget gives a tile."""
        if not tiled or self.n_items <= ITEM_TILE:
            return self.chunk, self.n_items
        return auto_chunk(ITEM_TILE, self.chunk_request), ITEM_TILE

    def _counted_hits(self, users: np.ndarray, u: torch.Tensor, score_fn: ScoreFn, kmax: int,
                      tiles: "Recommender | None", buf: torch.Tensor | None, tile: int) -> np.ndarray:
        """The hit rows of one chunk from each truth item's count of scores above it (:class:`TruthRanks`),
        the whole rows at once, or tile by tile of items for a dot-product model (``tiles``); the rows
        that only ``torch.topk`` can order are ranked by it."""
        r, c = rows_of(self.truth, users)
        rt = torch.as_tensor(r, dtype=torch.long, device=u.device)
        ct = torch.as_tensor(c, dtype=torch.long, device=u.device)
        ex_r, ex_c = rows_of(self.mask, users)
        if tiles is None:
            scores = exclude_((score_fn(u, out=buf) if buf is not None else score_fn(u)).float(), (ex_r, ex_c))
            ranks = TruthRanks(rt, scores[rt, ct], torch.zeros(len(rt), device=u.device), kmax, len(users))
            ranks.update(scores)
        else:
            uv, iv = tiles.query_vectors(u), tiles.item_vectors()  # a chunk's histories encoded once
            g, bound = pair_scores(uv[rt], iv, ct)
            g, eps = g.float(), 4.0 * bound.float()  # tile and full-row scores each lie within `bound`
            ex_key = np.sort(ex_r.astype(np.int64) * self.n_items + ex_c)
            if len(ex_key):  # a masked truth item scores -inf
                key = r.astype(np.int64) * self.n_items + c
                pos = np.minimum(np.searchsorted(ex_key, key), len(ex_key) - 1)
                g[torch.as_tensor(ex_key[pos] == key, device=u.device)] = -torch.inf
            ranks = TruthRanks(rt, g, eps, kmax, len(users))
            order = np.argsort(ex_c, kind="stable")
            ex_r, ex_c = ex_r[order], ex_c[order]
            flat = buf.view(-1)
            for t0 in range(0, self.n_items, tile):
                t1 = min(t0 + tile, self.n_items)
                # a narrower last tile is widened to a multiple of 16 by starting it earlier (the columns
                # before t0 are scored again and skipped)
                s0 = max(0, t1 - (-(-(t1 - t0) // 16) * 16))
                out = flat[:len(users) * (t1 - s0)].view(len(users), t1 - s0)
                s = dot_scores(uv, iv[s0:t1], out).float()[:, t0 - s0:]
                a, b = np.searchsorted(ex_c, [t0, t1])
                ranks.update(exclude_(s, (ex_r[a:b], ex_c[a:b] - t0)))
        hit, rank, redo = ranks.result()
        hits = torch.zeros((len(users), kmax), dtype=torch.bool, device=u.device)
        hits[rt[hit], rank[hit]] = True
        hits = hits.cpu().numpy()
        redo_rows = torch.nonzero(redo).squeeze(1).cpu().numpy()
        if tiles is None and len(redo_rows):  # ties, NaN: torch.topk's order on the same (masked) scores
            hits[redo_rows] = self._hits(users[redo_rows], topk_rows(scores[redo_rows], kmax)[1])
            return hits
        for s0 in range(0, len(redo_rows), self.chunk):  # a (near-)tie at a truth item's score: its order is
            rows = redo_rows[s0:s0 + self.chunk]         # torch.topk's on a full-row product of those users'
            sub = users[rows]                            # vectors (the ones counted, not encoded again)
            scores = dot_scores(uv[torch.as_tensor(rows, device=u.device)], iv).float()
            hits[rows] = self._hits(sub, top_k(scores, kmax, rows_of(self.mask, sub))[1])
        return hits

    def _hits(self, users: np.ndarray, idx: torch.Tensor) -> np.ndarray:
        """Which of the top-k items ``idx`` (one row per user) are in each user's ground truth: the
        ``(row, item)`` keys of the truth, sorted, searched for the top-k keys (no users x items mask)."""
        r, c = rows_of(self.truth, users)
        keys = torch.from_numpy(np.sort(r.astype(np.int64) * self.n_items + c)).to(idx.device)
        if len(keys) == 0:
            return np.zeros(tuple(idx.shape), dtype=bool)
        query = torch.arange(len(users), device=idx.device).unsqueeze(1) * self.n_items + idx
        pos = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
        return (keys[pos] == query).cpu().numpy()

    def _segment(self, result: EvalResult, name: str, item_mask: np.ndarray, hits: np.ndarray,
                 top: np.ndarray) -> None:
        r, c = rows_of(self.truth, self.users)
        n_in_group = np.bincount(r[item_mask[c]], minlength=len(self.users))
        keep = n_in_group > 0
        seg_hits = hits & item_mask[top]
        per_user = per_user_metrics(seg_hits[keep], n_in_group[keep], self.ks, self.metrics)
        result.segments[name] = summarise(per_user)
        result.segment_users[name] = int(keep.sum())
