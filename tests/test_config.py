"""Configuration: defaults, YAML files, --set overrides, and the errors users see."""

from __future__ import annotations

import pytest
from pydantic import Field

from prismrec.compare import Entry, grid_entries
from prismrec.config import (DataConfig, RunConfig, StrictConfig, TrainConfig, merge_overrides, parse_grid,
                             parse_overrides, parse_value, read_yaml, resolve_config)
from prismrec.data.split import SPLIT_RULES, make_split
from prismrec.data.training import TrainingData
from prismrec.errors import ConfigError
from prismrec.evaluate.feature_quality import data_config
from prismrec.models import MODELS, ModelConfig
from prismrec.registry import Registry, suggest
from prismrec.runs import build_config, build_model
from prismrec.utils.io import write_yaml

LGCN = MODELS.get("lightgcn").Config
NAMES = MODELS.names()


def resolve(overrides=(), files=(), model="lightgcn", cls=LGCN, **kw) -> RunConfig:
    return resolve_config(model, cls, list(files), overrides, model_names=NAMES, **kw)


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
    assert isinstance(cfg.params, LGCN)  # the model's own validated settings, not a dict
    assert cfg.params.model_dump() == {"embedding_size": 64, "n_layers": 3, "reg_weight": 1e-4, "reg_type": "mmrec"}


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
    assert cfg.params.n_layers == 2             # bare key owned by the model only
    assert cfg.data.kcore == 5                  # bare key owned by data only
    assert cfg.params.reg_weight == 0.5
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
    assert cfg.train.batch_size == 8 and cfg.params.batch_size == 4


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
    assert cfg.params.n_layers == 1 and not hasattr(cfg.params, "item_bias")


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
    assert cfg.params.n_layers == 1 and cfg.params.embedding_size == 64  # bpr's section ignored
    # the same file configures bpr
    bpr = resolve(files=[read_yaml(path)], model="bpr", cls=MODELS.get("bpr").Config)
    assert bpr.params.item_bias is True and bpr.params.embedding_size == 8
    # through the public builder with a file path and a model alias
    via = build_config("lgcn", "somewhere", config_files=[path], overrides=["n_layers=2"])
    assert via.model == "lightgcn" and via.params.n_layers == 2 and via.data.kcore == 2


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
    assert d["lightgcn"] == cfg.params.model_dump(mode="json")
    d["params"] = d.pop("lightgcn")
    assert RunConfig.build(d, where="config.yaml") == cfg
    assert d == cfg.to_run_dict() and RunConfig.from_run_dict(d) == cfg


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
    assert e.overrides == {"lightgcn.n_layers": 2, "train.epochs": 3, "learning_rate": 0.01}  # typed
    assert e.dirname == "lightgcn_n_layers=2_train.epochs=3_learning_rate=0.01"
    cfg = build_config(e.model, "somewhere", overrides=e.overrides)
    assert cfg.params.n_layers == 2 and cfg.train.epochs == 3 and cfg.train.learning_rate == 0.01
    with pytest.raises(ConfigError, match="not key=value"):
        Entry.parse("bpr[item_bias]")
    with pytest.raises(ConfigError, match="cannot parse"):
        Entry.parse("bpr[x=1")


def test_compare_entry_with_a_model_alias_and_settings():
    e = Entry.parse("lgcn[n_layers=2]")  # `--model lgcn` alone works; the alias with settings should too
    assert build_config(e.model, "somewhere", overrides=e.overrides).params.n_layers == 2


# ------------------------------------------------------------------------------- weak validation
def test_seed_must_be_an_integer():
    with pytest.raises(ConfigError, match="seed"):
        resolve(["seed=abc"])


@pytest.mark.parametrize("metric", ["recall@x", "recall@0"])
def test_valid_metric_needs_a_positive_cutoff(metric):
    with pytest.raises(ConfigError, match="valid_metric"):
        resolve([f"train.valid_metric={metric}"])


# ---------------------------------------------------------------------------- the one override parser
def test_parse_overrides_turns_strings_into_a_typed_mapping():
    parsed = parse_overrides(["n_layers=2", " train.learning_rate = 0.01", "topk=[5,10]", "data.columns.User=uid",
                              "data.filter_cold_users=false", "n_layers=3"])
    assert parsed == {"train.learning_rate": 0.01, "topk": [5, 10], "data.columns.User": "uid",
                      "data.filter_cold_users": False, "n_layers": 3}
    assert list(parsed)[-1] == "n_layers"  # a repeated key takes its later place, as a later --set does
    assert parse_overrides("seed=3") == {"seed": 3} and parse_overrides(None) == {}
    # a mapping is typed already: its values are never parsed again
    assert parse_overrides({"data.columns.user": "true", "topk": "[5]"}) == {"data.columns.user": "true", "topk": "[5]"}
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_overrides(["=3"])
    with pytest.raises(ConfigError, match="not a setting name"):
        parse_overrides({3: 1})


