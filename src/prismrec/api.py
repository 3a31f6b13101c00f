"""The Python API: the same operations as the CLI, returning objects instead of printing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .compare import Comparison, TuneResult
from .compare import compare as _compare
from .compare import tune as _tune
from .config import OverridesLike, parse_overrides
from .data import Dataset, Modality, load_dataset, read_dataset
from .evaluate.significance import PairedTest
from .runs import Run, compare_runs, evaluate_run, load_run, train_run

__all__ = ["train", "evaluate", "load_run", "compare", "tune", "paired_test", "list_models", "load_dataset",
           "read_dataset", "Dataset", "Modality", "Run", "datasets", "describe_models", "extract_features", "align",
           "feature_quality", "export", "serve", "explain", "recommend_batch", "report"]


def train(model: str, data: str | Path | Dataset, out: str | Path | None = None, *, seed: int | None = None,
          epochs: int | None = None, config: str | Path | Sequence[str | Path] = (),
          overrides: OverridesLike = (), resume: bool = False, progress: bool = False,
          device: str | None = None, track: str | None = None, track_uri: str | None = None) -> Run:
    """Train ``model`` on ``data`` (name, path or :class:`Dataset`); ``out=None`` keeps it in memory.

    ``overrides`` is a mapping of typed values (``{"n_layers": 2, "train.learning_rate": 1e-3,
    "data": {"split": "loo"}}``; a section may also be a config object such as ``TrainConfig(epochs=3)``),
    or ``KEY=VALUE`` strings as on the command line. ``track="tensorboard"`` or ``"mlflow"`` logs the run
    (:mod:`prismrec.track`; ``track_uri``: where).
    """
    from .track import tracking

    files = [config] if isinstance(config, (str, Path)) else list(config)
    with tracking(track, out, track_uri, command="train"):
        return train_run(model, data, out, config_files=files, overrides=parse_overrides(overrides), seed=seed,
                         epochs=epochs, resume=resume, progress=progress, device=device)


def evaluate(run_dir: str | Path, stage: str = "test", overrides: OverridesLike = ()) -> dict[str, float]:
    """Re-score a saved run on its saved split; ``overrides`` change only how it is scored
    (``{"train.mask_history": False}``: the other protocol, without retraining)."""
    return evaluate_run(run_dir, stage, overrides)


def compare(models: Sequence[str], data: str | Path, out: str | Path, *, seeds: Sequence[int] = (0,),
            config: Sequence[str | Path] = (), overrides: OverridesLike = (), epochs: int | None = None,
            track: str | None = None, track_uri: str | None = None, **kw: Any) -> Comparison:
    """Train every model x seed (reusing finished runs) and return the comparison table.

    ``models`` are names or entries with their own settings (``"lightgcn[n_layers=2]"``); ``overrides``
    (as in :func:`train`) apply to every run, a model's own section only to that model. ``track``: as in
    :func:`train`, the runs grouped (a TensorBoard folder per run, an MLflow parent run)."""
    from .track import tracking

    with tracking(track, out, track_uri, command="compare"):
        return _compare(models, data, out, seeds=seeds, config_files=config, overrides=parse_overrides(overrides),
                        epochs=epochs, **kw)


def tune(model: str, data: str | Path, out: str | Path, grid: Mapping[str, Sequence[Any]], *,
         seeds: Sequence[int] = (0,), final_seeds: Sequence[int] = (), config: Sequence[str | Path] = (),
         overrides: OverridesLike = (), epochs: int | None = None, select: str = "recall@20",
         **kw: Any) -> TuneResult:
    """Grid search (``{"n_layers": [1, 2]}``) selected on the validation metric ``select``, then the chosen
    setting over ``final_seeds`` (reusing the trial runs)."""
    return _tune(model, data, out, grid, seeds=seeds, final_seeds=final_seeds, config_files=config,
                 overrides=parse_overrides(overrides), epochs=epochs, select=select, **kw)


def paired_test(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@20") -> PairedTest:
    """Paired t / Wilcoxon test and bootstrap CI of B - A on the users both runs evaluated."""
    return compare_runs(run_a, run_b, metric)


def list_models() -> list[str]:
    from .models import MODELS

    return MODELS.names()


# ------------------------------------------------------------------------------------------------
# Listings, features and serving: each `prismrec` command is argument parsing, one call here, printing.

def datasets(roots: Sequence[str | Path] = ()) -> list[dict[str, Any]]:
    """Bundled datasets and those under the data roots (``roots`` first, then PRISMREC_DATA and
    ./data), one statistics row each (or ``error`` when a folder cannot be read)."""
    from .data.catalog import dataset_stats

    return dataset_stats(roots)


def describe_models() -> list[dict[str, Any]]:
    """Every registered model: ``name``, ``family``, ``doc`` (first line) and ``settings`` (defaults)."""
    from .models import MODELS

    out = []
    for name in MODELS.names():
        cls = MODELS.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if (cls.__doc__ or "").strip() else ""
        out.append({"name": name, "family": cls.family, "doc": doc,
                    "settings": {k: v.default for k, v in cls.Config.model_fields.items()}})
    return out


def extract_features(modality: str, out: str | Path, **kw: Any) -> Any:
    """Encode raw item text, images, captions or prices into a feature file
    (:func:`prismrec.features.extract.extract_features`; returns its ``ExtractResult``)."""
    from .features.extract import extract_features as _extract

    return _extract(modality, out, **kw)


def _data_config(data_config: Any) -> Any:
    from .config import DataConfig

    if data_config is None or isinstance(data_config, DataConfig):
        return data_config or DataConfig()
    return DataConfig.build(dict(data_config), where="data")


def align(data: str | Path, out: str | Path, *, data_config: Any = None, modalities: Sequence[str] = (),
          epochs: int = 100, seed: int = 0, dim: int = 128) -> dict[str, Any]:
    """AlignRec stage 1 on ``data``: align ``modalities`` (default: all, two or more) into one feature
    and write it to ``out`` (.npz keyed by raw item id). Returns ``dataset``, ``modalities``, ``out``,
    ``report`` (stage-1 report) and ``available`` (items with a feature, of ``items``)."""
    from .data.features_io import save_item_features
    from .errors import PrismrecError
    from .models.general.alignrec_stage1 import AlignConfig, train_alignment

    ds = load_dataset(data, _data_config(data_config))
    names = sorted(modalities or ds.modalities)
    unknown = [n for n in names if n not in ds.modalities]
    if unknown or len(names) < 2:
        raise PrismrecError(f"prismrec align needs two or more modalities; dataset '{ds.name}' has "
                            f"{', '.join(sorted(ds.modalities)) or 'none'}"
                            + (f" (unknown: {', '.join(unknown)})" if unknown else "") + ".")
    res = train_alignment({n: ds.modalities[n] for n in names}, AlignConfig(epochs=epochs, seed=seed, dim=dim))
    rep = res.report
    save_item_features(out, ds.item_ids, res.values, available=res.available,
                       provenance={"encoder": "prismrec align (AlignRec stage 1)", "dataset": ds.name,
                                   "modalities": names, "settings": rep["settings"],
                                   "epochs_run": rep["epochs_run"], "best_epoch": rep["best_epoch"]})
    return {"dataset": ds.name, "modalities": names, "out": Path(out), "report": rep,
            "available": int(res.available.sum()), "items": len(res.available)}


def feature_quality(data: str | Path, *, data_config: Any = None, modalities: Sequence[str] | None = None,
                    k: int = 20, aligned: bool = False, mask_ratio: float = 0.5, seed: int = 0,
                    stage: str = "test", out: str | Path | None = None) -> Any:
    """Judge item features without training a recommender (zero-shot, item-kNN CF, masked modality) on
    the split ``data_config`` describes; with ``out``, also write the results as JSON."""
    from .data import make_split
    from .evaluate.feature_quality import feature_quality as _feature_quality
    from .models.general.alignrec_stage1 import AlignConfig

    cfg = _data_config(data_config)
    ds = load_dataset(data, cfg)
    rep = _feature_quality(ds, make_split(ds, cfg), modalities=modalities or None, k=k, aligned=aligned,
                           align_cfg=AlignConfig(seed=seed), mask_ratio=mask_ratio, seed=seed, stage=stage,
                           filter_cold_users=cfg.filter_cold_users)
    if out is not None:
        from .utils.io import write_json

        write_json(out, rep.as_dict())
    return rep


def export(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Any:
    """Write a serving bundle of a finished run and return it loaded (``serve.bundle.Bundle``)."""
    from .serve.bundle import export_bundle, load_bundle

    return load_bundle(export_bundle(run_dir, out, overwrite=overwrite))


def serve(bundle: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          log_level: str = "info", workers: int = 1, **settings: Any) -> None:
    """Serve a bundle over HTTP until interrupted. ``api_key`` defaults to ``PRISMREC_API_KEY``;
    ``settings`` are :class:`prismrec.serve.app.ServeSettings` fields (``max_k``, ``cold_start``,
    ``store_url``, ...). ``workers > 1`` runs that many service processes over one item store."""
    import os

    from .errors import PrismrecError

    key = api_key if api_key is not None else os.environ.get("PRISMREC_API_KEY", "")
    if not key:
        raise PrismrecError("PRISMREC_API_KEY is not set. Fix: export PRISMREC_API_KEY=<a secret>; clients send it "
                            "in the X-API-Key header.")
    try:
        import uvicorn
    except ImportError:
        raise PrismrecError("prismrec serve needs uvicorn and fastapi. Fix: pip install 'prismrec[serve]'.") from None
    from .serve.app import ServeSettings, create_app, settings_to_env

    cfg = ServeSettings(api_key=key, **settings)
    import logging

    logging.getLogger("prismrec").info("starting the service for %s on http://%s:%d (%d process%s; Ctrl-C stops it)",
                                       bundle, host, port, workers, "es" if workers > 1 else "")
    if workers > 1:  # each process builds the app from the environment; they share the item store
        os.environ.update(settings_to_env(bundle, cfg))
        uvicorn.run("prismrec.serve.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                    timeout_keep_alive=30, log_level=log_level)
        return
    uvicorn.run(create_app(bundle, cfg), host=host, port=port, timeout_keep_alive=30, log_level=log_level)


def explain(run_dir: str | Path, user: str, k: int = 5, *, plot: str | Path | bool = True) -> tuple[Any, Path | None]:
    """Attribute a sequential run's top-``k`` recommendations for raw ``user`` to history items and
    modalities. ``plot``: a PNG path, True (``RUN_DIR/explain/<user>.png``) or False (none).
    Returns the explanation and the plot's path (or None)."""
    from .evaluate.explain import explain_user

    ex = explain_user(load_run(run_dir), user, k)
    if plot is False:
        return ex, None
    if plot is True:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(user))
        plot = Path(run_dir) / "explain" / f"{safe}.png"
    return ex, ex.plot(plot)


