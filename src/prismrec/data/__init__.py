"""Data layer: read, validate, clean and split datasets. Knows nothing of models."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .catalog import list_known, resolve_source
from .dataset import Dataset, Modality, build_dataset
from .preprocess import preprocess
from .split import Split, make_split

__all__ = ["Dataset", "Modality", "Split", "DataConfig", "build_dataset", "load_dataset", "make_split",
           "preprocess", "read_dataset", "list_known", "resolve_source"]


def read_dataset(source: str | Path, cfg: DataConfig | None = None) -> Dataset:
    """Read a dataset (bundled name, data-root name or path) without cleaning it."""
    from .features_io import attach_features
    from .readers import read_path

    cfg = cfg or DataConfig()
    return attach_features(read_path(resolve_source(source), cfg), cfg.extra_features)


def load_dataset(source: str | Path, cfg: DataConfig | None = None, **overrides) -> Dataset:
    """Read and clean a dataset as a run would (modality selection, de-duplication, k-core).

    ``overrides`` are :class:`DataConfig` fields, e.g. ``load_dataset("demo", kcore=5)``.
    """
    cfg = cfg or DataConfig()
    if overrides:
        cfg = DataConfig.build({**cfg.model_dump(), **overrides}, where="data")
    return preprocess(read_dataset(source, cfg), cfg)