OVERRIDE_FORMS = {
    "strings": ["n_layers=2", "train.learning_rate=0.01", "topk=[5, 10]", "data.split=loo", "data.columns.user=uid",
                "seed=4", "bpr.item_bias=true"],
    "flat mapping": {"n_layers": 2, "train.learning_rate": 0.01, "topk": [5, 10], "data.split": "loo",
                     "data.columns.user": "uid", "seed": 4, "bpr.item_bias": True},
    "sections": {"lightgcn": {"n_layers": 2}, "train": {"learning_rate": 0.01, "topk": [5, 10]},
                 "data": {"split": "loo", "columns": {"user": "uid"}}, "seed": 4, "bpr": {"item_bias": True}},
    "config objects": {"model": LGCN(n_layers=2), "train": TrainConfig(learning_rate=0.01, topk=[10, 5]),
                       "data": DataConfig(split="leave_one_out", columns={"user": "uid"}), "seed": 4},
}


@pytest.mark.parametrize("form", list(OVERRIDE_FORMS))
def test_string_and_mapping_overrides_give_the_same_run_config(form):
    expected = resolve(OVERRIDE_FORMS["strings"])
    assert (expected.params.n_layers, expected.train.learning_rate, expected.train.topk) == (2, 0.01, [5, 10])
    assert (expected.data.split, expected.data.columns, expected.seed) == ("loo", {"user": "uid"}, 4)
    assert expected.train.epochs == TrainConfig().epochs  # only what was set changes
    assert resolve(OVERRIDE_FORMS[form]) == expected
    via = build_config("lgcn", "somewhere", overrides=OVERRIDE_FORMS[form])
    assert via == build_config("lgcn", "somewhere", overrides=OVERRIDE_FORMS["strings"])


@pytest.mark.parametrize("overrides, wrong, right", [
    ({"train.learing_rate": 0.1}, "learing_rate", "learning_rate"),
    ({"learing_rate": 0.1}, "learing_rate", "learning_rate"),
    ({"train": {"learing_rate": 0.1}}, "learing_rate", "learning_rate"),
    ({"model": {"n_layer": 2}}, "n_layer", "n_layers"),
    ({"data.columns.user": "uid", "data.colums.item": "iid"}, "colums", "columns"),
    ({"trian": {"epochs": 3}}, "trian", "train"),
])
def test_unknown_keys_in_a_mapping_are_rejected_with_a_suggestion(overrides, wrong, right):
    msg = error(overrides)
    assert f"Unknown key '{wrong}'" in msg and f"Did you mean '{right}'?" in msg


def test_typed_values_are_validated_not_parsed():
    assert "train.topk" in error({"topk": "[5, 10]"})  # a string is not a list: no YAML parsing of mappings
    assert "names the section 'train'" in error({"train": 3})
    assert "Invalid configuration" in error({"lightgcn": LGCN(n_layers=2), "n_layers": "many"})


def test_later_overrides_win_whatever_their_spelling():
    merged = merge_overrides(["lightgcn.n_layers=1", "n_layers=3"], {"lightgcn.n_layers": 2})
    assert list(merged) == ["n_layers", "lightgcn.n_layers"] and resolve(merged).params.n_layers == 2


def test_dict_entries_and_data_only_overrides():
    cfg = resolve({"data.columns.user": "uid", "data.columns.item": "iid", "data.extra_features.a": "/x.npz"})
    assert cfg.data.columns == {"user": "uid", "item": "iid"} and cfg.data.extra_features == {"a": "/x.npz"}
    # the feature tools take the data part through the same parser, entries included
    data = data_config(overrides={"data.columns.user": "uid", "kcore": 2, "split": "cold"})
    assert data.columns == {"user": "uid"} and data.kcore == 2 and data.split == "cold_items"
    assert data_config(overrides=["data.columns.user=uid", "kcore=2", "split=cold"]) == data
    with pytest.raises(ConfigError, match="Unknown section 'train'"):
        data_config(overrides={"train.epochs": 3})


def test_grids_use_the_same_parser_and_label_entries_like_the_command_line():
    assert parse_grid(["n_layers=1,2", "topk=[5,10],[20]", "data.split=loo"]) == {
        "n_layers": [1, 2], "topk": [[5, 10], [20]], "data.split": ["loo"]}
    entries = grid_entries("lgcn", {"n_layers": [1, 2], "train.learning_rate": [0.01]})
    assert [e.label for e in entries] == ["lgcn[n_layers=1;train.learning_rate=0.01]",
                                         "lgcn[n_layers=2;train.learning_rate=0.01]"]
    assert entries[0].overrides == {"lightgcn.n_layers": 1, "train.learning_rate": 0.01}
    assert entries == [Entry.parse(e.label) for e in entries]  # the label parses back to the same entry
    assert grid_entries("lgcn", ["n_layers=1,2", "train.learning_rate=0.01"]) == entries
    with pytest.raises(ConfigError, match="is not KEY=V1,V2"):
        parse_grid(["n_layers"])
    with pytest.raises(ConfigError, match="has no values"):
        parse_grid(["n_layers="])


