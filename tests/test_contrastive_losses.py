"""The tiled log-sum-exp behind the whole-table contrasts and the blocked full softmax
(models/contrastive.py): values and gradients against autograd through torch.logsumexp, with the tiles
kept from the forward pass and recomputed, one tile and many, rows tiled too."""

import pytest
import torch

from prismrec.models.contrastive import blockwise_logsumexp


@pytest.mark.parametrize("block_bytes,keep_bytes", [
    (10**9, 10**9),            # one tile, kept
    (4 * 7 * 256, 10**9),      # column tiles, kept
    (4 * 7 * 256, 0),          # column tiles, recomputed
    (4 * 256, 0),              # one row per tile, recomputed
    (4 * 256, 10**9),          # one row per tile, kept
])
def test_tiled_logsumexp_matches_autograd(block_bytes, keep_bytes):
    torch.manual_seed(0)
    a = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    c = torch.randn(600, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, dtype=torch.float64)
    want = torch.logsumexp(0.7 * a @ c.T, dim=1)
    wa, wc = torch.autograd.grad((want * g).sum(), (a, c))
    got = blockwise_logsumexp(a, c, 0.7, block_bytes, keep_bytes)
    torch.testing.assert_close(got, want)
    # twice through one retained graph: the kept tiles are not consumed by the first backward
    for _ in range(2):
        ga, gc = torch.autograd.grad((got * g).sum(), (a, c), retain_graph=True)
        torch.testing.assert_close(ga, wa)
        torch.testing.assert_close(gc, wc)


@pytest.mark.parametrize("keep_bytes", [0, 10**9])
def test_tiled_logsumexp_gradcheck_and_shared_input(keep_bytes):
    torch.manual_seed(1)
    a = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: blockwise_logsumexp(x, y, 1.3, 64, keep_bytes), (a, c))
    # the same tensor on both sides (an all-pairs contrast): both gradients are summed
    assert torch.autograd.gradcheck(lambda x: blockwise_logsumexp(x, x, 1.3, 64, keep_bytes), (a,))
    # only one side needs a gradient
    frozen = c.detach()
    (ga,) = torch.autograd.grad(blockwise_logsumexp(a, frozen, 1.3, 64, keep_bytes).sum(), (a,))
    (wa,) = torch.autograd.grad(torch.logsumexp(1.3 * a @ frozen.T, dim=1).sum(), (a,))
    torch.testing.assert_close(ga, wa)
