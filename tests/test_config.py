"""Configuration: defaults, YAML files, --set overrides, and the errors users see."""

from __future__ import annotations

import pytest
from pydantic import Field

from prismrec.compare import Entry
from prismrec.config import (DataConfig, RunConfig, StrictConfig, TrainConfig, parse_value, read_yaml,
                             resolve_config)
from prismrec.errors import ConfigError
from prismrec.models import MODELS, ModelConfig
from prismrec.registry import Registry, suggest
from prismrec.runs import build_config

LGCN = MODELS.get("lightgcn").Config
NAMES = MODELS.names()


def resolve(overrides=(), files=(), model="lightgcn", cls=LGCN, **kw) -> RunConfig:
    return resolve_config(model, cls, list(files), list(overrides), model_names=NAMES, **kw)


def error(overrides=(), files=(), model="lightgcn", cls=LGCN) -> str:
    with pytest.raises(ConfigError) as err:
        resolve(overrides, files, model, cls)
    return str(err.value)


# ------------------------------------------------------------------------------------- defaults
def test_defaults():
    cfg = resolve()
    assert cfg.model == "lightgcn" and cfg.seed == 0
    assert cfg.train.learning_rate == 1e-3 and cfg.train.topk == [10, 20, 50]
    assert cfg.train.valid_metric == "recall@20" and cfg.train.mask_valid_in_test is False
    assert cfg.data.split is None and cfg.data.split_ratios == (0.8, 0.1, 0.1)
    assert cfg.params == {"embedding_size": 64, "n_layers": 3, "reg_weight": 1e-4, "reg_type": "mmrec"}


# ------------------------------------------------------------------------------- unknown keys
def test_strict_build_rejects_unknown_key_with_suggestion():
    with pytest.raises(ConfigError) as err:
        TrainConfig.build({"learnig_rate": 0.1}, where="train")
    msg = str(err.value)
    assert "Unknown key 'learnig_rate' in train." in msg
    assert "Did you mean 'learning_rate'?" in msg
    assert "Valid keys:" in msg and "batch_size" in msg


@pytest.mark.parametrize("override, wrong, right", [
    ("train.learing_rate=0.1", "learing_rate", "learning_rate"),   # qualified
    ("learing_rate=0.1", "learing_rate", "learning_rate"),         # bare
    ("lightgcn.n_layer=2", "n_layer", "n_layers"),                 # model section
    ("model.embeding_size=8", "embeding_size", "embedding_size"),  # 'model' names the model's section
    ("data.spilt=mmrec", "spilt", "split"),
])
def test_unknown_override_key_suggests_closest(override, wrong, right):
    msg = error([override])
    assert f"Unknown key '{wrong}'" in msg
    assert f"Did you mean '{right}'?" in msg


def test_unknown_key_without_close_match_has_no_suggestion():
    msg = error(["xyzzy=1"])
    assert "Unknown key 'xyzzy'" in msg and "Did you mean" not in msg


def test_unknown_section_in_override():
    msg = error(["trian.epochs=3"])
    assert "Unknown section 'trian'" in msg and "Did you mean 'train'?" in msg


def test_override_must_be_key_value():
    assert "is not KEY=VALUE" in error(["train.epochs"])


# ---------------------------------------------------------------------------- override forms
def test_qualified_and_bare_overrides():
    cfg = resolve(["train.learning_rate=0.01", "batch_size=512", "n_layers=2", "kcore=5",
                   "model.reg_weight=0.5", "seed=7"])
    assert cfg.train.learning_rate == 0.01
    assert cfg.train.batch_size == 512          # bare key owned by train only
    assert cfg.params["n_layers"] == 2          # bare key owned by the model only
    assert cfg.data.kcore == 5                  # bare key owned by data only
    assert cfg.params["reg_weight"] == 0.5
    assert cfg.seed == 7
    # explicit arguments win over --set
    cfg = resolve(["train.epochs=3", "seed=7"], seed=1, epochs=9, data_source="somewhere")
    assert (cfg.train.epochs, cfg.seed, cfg.data_source) == (9, 1, "somewhere")


