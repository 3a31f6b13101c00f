"""Window training equals prefix training: a causal pass over a window gives, at every position, the logits
of the prefix that ends there (positions counted from the oldest visible item, ``positions: from_start``),
so training every position of a window is training every prefix (RecBole's augmentation) in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prismrec.data.training import TrainingData
from prismrec.models.sequential.base import SequenceSampler, WindowSampler, pad_windows
from seq_checks import cyclic_dataset, fit


def _window_and_prefix_logits(run):
    model = run.model.eval()
    indptr, items = TrainingData.from_split(run.dataset, run.split).sequences()
    window = next(WindowSampler(indptr, items, model.max_len).epoch(np.random.default_rng(0), 8, model.device))
    seqs, targets = window["seqs"], window["targets"]
    with torch.no_grad():
        table = model.item_embeddings()
        per_position = model.encode_positions(seqs) @ table.T                   # (B, L, items)
        # every prefix of every window, scored as evaluation scores a history
        rows, cols = (t.numpy() for t in torch.nonzero(targets >= 0, as_tuple=True))
        flat = seqs.numpy()
        first = flat.shape[1] - (flat != 0).sum(1)                                # left padding
        prefix_tokens = pad_windows(flat.ravel() - 1, rows * flat.shape[1] + first[rows],
                                    rows * flat.shape[1] + cols + 1, model.max_len)
        per_prefix = model.encode(torch.as_tensor(prefix_tokens)) @ table.T
    return per_position[rows, cols], per_prefix, targets[rows, cols]


WINDOWED_MDSREC = ["positions=from_start", "training_samples=windows"]


@pytest.mark.parametrize("name, sets", [
    ("sasrec", ["positions=from_start"]), ("sasrecf", ["positions=from_start"]), ("demure", ["positions=from_start"]),
    ("gru4rec", []), ("mdsrec", WINDOWED_MDSREC), ("mdsrec", [*WINDOWED_MDSREC, "center_mask=official_tril"]),
    ("mdsrec", [*WINDOWED_MDSREC, "variant=sgp4sr", "n_centers=3"])])
def test_window_logits_equal_prefix_logits(name, sets):
    """MDSRec: each position of a window gets the centres of its own prefix (Eq. 9 with the later keys
    masked), so its logits are the prefix's too, under either centre mask."""
    run = fit(name, cyclic_dataset(), sets, 2)
    window, prefix, _ = _window_and_prefix_logits(run)
    assert len(window) > 8
    torch.testing.assert_close(window, prefix, rtol=1e-4, atol=1e-5)


def test_positions_from_the_end_differ_between_window_and_prefix():
    """The default (the SASRec paper's left-padded slots): a prefix's last item has another position
    in a window than when the prefix is scored, so window training is not prefix training."""
    run = fit("sasrec", cyclic_dataset(), [], 2)
    window, prefix, _ = _window_and_prefix_logits(run)
    assert not torch.allclose(window, prefix, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name, sets", [("sasrecf", ["positions=from_start"]), ("mdsrec", WINDOWED_MDSREC)])
def test_window_loss_equals_prefix_loss(name, sets):
    """With positions from the start, the window loss (every position) is the prefix loss (every prefix)."""
    run = fit(name, cyclic_dataset(), sets, 2)
    model = run.model.eval()
    indptr, items = TrainingData.from_split(run.dataset, run.split).sequences()
    windows = WindowSampler(indptr, items, model.max_len)
    prefixes = SequenceSampler(indptr, items, model.max_len)
    big = len(prefixes)  # one batch holds every sample
    with torch.no_grad():
        w = model.loss(next(windows.epoch(np.random.default_rng(0), big, model.device)))
        p = model.loss(next(prefixes.epoch(np.random.default_rng(0), big, model.device)))
    torch.testing.assert_close(w, p, rtol=1e-5, atol=1e-6)


def test_runs_made_before_the_setting_existed_are_still_reused(tmp_path):
    """A setting added later (here ``positions``) at its default is what an older run did: compare and
    --resume reuse that run; another value is a different run."""
    import json

    from prismrec.errors import PrismrecError
    from prismrec.runs import INPUTS_FILE, reuse_finished, train_run

    sets = ["max_len=8", "embedding_size=8"]
    run = tmp_path / "run"
    train_run("sasrec", "demo", run, overrides=sets, epochs=1)
    saved = json.loads((run / INPUTS_FILE).read_text())
    del saved["settings"]["params"]["positions"]
    (run / INPUTS_FILE).write_text(json.dumps(saved))
    assert reuse_finished(run, "sasrec", "demo", overrides=sets, epochs=1) is not None
    with pytest.raises(PrismrecError, match="params.positions"):
        reuse_finished(run, "sasrec", "demo", overrides=[*sets, "positions=from_start"], epochs=1)
