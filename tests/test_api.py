"""The Python API (prismrec.api): typed overrides in; runs, metrics and comparison tables out."""

from __future__ import annotations

import pandas as pd
import pytest

from prismrec import api
from prismrec.config import TrainConfig, read_yaml
from prismrec.errors import ConfigError
from prismrec.models import MODELS

BPR = MODELS.get("bpr").Config
SMALL = {"embedding_size": 8,
         "train": {"batch_size": 64, "learning_rate": 0.01, "topk": [5, 10], "valid_metric": "recall@10",
                   "threads": 1}}


def test_train_in_memory_with_a_mapping_of_overrides(tiny_dataset):
    run = api.train("bpr", tiny_dataset, overrides={**SMALL, "reg_weight": 0.01, "train.learning_rate": 0.02},
                    epochs=2)
    assert run.run_dir is None
    assert isinstance(run.config.params, BPR)
    assert (run.config.params.embedding_size, run.config.params.reg_weight) == (8, 0.01)
    # the later, dotted key wins over the section given before it; the rest of the section applies
    assert run.config.train.learning_rate == 0.02 and run.config.train.batch_size == 64
    assert run.metrics["epochs_run"] == 2 and run.metrics["model"] == "bpr"
    assert {"recall@5", "recall@10", "ndcg@10"} <= set(run.metrics["test"])
    assert all(0.0 <= v <= 1.0 for v in run.metrics["test"].values())
    frame = run.recommend(["u0", "u1"], k=3)
    assert list(frame["user"]) == ["u0"] * 3 + ["u1"] * 3 and frame["item"].nunique() >= 3


def test_strings_mappings_and_config_objects_configure_the_same_run(tiny_dataset):
    strings = api.train("bpr", tiny_dataset, overrides=["embedding_size=8", "train.batch_size=64",
                                                        "train.topk=[5, 10]", "item_bias=true"], epochs=0)
    mapping = api.train("bpr", tiny_dataset, overrides={"embedding_size": 8, "train.batch_size": 64,
                                                        "train.topk": [5, 10], "item_bias": True}, epochs=0)
    objects = api.train("bpr", tiny_dataset, overrides={"model": BPR(embedding_size=8, item_bias=True),
                                                        "train": TrainConfig(batch_size=64, topk=[10, 5])}, epochs=0)
    assert strings.config.params.item_bias is True and strings.config.train.topk == [5, 10]
    assert strings.config == mapping.config == objects.config


def test_unknown_settings_fail_before_training(tiny_dataset):
    with pytest.raises(ConfigError, match="Did you mean 'embedding_size'"):
        api.train("bpr", tiny_dataset, overrides={"embeding_size": 8})
    with pytest.raises(ConfigError, match="Did you mean 'random'"):
        api.train("bpr", tiny_dataset, overrides={"data": {"split": "randum"}})


def test_saved_run_evaluates_and_reloads(mmrec_folder, tmp_path):
    folder, _ = mmrec_folder
    out = tmp_path / "run"
    run = api.train("lightgcn", str(folder), out, overrides={**SMALL, "n_layers": 1}, epochs=2, seed=3)
    saved = read_yaml(out / "config.yaml")
    assert list(saved) == ["model", "seed", "data_source", "data", "train", "params"]
    assert saved["params"]["n_layers"] == 1 and saved["seed"] == 3

    again = api.evaluate(out)
    assert set(again) == set(run.metrics["test"])
    for key, value in run.metrics["test"].items():
        assert again[key] == pytest.approx(value, abs=1e-6), key

    loaded = api.load_run(out)
    assert loaded.config == run.config and loaded.metrics["best_epoch"] == run.metrics["best_epoch"]
    users = list(loaded.dataset.user_ids[:2])
    pd.testing.assert_frame_equal(loaded.recommend(users, k=4), run.recommend(users, k=4))


def test_compare_with_typed_overrides_and_entry_settings(mmrec_folder, tmp_path):
    folder, _ = mmrec_folder
    out = tmp_path / "cmp"
    kw = dict(seeds=[0], overrides={**SMALL, "lightgcn": {"n_layers": 1}}, epochs=1)
    res = api.compare(["bpr", "bpr[embedding_size=4]"], str(folder), out, **kw)
    assert list(res.summary["entry"]) == ["bpr", "bpr[embedding_size=4]"]
    first, second = (read_yaml(out / d / "seed-0" / "config.yaml") for d in ("bpr", "bpr_embedding_size=4"))
    assert first["params"]["embedding_size"] == 8   # the shared setting
    assert second["params"]["embedding_size"] == 4  # the entry's own setting wins over the shared one
    assert second["train"]["learning_rate"] == 0.01 and second["train"]["topk"] == [5, 10]
    assert (out / "results.md").read_text() == res.markdown
    # finished runs are reused, not trained again
    stamp = (out / "bpr" / "seed-0" / "metrics.json").stat().st_mtime_ns
    assert api.compare(["bpr", "bpr[embedding_size=4]"], str(folder), out, **kw).runs.shape == res.runs.shape
    assert (out / "bpr" / "seed-0" / "metrics.json").stat().st_mtime_ns == stamp