def test_ambiguous_bare_key():
    class Clashing(ModelConfig):
        batch_size: int = Field(32, ge=1)

    msg = error(["batch_size=8"], model="clash", cls=Clashing)
    assert "exists in several sections" in msg
    assert "clash" in msg and "train" in msg
    assert "batch_size=8" in msg
    cfg = resolve(["train.batch_size=8", "clash.batch_size=4"], model="clash", cls=Clashing)
    assert cfg.train.batch_size == 8 and cfg.params["batch_size"] == 4


def test_values_are_parsed_as_yaml():
    cfg = resolve(["topk=[5,10]", "train.mask_valid_in_test=true", "filter_cold_users=false",
                   "data.split_ratios=[0.7,0.2,0.1]", "data.modalities=[image, text]", "learning_rate=1e-2",
                   "data.split=loo", "valid_metric=NDCG@10"])
    assert cfg.train.topk == [5, 10]
    assert cfg.train.mask_valid_in_test is True
    assert cfg.data.filter_cold_users is False
    assert cfg.data.split_ratios == (0.7, 0.2, 0.1)
    assert cfg.data.modalities == ["image", "text"]
    assert cfg.train.learning_rate == 0.01
    assert cfg.data.split == "loo"
    assert cfg.train.valid_metric == "ndcg@10"
    assert resolve(["topk=[20,5,5]"]).train.topk == [5, 20]  # sorted, unique
    assert parse_value("[1, 2]") == [1, 2] and parse_value("yes") is True and parse_value("a: [") == "a: ["


@pytest.mark.parametrize("override, needles", [
    ("train.epochs=abc", ["train.epochs", "'abc'"]),
    ("train.epochs=-1", ["train.epochs", "greater than or equal to 0"]),
    ("train.topk=[0,10]", ["train.topk", "positive"]),
    ("train.valid_metric=recall", ["train.valid_metric", "recall@20"]),
    ("data.split=random_walk", ["data.split", "'random_walk'"]),
    ("n_layers=[1,2]", ["lightgcn.n_layers", "[1, 2]"]),
])
def test_wrong_type_or_value_is_a_clear_error(override, needles):
    msg = error([override])
    assert msg.startswith("Invalid configuration:")
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_other_models_settings_are_skipped():
    # one --set list serves a whole compare: bpr's settings do not disturb a lightgcn run
    cfg = resolve(["bpr.item_bias=true", "lightgcn.n_layers=1"])
    assert cfg.params["n_layers"] == 1 and "item_bias" not in cfg.params


# ------------------------------------------------------------------------------------ YAML files
def test_yaml_file_with_sections_for_several_models(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "seed: 4\n"
        "data:\n  split: mmrec\n  kcore: 2\n"
        "train:\n  learning_rate: 0.005\n  topk: [5, 10]\n"
        "lightgcn:\n  n_layers: 1\n"
        "bpr:\n  item_bias: true\n  embedding_size: 8\n"
    )
    cfg = resolve(["train.learning_rate=0.02"], files=[read_yaml(path)])
    assert cfg.seed == 4 and cfg.data.split == "mmrec" and cfg.data.kcore == 2
    assert cfg.train.learning_rate == 0.02   # --set overrides the file
    assert cfg.train.topk == [5, 10]
    assert cfg.params["n_layers"] == 1 and cfg.params["embedding_size"] == 64  # bpr's section ignored
    # the same file configures bpr
    bpr = resolve(files=[read_yaml(path)], model="bpr", cls=MODELS.get("bpr").Config)
    assert bpr.params["item_bias"] is True and bpr.params["embedding_size"] == 8
    # through the public builder with a file path and a model alias
    via = build_config("lgcn", "somewhere", config_files=[path], overrides=["n_layers=2"])
    assert via.model == "lightgcn" and via.params["n_layers"] == 2 and via.data.kcore == 2


