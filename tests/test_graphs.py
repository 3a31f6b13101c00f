"""The shared graph code: kNN backends against brute force, masks, normalisation, sparse autograd."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.graphs import SparseOperator, normalized_bipartite, propagate, sym_normalize
from prismrec.graphs.knn import knn, knn_graph

faiss = pytest.importorskip("faiss")


def brute_force(x: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    # stable: by -score then id
    return np.lexsort((np.broadcast_to(np.arange(len(x)), s.shape), -s), axis=1)[:, :k]


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(300, 16)).astype(np.float32)


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_exact_backends_match_brute_force(feats, backend, exclude_self):
    res = knn(feats, 7, backend=backend, exclude_self=exclude_self)
    expected = brute_force(feats, 7, exclude_self)
    assert res.indices.shape == (300, 7)
    assert (res.indices == expected).mean() > 0.999
    if not exclude_self:
        assert (res.indices[:, 0] == np.arange(300)).all()  # an item is its own nearest neighbour
    else:
        assert not (res.indices == np.arange(300)[:, None]).any()
    assert np.all(np.diff(res.scores, axis=1) <= 1e-6)  # best first


def test_ivf_is_approximately_exact():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    x = (centers[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 32))).astype(np.float32)
    exact = knn(x, 10, backend="torch").indices
    approx = knn(x, 10, backend="ivf", nprobe=32).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall > 0.9


def test_ties_are_broken_by_smaller_id():
    x = np.ones((6, 4), dtype=np.float32)  # every pair ties at cosine 1
    for backend in ("torch", "faiss"):
        res = knn(x, 3, backend=backend)
        assert (res.indices == np.array([0, 1, 2])).all(), backend


def test_missing_items_get_no_edges_and_are_nobodys_neighbour(feats):
    avail = np.ones(300, dtype=bool)
    avail[[5, 17, 200]] = False
    g = knn_graph(feats, 5, norm="none", available=avail)
    assert g[[5, 17, 200]].nnz == 0
    assert g[:, [5, 17, 200]].nnz == 0
    assert (np.diff(g.indptr)[avail] == 5).all()


def test_sym_normalisation_and_weighted_edges(feats):
    binary = knn_graph(feats, 5, norm="none")
    sym = knn_graph(feats, 5, norm="sym")
    deg = np.asarray(binary.sum(axis=1)).ravel()
    coo = binary.tocoo()
    expected = sp.csr_matrix((1 / np.sqrt(deg[coo.row] * deg[coo.col]), (coo.row, coo.col)), shape=binary.shape)
    assert abs(sym - expected).max() < 1e-6
    row = knn_graph(feats, 5, norm="row")
    assert np.allclose(np.asarray(row.sum(axis=1)).ravel(), 1.0)
    weighted = knn_graph(feats, 5, norm="none", weighted=True)
    assert weighted.max() <= 1.0 + 1e-6 and not np.allclose(weighted.data, 1.0)


def test_sparse_operator_matches_dense_with_gradients():
    rng = np.random.default_rng(1)
    m = sp.random(40, 30, density=0.2, random_state=2, dtype=np.float32).tocsr()
    op = SparseOperator(m)
    assert not op.symmetric
    x = torch.randn(30, 4, requires_grad=True)
    y = op(x)
    dense = torch.from_numpy(m.toarray())
    x2 = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(y, dense @ x2)
    g = torch.from_numpy(rng.normal(size=(40, 4)).astype(np.float32))
    y.backward(g)
    (dense @ x2).backward(g)
    torch.testing.assert_close(x.grad, x2.grad)


def test_normalized_bipartite_and_propagation_modes():
    r = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    a = normalized_bipartite(r).toarray()
    full = np.zeros((5, 5), dtype=np.float32)
    full[:2, 2:] = r.toarray()
    full[2:, :2] = r.toarray().T
    d = full.sum(1) + 1e-7
    assert np.allclose(a, full / np.sqrt(np.outer(d, d)), atol=1e-6)
    assert np.allclose(sym_normalize(full).toarray(), a, atol=1e-6)
    op = SparseOperator(a, symmetric=True)
    x = torch.randn(5, 3)
    at = torch.from_numpy(a)
    layers = [x, at @ x, at @ at @ x]
    torch.testing.assert_close(propagate(op, x, 2, "mean"), sum(layers) / 3)
    torch.testing.assert_close(propagate(op, x, 2, "sum"), sum(layers))
    torch.testing.assert_close(propagate(op, x, 2, "last"), layers[-1])
