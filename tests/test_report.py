"""prismrec.report: the paired-test rule over seeds and the table builder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prismrec.errors import PrismrecError
from prismrec.report.paired import paired_over_seeds, seed_mean_per_user, verdict
from prismrec.report.tables import (DASH, Table, best_rows, mean_std, metrics_table, protocol_caption, pvalue,
                                    seed_summary_table)

METRIC = "ndcg@20"


def seeds_of(values_per_seed: list[np.ndarray], users: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """Per-user results of several seeds, as ``runs.load_per_user`` returns them."""
    users = np.arange(len(values_per_seed[0])) if users is None else users
    return [{"users": users.copy(), METRIC: np.asarray(v, float)} for v in values_per_seed]


def shuffled(per_seed: list[dict[str, np.ndarray]], seed: int) -> list[dict[str, np.ndarray]]:
    """The same results with every seed's users listed in a different order."""
    rng = np.random.default_rng(seed)
    out = []
    for z in per_seed:
        order = rng.permutation(len(z["users"]))
        out.append({k: v[order] for k, v in z.items()})
    return out


# ------------------------------------------------------------------------------------ the paired rule
def test_a_known_difference_is_detected():
    rng = np.random.default_rng(0)
    base = rng.random(300)
    a = seeds_of([base + rng.normal(0, 0.05, 300) for _ in range(3)])
    b = seeds_of([base + 0.1 + rng.normal(0, 0.05, 300) for _ in range(3)])
    t = paired_over_seeds(a, b, METRIC)
    assert t.n_users == 300
    assert t.diff == pytest.approx(0.1, abs=0.01)
    assert t.ci_low > 0.08 and t.ci_high < 0.12
    assert t.t_pvalue < 1e-6 and t.wilcoxon_pvalue < 1e-6
    assert verdict(t) == "better"
    assert verdict(paired_over_seeds(b, a, METRIC)) == "worse"


def test_noise_alone_is_not_significant():
    rng = np.random.default_rng(1)
    base = rng.random(300)
    a = seeds_of([base + rng.normal(0, 0.05, 300) for _ in range(3)])
    b = seeds_of([base + rng.normal(0, 0.05, 300) for _ in range(3)])
    t = paired_over_seeds(a, b, METRIC)
    assert t.t_pvalue > 0.05 and verdict(t) == "no significant difference"


def test_identical_inputs_give_p_one():
    rng = np.random.default_rng(2)
    a = seeds_of([rng.random(50) for _ in range(2)])
    t = paired_over_seeds(a, a, METRIC)
    assert t.diff == 0.0 and t.ci_low == 0.0 and t.ci_high == 0.0
    assert t.t_pvalue == 1.0 and t.wilcoxon_pvalue == 1.0
    assert verdict(t) == "no significant difference"


def test_a_constant_shift_is_handled():
    """Every user differs by the same amount: the t statistic is undefined (zero variance); whatever
    scipy returns (NaN or 0), nothing crashes and the table prints it."""
    rng = np.random.default_rng(3)
    v = rng.random(40)
    t = paired_over_seeds(seeds_of([v]), seeds_of([v + 0.25]), METRIC)
    assert t.diff == pytest.approx(0.25)
    assert math.isnan(t.t_pvalue) or t.t_pvalue < 0.05
    assert pvalue(t.t_pvalue) in (DASH, f"{t.t_pvalue:.3g}")
    assert verdict(t) in ("better", "no significant difference")


def test_one_observation_per_user_averaged_over_seeds():
    """The mean over seeds of each user, not (seed, user) pairs: n is the number of users, and the
    test equals a plain paired test on the seed means."""
    rng = np.random.default_rng(4)
    va = [rng.random(80) for _ in range(3)]
    vb = [rng.random(80) + 0.05 for _ in range(3)]
    t = paired_over_seeds(seeds_of(va), seeds_of(vb), METRIC)
    assert t.n_users == 80
    assert t.mean_a == pytest.approx(np.mean(va))
    from scipy import stats

    assert t.t_pvalue == pytest.approx(stats.ttest_rel(np.mean(vb, 0), np.mean(va, 0)).pvalue)
    users, mean = seed_mean_per_user(seeds_of(va), METRIC)
    np.testing.assert_array_equal(users, np.arange(80))
    np.testing.assert_allclose(mean, np.mean(va, 0))


