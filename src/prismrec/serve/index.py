"""Maximum inner-product retrieval over item vectors with FAISS: exact for small catalogues, IVF for large.

* fewer than ``ann_threshold`` items: ``IndexFlatIP`` (exact, the model's own ranking);
* otherwise ``IndexIVFFlat`` (inner product) with ``nlist = 4 sqrt(n)`` lists trained on the catalogue and
  ``nprobe`` lists searched per query (recall against exact search is measured in
  ``benchmarks/serve_load.py``).

Rows are addressed by their position (the service's internal item row); an updated row is removed and
added again. Searches ask for extra candidates so that filtered (seen) items can be dropped and
``k`` results still come back; when too few survive, the search is repeated with more.
"""

from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

from ..errors import PrismrecError
from ..graphs.knn import inner_product_index


class ItemIndex:
    def __init__(self, vectors: np.ndarray, *, ann_threshold: int = 50_000, nprobe: int = 64, threads: int = 1,
                 seed: int = 0):
        try:
            import faiss
        except ImportError:
            raise PrismrecError("serving needs faiss. Fix: pip install 'prismrec[serve]' (faiss-cpu).") from None
        self.faiss = faiss
        faiss.omp_set_num_threads(threads)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        self.dim = d
        self.lock = threading.RLock()
        if n >= ann_threshold:
            index = inner_product_index(faiss, vectors, ivf=True, nprobe=nprobe, seed=seed)
            self.kind = f"ivf{index.nlist},nprobe={index.nprobe}"
            self.index = index
        else:
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
            self.kind = "flat (exact)"
        self.index.add_with_ids(vectors, np.arange(n, dtype=np.int64))
        self.size = n

    def upsert(self, row: int, vector: np.ndarray) -> None:
        v = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        with self.lock:
            if row < self.size:
                self.index.remove_ids(np.asarray([row], dtype=np.int64))
            self.index.add_with_ids(v, np.asarray([row], dtype=np.int64))
            self.size = max(self.size, row + 1)

    def search(self, query: np.ndarray, k: int, exclude: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product with ``query``, skipping ``exclude``; (rows, scores).

        FAISS returns candidates; the excluded ones are dropped by the same top-k rule as evaluation
        (:func:`~prismrec.evaluate.ranking.top_k`); too few survivors repeat the search with more."""
        import torch

        from ..evaluate.ranking import top_k

        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        excl = np.fromiter((int(e) for e in exclude), dtype=np.int64)
        want = min(k + len(excl), self.index.ntotal)
        while True:
            with self.lock:
                scores, rows = self.index.search(q, want)
            drop = np.flatnonzero((rows[0] < 0) | np.isin(rows[0], excl))
            values, pos = top_k(torch.from_numpy(scores), k, (np.zeros(len(drop), np.int64), drop))
            ok = torch.isfinite(values[0]).numpy()
            if ok.sum() >= k or want >= self.index.ntotal:
                return rows[0][pos[0].numpy()[ok]].astype(np.int64), values[0].numpy()[ok].astype(np.float32)
            want = min(self.index.ntotal, want * 2 + k)
