"""Sparse graph operators shared by every graph model: written once, used everywhere.

* :func:`bipartite_adjacency` / :func:`sym_normalize` build the normalised user-item graph
  ``A_hat = D^{-1/2} A D^{-1/2}`` of LightGCN (He et al., SIGIR'20, Eq. 7) as a SciPy CSR matrix;
* :class:`SparseOperator` wraps a CSR matrix as a torch operator whose backward pass multiplies by the
  (precomputed) transpose, so autograd never converts formats inside the training loop;
* :func:`propagate` runs ``L`` rounds of ``E^{l+1} = A_hat E^l`` and combines the layers (mean for
  LightGCN Eq. 8, sum for LIRDRec, or the last layer).

Indices are kept as int32 CSR, which makes torch's CPU sparse-dense product about four times faster
than int64 COO on our benchmarks (see docs/benchmarks.md).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def bipartite_adjacency(r: sp.spmatrix) -> sp.csr_matrix:
    """The symmetric (U+I) x (U+I) adjacency ``[[0, R], [R^T, 0]]`` of a binary user x item matrix."""
    r = sp.csr_matrix(r, dtype=np.float32)
    return sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)


def sym_normalize(a: sp.spmatrix, eps: float = 1e-7) -> sp.csr_matrix:
    """``D^{-1/2} A D^{-1/2}`` with ``D`` the row sums; ``eps`` keeps isolated nodes at zero (MMRec)."""
    a = sp.csr_matrix(a, dtype=np.float32)
    deg = np.asarray(a.sum(axis=1)).ravel() + eps
    d = sp.diags(np.power(deg, -0.5).astype(np.float32))
    out = (d @ a @ d).tocsr()
    out.sort_indices()
    return out.astype(np.float32)


def normalized_bipartite(r: sp.spmatrix) -> sp.csr_matrix:
    """LightGCN's ``A_hat`` for the training interactions ``r``."""
    return sym_normalize(bipartite_adjacency(r))


def to_torch_csr(m: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A SciPy matrix as a torch sparse CSR tensor with int32 indices."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int32)),
        torch.from_numpy(m.indices.astype(np.int32)),
        torch.from_numpy(m.data.astype(np.float32)),
        size=m.shape,
        device=device,
        check_invariants=False,
    )


class _SparseMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: torch.Tensor, matrix_t: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.matrix_t @ grad


class SparseOperator(torch.nn.Module):
    """A fixed sparse matrix usable as ``op(x) = M @ x`` with autograd w.r.t. ``x``.

    Not a parameter and not saved in state dicts (it is rebuilt from the data); ``.to(device)`` moves
    it with the model.
    """

    def __init__(self, m: sp.spmatrix, symmetric: bool | None = None):
        super().__init__()
        m = sp.csr_matrix(m, dtype=np.float32)
        if symmetric is None:
            symmetric = m.shape[0] == m.shape[1] and abs(m - m.T).max() < 1e-6 if m.nnz else True
        self.shape = m.shape
        self.symmetric = bool(symmetric)
        self.register_buffer("matrix", to_torch_csr(m), persistent=False)
        if not self.symmetric:
            self.register_buffer("matrix_t", to_torch_csr(m.T.tocsr()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mt = self.matrix if self.symmetric else self.matrix_t
        if x.requires_grad:
            return _SparseMM.apply(self.matrix, mt, x)
        return self.matrix @ x

    @property
    def nnz(self) -> int:
        return int(self.matrix._nnz())


def propagate(op: SparseOperator, x: torch.Tensor, n_layers: int,
              combine: Literal["mean", "sum", "last"] = "mean") -> torch.Tensor:
    """``n_layers`` rounds of ``x <- op(x)``, then the mean, sum or last of all layers (layer 0 included)."""
    h, total = x, x
    for _ in range(n_layers):
        h = op(h)
        total = total + h  # a running sum: no stacked (layers x nodes x dim) copy
    if combine == "last":
        return h
    return total / (n_layers + 1) if combine == "mean" else total
