"""data.feature_noise: a seeded share of each modality's feature rows replaced by random vectors."""

import numpy as np
import pytest

from prismrec.config import DataConfig
from prismrec.data import preprocess
from prismrec.data.preprocess import corrupt_features
from seq_checks import cyclic_dataset, fit

MISSING = np.array([0, 5, 6, 7])


def changed_rows(a, b):
    return np.flatnonzero((a.values != b.values).any(1))


def test_share_of_rows_replaced_per_modality_and_nothing_else():
    ds = cyclic_dataset(missing=MISSING)
    before = {n: m.values.copy() for n, m in ds.modalities.items()}
    out = corrupt_features(ds, 0.5, seed=3)
    for name, m in ds.modalities.items():
        new = out.modalities[name]
        rows = changed_rows(m, new)
        assert len(rows) == round(0.5 * m.available.sum())
        assert m.available[rows].all()  # missing features stay missing
        assert np.array_equal(new.available, m.available) and (new.values[~m.available] == 0).all()
        assert new.provenance["feature_noise"] == {"share": 0.5, "seed": 3, "items": len(rows)}
        np.testing.assert_array_equal(m.values, before[name])  # the input dataset is not modified
    assert out.interactions is ds.interactions and list(out.item_ids) == list(ds.item_ids)
    # each modality draws its own items
    assert not np.array_equal(changed_rows(ds.modalities["image"], out.modalities["image"]),
                              changed_rows(ds.modalities["text"], out.modalities["text"]))


def test_random_rows_match_the_feature_statistics_and_are_seeded():
    ds = cyclic_dataset()
    m = ds.modalities["image"]
    out = corrupt_features(ds, 1.0, seed=1).modalities["image"]
    assert len(changed_rows(m, out)) == len(m.values)
    np.testing.assert_allclose(out.values.mean(0), m.values.mean(0), atol=0.35)
    np.testing.assert_allclose(out.values.std(0), m.values.std(0), rtol=0.5, atol=0.05)
    again = corrupt_features(ds, 1.0, seed=1).modalities["image"]
    other = corrupt_features(ds, 1.0, seed=2).modalities["image"]
    assert np.array_equal(out.values, again.values) and not np.array_equal(out.values, other.values)
    assert corrupt_features(ds, 0.0) is ds


def test_config_key_reaches_the_model():
    """--set data.feature_noise=... corrupts the features a model is trained on (preprocess applies it)."""
    ds = cyclic_dataset()
    cfg = DataConfig(feature_noise=0.3, feature_noise_seed=7)
    expected = corrupt_features(ds, 0.3, seed=7)
    got = preprocess(ds, cfg)
    for name in ds.modalities:
        np.testing.assert_array_equal(got.modalities[name].values, expected.modalities[name].values)
    run = fit("sasrecf", ds, ["data.feature_noise=0.3", "data.feature_noise_seed=7"], 0)
    assert run.config.data.feature_noise == 0.3
    table = run.model.tokens.features.tables["image"].values.numpy()
    np.testing.assert_array_equal(table, expected.modalities["image"].values)


@pytest.mark.parametrize("bad", ["data.feature_noise=1.5", "data.feature_noise=-0.1"])
def test_share_is_validated(bad):
    from prismrec.errors import ConfigError

    with pytest.raises(ConfigError):
        fit("sasrecf", cyclic_dataset(), [bad], 0)
