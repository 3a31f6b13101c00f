"""Evaluation: full-ranking metrics, segment reports, paired significance tests."""

from .metrics import METRICS, per_user_metrics, summarise
from .ranking import EvalResult, RankingEvaluator
from .significance import PairedTest, paired_test

__all__ = ["METRICS", "EvalResult", "PairedTest", "RankingEvaluator", "paired_test", "per_user_metrics",
           "summarise"]
