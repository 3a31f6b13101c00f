"""Runs know their inputs: a finished run is reused, and a killed one resumed, only for the same model,
settings and data; otherwise the error says what differs. Leftover temporary files are cleaned."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from prismrec.compare import compare
from prismrec.errors import PrismrecError
from prismrec.runs import INPUTS_FILE, METRICS_FILE, train_run

from conftest import write_mmrec

FAST = {"train.threads": 1, "train.batch_size": 64, "model.embedding_size": 8}


@pytest.fixture
def folders(tmp_path):
    a, _ = write_mmrec(tmp_path / "a", n_users=30, n_items=20)
    b, _ = write_mmrec(tmp_path / "b", n_users=30, n_items=20, seed=5)
    return a, b


def test_compare_reuses_only_runs_of_the_same_inputs(folders, tmp_path):
    a, b = folders
    out = tmp_path / "cmp"
    first = compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)
    metrics = out / "bpr" / "seed-0" / METRICS_FILE
    stamp = json.loads(metrics.read_text())["finished"]
    again = compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)  # reused: nothing retrained
    assert json.loads(metrics.read_text())["finished"] == stamp
    assert again.summary.equals(first.summary)
    with pytest.raises(PrismrecError, match="data file .* changed|data file .* is new|data file .* is gone"):
        compare(["bpr"], str(b), out, seeds=[0], overrides=FAST, epochs=1)  # another dataset's folder
    with pytest.raises(PrismrecError, match=r"train.learning_rate: the run has 0.001, this call asks for 0.01"):
        compare(["bpr"], str(a), out, seeds=[0], overrides={**FAST, "train.learning_rate": 0.01}, epochs=1)
    assert json.loads(metrics.read_text())["finished"] == stamp  # nothing was overwritten


def test_edited_data_is_noticed_touched_data_is_not(folders, tmp_path):
    a, _ = folders
    out = tmp_path / "cmp"
    compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)
    inter = next(a.glob("*.inter"))
    os.utime(inter, ns=(1, 1))  # touched, same content: still the same inputs
    compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)
    inter.write_text(inter.read_text().replace("\n1\t", "\n2\t", 1))
    with pytest.raises(PrismrecError, match=f"data file {inter.name} changed"):
        compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)


def test_resume_refuses_another_model_or_data(folders, tmp_path):
    a, b = folders
    run = tmp_path / "run"
    train_run("bpr", str(a), run, overrides=FAST, epochs=1)
    with pytest.raises(PrismrecError, match="model: the run has 'bpr', this call asks for 'lightgcn'"):
        train_run("lightgcn", str(a), run, overrides=FAST, epochs=1, resume=True)
    with pytest.raises(PrismrecError, match="data_source"):
        train_run("bpr", str(b), run, overrides=FAST, epochs=1, resume=True)
    # the same call resumes (here: reloads the finished run); device and threads may differ
    same = train_run("bpr", str(a), run, overrides={**FAST, "train.threads": 2}, epochs=1, resume=True)
    assert same.metrics["model"] == "bpr"


def test_runs_without_recorded_inputs_are_checked_on_settings_and_recorded(folders, tmp_path):
    a, _ = folders
    out = tmp_path / "cmp"
    compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)
    rec = out / "bpr" / "seed-0" / INPUTS_FILE
    rec.unlink()  # as a run of an earlier version
    compare(["bpr"], str(a), out, seeds=[0], overrides=FAST, epochs=1)
    assert rec.is_file() and json.loads(rec.read_text())["data"]["files"]
    rec.unlink()
    with pytest.raises(PrismrecError, match="model.embedding_size|bpr.embedding_size|params"):
        compare(["bpr"], str(a), out, seeds=[0], overrides={**FAST, "model.embedding_size": 16}, epochs=1)


def test_leftover_temp_files_are_removed_when_a_run_starts_again(folders, tmp_path):
    a, _ = folders
    run = tmp_path / "run"
    train_run("bpr", str(a), run, overrides=FAST, epochs=1)
    junk = run / ".checkpoint.pt.abc123.tmp"
    junk.write_bytes(np.zeros(10).tobytes())
    train_run("bpr", str(a), run, overrides=FAST, epochs=1, resume=True)
    assert not junk.exists()


def test_an_archived_comparison_is_reused_without_its_weights(folders, tmp_path):
    """benchmarks/archive_runs.py keeps what a later session needs (studies, metrics, per-user results):
    copied back, the same `compare --tune` trains nothing and gives the same table; the paired test reads it."""
    import importlib.util
    import shutil
    from pathlib import Path

    from prismrec.runs import PER_USER_FILE, load_per_user

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "archive_runs.py"
    spec = importlib.util.spec_from_file_location("archive_runs", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, _ = folders
    out = tmp_path / "cmp"
    kw = dict(seeds=[0, 1], overrides=FAST, epochs=2, tune_trials=2)
    first = compare(["bpr", "lightgcn"], str(a), out, **kw)
    unfinished = out / "bpr" / "seed-7"  # a run killed mid-way: its checkpoint, no metrics.json
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"x")
    (unfinished / "config.yaml").write_text("seed: 7\n")
    n_files, _ = mod.archive(out, tmp_path / "kept")
    kept = tmp_path / "kept"
    assert not (kept / "bpr" / "seed-7").exists()  # only finished runs are kept
    shutil.rmtree(unfinished)
    assert n_files > 0 and not list(kept.rglob("*.pt")) and not list(kept.rglob("split.npz"))
    restored = tmp_path / "restored"
    shutil.copytree(kept, restored, symlinks=True)
    again = compare(["bpr", "lightgcn"], str(a), restored, **kw)
    assert not list(restored.rglob("*.pt"))  # nothing was trained again
    assert again.summary.equals(first.summary)
    for seed in (0, 1):
        z0 = load_per_user(out / "lightgcn" / f"seed-{seed}")
        z1 = load_per_user(restored / "lightgcn" / f"seed-{seed}")
        assert (restored / "lightgcn" / f"seed-{seed}" / PER_USER_FILE).is_file()
        assert all(np.array_equal(z0[k], z1[k]) for k in z0)


def test_compare_tune_scores_the_selected_trial_as_its_first_seed_run_instead_of_training_it_again(folders, tmp_path):
    """The selected trial was trained at the trial seed (the first seed) with the seed runs' inputs: that run is
    copied, its test set scored with its best weights, and only the other seeds are trained."""
    from prismrec.runs import PER_USER_FILE, TRAINED_AS_FILE, adopt_trained
    from prismrec.study import load_spec, open_study, best_trial

    a, b = folders
    out = tmp_path / "cmp"
    res = compare(["lightgcn"], str(a), out, seeds=[0, 1], overrides=FAST, epochs=3, tune_trials=2)
    study = open_study(load_spec(out / "lightgcn" / "tune"), create=False)
    trial_run = out / "lightgcn" / "tune" / "trials" / f"trial-{best_trial(study).number:04d}" / "seed-0"
    seed0, seed1 = out / "lightgcn" / "seed-0", out / "lightgcn" / "seed-1"
    # the same training, not a second one: every epoch's row (with its measured seconds) is the trial's
    assert (seed0 / "history.jsonl").read_text() == (trial_run / "history.jsonl").read_text()
    assert (seed1 / "history.jsonl").read_text() != (trial_run / "history.jsonl").read_text()
    m0, mt = (json.loads((d / METRICS_FILE).read_text()) for d in (seed0, trial_run))
    assert m0["valid"] == mt["valid"] and m0["best_epoch"] == mt["best_epoch"] and mt["test"] == {}
    assert m0["test"] and (seed0 / PER_USER_FILE).is_file() and not (trial_run / PER_USER_FILE).exists()
    assert len(res.runs) == 2 and not (seed0.parent / "seed-0.adopting").exists()
    assert json.loads((seed0 / TRAINED_AS_FILE).read_text())["run"] == str(trial_run.resolve())
    assert not (seed1 / TRAINED_AS_FILE).exists()
    # a trained run of other inputs (another seed; another data folder) is not adopted
    assert not adopt_trained(trial_run, tmp_path / "x", "lightgcn", str(a), overrides=FAST, seed=1, epochs=3)
    assert not adopt_trained(trial_run, tmp_path / "y", "lightgcn", str(b), overrides=FAST, seed=0, epochs=3)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