# ----------------------------------------------------------------------------------- split rules
@pytest.mark.parametrize("name, canonical", [("random", "mmrec"), ("leave_one_out", "loo"), ("cold", "cold_items"),
                                             ("LOO", "loo"), ("user_temporal", "user_temporal")])
def test_every_split_rule_and_alias_is_reachable(name, canonical):
    assert resolve([f"data.split={name}"]).data.split == canonical
    assert resolve({"data.default_split": name}).data.default_split == canonical


def test_split_rules_are_validated_against_the_registry(tiny_dataset):
    every = [*SPLIT_RULES.names(), *(a for n in SPLIT_RULES.names() for a in SPLIT_RULES.aliases_of(n))]
    assert {"random", "leave_one_out", "cold"} <= set(every)
    for name in every:
        assert DataConfig(split=name).split == SPLIT_RULES.canonical(name)
    msg = error(["data.split=leave_one_ot"])
    assert "data.split" in msg and "Did you mean 'leave_one_out'?" in msg
    assert all(name in msg for name in every)  # the error lists every valid rule and alias
    assert "data.default_split" in error({"data": {"default_split": "temporal_global"}})
    assert make_split(tiny_dataset, DataConfig(split="random")).rule == "mmrec"


# ------------------------------------------------------------------------- typed model settings
def test_run_dir_layout_is_unchanged_and_old_run_configs_load(tmp_path):
    old = {  # config.yaml as earlier prismrec versions wrote it
        "model": "sasrecf", "seed": 1, "data_source": "demo",
        "data": {"split": "loo", "default_split": "loo", "dedup": "none", "split_ratios": [0.8, 0.1, 0.1]},
        "train": {"epochs": 3, "valid_metric": "ndcg@10", "topk": [5, 10]},
        "params": {"max_len": 8, "embedding_size": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.2, "use_ids": False},
    }
    write_yaml(tmp_path / "config.yaml", old)
    cfg = RunConfig.from_run_dict(read_yaml(tmp_path / "config.yaml"))
    assert isinstance(cfg.params, MODELS.get("sasrecf").Config) and cfg.params.use_ids is False
    d = cfg.to_run_dict()
    assert list(d) == ["model", "seed", "data_source", "data", "train", "params"]
    assert d["params"].items() >= old["params"].items() and d["train"]["topk"] == [5, 10]
    assert RunConfig.from_run_dict(d) == cfg
    assert RunConfig.from_run_dict(cfg.to_yaml_dict()) == cfg  # the user layout reads too
    with pytest.raises(ConfigError, match="Did you mean 'n_layers'"):
        RunConfig.from_run_dict({**old, "params": {"n_layer": 1}})


def test_build_model_uses_the_settings_object_it_was_given(tiny_dataset):
    cfg = build_config("lightgcn", tiny_dataset, overrides={"n_layers": 1, "embedding_size": 8})
    model, _ = build_model(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
    assert model.config is cfg.params  # validated once, not rebuilt from a dict
    with pytest.raises(ConfigError, match="must be a LightGCN.Config"):
        RunConfig(model="lightgcn", params=MODELS.get("bpr").Config())


@pytest.mark.parametrize("name", ["sasrec", "sasrecf", "gru4rec", "gru4recf", "mdsrec", "demure", "lightgcn"])
def test_model_settings_are_a_nested_config_class(name):
    cls = MODELS.get(name)
    assert cls.Config.__qualname__ == f"{cls.__qualname__}.Config" and issubclass(cls.Config, ModelConfig)


def test_use_ids_is_a_setting_of_the_feature_models_only():
    from seq_checks import cyclic_dataset

    ds = cyclic_dataset()
    data = TrainingData.from_split(ds, make_split(ds, DataConfig(split="loo")))
    for name, has_features in [("sasrec", False), ("gru4rec", False), ("sasrecf", True), ("gru4recf", True),
                               ("demure", True)]:
        cls = MODELS.get(name)
        assert ("use_ids" in cls.Config.model_fields) is has_features, name
        assert cls(cls.Config(max_len=4, embedding_size=8), data).tokens.use_ids is True
        if has_features:
            assert cls(cls.Config(max_len=4, embedding_size=8, use_ids=False), data).tokens.use_ids is False
    with pytest.raises(ConfigError, match="Unknown key 'use_ids' in section 'sasrec'"):
        resolve(["sasrec.use_ids=false"], model="sasrec", cls=MODELS.get("sasrec").Config)
