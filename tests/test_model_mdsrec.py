import numpy as np
import pytest
import scipy.sparse as sp
import torch

from prismrec.data import Modality
from prismrec.models.sequential.attribution import contributions
from prismrec.models.sequential.mdsrec import cooccurrence, kmeans_labels, membership, relation_graph, row_l2_normalize
from seq_checks import N_ITEMS, check_learns, check_round_trip_and_sessions, cyclic_dataset, fit

FAST = ["n_centers=4"]


def test_mdsrec_learns_next_item():
    # miu_c=0: feature-only relation graphs, so the untrained model is near chance (see the next test)
    check_learns("mdsrec", [*FAST, "miu_c=0"], epochs=6)


def test_sgp4sr_learns_beyond_its_behaviour_graph():
    """The co-occurrence graph (ID branch, promoted neighbours) already holds the cyclic rule before
    training (an untrained model scores like item-kNN); training must still add to it."""
    ds = cyclic_dataset()
    overrides = [*FAST, "variant=sgp4sr", "center_mask=official_tril", "share_layers=false"]
    before = fit("mdsrec", ds, overrides, 0).metrics["valid"]["recall@10"]
    after = fit("mdsrec", ds, overrides, 6).metrics["valid"]["recall@10"]
    assert after >= 0.95 and after > before + 0.1, (before, after)


def test_mdsrec_round_trip_and_sessions():
    check_round_trip_and_sessions("mdsrec", [*FAST, "variant=sgp4sr"])


def test_cooccurrence_is_symmetric_sparse_and_distance_weighted():
    # two sequences: (0, 1, 2) and (2, 0); item 3 repeats at distance 1
    indptr, items = np.array([0, 3, 5, 7]), np.array([0, 1, 2, 2, 0, 3, 3])
    c = cooccurrence(indptr, items, 5, window=2)
    assert sp.issparse(c) and abs(c - c.T).max() == 0
    assert c[0, 1] == 1 and c[1, 2] == 1 and c[0, 2] == pytest.approx(0.5 + 1.0)  # 1/2 in seq 1, 1 in seq 2
    assert c[3, 3] == 2 and c[4].nnz == 0 and c.nnz == 7
    assert cooccurrence(indptr, items, 5, window=1)[0, 2] == 1  # the distance-2 pair is outside the window
    # the model's matrix: counted on training sequences only, symmetric, sparse
    run = fit("mdsrec", cyclic_dataset(), FAST, 0)
    m = run.model.cooc
    assert sp.issparse(m) and m.shape == (N_ITEMS, N_ITEMS) and abs(m - m.T).max() < 1e-6
    assert m.nnz < N_ITEMS * N_ITEMS // 2


def test_relation_graph_promotes_cooccurring_candidates():
    # 40 unit vectors on a quarter circle: cosine neighbours of item 10 are 10, 9, 11, 8, 12, 7, ...
    angles = np.arange(40) * (np.pi / 2) / 40
    mod = Modality("image", np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32), np.ones(40, bool))
    cooc = sp.lil_matrix((40, 40), dtype=np.float32)
    cooc[10, 12] = cooc[12, 10] = 1.0   # inside the cosine pool (rank 5 of 6): promoted
    cooc[10, 30] = cooc[30, 10] = 2.0   # top co-occurrence (pool of int(3 * 0.7) = 2) but not modally close
    plain, _ = relation_graph(mod, sp.csr_matrix((40, 40), dtype=np.float32), k=3, miu_m=2, miu_c=0.7)
    graph, stats = relation_graph(mod, row_l2_normalize(cooc.tocsr()), k=3, miu_m=2, miu_c=0.7)
    assert set(plain[10].indices) == {9, 10, 11}
    assert set(graph[10].indices) == {9, 10, 12} and 30 not in graph[10].indices
    # every row holds exactly k neighbours weighted 1/k (a mean): n x n items, no padding row
    assert graph.shape == (40, 40) and np.all(np.diff(graph.indptr) == 3)
    assert np.allclose(graph.data, 1 / 3) and stats["edges"] == 120


