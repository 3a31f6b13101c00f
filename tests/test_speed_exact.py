"""The main job's speed-ups change no result: the faster top-k is torch.topk's answer (ties included),
LIRDRec's loss and gradients are those of the reference formula bit for bit, and checkpoints written in the
background land in order (or their error is raised)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import write_mmrec
from prismrec.errors import PrismrecError
from prismrec.evaluate.ranking import topk_rows
from prismrec.utils import loop as loop_module


KINDS = ["distinct", "integer ties", "masked -inf", "nan and zeros", "signed zeros"]


@pytest.mark.parametrize("kind", KINDS)
def test_topk_rows_is_torch_topk(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    for _ in range(60):
        r, n = int(rng.integers(1, 30)), int(rng.integers(2, 120))
        x = torch.from_numpy(rng.standard_normal((r, n)).astype(np.float32))
        if kind == "integer ties":
            x = torch.from_numpy(rng.integers(0, 4, (r, n)).astype(np.float32))
        elif kind == "masked -inf":
            x[x > 0.3] = -torch.inf
        elif kind == "nan and zeros":
            x[0, : min(3, n)] = float("nan")
            x[x < -0.8] = 0.0
        elif kind == "signed zeros":
            x[:, ::2] = -0.0
            x[:, 1::3] = 0.0
        k = int(rng.integers(1, n + 1))
        want = torch.topk(x.clone(), k, dim=1)
        values, indices = topk_rows(x.clone(), k)
        assert torch.equal(indices, want.indices), (kind, k)
        assert torch.equal(values.nan_to_num(7.0), want.values.nan_to_num(7.0))


def test_lirdrec_loss_and_gradients_are_those_of_the_reference_formula(tmp_path):
    """The forward splits the propagated rows instead of slicing them and skips the shared branch's
    missing-block term when no block is missing; both must leave every number unchanged."""
    from prismrec.runs import build_config, build_model
    from prismrec.data import load_dataset, make_split

    folder, _ = write_mmrec(tmp_path / "data", features=16)
    torch.manual_seed(0)
    cfg = build_config("lirdrec", str(folder), overrides={"train": {"threads": 1}, "embedding_size": 8})
    ds = load_dataset(cfg.data_source, cfg.data)
    model, _ = build_model(cfg, ds, make_split(ds, cfg.data))
    assert not model._any_missing_block

    def reference_forward():
        n_u, n_ch, d = model.n_users, len(model.channels), model.config.embedding_size
        out = [model.projections[n](t.values, t.available) for n, t in model.features.items()]
        lin, act, last = model.shared
        hidden = lin.bias + sum(t.values @ w.T for t, w in zip(model.features.values(), model.shared_weights()))
        out.append(last(act(hidden + model.shared_missing_blocks @ model.shared_missing)))
        x = torch.cat([model.user_preference.view(n_u, n_ch, d), torch.stack(out, dim=1)], dim=0)
        h = F.normalize(x, dim=-1).reshape(-1, n_ch * d)
        from prismrec.graphs import propagate

        h = propagate(model.adj, h, model.config.n_ui_layers, combine="sum")
        users, items = h[:n_u].view(n_u, n_ch, d), h[n_u:]
        items = items + model.item_adj(items)
        att = model.pwc(users)
        return (users * att.unsqueeze(-1)).reshape(n_u, n_ch * d), items

    def loss_and_grads(forward):
        model.zero_grad(set_to_none=True)
        users, items = forward()[:2]
        u, i, j = torch.arange(20), torch.arange(20) % model.n_items, (torch.arange(20) * 7) % model.n_items
        loss = -F.logsigmoid((users[u] * items[i]).sum(-1) - (users[u] * items[j]).sum(-1)).mean() \
            + 1e-2 * (users.pow(2).mean() + items.pow(2).mean())
        loss.backward()
        return loss.detach(), {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                               for k, p in model.named_parameters()}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the reductions' order is fixed
    try:
        ref_loss, ref_grads = loss_and_grads(reference_forward)
        loss, grads = loss_and_grads(model.forward)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(loss, ref_loss)
    for k in ref_grads:
        assert torch.equal(grads[k], ref_grads[k]), k


def test_background_checkpoints_land_in_order_and_errors_surface(tmp_path, monkeypatch):
    writer = loop_module._Writer()
    for i in range(5):
        writer.submit(tmp_path / "ckpt.pt", {"epoch": i})
        writer.submit(tmp_path / f"best-{i}.pt", {"epoch": i})
    writer.close()
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] == 4
    assert all((tmp_path / f"best-{i}.pt").is_file() for i in range(5))

    def full_disk(path, data):
        raise PrismrecError(f"cannot write {path}: the disk is full")

    monkeypatch.setattr(loop_module, "write_bytes", full_disk)
    writer = loop_module._Writer()
    writer.submit(tmp_path / "x.pt", {"a": 1})
    with pytest.raises(PrismrecError, match="disk is full"):
        writer.close()
