"""Negative sampling, the trainer (learning, determinism, early stopping, epoch selection) and resume."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from prismrec.config import DataConfig, TrainConfig
from prismrec.data import build_dataset, make_split
from prismrec.data.training import TrainingData
from prismrec.errors import DataError
from prismrec.models import ModelConfig, Recommender
from prismrec.runs import train_run
from prismrec.train.sampling import BPRSampler, PairSampler
from prismrec.train.trainer import Trainer

from conftest import CliProcess, tiny_frame, write_mmrec


# ------------------------------------------------------------------------------------------ sampler
def random_train(n_users=40, n_items=30, density=0.5, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[:, 0] = False                  # keep at least one free item for everybody
    return sp.csr_matrix(dense.astype(np.float32))


def test_bpr_negatives_never_hit_training_items():
    train = random_train()
    dense = train.toarray() > 0
    sampler = BPRSampler(train)
    users = np.repeat(np.arange(train.shape[0]), 500)
    neg = sampler.sample_negatives(users, np.random.default_rng(0))
    assert neg.shape == users.shape
    assert not dense[users, neg].any()
    # every allowed item of a user shows up, roughly uniformly (rejection sampling is uniform)
    u = 3
    allowed = np.flatnonzero(~dense[u])
    counts = np.bincount(neg[users == u], minlength=train.shape[1])[allowed]
    assert (counts > 0).all()
    assert counts.max() < 2.5 * counts.min()


def test_bpr_negatives_come_from_candidates_only():
    # as in training: the candidates are the items with a training interaction (MMRec), so items that
    # occur only in valid/test (here 1, 4, 6, ...) are never drawn as negatives
    candidates = np.array([0, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
    dense = random_train(density=0.4).toarray() > 0
    dense[:, np.setdiff1d(np.arange(30), candidates)] = False
    dense[:, 0] = False
    sampler = BPRSampler(sp.csr_matrix(dense.astype(np.float32)), candidates=candidates)
    users = np.repeat(np.arange(dense.shape[0]), 200)
    neg = sampler.sample_negatives(users, np.random.default_rng(1))
    assert set(np.unique(neg)) == set(candidates) - {i for i in candidates if dense[:, i].all()}
    assert not dense[users, neg].any()


def test_bpr_sampler_accepts_users_whose_items_lie_outside_the_candidates():
    # user 0 has 12 training items, only one of which (item 0) is a candidate; 10 candidates are free
    dense = np.zeros((2, 30), dtype=bool)
    dense[0, :12] = True
    dense[1, 20] = True
    candidates = np.array([0, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28])
    sampler = BPRSampler(sp.csr_matrix(dense.astype(np.float32)), candidates=candidates)
    neg = sampler.sample_negatives(np.zeros(500, dtype=np.int64), np.random.default_rng(0))
    assert set(np.unique(neg)) == set(candidates) - {0}


def test_bpr_sampling_is_deterministic_per_seed():
    sampler = BPRSampler(random_train())
    users = np.repeat(np.arange(40), 20)
    a = sampler.sample_negatives(users, np.random.default_rng(5))
    b = sampler.sample_negatives(users, np.random.default_rng(5))
    c = sampler.sample_negatives(users, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5

    def epoch(seed):
        return [{k: v.clone() for k, v in batch.items()}
                for batch in sampler.epoch(np.random.default_rng(seed), 64, torch.device("cpu"))]

    e1, e2, e3 = epoch(9), epoch(9), epoch(10)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(e1, e2) for k in x)
    assert not torch.equal(e1[0]["users"], e3[0]["users"])


def test_bpr_epoch_covers_every_training_pair_once():
    train = random_train()
    dense = train.toarray() > 0
    sampler = BPRSampler(train, num_negatives=3)
    batches = list(sampler.epoch(np.random.default_rng(0), 100, torch.device("cpu")))
    assert len(batches) == sampler.n_batches(100) == -(-int(dense.sum()) // 100)
    users = torch.cat([b["users"] for b in batches]).numpy()
    pos = torch.cat([b["pos_items"] for b in batches]).numpy()
    neg = torch.cat([b["neg_items"] for b in batches]).numpy()
    assert sorted(zip(users, pos)) == sorted(zip(*np.nonzero(dense)))
    assert neg.shape == (len(users), 3)
    assert not dense[users[:, None], neg].any()
    pairs = list(PairSampler(train).epoch(np.random.default_rng(0), 1000, torch.device("cpu")))
    assert len(pairs) == 1 and set(pairs[0]) == {"users", "pos_items"}


def test_bpr_sampler_refuses_user_with_every_candidate():
    train = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 0]], dtype=np.float32))
    with pytest.raises(DataError, match="all 3 candidate items"):
        BPRSampler(train)
    with pytest.raises(DataError, match="all 2 candidate items"):
        BPRSampler(train, candidates=np.array([0, 1]))


# ------------------------------------------------------------------------------------ real training
TINY = ["train.batch_size=32", "train.learning_rate=0.01", "bpr.embedding_size=16", "train.patience=1000",
        "train.topk=[5,10,20]", "train.valid_metric=recall@10"]


@pytest.fixture(scope="module")
def tiny():
    return build_dataset("tiny", tiny_frame())


def test_training_beats_the_untrained_model(tiny):
    untrained = train_run("bpr", tiny, None, overrides=TINY, seed=0, epochs=0).metrics
    trained = train_run("bpr", tiny, None, overrides=TINY, seed=0, epochs=25).metrics
    assert untrained["best_epoch"] == 0 and untrained["epochs_run"] == 0
    # recall@10 of a random ranking over ~50 candidates is ~0.2; the block structure is easy to learn
    assert untrained["valid"]["recall@10"] < 0.35
    assert trained["valid"]["recall@10"] >= untrained["valid"]["recall@10"] + 0.25
    assert trained["test"]["recall@10"] >= untrained["test"]["recall@10"] + 0.2
    assert trained["best_epoch"] >= 1


def test_same_seed_same_result_other_seed_differs(tiny):
    runs = [train_run("bpr", tiny, None, overrides=TINY, seed=s, epochs=6) for s in (3, 3, 4)]
    a, b, c = (r.metrics for r in runs)
    assert a["test"] == b["test"] and a["valid"] == b["valid"] and a["best_epoch"] == b["best_epoch"]
    for p, q in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        assert torch.equal(p, q)
    assert not torch.equal(runs[0].model.user_embedding, runs[2].model.user_embedding)
    assert a["test"] != c["test"]


def test_epochs_zero(tmp_path, tiny):
    run = train_run("bpr", tiny, tmp_path / "run", overrides=TINY, seed=0, epochs=0)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["best_epoch"] == 0 and m["epochs_run"] == 0 and m["stopped_early"] is False
    assert 0 <= m["test"]["recall@10"] <= 1
    assert (tmp_path / "run" / "model.pt").is_file()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["epoch"] == 0 and history[0]["loss"] is None
    # the saved weights are the untrained model that was scored
    assert history[0]["valid"]["recall@10"] == m["valid"]["recall@10"]
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in run.model.state_dict().items())


def test_best_epoch_is_the_validation_argmax(tmp_path, tiny):
    out = tmp_path / "run"
    train_run("bpr", tiny, out, overrides=[*TINY, "train.learning_rate=0.05"], seed=1, epochs=15)
    m = json.loads((out / "metrics.json").read_text())
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 16))
    valid = [h["valid"]["recall@10"] for h in history]
    assert m["best_epoch"] == history[int(np.argmax(valid))]["epoch"]  # first epoch reaching the maximum
    assert m["best_epoch"] < 15, "choose settings whose best epoch is not the last (else: no check below)"
    # the final model holds the best epoch's weights: re-scoring validation reproduces that epoch's value
    best = history[m["best_epoch"] - 1]["valid"]
    for k in ("recall@10", "ndcg@10", "recall@20"):
        assert m["valid"][k] == pytest.approx(best[k], abs=1e-12), k
    assert m["valid_metric"] == "recall@10"


def test_metrics_json_valid_holds_the_selection_metric(tiny):
    m = train_run("bpr", tiny, None, overrides=[*TINY, "train.topk=[5]"], seed=0, epochs=2).metrics
    assert m["valid_metric"] == "recall@10"
    assert "recall@10" in m["valid"]


# ----------------------------------------------------------------------------- scripted trainer
class Scripted(Recommender):
    """Validation recall@5 follows a script: at epoch e the users with id < script[e] are ranked perfectly
    (their valid items first), everybody else worst (valid items last)."""

    def __init__(self, data: TrainingData, valid: sp.csr_matrix, script: dict[int, int]):
        super().__init__(ModelConfig(), data)
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))
        self.register_buffer("valid", torch.as_tensor(valid.toarray(), dtype=torch.float32))
        self.script = script

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def loss(self, batch):
        return ((self.w - 1) ** 2).sum() + 0 * batch["neg_items"].sum()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        good = (users < self.script.get(int(self.epoch), 0)).float().unsqueeze(1)
        return (2 * good - 1) * self.valid[users] - 1e-3 * torch.arange(self.n_items)


def scripted_trainer(script, **cfg):
    ds = build_dataset("tiny", tiny_frame())
    split = make_split(ds, DataConfig())
    data = TrainingData.from_split(ds, split)
    model = Scripted(data, split.valid, script)
    tc = TrainConfig(valid_metric="recall@5", topk=[5], batch_size=1024, **cfg)
    return model, Trainer(model, data, split, tc, seed=0)


def test_early_stopping_after_patience_evaluations_without_strict_improvement():
    # 60 users, each with one valid item: recall@5 = script[e] / 60
    script = {1: 6, 2: 18, 3: 12, 4: 18, 5: 30, 6: 30, 7: 3, 8: 3, 9: 60, 10: 60}
    model, trainer = scripted_trainer(script, epochs=10, patience=3)
    res = trainer.fit()
    valid = [h["valid"]["recall@5"] for h in res.history]
    np.testing.assert_allclose(valid, [0.1, 0.3, 0.2, 0.3, 0.5, 0.5, 0.05, 0.05])
    # epoch 4 ties epoch 2 and epoch 6 ties epoch 5: ties are not improvements, so after the best (5)
    # epochs 6, 7, 8 are three evaluations without improvement -> stop; epoch 9 (better) never runs
    assert res.best_epoch == 5 and res.epochs_run == 8 and res.stopped_early
    assert res.best_valid["recall@5"] == pytest.approx(0.5)
    assert int(model.epoch) == 5  # the model ends with the best epoch's state


def test_early_stopping_counts_evaluations_not_epochs():
    model, trainer = scripted_trainer({e: 30 for e in range(1, 21)}, epochs=20, patience=2, eval_every=2)
    res = trainer.fit()
    evaluated = [h["epoch"] for h in res.history if h["valid"] is not None]
    assert evaluated == [2, 4, 6]
    assert res.best_epoch == 2 and res.epochs_run == 6 and res.stopped_early


def test_last_epoch_is_always_evaluated_and_no_early_stop_flag():
    model, trainer = scripted_trainer({1: 6, 2: 12, 3: 18, 4: 24, 5: 30}, epochs=5, patience=3, eval_every=2)
    res = trainer.fit()
    assert [h["epoch"] for h in res.history if h["valid"] is not None] == [2, 4, 5]
    assert res.best_epoch == 5 and res.epochs_run == 5 and not res.stopped_early


# ------------------------------------------------------------------------------------------ resume
RESUME_EPOCHS = 10


def read_history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["state"]["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL `prismrec train` mid-run, rerun it with --resume, and get exactly the uninterrupted result."""
    # ~30k interactions: an epoch (118 batches of 256 + validation) takes ~0.2 s on one core
    data, _ = write_mmrec(tmp_path / "data", "big", n_users=2000, n_items=500, per_user=15, n_groups=8,
                          noise=0.1, label=False)
    sets = ["train.batch_size=256", "train.patience=1000", "train.threads=1", "train.lr_scheduler=[0.9,2]",
            "train.learning_rate=0.005", "train.topk=[10,20]", "bpr.embedding_size=32"]
    # -v: the per-epoch log lines (checked below) are shown on request only
    args = ["-v", "train", "--model", "bpr", "--data", str(data), "--epochs", str(RESUME_EPOCHS), "--seed", "5"]
    for s in sets:
        args += ["--set", s]
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"

    victim = CliProcess(*args, "--out", run_dir)
    # the uninterrupted reference: the same train_run the CLI calls, with the same arguments, in a thread of
    # this process while the victim starts up (saves a second interpreter start on a 2-core machine)
    failure: list[BaseException] = []

    def reference() -> None:
        try:
            train_run("bpr", str(data), ref_dir, overrides=sets, seed=5, epochs=RESUME_EPOCHS)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)

    thread = threading.Thread(target=reference)
    thread.start()
    ckpt = run_dir / "checkpoint.pt"
    try:
        deadline = time.monotonic() + 120
        while checkpoint_epoch(ckpt) < 2:
            assert victim.proc.poll() is None, str(victim.result())
            assert time.monotonic() < deadline, "the run never finished two epochs"
            time.sleep(0.02)
        time.sleep(0.1)  # into the next epoch
        victim.proc.kill()  # SIGKILL: no cleanup, no final files
        assert victim.result().returncode == -9
    finally:
        victim.stop()
    killed_at = checkpoint_epoch(ckpt)
    assert 2 <= killed_at < RESUME_EPOCHS
    assert not (run_dir / "metrics.json").exists()

    resumed_proc = CliProcess(*args, "--out", run_dir, "--resume")
    thread.join(timeout=180)
    resumed = resumed_proc.result()
    assert not failure, failure
    assert resumed.returncode == 0, str(resumed)

    m_ref = json.loads((ref_dir / "metrics.json").read_text())
    m_res = json.loads((run_dir / "metrics.json").read_text())
    # it really resumed: the second process ran only the epochs after the checkpoint
    assert f"resuming after epoch {killed_at}" in resumed.stderr
    ran = [int(e) for e in re.findall(r"epoch\s+(\d+) \| loss", resumed.stderr)]
    assert ran == list(range(killed_at + 1, RESUME_EPOCHS + 1)), resumed.stderr
    # ... and ended exactly where the uninterrupted run did
    assert m_res["epochs_run"] == m_ref["epochs_run"] == RESUME_EPOCHS
    assert m_res["best_epoch"] == m_ref["best_epoch"]
    assert m_res["test"] == m_ref["test"]
    assert m_res["valid"] == m_ref["valid"]
    h_ref, h_res = read_history(ref_dir), read_history(run_dir)
    assert [h["epoch"] for h in h_res] == list(range(1, RESUME_EPOCHS + 1))
    assert [h["loss"] for h in h_res] == [h["loss"] for h in h_ref]
    assert [h["valid"] for h in h_res] == [h["valid"] for h in h_ref]
    # training did something (the best epoch is not the first), so equal results are not trivially equal
    assert m_ref["best_epoch"] > 1
    assert m_ref["test"]["recall@20"] > 0.1


def test_a_run_that_will_not_fit_is_warned_before_training(tmp_path, monkeypatch, caplog):
    """The memory estimate is compared with the free memory before the first epoch; the warning names
    the largest parts and the fix."""
    import logging

    import prismrec.utils.runtime as runtime
    from prismrec.runs import train_run

    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 1024)
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        train_run("bpr", "demo", tmp_path / "run", epochs=1, overrides=["train.threads=1"])
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "GiB more" in text and "adam state" in text and "Fix:" in text
    caplog.clear()
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 1 << 50)
    with caplog.at_level(logging.WARNING, logger="prismrec"):
        train_run("bpr", "demo", tmp_path / "run2", epochs=1, overrides=["train.threads=1"])
    assert "GiB more" not in " ".join(r.getMessage() for r in caplog.records)
