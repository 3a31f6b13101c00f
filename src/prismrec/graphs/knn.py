"""Top-k nearest-neighbour item graphs from feature matrices, in O(items x k) memory.

Every multimodal graph model (FREEDOM, LATTICE-style models, LIRDRec, AlignRec) builds an item-item
graph by keeping, for each item, the ``k`` items with the highest cosine similarity of its
features. A dense items x items similarity matrix (16 GB for 63k items, 4 TB for 1M) is never
formed:

* ``exact`` (default up to ``EXACT_LIMIT`` items): blocks of rows are multiplied with the whole
  normalised matrix and reduced to their top-k at once (``torch`` backend), or FAISS's exact
  inner-product index is searched (``faiss`` backend);
* ``ivf``: FAISS inverted-file index (``sqrt(n)``-ish lists, ``nprobe`` probed), approximate,
  for catalogues far beyond what exact search can do on a CPU.

Ties (identical feature rows, e.g. mean-imputed images) are broken by the smaller item id, so the
graph does not depend on the order in which a library returns equal scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import ConfigError
from ..utils.topk import topk_rows
from .sparse import sym_normalize

if TYPE_CHECKING:  # pragma: no cover
    from ..data.dataset import Modality

log = logging.getLogger("prismrec")

EXACT_LIMIT = 200_000
BLOCK_BYTES = 128 * 2**20


@dataclass
class KNNResult:
    """``indices[i]`` are the ``k`` neighbours of item ``i`` (best first), ``scores[i]`` their similarities."""

    indices: np.ndarray
    scores: np.ndarray
    backend: str

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def k(self) -> int:
        return self.indices.shape[1]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _stable_topk(sims: torch.Tensor, col_offset_ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per row with ties broken by smaller id: sort candidates by (-score, id)."""
    kk = min(k + 8, sims.shape[1])  # a few spare candidates so ties at the boundary resolve by id
    vals, idx = topk_rows(sims, kk)  # torch.topk's answer, without a sort of the whole row
    ids = col_offset_ids[idx]
    # lexicographic sort: primary -score, secondary id (ids are < 2**31, scores rounded to float32)
    order = torch.argsort(ids, dim=1, stable=True)
    vals, ids = torch.gather(vals, 1, order), torch.gather(ids, 1, order)
    order = torch.argsort(-vals, dim=1, stable=True)
    return torch.gather(vals, 1, order)[:, :k], torch.gather(ids, 1, order)[:, :k]


