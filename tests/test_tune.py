"""Grid search (prismrec.compare.tune): selection on validation, the chosen setting marked, final seeds
reusing the trial runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

from prismrec import compare as compare_module
from prismrec.compare import tune
from prismrec.runs import METRICS_FILE
from prismrec.utils.io import read_json

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# (valid, test) recall per embedding size and seed: validation prefers 4 on average over the seeds, test
# prefers 8, and the single best validation run is 16's (seed 0) -- only the validation mean picks 4
OUTCOME = {4: {0: (0.30, 0.10), 1: (0.32, 0.12)},
           8: {0: (0.20, 0.40), 1: (0.22, 0.42)},
           16: {0: (0.50, 0.35), 1: (0.00, 0.30)}}


def fake_train_run(calls: list):
    """Stands in for runs.train_run: metrics from OUTCOME, and a metrics.json as a finished run has."""

    def train_run(model, data, out, *, overrides, seed, **kw):
        calls.append((out.parent.parent.name, out.parent.name, seed, overrides))
        valid, test = OUTCOME[overrides["bpr.embedding_size"]][seed % 2]
        m = {"model": model, "best_epoch": 1, "epochs_run": 1, "train_seconds": 0.1, "epoch_seconds": 0.1,
             "valid": {k: valid for k in METRICS}, "test": {k: test for k in METRICS}}
        out.mkdir(parents=True)
        (out / METRICS_FILE).write_text(json.dumps(m))
        return SimpleNamespace(metrics=m)

    return train_run


def test_tune_selects_on_the_validation_mean_and_reuses_trials(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(compare_module, "train_run", fake_train_run(calls))
    # the stand-in runs record no inputs: a finished one is reused as it is
    monkeypatch.setattr(compare_module, "reuse_finished",
                        lambda run_dir, *a, **k: read_json(run_dir / METRICS_FILE)
                        if (run_dir / METRICS_FILE).is_file() else None)
    out = tmp_path / "tune"
    res = tune("bpr", "somewhere", out, {"embedding_size": [4, 8, 16]}, seeds=[0, 1], final_seeds=[0, 1, 2],
               overrides=["train.learning_rate=0.01"], select="recall@20")

    assert res.best.label == "bpr[embedding_size=4]" and res.best.overrides == {"bpr.embedding_size": 4}
    trials = [c for c in calls if c[0] == "trials"]
    assert len(trials) == 6
    # every run gets one typed mapping: the shared overrides parsed, then the entry's own setting
    assert trials[0][3] == {"train.learning_rate": 0.01, "bpr.embedding_size": 4}
    # the final seeds 0 and 1 are the trial runs; only seed 2 is trained again
    assert [c[:3] for c in calls if c[0] == "final"] == [("final", res.best.dirname, 2)]
    for seed in (0, 1):
        link = out / "final" / res.best.dirname / f"seed-{seed}"
        assert link.is_symlink() and link.resolve() == (out / "trials" / res.best.dirname / f"seed-{seed}").resolve()
    assert list(res.final.runs["seed"]) == [0, 1, 2]

    chosen = [line for line in res.markdown.splitlines() if "(chosen)" in line]
    assert len(chosen) == 1 and "bpr[embedding_size=4]" in chosen[0]
    assert (out / "tune.md").read_text() == res.markdown


def test_tune_end_to_end_on_tiny_data(mmrec_folder, tmp_path):
    folder, _ = mmrec_folder
    out = tmp_path / "tune"
    res = tune("bpr", str(folder), out, ["embedding_size=4,16"], seeds=[0], final_seeds=[0, 1], epochs=1,
               select="recall@10", overrides={"train": {"batch_size": 64, "learning_rate": 0.01, "threads": 1}})
    dirs = {"bpr[embedding_size=4]": "bpr_embedding_size=4", "bpr[embedding_size=16]": "bpr_embedding_size=16"}
    valid = {label: read_json(out / "trials" / d / "seed-0" / METRICS_FILE)["valid"]["recall@10"]
             for label, d in dirs.items()}
    assert res.best.label == max(valid, key=valid.get)
    assert read_json(out / "trials" / dirs[res.best.label] / "seed-0" / METRICS_FILE)["model"] == "bpr"
    final = out / "final" / res.best.dirname
    assert (final / "seed-0").is_symlink()
    assert not (final / "seed-1").is_symlink() and (final / "seed-1" / METRICS_FILE).is_file()
    assert list(res.final.runs["seed"]) == [0, 1]
    chosen = [line for line in res.markdown.splitlines() if "(chosen)" in line]
    assert len(chosen) == 1 and res.best.label in chosen[0]