def test_model_graphs_are_sparse_mean_rows_without_padding():
    run = fit("mdsrec", cyclic_dataset(), FAST, 0)
    model = run.model
    for name in ("image", "text"):
        g = model.graphs[name].matrix
        assert g.layout == torch.sparse_csr and g.shape == (N_ITEMS, N_ITEMS)
        assert torch.all(g.crow_indices().diff() == 10) and torch.allclose(g.values(), torch.tensor(0.1))
    # the padding row of the embedding table never reaches an item or a centre
    with torch.no_grad():
        before = {k: v.clone() for k, v in model.tables().items()}
        model.embedding.weight[0] = 100.0
        after = model.tables()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_missing_features_use_behaviour_neighbours_without_nan():
    missing = np.array([0, 5])
    run = fit("mdsrec", cyclic_dataset(missing=missing), FAST, 2)
    model = run.model.eval()
    g = model.graphs["image"].matrix.to_dense()
    others = np.setdiff1d(np.arange(N_ITEMS), missing)
    assert torch.all(g[others][:, missing] == 0)                  # never a cosine neighbour
    cooc = run.model.cooc.toarray()
    for i in missing:
        cols = set(torch.nonzero(g[i]).ravel().tolist())
        assert i in cols and cols - {i} and all(cooc[i, j] > 0 for j in cols - {i})
    assert model.graph_stats["image"]["missing_items"] == 2
    with torch.no_grad():
        model.prepare_scoring()
        e = model.item_embeddings()
        scores = model.score_sequences([[0, 1, 2], [5], [3, 4]])
    assert torch.isfinite(e).all() and torch.isfinite(scores).all()
    assert (e[missing].abs().sum(1) > 0).all()


def test_eval_scoring_is_deterministic_and_training_assignment_is_sampled():
    run = fit("mdsrec", cyclic_dataset(), FAST, 1)
    model = run.model
    seqs = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]])
    model.eval()
    model.prepare_scoring(run.split.history("test"))
    with torch.no_grad():
        users = torch.tensor([0, 1, 2])
        assert torch.equal(model.score(users), model.score(users))
        assert torch.equal(model.encode(seqs), model.encode(seqs))
        model.train()
        model.dropout.p = 0.0  # only the Gumbel noise of the centre assignment differs between calls
        for stack in model.stacks:
            for block in stack:
                block.attn.dropout = 0.0
                block.ff[1].p = block.ff[4].p = 0.0
        assert not torch.equal(model.encode(seqs), model.encode(seqs))


def test_leading_padding_and_attribution():
    """Cutting all-padding columns changes nothing; attribution explains the full score (one dot product)."""
    run = fit("mdsrec", cyclic_dataset(), [*FAST, "variant=sgp4sr"], 1)
    model = run.model.eval()
    model.prepare_scoring()
    with torch.no_grad():
        long = model.encode(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]))
        short = model.encode(torch.tensor([[3, 4, 5]]))
        mixed = model.encode(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]]))
    assert torch.allclose(long, short, atol=1e-5) and torch.allclose(long, mixed[:1], atol=1e-5)
    seqs = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]])
    targets = torch.tensor([5, 8])
    c = contributions(model, seqs, targets)
    assert c.parts == ["image", "text", "id"]
    with torch.no_grad():
        full = model.score_sequences([[2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert torch.allclose(c.scores, full[torch.arange(2), targets], atol=1e-4)
    assert torch.all(c.by_part[0, :5] == 0) and c.by_part[:, -1].abs().sum() > 0


def test_kmeans_and_membership():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.05, (10, 3)) + c for c in np.eye(3) * 5]).astype(np.float32)
    a, b = kmeans_labels(x, 3, seed=1), kmeans_labels(x, 3, seed=1)
    assert np.array_equal(a, b) and len(set(a[:10])) == len(set(a[10:20])) == len(set(a[20:])) == 1
    assert len(set(a)) == 3
    pi = membership(a, np.arange(30) + 2, 32).toarray()         # items 0 and 1 have no feature
    assert pi.shape == (3, 32) and np.allclose(pi.sum(1), 1) and np.all(pi[:, :2] == 0)
    assert np.all((pi > 0).sum(0)[2:] == 1)                      # the last item is a member too


def test_uniform_dropout_has_bernoullis_distribution_and_is_identity_in_eval():
    from prismrec.models.layers import UniformDropout

    torch.manual_seed(0)
    drop = UniformDropout(0.3)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005          # each element kept with 1 - p
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert abs(y.mean().item() - 1.0) < 0.01                        # unbiased, as nn.Dropout
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())                          # gradient = the same mask and scale
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(UniformDropout(0.0)(x), x)


def test_mdsrec_dropout_masks_option_selects_the_mask_generator():
    from prismrec.models.layers import UniformDropout

    for masks, kind in (("uniform", UniformDropout), ("bernoulli", torch.nn.Dropout)):
        model = fit("mdsrec", cyclic_dataset(), [*FAST, f"mdsrec.dropout_masks={masks}"], 0).model
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert drops and all(type(m) is kind for m in drops)
