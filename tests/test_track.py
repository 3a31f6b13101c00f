"""Experiment tracking (--track tensorboard | mlflow): the configuration, per-epoch and final metrics of
every run, a comparison's runs grouped; a clear error when the package is missing."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import run_cli, write_mmrec
from prismrec import api
from prismrec.errors import PrismrecError
from prismrec.track import epoch_metrics, final_metrics, metric_key, run_tracker, tracking

SMALL = {"train": {"batch_size": 64, "threads": 1}}


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


needs_tensorboard = pytest.mark.skipif(not _have("tensorboard"), reason="tensorboard is not installed "
                                       "(pip install 'prismrec[track]'): the TensorBoard tracker is not tested")
needs_mlflow = pytest.mark.skipif(not _have("mlflow"), reason="mlflow is not installed (pip install mlflow or "
                                  "'prismrec[track]'): the MLflow tracker is not tested")


@pytest.fixture
def data(tmp_path):
    return str(write_mmrec(tmp_path / "data", features=8)[0])


@needs_tensorboard
def test_tensorboard_logs_config_epochs_and_final_metrics(data, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    run = api.train("bpr", data, tmp_path / "run", seed=0, epochs=3, overrides=SMALL, track="tensorboard")
    ea = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    ea.Reload()
    valid = ea.Scalars("valid/recall@20")
    assert [e.step for e in valid] == [1, 2, 3]
    assert [round(e.value, 6) for e in valid] == [round(h["valid"]["recall@20"], 6)
                                                  for h in _history(tmp_path / "run")]
    assert len(ea.Scalars("train/loss")) == 3
    test = ea.Scalars("test/recall@20")
    assert len(test) == 1 and test[0].step == run.metrics["best_epoch"]
    assert abs(test[0].value - run.metrics["test"]["recall@20"]) < 1e-6
    assert "config/text_summary" in ea.Tags()["tensors"]
    assert "PRISMREC_TRACK" not in os.environ  # the tracking settings end with the block


@needs_tensorboard
def test_tensorboard_compare_has_one_folder_per_run(data, tmp_path):
    api.compare(["pop", "bpr"], data, tmp_path / "cmp", seeds=[0, 1], epochs=2, overrides=SMALL,
                track="tensorboard")
    tb = tmp_path / "cmp" / "tensorboard"
    for entry in ("pop", "bpr"):
        for seed in (0, 1):
            assert list((tb / entry / f"seed-{seed}").glob("events.out.tfevents.*")), (entry, seed)
    assert list(tb.glob("events.out.tfevents.*"))  # the results table, at the group's root


@needs_mlflow
def test_mlflow_groups_a_comparison_under_a_parent_run(data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    api.compare(["pop", "bpr"], data, tmp_path / "cmp", seeds=[0], epochs=2, overrides=SMALL, track="mlflow")
    client = MlflowClient((tmp_path / "cmp" / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("prismrec")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"compare cmp", "pop/seed-0", "bpr/seed-0"}
    parent = runs["compare cmp"]
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.md", "results.csv"}
    bpr = runs["bpr/seed-0"]
    assert bpr.data.tags["mlflow.parentRunId"] == parent.info.run_id and bpr.info.status == "FINISHED"
    assert bpr.data.params["train.batch_size"] == "64" and bpr.data.params["model"] == "bpr"
    assert [m.step for m in client.get_metric_history(bpr.info.run_id, "valid/recall_at_20")] == [1, 2]
    assert "test/recall_at_20" in bpr.data.metrics and bpr.data.metrics["run/epochs_run"] == 2
    assert "config.yaml" in {a.path for a in client.list_artifacts(bpr.info.run_id)}


@needs_mlflow
def test_mlflow_train_with_a_tracking_uri(data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    store = tmp_path / "store"
    api.train("bpr", data, tmp_path / "run", epochs=1, overrides=SMALL, track="mlflow", track_uri=str(store))
    client = MlflowClient(store.resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("mine").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert not (tmp_path / "run" / "mlruns").exists()


def test_a_missing_package_is_named_with_its_extra(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(PrismrecError, match=r"prismrec\[track\]"):
        api.train("bpr", data, tmp_path / "run", epochs=1, overrides=SMALL, track="mlflow")
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(PrismrecError, match="tensorboard or --track mlflow"):
        with tracking("wandb", tmp_path):
            pass


def test_no_tracking_no_tracker(tmp_path):
    assert run_tracker({"model": "bpr"}, tmp_path) is None
    with tracking(None, tmp_path) as env:
        assert env is None and run_tracker({}, tmp_path) is None


def test_what_is_logged_per_epoch_and_at_the_end():
    row = {"epoch": 3, "loss": 0.5, "bpr": 0.4, "train_s": 0.1, "eval_s": 0.2, "valid": {"recall@20": 0.3}}
    assert epoch_metrics(row) == {"train/loss": 0.5, "train/bpr": 0.4, "time/train_s": 0.1, "time/eval_s": 0.2,
                                  "valid/recall@20": 0.3}
    blank = {"epoch": 4, "loss": 0.4, "train_s": 0.1, "eval_s": None, "valid": None}
    assert epoch_metrics(blank) == {"train/loss": 0.4, "time/train_s": 0.1}
    fin = final_metrics({"test": {"ndcg@10": 0.2}, "valid": {"ndcg@10": 0.25}, "best_epoch": 7, "model": "bpr"})
    assert fin == {"test/ndcg@10": 0.2, "best_valid/ndcg@10": 0.25, "run/best_epoch": 7.0}
    assert metric_key("mlflow", "valid/recall@20") == "valid/recall_at_20"
    assert metric_key("tensorboard", "valid/recall@20") == "valid/recall@20"


def test_cli_track_uri_needs_track(tmp_path):
    r = run_cli("train", "--model", "pop", "--data", "demo", "--out", str(tmp_path / "x"), "--track-uri", "somewhere")
    assert r.returncode == 2 and "--track-uri needs --track" in r.stderr, str(r)


def _history(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
