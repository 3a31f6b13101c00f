"""Cost of the sequential models without a change of result: the item table once per step, the full
softmax in memory-bounded blocks."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from prismrec.data.training import TrainingData
from prismrec.models.contrastive import softmax_cross_entropy
from prismrec.models.layers import ModalityProjections
from seq_checks import cyclic_dataset, fit


@pytest.mark.parametrize("block_bytes", [4 * 7 * 9, 4 * 3 * 300, 10**9])
def test_blockwise_softmax_equals_cross_entropy(block_bytes):
    """Any block size: the same loss and the same gradients as F.cross_entropy over the whole matrix."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 8, generator=g, requires_grad=True)
    table = torch.randn(300, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 300, (37,), generator=g)
    want = F.cross_entropy(h @ table.T, y)
    gh, gt = torch.autograd.grad(want, [h, table])
    got = softmax_cross_entropy(h, table, y, block_bytes=block_bytes)
    dh, dt = torch.autograd.grad(got, [h, table])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(dh, gh)
    torch.testing.assert_close(dt, gt)


def _count_projections(monkeypatch) -> list[str]:
    calls: list[str] = []
    orig = ModalityProjections.forward

    def counted(self, name, items=None):
        calls.append(name)
        return orig(self, name, items)

    monkeypatch.setattr(ModalityProjections, "forward", counted)
    return calls


@pytest.mark.parametrize("name", ["sasrecf", "gru4recf", "demure"])
def test_item_table_once_per_step_and_per_scoring_pass(name, monkeypatch):
    """A training step projects every modality's features once (inputs and output table share them), and
    a scoring pass once for all its user chunks."""
    run = fit(name, cyclic_dataset(), ["warmup_epochs=0"] if name == "demure" else [], 1)
    model = run.model.train()
    batch = _batch(run, 0)
    calls = _count_projections(monkeypatch)
    model.loss(batch)
    assert sorted(calls) == ["image", "text"], calls
    calls.clear()
    model.eval()
    with torch.no_grad():
        model.prepare_scoring(run.split.history("test"))
        for users in ([0, 1], [2, 3], [4]):
            model.score(torch.tensor(users))
    assert sorted(calls) == ["image", "text"], calls
    model.train()  # back to training: the held tables are dropped
    assert model.tokens._scoring is None


def _batch(run, seed: int):
    sampler = run.model.build_sampler(TrainingData.from_split(run.dataset, run.split), run.config.train)
    return next(iter(sampler.epoch(np.random.default_rng(seed), 16, run.model.device)))


@pytest.mark.parametrize("name", ["sasrecf", "demure"])
def test_shared_tables_and_blocks_change_no_loss_or_gradient(name):
    """The step's loss and gradients equal those of separate projections and of an unblocked softmax."""
    run = fit(name, cyclic_dataset(), ["warmup_epochs=0"] if name == "demure" else [], 1)
    model = run.model.eval()  # no dropout: the passes are comparable
    batch = _batch(run, 1)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss_fn):
        torch.manual_seed(0)
        out = loss_fn()
        loss = out["loss"] if isinstance(out, dict) else out
        return [loss.detach(), *torch.autograd.grad(loss, params, allow_unused=True)]

    shared = grads(lambda: model.loss(batch))
    # no shared block: every read of the tables projects the features again (the code before)
    model.tokens.shared_tables = nullcontext
    separate = grads(lambda: model.loss(batch))
    type(model).logits_block_bytes, keep = 64, type(model).logits_block_bytes
    try:
        blocked = grads(lambda: model.loss(batch))
    finally:
        type(model).logits_block_bytes = keep
    for a, b, c in zip(shared, separate, blocked):
        if a is None:
            assert b is None and c is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sasrecf", "gru4rec", "mdsrec"])
def test_scoring_in_length_groups_gives_the_same_scores(name, monkeypatch):
    """score() encodes users grouped by history length (each group padded to its own longest history):
    the scores are those of encoding every user's full-width padded history, in the order asked."""
    from prismrec.runs import train_run

    # the bundled demo data: histories of 3 to 20+ items, so the groups have different widths
    run = train_run(name, "demo", None, overrides=["train.batch_size=512", "max_len=12", "embedding_size=16",
                                                   "n_centers=5"][: 4 if name == "mdsrec" else 3], epochs=1)
    model = run.model.eval()
    monkeypatch.setattr(type(model), "encode_group", 7)
    users = np.random.default_rng(0).permutation(run.dataset.n_users)[:60]
    with torch.no_grad():
        model.prepare_scoring(run.split.history("test"))
        got = model.score(torch.as_tensor(users))
        want = model.encode(torch.as_tensor(model.user_sequences(users))) @ model.item_embeddings().T
        vectors, items = model.user_item_vectors()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vectors[torch.as_tensor(users)] @ items.T, want, rtol=1e-5, atol=1e-5)