def recommend_batch(run_dir: str | Path, out: str | Path, users: str | Path | Sequence[Any] = "all", k: int = 10, *,
                    exclude_seen: bool = True, chunk_users: int | None = None, progress: bool = False,
                    device: str | None = None) -> dict[str, Any]:
    """Top-``k`` items of many users of a saved run, written to ``out`` (``.csv`` or ``.parquet``) chunk by
    chunk (:mod:`prismrec.batch`). ``users``: ``"all"`` (every user of the run's dataset), a file of raw
    ids (one per line, or a CSV with a ``user`` column) or a sequence of raw ids. Returns ``out``,
    ``users``, ``rows`` and ``format``."""
    from .batch import output_format, users_from_file, write_recommendations

    output_format(out)  # a bad file name fails before the model is loaded
    run = load_run(run_dir, device=device)
    if isinstance(users, str) and users == "all":
        ids = None
    elif isinstance(users, (str, Path)):
        ids = users_from_file(users, run.dataset.user_index)
    else:
        ids = [str(u) for u in users]
    return write_recommendations(run, out, ids, k, exclude_seen=exclude_seen, chunk_users=chunk_users,
                                 progress=progress)


def report(paths: str | Path | Sequence[str | Path], out: str | Path | None = None, *, title: str | None = None,
           explain: bool = True) -> Path:
    """Write one self-contained HTML report (:mod:`prismrec.report.html`) of run directories, compare
    folders, tune folders, transfer-report folders and feature-quality JSON files; returns its path
    (default: ``DIR/report.html`` for one folder, ``./report.html`` for several). ``explain=False`` leaves
    out the attribution example of sequential runs."""
    from .report.html import write_report

    return write_report([paths] if isinstance(paths, (str, Path)) else list(paths), out, title=title,
                        explain=explain)
