"""MDSRec (``mdsrec``): multimodal difference learning for sequential recommendation.

Li, Guo, Li, Zou, "Multimodal Difference Learning for Sequential Recommendation", arXiv 2412.08103v1
(2024). No MDSRec code was released. Where the paper is silent we follow the official code of its
published successor SGP4SR (Li, Guo, Li, Yang, Hong, AAAI 2026; ``changhongli1/SGP4SR``, ``sgp.py``),
without that code's known defects. Equation numbers ``(Eq. n)`` refer to docs/models/mdsrec.md, which
lists every equation, default and deviation.

The three modules of the paper:

* **Item relation graph construction (RGC)**, once, from training data only: behaviour
  co-occurrence ``C`` over every user's training sequence (Eq. 1), and per modality a binary
  top-``knn_k`` graph whose cosine candidates are re-ranked by co-occurrence (Eq. 2-3). The modal-aware
  item representation is ``H_m = A_m E``, the mean ID embedding of the item's neighbours (Eq. 4).
* **Interest-centralised attention (ICA)**: ``n_centers`` k-means clusters of each modality's features;
  a centre is the mean of its members' ``H_m`` (Eq. 5). In every block the centres attend to the
  modality's sequence (Eq. 9) and each position adds the centres weighted by its soft assignment
  (Eq. 7, 10): one user representation ``u_m`` per modality.
* **Fusion and prediction**: ``u = LN(sum_m w_m X_m [+ w_id X_id])`` (Eq. 11); the score of item ``i``
  is ``u . E_i + sum_m w_m u_m . H_m,i`` (Eq. 12) and the loss the matching sum of full-softmax
  cross-entropies (Eq. 13).

``variant: sgp4sr`` adds SGP4SR's ID branch (``H_id = C_hat E`` fed to the same encoder, weight
``id_weight`` = 0.6 in the fusion).

Scoring is one dot product: :meth:`MDSRec.encode_parts` returns ``[u | w_1 u_1 | ... | w_M u_M]`` and
:meth:`MDSRec.item_embeddings` returns ``[E | H_1 | ... | H_M]``, so the base class's ``score``,
``score_sequences`` and ``prepare_scoring`` and the gradient x input attribution explain the full
score (fused head and modality heads), not only the fused head.
"""

from __future__ import annotations

from typing import ClassVar

import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from ...data.dataset import Modality
from ...data.training import TrainingData
from ...errors import ConfigError
from ...graphs.knn import knn, modality_weights
from ...graphs.sparse import SparseOperator
from ...search_space import LEARNING_RATE, Choice, FloatRange, IntRange
from ..base import MODELS, Batch
from ..layers import UniformDropout
from .base import PAD, SequentialConfig, SequentialRecommender
from .layers import positions

log = logging.getLogger("prismrec")

ID = "id"


# --------------------------------------------------------------------------- relation graphs (RGC)
def cooccurrence(indptr: np.ndarray, items: np.ndarray, n_items: int, window: int) -> sp.csr_matrix:
    """Behaviour co-occurrence (Eq. 1; SGP4SR ``get_co``), symmetric and sparse.

    ``C[a, b] = sum over sequences and positions p < q <= p + window with {s_p, s_q} = {a, b} of
    1 / (q - p)``, each user's full training sequence counted once (``indptr``/``items``). The official
    code counts every pair of a sequence; ``window`` bounds the cost at ``O(interactions x window)``.
    An item repeated at distance ``q - p`` gets ``2 / (q - p)`` on the diagonal, as in the code.
    """
    n = len(items)
    seq = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    upper = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    for delta in range(1, max(window, 0) + 1):
        a = np.arange(n - delta)
        a = a[seq[a] == seq[a + delta]]
        if not len(a):  # no sequence is longer than delta, so none is longer than delta + 1 either
            break
        vals = np.full(len(a), 1.0 / delta, dtype=np.float32)
        upper = upper + sp.csr_matrix((vals, (items[a], items[a + delta])), shape=(n_items, n_items))
    out = (upper + upper.T).tocsr()
    out.sum_duplicates()
    out.sort_indices()
    return out.astype(np.float32)


