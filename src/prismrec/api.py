"""The Python API: the same operations as the CLI, returning objects instead of printing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .compare import Comparison
from .compare import compare as _compare
from .data import Dataset, Modality, load_dataset, read_dataset
from .evaluate.significance import PairedTest
from .runs import Run, compare_runs, evaluate_run, load_run, train_run

__all__ = ["train", "evaluate", "load_run", "compare", "paired_test", "list_models", "load_dataset", "read_dataset",
           "Dataset", "Modality", "Run"]


def train(model: str, data: str | Path | Dataset, out: str | Path | None = None, *, seed: int | None = None,
          epochs: int | None = None, config: str | Path | Sequence[str | Path] = (),
          overrides: Mapping[str, Any] | Sequence[str] = (), resume: bool = False, progress: bool = False,
          device: str | None = None) -> Run:
    """Train ``model`` on ``data`` (name, path or :class:`Dataset`); ``out=None`` keeps it in memory.

    ``overrides`` is a mapping (``{"n_layers": 2, "train.learning_rate": 1e-3}``) or ``KEY=VALUE`` strings.
    """
    files = [config] if isinstance(config, (str, Path)) else list(config)
    sets = [f"{k}={_yaml(v)}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else list(overrides)
    return train_run(model, data, out, config_files=files, overrides=sets, seed=seed, epochs=epochs,
                     resume=resume, progress=progress, device=device)


def evaluate(run_dir: str | Path, stage: str = "test") -> dict[str, float]:
    """Re-score a saved run on its saved split."""
    return evaluate_run(run_dir, stage)


def compare(models: Sequence[str], data: str | Path, out: str | Path, *, seeds: Sequence[int] = (0,),
            config: Sequence[str | Path] = (), overrides: Sequence[str] = (), epochs: int | None = None,
            **kw: Any) -> Comparison:
    """Train every model x seed (reusing finished runs) and return the comparison table."""
    return _compare(models, data, out, seeds=seeds, config_files=config, overrides=overrides, epochs=epochs, **kw)


def paired_test(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@20") -> PairedTest:
    """Paired t / Wilcoxon test and bootstrap CI of B - A on the users both runs evaluated."""
    return compare_runs(run_a, run_b, metric)


def list_models() -> list[str]:
    from .models import MODELS

    return MODELS.names()


def _yaml(v: Any) -> str:
    import json

    return json.dumps(v) if not isinstance(v, str) else v

