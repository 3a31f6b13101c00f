"""Full-ranking evaluation over all items, in bounded chunks of users.

For each chunk of users the model scores every item, the user's training items (and optionally the
validation items, at test time) are masked to ``-inf``, the top ``K_max`` items are taken with
``torch.topk`` and compared with the ground truth. Memory is ``O(chunk x n_items)``: the whole
users x items score matrix never exists. Under ``torchrun`` each rank ranks a contiguous share of the
users and the per-user hit rows are summed across ranks (:mod:`prismrec.utils.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import scipy.sparse as sp
import torch

from ..data.split import Split
from ..utils import distributed as dist
from ..utils.topk import topk_rows
from .metrics import METRICS, per_user_metrics, summarise

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


def top_k(scores: torch.Tensor, k: int, exclude: tuple[np.ndarray, np.ndarray] | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The one "mask, then take the top k" rule of evaluation, ``recommend`` and the service.

    ``exclude`` holds ``(row, column)`` pairs set to ``-inf`` in ``scores`` (in place) first; ``k`` is
    clipped to the number of columns. Returns ``(values, indices)``, best first; excluded entries can
    only appear (with ``-inf``) when a row has fewer than ``k`` others.
    """
    if exclude is not None and len(exclude[0]):
        r, c = exclude
        scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = -torch.inf
    return topk_rows(scores, min(k, scores.shape[1]))


#: evaluation's memory budget for one chunk of scores: the float32 score rows (kept in one buffer that
#: every chunk reuses) and the model's temporaries while it scores them, counted as 8 bytes per score
EVAL_MEMORY_BYTES = 256 * 2**20
SCORE_BYTES = 8


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
        self.chunk = auto_chunk(split.n_items, chunk_users)
        self.n_truth = np.diff(self.truth.indptr)[self.users]

    def evaluate_model(self, model: "Recommender", **kwargs) -> EvalResult:
        """Evaluate ``model`` through the scoring contract: ``prepare_scoring`` with what is known at this
        stage (``split.history(stage)``), then ``score`` on chunks of users (see :meth:`evaluate`)."""
        from ..models.base import DotProductRecommender

        model.eval()
        with torch.no_grad():
            model.prepare_scoring(self.history)
            score = model.score
            if isinstance(model, DotProductRecommender):  # scores written into one buffer every chunk reuses
                out = torch.empty((min(self.chunk, max(len(self.users), 1)), self.n_items), device=model.device)
                score = partial(model.score, out=out)  # (a fresh buffer per chunk costs page faults: ~2x slower)
            return self.evaluate(score, device=model.device, **kwargs)

    def evaluate(self, score_fn: ScoreFn, *, keep_per_user: bool = False, keep_topk: bool = False,
                 item_groups: dict[str, np.ndarray] | None = None, device: torch.device | None = None
                 ) -> EvalResult:
        """Score every evaluated user against all items and compute the metrics.

        ``item_groups`` (name -> boolean mask over items) adds segment reports: the metrics restricted
        to the ground-truth items in each group (e.g. items never seen in training), over the users
        that have such items.
        """
        kmax = min(max(self.ks), self.n_items)
        device = device or torch.device("cpu")
        all_hits = np.zeros((len(self.users), kmax), dtype=bool)
        top = np.zeros((len(self.users), kmax), dtype=np.int64) if (keep_topk or item_groups) else None
        share = dist.user_share(len(self.users))  # under torchrun each rank ranks its share of the users
        with torch.no_grad():
            for start in range(share.start, share.stop, self.chunk):
                users = self.users[start:min(start + self.chunk, share.stop)]
                scores = score_fn(torch.as_tensor(users, dtype=torch.long, device=device)).float()
                idx = top_k(scores, kmax, rows_of(self.mask, users))[1]
                all_hits[start:start + len(users)] = self._hits(users, idx)
                if top is not None:
                    top[start:start + len(users)] = idx.cpu().numpy()
                del scores
        if dist.active():  # every rank's rows summed: all ranks hold every user's result
            all_hits = dist.sum_across(all_hits, device)
            top = dist.sum_across(top, device) if top is not None else None
        per_user = per_user_metrics(all_hits, self.n_truth, self.ks, self.metrics)
        result = EvalResult(summarise(per_user), self.users, per_user if keep_per_user else {},
                            top if keep_topk else None)
        for name, mask in (item_groups or {}).items():
            self._segment(result, name, np.asarray(mask, dtype=bool), all_hits, top)
        return result

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
