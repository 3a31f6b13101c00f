"""The bucket top-k (utils/topk.py) on rows long enough to take the bucket path: always torch.topk's answer,
ties, -inf, NaN and signed zeros included (short rows go to torch.topk itself; tests/test_speed_exact.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.utils.topk import topk_rows

KINDS = ["distinct", "integer ties", "masked -inf", "nan", "signed zeros", "ties at the boundary"]


@pytest.mark.parametrize("kind", KINDS)
def test_bucket_topk_is_torch_topk(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(12):
        k = int(rng.choice([1, 10, 18, 50]))
        n = int(rng.integers(16 * (k + 1) * 16, 60_000))
        r = int(rng.integers(1, 12))
        x = torch.from_numpy(rng.standard_normal((r, n)).astype(np.float32))
        if kind == "integer ties":
            x = torch.from_numpy(rng.integers(0, 50, (r, n)).astype(np.float32))
        elif kind == "masked -inf":
            x[x > -1.5] = -torch.inf  # most of every row masked, some rows with fewer than k finite
        elif kind == "nan":
            x[0, rng.integers(0, n, 3)] = float("nan")
        elif kind == "signed zeros":
            x[:, ::2] = -0.0
            x[:, 1::3] = 0.0
        elif kind == "ties at the boundary":
            top = torch.topk(x, k + 1, dim=1).values[:, -1:]
            x[:, rng.integers(0, n, 3)] = top  # copies of the (k+1)-th value elsewhere in the row
        want = torch.topk(x.clone(), k, dim=1)
        values, indices = topk_rows(x.clone(), k)
        assert torch.equal(indices, want.indices), (kind, k, n)
        assert torch.equal(values.nan_to_num(7.0), want.values.nan_to_num(7.0))