def row_l2_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    """``F.normalize(C, dim=1)`` for a sparse matrix; empty rows stay empty."""
    norm = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return (sp.diags(scale.astype(np.float32)) @ m).tocsr().astype(np.float32)


def row_topk(m: sp.csr_matrix, q: int) -> np.ndarray:
    """The ``q`` largest entries of every row of a sparse matrix, as column ids ``(n, q)`` (-1 where a
    row has fewer stored entries); ties go to the smaller id. Only stored (non-zero) entries count, so
    an item without co-occurrence gets no candidates (the dense code picked arbitrary ones)."""
    n = m.shape[0]
    out = np.full((n, q), -1, dtype=np.int64)
    if q == 0 or m.nnz == 0:
        return out
    rows = np.repeat(np.arange(n), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = rank < q
    out[rows[order][keep], rank[keep]] = m.indices[order][keep]
    return out


def relation_graph(modality: Modality, cooc: sp.csr_matrix, k: int, miu_m: float, miu_c: float,
                   backend: str = "auto") -> tuple[sp.csr_matrix, dict[str, float]]:
    """Modal-aware item relation graph ``A_m`` (Eq. 2-3; SGP4SR ``get_knn_adj_mat`` and
    ``extract_common_and_complement``), row-normalised to a mean over the neighbours.

    For an item with the feature: candidates ``P_i`` = its top ``int(k * miu_m)`` cosine neighbours
    among the items **that have the feature** (itself included, as in the code), ``Q_i`` = its top
    ``int(k * miu_c)`` co-occurring items (``cooc``); the neighbours are ``P_i ∩ Q_i`` followed by the
    rest of ``P_i`` in similarity order, cut to ``k``. An item **without** the feature gets its
    neighbours from behaviour only: itself plus its top ``k - 1`` co-occurring items (no zero feature
    vector ever enters the cosine search). There is no padding item: rows and columns are items.

    Returns the ``n x n`` graph and statistics (edges, promoted neighbours per item, missing items).
    """
    n = len(modality.values)
    avail = np.asarray(modality.available, dtype=bool)
    rows, cols = [], []
    promoted = 0.0
    have = np.flatnonzero(avail)
    if len(have):
        pool = max(int(k * miu_m), k)
        res = knn(modality.values[have], pool, backend=backend)  # type: ignore[arg-type]
        cand = have[res.indices]                                   # (n_have, pool) global ids, best first
        q = row_topk(cooc, int(k * miu_c))[have]
        common = (cand[:, :, None] == q[:, None, :]).any(-1)       # -1 never matches an item id
        order = np.argsort(~common, axis=1, kind="stable")         # common first, then similarity order
        kk = min(k, cand.shape[1])
        chosen = np.take_along_axis(cand, order, axis=1)[:, :kk]
        promoted = float((order[:, :kk] >= kk).sum(1).mean())      # neighbours that plain top-k lacks
        rows.append(np.repeat(have, kk))
        cols.append(chosen.ravel())
    missing = np.flatnonzero(~avail)
    if len(missing):
        co = row_topk(cooc, k)[missing]
        co = np.where(co == missing[:, None], -1, co)              # the item itself is added below
        take = (co >= 0) & (np.cumsum(co >= 0, axis=1) <= k - 1)
        rows += [missing, np.repeat(missing, take.sum(1))]
        cols += [missing, co[take]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    a = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(axis=1)).ravel()
    a = (sp.diags((1.0 / np.maximum(deg, 1.0)).astype(np.float32)) @ a).tocsr()
    a.sort_indices()
    return a.astype(np.float32), {"edges": int(a.nnz), "promoted_per_item": promoted,
                                  "missing_items": int(len(missing))}


# ------------------------------------------------------------------------------ interest centres
def kmeans_labels(x: np.ndarray, n_clusters: int, *, seed: int, iters: int = 100,
                  backend: Literal["torch", "faiss"] = "torch") -> np.ndarray:
    """Cluster labels of the rows of ``x`` (k-means, ``min(n_clusters, rows)`` clusters).

    ``torch``: k-means++ seeding and Lloyd iterations with a private generator (the result does not
    depend on the global RNG), distances in blocks, so memory is O(rows x clusters). ``faiss``:
    ``faiss.Kmeans`` (imported lazily; falls back to torch when FAISS is not installed).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = max(1, min(n_clusters, n))
    if backend == "faiss":
        try:
            import faiss
        except ImportError:  # pragma: no cover - depends on the environment
            log.warning("faiss is not installed; MDSRec k-means falls back to torch")
        else:
            km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, verbose=False)
            km.train(x)
            return km.index.search(x, 1)[1].ravel().astype(np.int64)
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x)
    sq = (xt * xt).sum(1)

    def assign(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, dist = torch.empty(n, dtype=torch.long), torch.empty(n)
        csq = (c * c).sum(1)
        for s in range(0, n, 65536):
            d2 = (sq[s:s + 65536, None] - 2 * xt[s:s + 65536] @ c.T + csq[None]).clamp(min=0)
            dist[s:s + 65536], labels[s:s + 65536] = d2.min(1)
        return labels, dist

    centres = xt[torch.randint(n, (1,), generator=g)].clone()
    dist = assign(centres)[1]
    for _ in range(1, k):  # k-means++
        p = dist if float(dist.sum()) > 0 else torch.ones(n)
        centres = torch.cat([centres, xt[torch.multinomial(p, 1, generator=g)]])
        dist = torch.minimum(dist, ((xt - centres[-1]) ** 2).sum(1))
    labels = assign(centres)[0]
    for _ in range(iters):
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, labels, xt)
        full = counts > 0
        centres[full] = sums[full] / counts[full, None].to(sums.dtype)
        new = assign(centres)[0]
        if torch.equal(new, labels):
            break
        labels = new
    return labels.numpy()


def membership(labels: np.ndarray, items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """``Pi`` (clusters x items): ``Pi[c, i] = 1 / |c|`` for the members of cluster ``c`` (Eq. 5).

    A one-hot matrix built from all members (the code's loop skips the last item, whose column keeps its
    raw label); empty clusters are dropped; items outside ``items`` (missing feature) join no cluster.
    """
    _, lab = np.unique(labels, return_inverse=True)
    counts = np.bincount(lab)
    return sp.csr_matrix(((1.0 / counts[lab]).astype(np.float32), (lab, items)), shape=(len(counts), n_items))


# ------------------------------------------------------------------------------------- encoder
class Block(nn.Module):
    """One self-attention block in the layout of the SGP4SR code (pmixer's SASRec), Eq. 8-9.

    Sequence: ``Q = LN1(X); X <- FFN(LN2(Q + MHA(Q, X, X)))`` then the padding is zeroed, with
    ``FFN(y) = y + Drop(W2 ReLU(Drop(W1 y)))``. Centres (ICA, Eq. 9) reuse the same weights on the
    block's input sequence: ``Q_c = LN1(C); C <- FFN(Q_c + MHA(Q_c, X, X))`` (no LN2, as in the code).
    ``mask`` is additive, ``(B x heads, queries, keys)``, ``-inf`` = not attended: :meth:`MDSRec._masks` builds it
    once per forward pass (what ``nn.MultiheadAttention`` would make of a boolean mask in every call).
    With ``drop`` (one set of centres per position, window training) the centre update's attention is
    written out (:meth:`attention`).
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, drop: type[nn.Dropout] = nn.Dropout):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(dim, eps=1e-8)
        self.ff = nn.Sequential(nn.Linear(dim, dim), drop(dropout), nn.ReLU(), nn.Linear(dim, dim),
                                drop(dropout))
        self.n_heads = n_heads

    def attend(self, queries: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
               drop: nn.Module | None = None) -> torch.Tensor:
        """``Q + MHA(Q, X, X)``, ``Q = LN1(queries)``: through ``nn.MultiheadAttention`` (additive ``mask``), or
        with ``drop`` through :meth:`attention` (boolean ``mask``)."""
        q = self.ln1(queries)
        if drop is not None:
            return q + self.attention(q, x, mask, drop)
        return q + self.attn(q, x, x, attn_mask=mask, need_weights=False)[0]

    def sequence(self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        y = self.ln2(self.attend(x, x, mask))
        return (y + self.ff(y)) * keep

    def centres(self, c: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                drop: nn.Module | None = None) -> torch.Tensor:
        y = self.attend(c, x, mask, drop)
        return y + self.ff(y)

    def attention(self, q: torch.Tensor, x: torch.Tensor, blocked: torch.Tensor, drop: nn.Module) -> torch.Tensor:
        """``self.attn(q, x, x)`` with its weights, written out: ``blocked`` is boolean ``(B, queries, keys)``,
        shared by the heads (no per-head copy of a mask that has ``L x K`` query rows), and the attention
        weights are dropped out by ``drop`` (the model's dropout masks) at the attention's rate."""
        B, Q, d = q.shape
        h = self.n_heads
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)

        def heads(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return nn.functional.linear(t, w, b).view(B, t.shape[1], h, d // h).transpose(1, 2)
        scores = heads(q, w_q, b_q) @ heads(x, w_k, b_k).transpose(2, 3) * (d // h) ** -0.5
        weights = torch.softmax(scores.masked_fill_(blocked[:, None], float("-inf")), dim=-1)
        if self.training and self.attn.dropout > 0:
            weights = drop(weights)
        out = (weights @ heads(x, w_v, b_v)).transpose(1, 2).reshape(B, Q, d)
        return self.attn.out_proj(out)


@MODELS.register("mdsrec")
class MDSRec(SequentialRecommender):
    """Per-modality relation graphs, interest-centralised attention, fused and per-modality heads."""

    #: SGP4SR code fixes every value (no grid): dropout [0.3, 0.5] (validated in docs/models/mdsrec.md) and the
    #: image branch's weight (code mb 0.1) are searched with the learning rate
    search_space: ClassVar[dict] = {"train.learning_rate": LEARNING_RATE, "dropout": Choice((0.3, 0.5)),
                                    "image_weight": FloatRange(0.05, 0.95)}

    class Config(SequentialConfig):
        variant: Literal["mdsrec", "sgp4sr"] = Field(
            "mdsrec", description="mdsrec: modality branches only; sgp4sr: plus the ID/co-occurrence branch")
        embedding_size: int = Field(64, ge=1, description="d (SGP4SR code: 300)")
        n_layers: int = Field(2, ge=1)
        n_heads: int = Field(4, ge=1, description="attention heads (SGP4SR code: 4)")
        dropout: float = Field(0.5, ge=0, lt=1, description="embedding, attention and FFN dropout (SGP4SR code: 0.5)")
        dropout_masks: Literal["uniform", "bernoulli"] = Field(
            "uniform", description="how the embedding and FFN dropout masks are drawn: uniform (torch.rand >= p, "
                                   "~4x cheaper on CPU) or bernoulli (nn.Dropout); the same distribution")
        knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's relation graph")
        miu_m: float = Field(2.5, ge=1, description="cosine candidate pool = int(knn_k * miu_m)")
        miu_c: float = Field(0.3, ge=0, description="co-occurrence candidate pool = int(knn_k * miu_c)")
        cooc_window: int | None = Field(
            None, ge=1, description="count co-occurring pairs at most this far apart; None = max_len")
        n_centers: int = Field(
            10, ge=1, description="k-means interest centres per modality (K); the SGP4SR code: 50, 3x the cost "
                                  "at the same quality (docs/models/mdsrec.md)")
        kmeans_backend: Literal["torch", "faiss"] = Field("torch", description="k-means implementation")
        kmeans_seed: int = Field(100, description="k-means seed (fixed, independent of the run seed)")
        image_weight: float = Field(
            0.1, ge=0, le=1, description="weight w of the 'image' branch (code mb = 0.1); the other modalities "
                                         "share 1 - w equally")
        mm_weights: dict[str, float] | None = Field(
            None, description="explicit weight per modality (normalised to sum 1); overrides image_weight")
        id_weight: float = Field(0.6, ge=0, description="fusion weight of the ID branch (variant sgp4sr; code 0.6)")
        id_input_exponent: float = Field(0.9, description="ID-branch input scale d ** exponent (code 0.9)")
        center_mask: Literal["padding", "official_tril"] = Field(
            "padding", description="centres see every item (padding) or centre c only the first c + 1 items (code)")
        assign: Literal["gumbel", "softmax"] = Field(
            "gumbel", description="soft centre assignment in training: Gumbel-softmax (code) or softmax; "
                                  "evaluation always uses the softmax")
        share_layers: bool = Field(True, description="one block stack for every branch and the centres (code)")
        modalities: list[str] | None = Field(None, description="modalities used as branches; None = all")
        graph_backend: Literal["auto", "torch", "faiss", "ivf"] = Field("auto", description="kNN search backend")
        positions: Literal["from_end", "from_start"] = Field(
            "from_end", description="position embeddings counted from the latest item (ours) or from the oldest "
                                    "visible item (RecBole's; with training_samples: windows, window training then "
                                    "equals prefix training)")
        training_samples: Literal["prefixes", "windows"] = Field(
            "prefixes", description="one sample per prefix (RecBole's augmentation, the code's) or windows of "
                                    "max_len + 1 items trained at every position in one pass, each position with "
                                    "its own centres (the same forward pass; ~6x cheaper per epoch on MovieLens-1M, but "
                                    "lower results on scientific_mm: docs/models/mdsrec.md)")

    min_modalities = 1
    # encode_positions gives every position the centres of its own prefix (Eq. 9 with the keys after the
    # position masked), so it is causal; windows are still opt-in (training_samples), the code trains on prefixes
    causal = True

    @property
    def window_training(self) -> bool:
        return self.config.training_samples == "windows"

    def __init__(self, config: MDSRec.Config, data: TrainingData):
        super().__init__(config, data)
        names = sorted(config.modalities if config.modalities is not None else data.modalities)
        unknown = [n for n in names if n not in data.modalities]
        if unknown or not names or ID in names:
            raise ConfigError(
                f"mdsrec.modalities must name modalities of dataset '{data.name}' (not '{ID}'); got "
                f"{config.modalities}, available: {', '.join(sorted(data.modalities))}.")
        self.names = names
        d = config.embedding_size
        self.dim = d
        self.weights = modality_weights(names, config.image_weight, "image", config.mm_weights)
        self.use_id = config.variant == "sgp4sr"
        self.branches = [*names, ID] if self.use_id else list(names)

        # RGC (Eq. 1-4), from the training sequences and the item features only
        indptr, items = data.sequences()
        window = config.cooc_window or config.max_len
        self.cooc = cooccurrence(indptr, items, self.n_items, window)       # raw, symmetric (Eq. 1)
        cooc_hat = row_l2_normalize(self.cooc)
        self.graphs = nn.ModuleDict()
        self.centre_maps = nn.ModuleDict()
        self.graph_stats: dict[str, dict[str, float]] = {}
        for m in names:
            mod = data.modalities[m]
            a, stats = relation_graph(mod, cooc_hat, config.knn_k, config.miu_m, config.miu_c,
                                      config.graph_backend)
            self.graphs[m] = SparseOperator(a, symmetric=False)
            have = np.flatnonzero(mod.available)
            labels = (kmeans_labels(mod.values[have], config.n_centers, seed=config.kmeans_seed,
                                    backend=config.kmeans_backend) if len(have) else np.zeros(0, np.int64))
            pi = membership(labels, have, self.n_items)
            if pi.shape[0] == 0:  # no item has this feature: one centre, the mean of all items
                pi = sp.csr_matrix(np.full((1, self.n_items), 1.0 / self.n_items, dtype=np.float32))
            self.centre_maps[m] = SparseOperator(pi, symmetric=False)
            self.graph_stats[m] = {**stats, "centres": int(pi.shape[0])}
        if self.use_id:
            self.cooc_op = SparseOperator(cooc_hat, symmetric=False)

        self.embedding = nn.Embedding(self.n_items + 1, d, padding_idx=PAD)
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            self.embedding.weight[PAD].zero_()
        self.position = nn.Embedding(config.max_len, d)
        nn.init.normal_(self.position.weight, std=0.02)
        drop = UniformDropout if config.dropout_masks == "uniform" else nn.Dropout
        self.dropout = drop(config.dropout)
        n_stacks = 1 if config.share_layers else len(self.branches)
        self.stacks = nn.ModuleList(
            nn.ModuleList(Block(d, config.n_heads, config.dropout, drop) for _ in range(config.n_layers))
            for _ in range(n_stacks))
        for stack in self.stacks:
            for block in stack:  # RecBole's _init_weights reaches the attention's output Linear
                nn.init.normal_(block.attn.out_proj.weight, std=0.02)
                nn.init.zeros_(block.attn.out_proj.bias)
        self.norm_out = nn.LayerNorm(d, eps=1e-8)
        self.register_buffer("causal_mask", torch.triu(torch.ones(config.max_len, config.max_len, dtype=torch.bool), 1),
                             persistent=False)
        self._tables_cache: dict[str, torch.Tensor] | None = None

    # item side ------------------------------------------------------------------------------------
    def tables(self) -> dict[str, torch.Tensor]:
        """Item tables ``(n_items, d)``: ``"E"`` the ID embeddings, ``H_m`` per modality (Eq. 4), ``"id"``
        = ``C_hat E`` (sgp4sr), and the centres ``"centres:<m>"`` = ``Pi_m H_m`` (Eq. 5). Cached between
        :meth:`prepare_scoring` and the next training step (only used while not training)."""
        if self._tables_cache is not None and not self.training:
            return self._tables_cache
        e = self.embedding.weight[1:]
        out = {"E": e}
        for m in self.names:
            out[m] = self.graphs[m](e)
            out[f"centres:{m}"] = self.centre_maps[m](out[m])
        if self.use_id:
            out[ID] = self.cooc_op(e)
        return out

    def item_embeddings(self) -> torch.Tensor:
        """``[E | H_1 | ... | H_M]`` ``(n_items, (M + 1) d)``: with :meth:`encode_parts` the score is one dot
        product (Eq. 12)."""
        t = self.tables()
        return torch.cat([t["E"], *(t[m] for m in self.names)], dim=1)

    @torch.no_grad()
    def prepare_scoring(self, history=None) -> None:
        self._tables_cache = None
        self._tables_cache = self.tables()
        super().prepare_scoring(history)

    def clear_scoring(self) -> None:
        self._item_cache = None
        self._tables_cache = None

    # sequence side --------------------------------------------------------------------------------
    def input_parts(self, seqs: torch.Tensor, tables: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """One ``(B, L, d)`` input per branch (Eq. 6 without positions): ``sqrt(d) H_m[s]`` per modality and,
        for sgp4sr, ``"id"`` = ``d ** 0.9 (C_hat E)[s]``; zero at padding."""
        t = tables if tables is not None else self.tables()
        idx = (seqs - 1).clamp(min=0)
        keep = (seqs != PAD).unsqueeze(-1).to(t["E"].dtype)
        scale = {m: self.dim ** 0.5 for m in self.names}
        if self.use_id:
            scale[ID] = self.dim ** self.config.id_input_exponent
        return {b: scale[b] * t[b][idx] * keep for b in self.branches}

    def _masks(self, seqs: torch.Tensor, n_centres: int, dtype: torch.dtype,
               per_position: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive attention masks, one row block per head (``-inf`` = not attended): sequence
        ``(B x heads, L, L)`` (causal + padded keys; a position always sees itself, so no row is empty) and
        centres ``(B x heads, K, L)`` (``center_mask``), the centres of the whole sequence; or ``per_position``
        one set of centres per position ``t`` that sees only the keys up to ``t``, i.e. the centres of the
        prefix ending at ``t``: a boolean ``(B, L x K, L)``, ``True`` = not attended, shared by the heads."""
        B, L = seqs.shape
        pad = seqs == PAD
        ar = torch.arange(L, device=seqs.device)
        eye = torch.eye(L, dtype=torch.bool, device=seqs.device)
        seq_blocked = (self.causal_mask[-L:, -L:][None] | pad[:, None, :]) & ~eye[None]
        query_pos = ar if per_position else ar[-1:]                          # (T,) the prefix end of each set
        after = ar[None, :] > query_pos[:, None]                             # (T, L) keys after the prefix end
        cen_blocked = (pad[:, None, None, :] | after[None, :, None, :]).expand(B, len(query_pos), n_centres, L).clone()
        if self.config.center_mask == "official_tril":
            start = L - (~pad).sum(1, keepdim=True)                          # first item of each sequence
            rel = ar[None] - start                                           # item index from the start
            cen_blocked |= rel[:, None, None, :] > torch.arange(n_centres, device=seqs.device)[None, None, :, None]
        empty = cen_blocked.all(-1)                                          # an empty prefix (or a padded
        own = query_pos[:, None] == ar[None, :]                              # position): its own slot
        cen_blocked &= ~(empty[..., None] & own[None, :, None, :])
        cen_blocked = cen_blocked.reshape(B, len(query_pos) * n_centres, L)
        heads = self.config.n_heads

        def additive(blocked: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device).masked_fill_(blocked, float("-inf"))
            return mask.repeat_interleave(heads, 0)
        # per position the centre mask stays boolean and shared by the heads (Block.attention)
        return additive(seq_blocked), cen_blocked if per_position else additive(cen_blocked)

    def _branch_outputs(self, parts: dict[str, torch.Tensor], seqs: torch.Tensor, tables: dict[str, torch.Tensor],
                        per_position: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused ``(B, L, d)`` (Eq. 11) and per-modality ``F_m`` ``(B, L, d)`` (Eq. 10) at every position.

        The centres (Eq. 5-7, 9) are those of the whole sequence, which is exact at the last position; with
        ``per_position`` every position ``t`` gets its own centre states (``(B, L x K, d)``, their own dropout),
        which attend only to the items up to ``t``: ``F_m`` at ``t`` is then exactly ``F_m`` of the prefix that
        ends at ``t`` (with ``positions: from_start``), so a window trains every prefix in one pass."""
        B, L = seqs.shape
        keep = (seqs != PAD).unsqueeze(-1).to(parts[self.branches[0]].dtype)
        pos = positions(self.position, seqs, self.config.positions == "from_start")
        T = L if per_position else 1                                            # centre sets per sequence
        fused, per_mod = 0.0, {}
        masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}                # by number of centres

        def masks_for(n_centres: int) -> tuple[torch.Tensor, torch.Tensor]:
            if n_centres not in masks:
                masks[n_centres] = self._masks(seqs, n_centres, keep.dtype, per_position)
            return masks[n_centres]
        for i, b in enumerate(self.branches):
            stack = self.stacks[0 if len(self.stacks) == 1 else i]
            x = self.dropout(parts[b] + pos) * keep                          # Eq. 6
            if b == ID:
                seq_blocked = masks_for(1)[0]
                for block in stack:
                    x = block.sequence(x, seq_blocked, keep)
                fused = fused + self.config.id_weight * x
                continue
            z = tables[f"centres:{b}"]
            K = len(z)
            seq_blocked, cen_blocked = masks_for(K)
            c = self.dropout((self.dim ** 0.5 * z).expand(B, T, -1, -1))    # Eq. 6, centres (B, T, K, d)
            logits = (x.unsqueeze(2) @ c.transpose(2, 3)).squeeze(2) if per_position else x @ c[:, 0].transpose(1, 2)
            if self.training and self.config.assign == "gumbel":            # Eq. 7 (layer-0 inputs), (B, L, K)
                g = nn.functional.gumbel_softmax(logits, tau=1.0, hard=False)
            else:
                g = torch.softmax(logits, dim=-1)
            c = c.reshape(B, T * K, -1)
            for block in stack:                                               # Eq. 8-9
                c = block.centres(c, x, cen_blocked, self.dropout if per_position else None)
                x = block.sequence(x, seq_blocked, keep)
            centre_term = ((g.unsqueeze(2) @ c.view(B, L, K, -1)).squeeze(2) if per_position else g @ c)
            per_mod[b] = self.norm_out(x + centre_term)                       # Eq. 10
            fused = fused + self.weights[b] * x
        return self.norm_out(fused), per_mod                                  # Eq. 11

    def _heads(self, parts: dict[str, torch.Tensor], seqs: torch.Tensor, tables: dict[str, torch.Tensor], *,
               all_positions: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Columns that are padding in every row are cut first: positions do not depend on them and padded keys
        # are masked, so the outputs are unchanged, and short prefixes (most of them) cost far less.
        used = (seqs != PAD).any(0)
        cut = int(used.to(torch.int8).argmax()) if bool(used.any()) else seqs.shape[1] - 1
        if cut:
            seqs, parts = seqs[:, cut:], {k: v[:, cut:] for k, v in parts.items()}
        fused, per_mod = self._branch_outputs(parts, seqs, tables, per_position=all_positions)
        if all_positions:
            keep = (seqs != PAD).unsqueeze(-1).to(fused.dtype)
            back = [0, 0, cut, 0]
            return (nn.functional.pad(fused * keep, back),
                    {m: nn.functional.pad(f * keep, back) for m, f in per_mod.items()})
        return fused[:, -1], {m: f[:, -1] for m, f in per_mod.items()}      # left padding: last = latest

    def encode_parts(self, parts: dict[str, torch.Tensor], seqs: torch.Tensor, *,
                     all_positions: bool = False) -> torch.Tensor:
        """``[u | w_1 u_1 | ... | w_M u_M]`` ``((B, (M + 1) d)``; ``(B, L, .)`` with ``all_positions``, each
        position with the centres of its own prefix). Its dot product with :meth:`item_embeddings` is the
        score of Eq. 12."""
        u, per_mod = self._heads(parts, seqs, self.tables(), all_positions=all_positions)
        return torch.cat([u, *(self.weights[m] * per_mod[m] for m in self.names)], dim=-1)

    # training -------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Eq. 13: ``CE(u E^T) + sum_m w_m CE(u_m H_m^T)`` at the last position of each prefix, or at every
        position of a window (``training_samples: windows``; full softmax, or sampled softmax per head with
        ``loss_type: sampled``)."""
        seqs, targets = batch["seqs"], batch["targets"]
        t = self.tables()
        windows = targets.dim() == 2
        u, per_mod = self._heads(self.input_parts(seqs, t), seqs, t, all_positions=windows)
        if windows:                                                           # targets -1 on padding
            keep = targets >= 0
            u, per_mod, targets = u[keep], {m: f[keep] for m, f in per_mod.items()}, targets[keep]
        out = {"loss_fused": self.logits_loss(u, targets, t["E"])}
        total = out["loss_fused"]
        for m in self.names:
            out[f"loss_{m}"] = self.logits_loss(per_mod[m], targets, t[m])
            total = total + self.weights[m] * out[f"loss_{m}"]
        return {"loss": total, **out}

    def extra_info(self) -> dict[str, object]:
        return {"variant": self.config.variant, "branches": self.branches,
                "modality_weights": self.weights, "cooccurrence_nnz": int(self.cooc.nnz),
                "cooc_window": self.config.cooc_window or self.config.max_len, "graphs": self.graph_stats}