def test_users_are_aligned_by_id_not_by_position():
    rng = np.random.default_rng(5)
    users = rng.choice(10_000, size=120, replace=False)
    va = [rng.random(120) for _ in range(3)]
    vb = [v + rng.normal(0.02, 0.05, 120) for v in va]
    a, b = seeds_of(va, users), seeds_of(vb, users)
    ref = paired_over_seeds(a, b, METRIC)
    # every seed of both sides in its own user order: the same test
    t = paired_over_seeds(shuffled(a, 10), shuffled(b, 11), METRIC)
    assert t.n_users == ref.n_users
    assert t.diff == pytest.approx(ref.diff, abs=1e-12)
    assert t.t_pvalue == pytest.approx(ref.t_pvalue, rel=1e-9)
    assert t.wilcoxon_pvalue == pytest.approx(ref.wilcoxon_pvalue, rel=1e-9)
    # pairing by position instead would give another answer (guards the check above)
    wrong = [{"users": z["users"][np.argsort(z["users"])], METRIC: z[METRIC]} for z in shuffled(b, 11)]
    assert paired_over_seeds(a, wrong, METRIC).t_pvalue != pytest.approx(ref.t_pvalue, rel=1e-3)


def test_only_users_every_seed_and_both_models_evaluated():
    v = np.arange(10, dtype=float)
    a = [{"users": np.arange(10), METRIC: v}, {"users": np.arange(2, 10), METRIC: v[2:] + 1}]
    users, mean = seed_mean_per_user(a, METRIC)
    np.testing.assert_array_equal(users, np.arange(2, 10))
    np.testing.assert_allclose(mean, v[2:] + 0.5)
    b = [{"users": np.arange(5, 15), METRIC: np.arange(5, 15, dtype=float)}]
    t = paired_over_seeds(a, b, METRIC)
    assert t.n_users == 5                      # users 5..9
    assert t.diff == pytest.approx(-0.5)


def test_unknown_metric_and_no_shared_users_are_user_errors():
    a = seeds_of([np.random.default_rng(6).random(10)])
    with pytest.raises(PrismrecError, match="recall@99"):
        paired_over_seeds(a, a, "recall@99")
    b = [{"users": np.arange(100, 110), METRIC: np.zeros(10)}]
    with pytest.raises(PrismrecError, match="share 0 evaluated users"):
        paired_over_seeds(a, b, METRIC)


# ---------------------------------------------------------------------------------------- tables
def test_cell_formats():
    assert mean_std(0.123456, 0.001) == "0.1235 ± 0.0010"
    assert mean_std(0.5, None) == "0.5000"
    assert mean_std(float("nan"), 0.1) == DASH
    assert pvalue(0.012345) == "0.0123" and pvalue(None) == DASH and pvalue(float("nan")) == DASH


def test_markdown_layout_caption_and_escaping():
    t = Table(["model", "recall@20"], caption="Test metrics on `demo`.")
    t.add("`a|b`", "0.1000").add("c")
    assert t.markdown().splitlines() == ["Test metrics on `demo`.", "", "| model | recall@20 |", "|---|---|",
                                         "| `a\\|b` | 0.1000 |", "| c |  |"]
    assert t.csv().splitlines() == ["model,recall@20", "`a|b`,0.1000", "c,"]
    with pytest.raises(ValueError):
        t.add("x", "y", "z")


def test_best_is_marked_per_column():
    rows = [{"entry": "bpr", "recall@20_mean": 0.10, "recall@20_std": 0.01, "ndcg@20_mean": 0.07, "ndcg@20_std": 0.0},
            {"entry": "lightgcn", "recall@20_mean": 0.12, "recall@20_std": 0.02, "ndcg@20_mean": 0.05,
             "ndcg@20_std": 0.001}]
    t = seed_summary_table(rows, ["recall@20", "ndcg@20"], best=True, caption=protocol_caption("demo", [0, 1]))
    lines = t.markdown().splitlines()
    assert lines[0] == "Test metrics on `demo`, mean ± std over seeds 0, 1 (epoch chosen on validation)."
    assert lines[2] == "| model | recall@20 | ndcg@20 |"
    assert lines[4] == "| `bpr` | 0.1000 ± 0.0100 | **0.0700 ± 0.0000** |"
    assert lines[5] == "| `lightgcn` | **0.1200 ± 0.0200** | 0.0500 ± 0.0010 |"
    plain = seed_summary_table(rows, ["recall@20"]).markdown()
    assert "**" not in plain


def test_best_rows_ties_nan_and_direction():
    assert best_rows([0.1, float("nan"), 0.3, 0.3]) == {2, 3}
    assert best_rows([0.1, None, 0.3], higher_is_better=False) == {0}
    assert best_rows([float("nan")]) == set()
    t = Table(["m", "v"]).add("a", "1").add("b", "2")
    t.mark_best("v", [1.0, 2.0], higher_is_better=False)
    assert [r[1] for r in t.rows] == ["**1**", "2"]


def test_metrics_table_matches_the_cli_layout():
    md = metrics_table({"recall@10": 0.1, "recall@20": 0.2, "ndcg@10": 0.05}, "title").markdown()
    assert md.splitlines() == ["title", "", "| metric | @10 | @20 |", "|---|---|---|",
                               "| ndcg | 0.0500 | – |", "| recall | 0.1000 | 0.2000 |"]