def test_later_files_override_earlier(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train:\n  epochs: 5\n  batch_size: 64\n")
    b.write_text("train:\n  epochs: 7\n")
    cfg = resolve(files=[read_yaml(a), read_yaml(b)])
    assert cfg.train.epochs == 7 and cfg.train.batch_size == 64


def test_yaml_file_errors(tmp_path):
    bad_section = {"trian": {"epochs": 1}}
    msg = error(files=[bad_section])
    assert "Unknown section 'trian'" in msg and "Did you mean 'train'?" in msg
    assert "Unknown key 'n_layer'" in error(files=[{"lightgcn": {"n_layer": 2}}])
    assert "must be a mapping" in error(files=[{"train": [1, 2]}])
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        read_yaml(tmp_path / "list.yaml")


def test_run_config_round_trip():
    cfg = resolve(["topk=[5,10]", "data.split_ratios=[0.7,0.2,0.1]", "n_layers=1"], seed=3, data_source="d")
    d = cfg.to_yaml_dict()
    assert d["lightgcn"] == cfg.params
    d["params"] = d.pop("lightgcn")
    assert RunConfig.build(d, where="config.yaml") == cfg


def test_strict_config_rejects_extra_fields_on_assignment_too():
    cfg = DataConfig()
    with pytest.raises(Exception):
        cfg.kcore = -1
    with pytest.raises(ConfigError, match="Unknown key 'colour' in data"):
        DataConfig.build({"colour": "red"}, where="data")


# -------------------------------------------------------------------------------------- registry
def test_model_registry_suggests_near_misses():
    with pytest.raises(ConfigError) as err:
        MODELS.get("lightgnc")
    msg = str(err.value)
    assert "Unknown model 'lightgnc'." in msg
    assert "Did you mean 'lightgcn'?" in msg
    known = msg.split("Known: ", 1)[1].rstrip(".").split(", ")
    assert {"bpr", "lightgcn", "pop"} <= set(known) and known == sorted(known)
    assert MODELS.get("LightGCN") is MODELS.get("lgcn")   # case-insensitive, aliases
    assert MODELS.canonical("MF") == "bpr"
    assert "lgcn" in MODELS and "nope" not in MODELS
    assert list(MODELS) == MODELS.names() == sorted(MODELS.names())


def test_registry_basics():
    reg: Registry[object] = Registry("widget")

    @reg.register("Alpha", aliases=("a1",))
    class Alpha:
        pass

    assert Alpha.registry_name == "alpha"
    assert reg.get("A1") is Alpha and reg.canonical("a1") == "alpha"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(object())
    with pytest.raises(ConfigError, match="Unknown widget 'alpah'. Did you mean 'alpha'?"):
        reg.get("alpah")
    assert suggest("zzzzzz", ["alpha", "beta"]) == ""


def test_strict_config_subclass_error_mentions_section():
    class Tiny(StrictConfig):
        size: int = 1

    with pytest.raises(ConfigError) as err:
        Tiny.build({"size": "big"}, where="tiny")
    assert "tiny.size" in str(err.value) and "'big'" in str(err.value)


# ------------------------------------------------------------------------------- compare entries
def test_compare_entry_settings_go_to_the_model_section():
    e = Entry.parse(" lightgcn[n_layers=2; train.epochs=3; learning_rate=0.01] ")
    assert e.label == "lightgcn[n_layers=2; train.epochs=3; learning_rate=0.01]" and e.model == "lightgcn"
    assert e.overrides == ["lightgcn.n_layers=2", "train.epochs=3", "learning_rate=0.01"]
    assert e.dirname == "lightgcn_n_layers=2_train.epochs=3_learning_rate=0.01"
    cfg = build_config(e.model, "somewhere", overrides=e.overrides)
    assert cfg.params["n_layers"] == 2 and cfg.train.epochs == 3 and cfg.train.learning_rate == 0.01
    with pytest.raises(ConfigError, match="not key=value"):
        Entry.parse("bpr[item_bias]")
    with pytest.raises(ConfigError, match="cannot parse"):
        Entry.parse("bpr[x=1")


def test_compare_entry_with_a_model_alias_and_settings():
    e = Entry.parse("lgcn[n_layers=2]")  # `--model lgcn` alone works; the alias with settings should too
    assert build_config(e.model, "somewhere", overrides=e.overrides).params["n_layers"] == 2


# ------------------------------------------------------------------------------- weak validation
def test_seed_must_be_an_integer():
    with pytest.raises(ConfigError, match="seed"):
        resolve(["seed=abc"])


@pytest.mark.parametrize("metric", ["recall@x", "recall@0"])
def test_valid_metric_needs_a_positive_cutoff(metric):
    with pytest.raises(ConfigError, match="valid_metric"):
        resolve([f"train.valid_metric={metric}"])