def _knn_torch(x: np.ndarray, k: int, exclude_self: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    xt = torch.from_numpy(x)
    rows = max(1, min(n, BLOCK_BYTES // max(4 * n, 1)))
    ids = torch.arange(n)
    out_i = np.empty((n, k), dtype=np.int64)
    out_s = np.empty((n, k), dtype=np.float32)
    buffer = torch.empty((rows, n))  # one block buffer for every block (fresh ones cost page faults)
    with torch.no_grad():
        for start in range(0, n, rows):
            block = torch.mm(xt[start:start + rows], xt.T, out=buffer[:min(rows, n - start)])
            if exclude_self:
                r = torch.arange(block.shape[0])
                block[r, r + start] = -torch.inf
            s, i = _stable_topk(block, ids, k)
            out_i[start:start + rows] = i.numpy()
            out_s[start:start + rows] = s.numpy()
    return out_i, out_s


def inner_product_index(faiss, x: np.ndarray, *, ivf: bool, nprobe: int, seed: int = 0):
    """An empty FAISS inner-product index for the rows of ``x``: exact (flat) or IVF with
    ``nlist = 4 sqrt(n)`` lists (at least 39 training points per list), trained on a seeded sample of
    ``x`` and searched with ``min(nprobe, nlist)`` lists. Shared by the kNN graphs and serving."""
    n, d = x.shape
    if not ivf:
        return faiss.IndexFlatIP(d)
    nlist = int(max(1, min(65536, 4 * np.sqrt(n), n // 39)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    index.train(x[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
    index.nprobe = min(nprobe, nlist)
    return index


def _knn_faiss(x: np.ndarray, k: int, exclude_self: bool, kind: str, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import PrismrecError

        raise PrismrecError("the faiss backend needs FAISS: pip install faiss-cpu (or prismrec[faiss]).") from exc
    n, d = x.shape
    kk = k + (1 if exclude_self else 0)
    index = inner_product_index(faiss, x, ivf=kind != "exact", nprobe=nprobe)
    index.add(x)
    sims = np.empty((n, kk), dtype=np.float32)
    idx = np.empty((n, kk), dtype=np.int64)
    step = 65536
    for start in range(0, n, step):
        s, i = index.search(x[start:start + step], kk)
        sims[start:start + step], idx[start:start + step] = s, i
    if exclude_self:
        self_col = idx == np.arange(n)[:, None]
        # drop the self match where found, else the last column
        drop = np.where(self_col.any(axis=1), self_col.argmax(axis=1), kk - 1)
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(n), drop] = False
        idx = idx[keep].reshape(n, k)
        sims = sims[keep].reshape(n, k)
    # stable tie-break by id within each row
    order = np.lexsort((idx, -sims), axis=1)
    rows = np.arange(n)[:, None]
    return idx[rows, order], sims[rows, order]


def knn(features: np.ndarray, k: int, *, exclude_self: bool = False,
        backend: Literal["auto", "torch", "faiss", "ivf"] = "auto", nprobe: int = 16) -> KNNResult:
    """Cosine top-``k`` neighbours of every row of ``features``.

    ``exclude_self=False`` keeps the item itself as a neighbour when it ranks in the top-k (MMRec's
    FREEDOM and LIRDRec build graphs that way); ``backend`` picks exact torch blocks, exact FAISS,
    or approximate FAISS IVF (``auto``: torch below ``EXACT_LIMIT`` items, IVF above).
    """
    x = l2_normalize(features)
    n = len(x)
    k = min(k, n - (1 if exclude_self else 0))
    if backend == "auto":
        backend = "torch" if n <= EXACT_LIMIT else "ivf"
    if backend == "torch":
        i, s = _knn_torch(x, k, exclude_self)
    elif backend == "faiss":
        i, s = _knn_faiss(x, k, exclude_self, "exact", nprobe)
    elif backend == "ivf":
        i, s = _knn_faiss(x, k, exclude_self, "ivf", nprobe)
    else:
        raise ValueError(f"unknown kNN backend {backend!r}")
    return KNNResult(i, s, backend)


def knn_matrix(res: KNNResult, *, weighted: bool = False, available: np.ndarray | None = None) -> sp.csr_matrix:
    """The kNN result as a sparse n x n matrix: binary edges, or similarity-weighted ones.

    Rows of items whose feature is missing (``available[i]`` False) are left empty and such items are
    never anyone's neighbour, so a missing feature adds no edge instead of a spurious one.
    """
    n, k = res.indices.shape
    rows = np.repeat(np.arange(n), k)
    cols = res.indices.ravel()
    vals = res.scores.ravel() if weighted else np.ones(n * k, dtype=np.float32)
    keep = cols >= 0
    if available is not None:
        available = np.asarray(available, dtype=bool)
        keep &= available[rows] & available[cols]
    m = sp.csr_matrix((vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(n, n))
    m.sum_duplicates()
    return m


def knn_graph(features: np.ndarray, k: int, *, weighted: bool = False, norm: Literal["sym", "row", "none"] = "sym",
              available: np.ndarray | None = None, backend: str = "auto", exclude_self: bool = False) -> sp.csr_matrix:
    """Normalised kNN item graph: ``D^{-1/2} S D^{-1/2}`` (``sym``), ``D^{-1} S`` (``row``) or raw ``S``.

    Missing-feature items are excluded (see :func:`knn_matrix`); their neighbours are searched only
    among items that have the feature.
    """
    feats = np.asarray(features, dtype=np.float32)
    if available is not None and not np.all(available):
        avail = np.flatnonzero(available)
        sub = knn(feats[avail], k, backend=backend, exclude_self=exclude_self)  # type: ignore[arg-type]
        res = KNNResult(avail[sub.indices], sub.scores, sub.backend)
        full_i = np.full((len(feats), res.k), -1, dtype=np.int64)
        full_s = np.zeros((len(feats), res.k), dtype=np.float32)
        full_i[avail], full_s[avail] = res.indices, res.scores
        m = knn_matrix(KNNResult(full_i, full_s, res.backend), weighted=weighted)
    else:
        m = knn_matrix(knn(feats, k, backend=backend, exclude_self=exclude_self), weighted=weighted)  # type: ignore[arg-type]
    if norm == "sym":
        return sym_normalize(m)
    if norm == "row":
        deg = np.asarray(m.sum(axis=1)).ravel()
        return (sp.diags(np.where(deg > 0, 1.0 / np.maximum(deg, 1e-12), 0.0).astype(np.float32)) @ m).tocsr()
    return m


def modality_weights(names: list[str], image_weight: float, rule: str = "image",
                     explicit: dict[str, float] | None = None) -> dict[str, float]:
    """Weights ``w_m`` of the per-modality item graphs (they sum to 1).

    ``explicit`` (normalised to sum 1) overrides the rule; it must name every modality.

    ``rule="image"``: a modality named ``image`` gets ``image_weight`` and the others share the rest
    equally (two modalities image + text: MMRec's ``mm_image_weight``); with one modality, or none
    named ``image``, every modality gets the same weight. ``rule="equal"``: always equal weights.
    """
    if explicit is not None:
        if set(explicit) != set(names) or any(v < 0 for v in explicit.values()) or sum(explicit.values()) <= 0:
            raise ConfigError(f"graph weights (mm_weights) must give a non-negative weight (not all zero) to each of the "
                              f"modalities {names}, got {explicit}.")
        total = sum(explicit.values())
        return {n: explicit[n] / total for n in names}
    if rule == "image" and "image" in names and len(names) > 1:
        rest = (1.0 - image_weight) / (len(names) - 1)
        return {n: image_weight if n == "image" else rest for n in names}
    return {n: 1.0 / len(names) for n in names}


def multimodal_knn_graph(modalities: dict[str, "Modality"], k: int, weights: dict[str, float]) -> sp.csr_matrix:
    """``S = sum_m w_m S^m`` over per-modality normalised kNN graphs (FREEDOM Sec. 3.1, LIRDRec's ``A_mm``).

    An item that lacks modality ``m`` has no row in ``S^m``; its row of ``S`` is divided by the weight of
    the modalities it has, so every item with at least one feature keeps a row of total weight 1.
    """
    n = len(next(iter(modalities.values())))
    total = sp.csr_matrix((n, n), dtype=np.float32)
    have = np.zeros(n, dtype=np.float64)
    for name, w in weights.items():
        m = modalities[name]
        # a float32 copy for the search only (not the modality's kept one): one modality at a time
        total = total + w * knn_graph(m.float32(), k, norm="sym", available=m.available)
        have += w * m.available
    scale = np.divide(1.0, have, out=np.zeros_like(have), where=have > 0).astype(np.float32)
    return (sp.diags(scale) @ total).tocsr()


# ------------------------------------------------------------------ learned (differentiable) kNN graphs
class _KeptSimilarities(torch.autograd.Function):
    """``values[e] = <xs[rows[e]], xs[cols[e]]>``, already computed (gathered from the block products);
    the backward pass scatters ``g_e xs[cols[e]]`` to row ``rows[e]`` and ``g_e xs[rows[e]]`` to row
    ``cols[e]``, in chunks of edges. Saves only ``xs`` and the indices: O(n k) besides ``xs``, where
    autograd's own ``gather`` would keep every ``B x n`` block alive until the backward pass."""

    CHUNK = 1 << 18

    @staticmethod
    def forward(ctx, xs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(xs, rows, cols)
        return values.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        xs, rows, cols = ctx.saved_tensors
        out = torch.zeros_like(xs)
        for s in range(0, len(rows), _KeptSimilarities.CHUNK):
            r, c, g = rows[s:s + _KeptSimilarities.CHUNK], cols[s:s + _KeptSimilarities.CHUNK], grad[s:s + _KeptSimilarities.CHUNK, None]
            out.index_add_(0, r, g * xs[c])
            out.index_add_(0, c, g * xs[r])
        return out, None, None, None


def topk_similarity(x: torch.Tensor, k: int, *, available: torch.Tensor | np.ndarray | None = None,
                    exclude_self: bool = False, block_bytes: int = BLOCK_BYTES
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine top-``k`` neighbours of every row of a torch matrix as edges ``(rows, cols, values)``.

    The learned-graph counterpart of :func:`knn`: no items x items matrix is formed. Rows are taken in
    blocks of ``block_bytes / (4 n)``; each block's similarities to all rows (``B x n``) are computed
    without autograd, reduced to their top-``k`` (ties broken by the smaller id, as :func:`_stable_topk`),
    and the kept similarities are gathered from the block. ``values`` carry gradients to ``x`` (through
    the L2 normalisation) exactly as the same entries of the dense ``cos(x, x)`` would (a custom
    backward that scatters over the kept edges); ``rows``/``cols`` (int64) carry none. Memory: one
    ``B x n`` block at a time, plus ``O(n k)`` for the edges, forward and backward.

    ``available`` (bool per row): rows without the feature get no edge and are nobody's neighbour.
    ``exclude_self=False`` keeps the row itself when it ranks in its top-k (LATTICE's ``torch.topk``).
    """
    n = x.shape[0]
    device = x.device
    if available is not None:
        avail = torch.as_tensor(np.asarray(available.cpu() if torch.is_tensor(available) else available, dtype=bool))
        ids = torch.nonzero(avail).squeeze(1).to(device)
    else:
        ids = torch.arange(n, device=device)
    m = len(ids)
    kk = min(k, m - (1 if exclude_self else 0))
    empty = torch.empty(0, dtype=torch.long, device=device)
    if kk <= 0:
        return empty, empty, x.new_zeros(0)
    xs = torch.nn.functional.normalize(x[ids] if m < n else x, dim=-1)
    xd = xs.detach()
    local = torch.arange(m, device=device)
    rows_per_block = max(1, min(m, block_bytes // max(4 * m, 1)))
    out_c, out_v = [], []
    buffer = torch.empty((rows_per_block, m), dtype=xd.dtype, device=device)  # reused: fresh blocks cost page faults
    with torch.no_grad():
        for start in range(0, m, rows_per_block):
            part = xd[start:start + rows_per_block]
            sims = torch.mm(part, xd.T, out=buffer[:len(part)])               # (B, m)
            if exclude_self:
                r = torch.arange(sims.shape[0], device=device)
                sims[r, r + start] = -torch.inf
            vals, idx = _stable_topk(sims, local, kk)                         # local column ids
            out_c.append(idx)
            out_v.append(vals)
    cols = torch.cat(out_c).reshape(-1)
    values = torch.cat(out_v).reshape(-1)
    rows = local.repeat_interleave(kk)
    if xs.requires_grad:
        values = _KeptSimilarities.apply(xs, rows, cols, values)
    return ids[rows], ids[cols], values


def sym_normalize_edges(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Values of ``D^{-1/2} S D^{-1/2}`` for the edge list ``S`` (``D``: row sums, duplicates summed),
    differentiable in ``values``; rows whose sum is not positive get zero (the code's ``inf -> 0``)."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inv = torch.where(deg > 0, deg.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(), torch.zeros_like(deg))
    return inv[rows] * values * inv[cols]


def merge_edges(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n_cols: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum duplicate edges: ``(indices (2, nnz) sorted row-major and unique, values)``; ``values`` stay
    differentiable (an ``index_add``, never a dense matrix)."""
    key = rows * n_cols + cols
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    merged = values.new_zeros(len(uniq)).index_add(0, inverse, values)
    return torch.stack([uniq // n_cols, uniq % n_cols]), merged


class _EdgeMatmul(torch.autograd.Function):
    CHUNK = 1 << 18

    @staticmethod
    def forward(ctx, indices: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int) -> torch.Tensor:
        ctx.save_for_backward(indices, values, x)
        ctx.n_rows = n_rows
        a = torch.sparse_coo_tensor(indices, values, (n_rows, x.shape[0]), is_coalesced=True, check_invariants=False)
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        indices, values, x = ctx.saved_tensors
        g_values = g_x = None
        if ctx.needs_input_grad[1]:
            step = _EdgeMatmul.CHUNK
            g_values = torch.cat([(grad[indices[0, s:s + step]] * x[indices[1, s:s + step]]).sum(-1)
                                  for s in range(0, indices.shape[1], step)]) if indices.shape[1] else values.new_zeros(0)
        if ctx.needs_input_grad[2]:
            at = torch.sparse_coo_tensor(indices.flip(0), values, (x.shape[0], ctx.n_rows), check_invariants=False)
            g_x = torch.sparse.mm(at.coalesce(), grad)
        return None, g_values, g_x, None


def edge_matmul(indices: torch.Tensor, values: torch.Tensor, x: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``A @ x`` for the sparse ``A`` given by merged edges (:func:`merge_edges`), differentiable in
    ``values`` and ``x``. Unlike ``torch.sparse.mm``'s own backward, whose gradient for the sparse
    values goes through a dense ``n_rows x n`` product, the value gradient here is computed per edge
    (``<grad_row, x_col>``, in chunks): O(nnz + n d) memory, the scale of a 1M-item learned graph."""
    return _EdgeMatmul.apply(indices, values, x, n_rows)
