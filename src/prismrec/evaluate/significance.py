"""Paired comparison of two runs on the same users (per-user metrics saved by each run)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import PrismrecError


@dataclass
class PairedTest:
    metric: str
    n_users: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)

    def summary(self, name_a: str = "A", name_b: str = "B") -> str:
        better = name_b if self.diff > 0 else name_a
        sig = "significant" if self.t_pvalue < 0.05 and self.wilcoxon_pvalue < 0.05 else "not significant"
        return (f"{self.metric}: {name_a} {self.mean_a:.4f} vs {name_b} {self.mean_b:.4f} on {self.n_users} users; "
                f"diff (B-A) {self.diff:+.4f} [95% CI {self.ci_low:+.4f}, {self.ci_high:+.4f}], "
                f"paired t p={self.t_pvalue:.3g}, Wilcoxon p={self.wilcoxon_pvalue:.3g} -> {better} ahead, {sig} at 0.05")


def paired_test(users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray,
                metric: str, n_boot: int = 2000, seed: int = 0) -> PairedTest:
    """Paired t-test, Wilcoxon signed-rank test and a bootstrap CI of the mean difference (B - A),
    over the users both runs evaluated."""
    common, ia, ib = np.intersect1d(users_a, users_b, return_indices=True)
    if len(common) < 2:
        raise PrismrecError(f"the two runs share {len(common)} evaluated users; a paired test needs the same "
                            "dataset and split. Fix: compare runs trained on the same data and split.")
    a, b = np.asarray(values_a)[ia], np.asarray(values_b)[ib]
    d = b - a
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    if np.allclose(d, 0):
        t_p = w_p = 1.0
    else:
        t_p = float(stats.ttest_rel(b, a).pvalue)
        w_p = float(stats.wilcoxon(d, zero_method="wilcox").pvalue) if np.any(d != 0) else 1.0
    return PairedTest(metric, len(common), float(a.mean()), float(b.mean()), float(d.mean()),
                      float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)), t_p, w_p)
