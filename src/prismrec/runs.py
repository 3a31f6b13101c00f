"""Run directories: train a model into one, reload it, re-evaluate it, recommend from it, compare many.

A run directory holds everything needed to reproduce and reuse a run::

    config.yaml        the resolved configuration (data, train, model sections, seed, data source)
    split.npz          the split (every interaction's label), checked against the data on reload
    checkpoint.pt      last finished epoch: model, optimiser, scheduler, early-stopping state
    model.pt           weights of the best validation epoch (state dict, weights_only loadable)
    history.jsonl      one line per epoch: loss terms, validation metrics, seconds
    metrics.json       model, best_epoch, valid, test, seed, epochs_run, train_seconds, ... (written last)
    per_user_test.npz  per-user test metrics, for paired tests between runs

The CLI and the Python API both call these functions; nothing here prints.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from . import __version__
from .config import OverridesLike, RunConfig, parse_overrides, read_yaml, resolve_config
from .data import Dataset, load_dataset
from .data.catalog import canonical_source
from .data.split import Split, make_split
from .data.training import TrainingData
from .errors import PrismrecError
from .evaluate.ranking import EvalResult, RankingEvaluator, auto_chunk, rows_of, top_k
from .evaluate.segments import activity_buckets, item_groups
from .evaluate.significance import PairedTest, paired_test
from .models import MODELS, Recommender
from .train.trainer import BEST, Trainer, TrainResult
from .utils import distributed as dist
from .utils.io import check_out_dir, clean_temp_files, load_torch, make_dir, read_json, write_json, write_npz, write_text, write_yaml
from .utils.runtime import peak_rss_mb, resolve_device, seed_everything, set_threads

log = logging.getLogger("prismrec")

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.npz"
PER_USER_FILE = "per_user_test.npz"
INPUTS_FILE = "inputs.json"
TRAINED_AS_FILE = "trained_as.json"  # a run copied from the run that trained it (adopt_trained)
#: settings that change how a run executes, not what it computes: they may differ on resume / reuse
RUNTIME_KEYS = (("train", "device"), ("train", "threads"))


@dataclass
class Run:
    """A trained model with its data, split and configuration, ready to evaluate or recommend."""

    run_dir: Path | None
    config: RunConfig
    dataset: Dataset
    split: Split
    model: Recommender
    metrics: dict[str, Any] = field(default_factory=dict)

    def recommend(self, users: Sequence[Any], k: int = 10, *, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` items for raw user ids: a frame with user, rank, item, score and title."""
        users = list(users)
        frames = list(self.recommend_chunks(users, k, exclude_seen=exclude_seen, chunk_users=max(len(users), 1)))
        return frames[0] if frames else _top_frame(self.dataset, np.asarray([], dtype=object),
                                                   torch.zeros(0, 0), torch.zeros(0, 0, dtype=torch.long))

    def recommend_chunks(self, users: Sequence[Any] | None = None, k: int = 10, *, exclude_seen: bool = True,
                         chunk_users: int | None = None) -> Iterator[pd.DataFrame]:
        """:meth:`recommend` for many users, one frame per chunk of ``chunk_users`` users, in the given order.

        ``users=None`` means every user of the dataset. The model prepares its scores once
        (``prepare_scoring`` on the whole history); each chunk is then scored, masked and cut to the top
        ``k`` like evaluation, so memory stays ``O(chunk x items)``. ``chunk_users`` defaults to the
        evaluation's chunk size (``train.eval_batch_users``, 0 = sized to evaluation's memory budget,
        ``evaluate.ranking.EVAL_MEMORY_BYTES``)."""
        ds = self.dataset
        if users is None:
            internal, raw = np.arange(ds.n_users), np.asarray(ds.user_ids, dtype=object)
        else:
            users = list(users)
            internal, raw = ds.users_to_internal(users), np.asarray([str(u) for u in users], dtype=object)
        chunk = auto_chunk(ds.n_items, self.config.train.eval_batch_users if chunk_users is None else chunk_users)
        history = self.split.history("all")
        self.model.eval()
        with torch.no_grad():  # never across a yield: grad mode is global state of the caller's thread
            self.model.prepare_scoring(history)
        for start in range(0, len(internal), chunk):
            part = internal[start:start + chunk]
            with torch.no_grad():
                scores = self.model.score(torch.as_tensor(part, device=self.model.device)).float().cpu()
            values, top = top_k(scores, k, rows_of(history.matrix, part) if exclude_seen else None)
            yield _top_frame(ds, raw[start:start + chunk], values, top)

    def evaluate(self, stage: str = "test", *, keep_per_user: bool = True) -> EvalResult:
        return evaluate_stage(self.model, self.split, self.config, stage, keep_per_user=keep_per_user)


def _top_frame(ds: Dataset, users: np.ndarray, values: torch.Tensor, top: torch.Tensor) -> pd.DataFrame:
    """The recommendation frame of one chunk: user, rank, item, score, title (masked items dropped)."""
    k, items = top.shape[1], top.numpy()
    frame = pd.DataFrame({
        "user": np.repeat(users, k),
        "rank": np.tile(np.arange(1, k + 1), len(users)),
        "item": ds.item_ids[items.ravel()],
        "score": values.numpy().ravel(),
        "title": ds.item_titles(items.ravel()),
    })
    frame = frame[np.isfinite(frame["score"])].reset_index(drop=True)
    frame.attrs["users"] = len(users)  # users of the chunk (one may have no row left: all items seen)
    return frame


# ---------------------------------------------------------------------------------------------------
def build_config(model: str, data: str | Path | Dataset, *, config_files: Sequence[str | Path] = (),
                 overrides: OverridesLike = (), seed: int | None = None, epochs: int | None = None) -> RunConfig:
    """Resolve a run's configuration; ``overrides`` is a typed mapping (``KEY=VALUE`` strings are parsed here)."""
    cls = MODELS.get(model)
    files = [read_yaml(p) for p in config_files]
    if not isinstance(data, Dataset):
        data = canonical_source(data)
    cfg = resolve_config(MODELS.canonical(model), cls.Config, files, parse_overrides(overrides), seed=seed,
                          data_source=data.name if isinstance(data, Dataset) else str(data), epochs=epochs, model_names=MODELS.names(),
                          model_aliases=(model.lower(), *MODELS.aliases_of(model)), defaults=cls.defaults)
    cls.resolve_run_settings(cfg.params, cfg.seed)  # settings that follow the run (AlignRec's stage-1 seed)
    return cfg


def build_model(cfg: RunConfig, ds: Dataset, split: Split) -> tuple[Recommender, TrainingData]:
    cls = MODELS.get(cfg.model)
    if len(ds.modalities) < cls.min_modalities:
        raise PrismrecError(
            f"model '{cfg.model}' needs at least {cls.min_modalities} item feature modality, and dataset "
            f"'{ds.name}' has {len(ds.modalities)}. Fix: use a dataset with *_feat.npy features "
            "(prismrec features can extract them) or a model such as lightgcn."
        )
    data = TrainingData.from_split(ds, split)
    model = cls(cfg.params, data)  # validated once, when the configuration was resolved or loaded
    return model, data


def prepare(cfg: RunConfig) -> tuple[Dataset, Split, Recommender, TrainingData, dict[str, float]]:
    """Read, validate and split ``cfg``'s data, then build its model (no run folder, nothing written): what a
    benchmark measures before it trains; the last item gives the wall seconds of ``read`` (read + split) and
    ``build``."""
    t0 = time.perf_counter()
    ds = load_dataset(cfg.data_source, cfg.data)
    split = make_split(ds, cfg.data)
    t1 = time.perf_counter()
    model, tdata = build_model(cfg, ds, split)
    return ds, split, model, tdata, {"read": t1 - t0, "build": time.perf_counter() - t1}


def evaluate_stage(model: Recommender, split: Split, cfg: RunConfig, stage: str, *,
                   keep_per_user: bool = True, with_segments: bool = True) -> EvalResult:
    ev = RankingEvaluator(split, stage, cfg.train.eval_ks, mask_valid=cfg.train.mask_valid_in_test,
                          mask_history=cfg.train.mask_history, filter_cold_users=cfg.data.filter_cold_users,
                          chunk_users=cfg.train.eval_batch_users)
    groups = item_groups(split.train) if with_segments else None
    if groups is not None and not groups["cold_items"].any():
        groups.pop("cold_items")
    res = ev.evaluate_model(model, keep_per_user=keep_per_user or with_segments, item_groups=groups)
    if with_segments:
        res.segments["user_activity"] = activity_buckets(res.per_user, res.users, split.train)  # type: ignore[assignment]
    return res


def _check_run_dir(out: Path, resume: bool) -> None:
    check_out_dir(out)  # it, or a parent folder, is a file: refused before the data is read
    if out.is_dir() and any(out.iterdir()) and not resume:
        what = "a finished run" if (out / METRICS_FILE).is_file() else "files"
        raise PrismrecError(
            f"{out} already holds {what}; nothing is overwritten. Fix: pass --resume to continue or re-use "
            "that run, or choose a new --out directory."
        )


def train_run(model: str, data: str | Path | Dataset, out: str | Path | None = None, *,
              config_files: Sequence[str | Path] = (), overrides: OverridesLike = (), seed: int | None = None,
              epochs: int | None = None, resume: bool = False, progress: bool = False,
              device: str | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
              test: bool = True) -> Run:
    """Train ``model`` on ``data`` into the run directory ``out`` (None keeps everything in memory).

    With ``resume=True`` an existing run directory continues from its last checkpoint (its saved
    configuration and split are used; a finished run is simply reloaded). ``on_epoch(row)`` gets each
    epoch's history row (with ``valid`` metrics after an evaluation; raising stops the run, e.g. a pruned
    tuning trial). ``test=False`` leaves the test set unscored (tuning trials record validation only:
    ``metrics["test"]`` is empty and no per-user test file is written).
    """
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _check_run_dir(out_path, resume)
    if out_path is not None and dist.env_rank() == 0:
        clean_temp_files(out_path)  # what a killed writer left
    if resume and out_path is not None and (out_path / CONFIG_FILE).is_file():
        requested = build_config(model, data, config_files=config_files, overrides=overrides, seed=seed,
                                 epochs=epochs)
        check_inputs(out_path, requested, data)  # the same model, settings and data, or an error
        cfg = RunConfig.from_run_dict(_load_config_dict(out_path), where="config.yaml")
        if (out_path / METRICS_FILE).is_file():
            log.info("%s is finished; reloading it", out_path)
            return load_run(out_path)
    else:
        cfg = build_config(model, data, config_files=config_files, overrides=overrides, seed=seed, epochs=epochs)
    if device:
        cfg.train.device = device
    set_threads(cfg.train.threads)
    # under torchrun: join the process group (after every rank has checked --out, before rank 0 writes)
    dev, joined = dist.setup(resolve_device(cfg.train.device))
    try:
        return _train(cfg, data, out_path, resume, progress, dev, on_epoch, test)
    finally:
        if joined:
            dist.teardown()


def _train(cfg: RunConfig, data: str | Path | Dataset, out_path: Path | None, resume: bool, progress: bool,
           dev: torch.device, on_epoch: Callable[[dict[str, Any]], None] | None, test: bool) -> Run:
    seed_everything(cfg.seed)

    ds = data if isinstance(data, Dataset) else load_dataset(cfg.data_source, cfg.data)
    writes = out_path is not None and dist.is_main()  # under torchrun only rank 0 writes
    if writes:
        make_dir(out_path, "--out folder")
    if isinstance(data, Dataset):
        from .data.preprocess import preprocess

        ds = preprocess(ds, cfg.data)
    split_path = out_path / SPLIT_FILE if out_path else None
    if resume and split_path is not None and split_path.is_file():
        split = Split.load(split_path, ds)
    else:
        split = make_split(ds, cfg.data)
        if split_path is not None and writes:
            split.save(split_path)
    if writes:
        write_yaml(out_path / CONFIG_FILE, cfg.to_run_dict())
        if not (out_path / INPUTS_FILE).is_file():
            write_json(out_path / INPUTS_FILE, {"settings": settings_of(cfg), "data": data_fingerprint(cfg, data)})

    seed_everything(cfg.seed)
    model_obj, tdata = build_model(cfg, ds, split)
    from .track import chain, run_tracker, tracked  # --track: None unless tracking is on

    tracker = run_tracker(cfg.to_run_dict(), out_path, tags={"model": cfg.model, "dataset": ds.name, "seed": cfg.seed}
                          ) if dist.is_main() else None
    trainer = Trainer(model_obj, tdata, split, cfg.train, cfg.seed, run_dir=out_path, device=dev,
                      progress=progress, filter_cold_users=cfg.data.filter_cold_users,
                      on_epoch=chain(tracker and tracker.epoch, on_epoch))
    with tracked(tracker):
        result = trainer.fit(resume=resume)
        metrics = _final_metrics(cfg, ds, split, model_obj, result, dev, out_path, test=test)
    if tracker is not None:
        tracker.finish(metrics)
    return Run(out_path, cfg, ds, split, model_obj, metrics)


def _final_metrics(cfg: RunConfig, ds: Dataset, split: Split, model: Recommender, result: TrainResult,
                   dev: torch.device, out: Path | None, test: bool = True) -> dict[str, Any]:
    valid = evaluate_stage(model, split, cfg, "valid", keep_per_user=False, with_segments=False)
    if not test:
        return _validation_metrics(cfg, ds, split, model, result, dev, out, valid)
    test = evaluate_stage(model, split, cfg, "test")
    n_params = sum(p.numel() for p in model.parameters())
    metrics: dict[str, Any] = {
        "model": cfg.model,
        "dataset": ds.name,
        "data_source": cfg.data_source,
        "best_epoch": result.best_epoch,
        "valid": valid.metrics,
        "test": test.metrics,
        "seed": cfg.seed,
        "epochs_run": result.epochs_run,
        "train_seconds": round(result.train_seconds, 3),
        "epoch_seconds": round(result.mean_epoch_seconds, 4),
        "eval_seconds": round(result.mean_eval_seconds, 4),
        "stopped_early": result.stopped_early,
        "valid_metric": cfg.train.valid_metric,
        "mask_history": cfg.train.mask_history,
        "test_users": int(len(test.users)),
        "segments": {"test": {**{k: {"users": test.segment_users.get(k), **v} for k, v in test.segments.items()
                                 if k != "user_activity"},
                              "user_activity": test.segments.get("user_activity", {})}},
        "split": {"rule": split.rule, **split.counts()},
        "n_params": int(n_params),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": str(dev),
        **({"distributed": {"processes": dist.world(), "backend": dist.backend()}} if dist.active() else {}),
        "versions": {"prismrec": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"model_info": model.extra_info()} if model.extra_info() else {}),
    }
    ratios = [h["grad_ratio_id_over_feature"] for h in result.history if "grad_ratio_id_over_feature" in h]
    if ratios:
        metrics["grad_ratio_id_over_feature"] = {"first_epoch": ratios[0], "last_epoch": ratios[-1],
                                                 "mean": float(np.mean(ratios))}
    if out is not None and dist.is_main():
        write_text(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in result.history))
        write_npz(out / PER_USER_FILE, users=test.users, **{k: v for k, v in test.per_user.items()})
        write_json(out / METRICS_FILE, metrics)
    return metrics


def _validation_metrics(cfg: RunConfig, ds: Dataset, split: Split, model: Recommender, result: TrainResult,
                        dev: torch.device, out: Path | None, valid: EvalResult) -> dict[str, Any]:
    """metrics.json of a run whose test set is left unscored (a tuning trial)."""
    metrics: dict[str, Any] = {
        "model": cfg.model, "dataset": ds.name, "data_source": cfg.data_source, "best_epoch": result.best_epoch,
        "valid": valid.metrics, "test": {}, "test_skipped": True, "seed": cfg.seed, "epochs_run": result.epochs_run,
        "train_seconds": round(result.train_seconds, 3), "epoch_seconds": round(result.mean_epoch_seconds, 4),
        "eval_seconds": round(result.mean_eval_seconds, 4), "stopped_early": result.stopped_early,
        "valid_metric": cfg.train.valid_metric, "split": {"rule": split.rule, **split.counts()},
        "peak_rss_mb": round(peak_rss_mb(), 1), "device": str(dev),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if out is not None and dist.is_main():
        write_text(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in result.history))
        write_json(out / METRICS_FILE, metrics)
    return metrics


def _load_config_dict(run_dir: Path) -> dict[str, Any]:
    return read_yaml(run_dir / CONFIG_FILE)


# ------------------------------------------------------------------------------------- run inputs
def settings_of(cfg: RunConfig) -> dict[str, Any]:
    """The resolved settings that determine a run's results (runtime-only keys left out)."""
    d = cfg.to_run_dict()
    for section, key in RUNTIME_KEYS:
        d.get(section, {}).pop(key, None)
    return d


def data_fingerprint(cfg: RunConfig, data: Any, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data a run reads: its source files (size, mtime, content hash), or the interactions of a
    :class:`Dataset` given in memory."""
    from .data.catalog import resolve_source
    from .data.fingerprint import fingerprint_source
    from .data.split import dataset_fingerprint

    if isinstance(data, Dataset):
        return {"in_memory": dataset_fingerprint(data)}
    return fingerprint_source(resolve_source(cfg.data_source), known)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "columns":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _defaults_of(cfg: RunConfig) -> dict[str, Any]:
    """The default of every setting of ``cfg``'s sections (``data``, ``train``, the model's ``params``) in
    :func:`settings_of`'s layout; settings without a default are left out."""
    from pydantic_core import PydanticUndefined, to_jsonable_python

    out: dict[str, Any] = {}
    for section, obj in (("data", cfg.data), ("train", cfg.train), ("params", cfg.params)):
        fields = {name: f.get_default(call_default_factory=True) for name, f in type(obj).model_fields.items()}
        out[section] = {k: to_jsonable_python(v) for k, v in fields.items() if v is not PydanticUndefined}
    return out


def input_differences(run_dir: Path, cfg: RunConfig, data: Any) -> list[str]:
    """What differs between the run in ``run_dir`` and a run of ``cfg`` on ``data`` (empty: the same).

    Runs written before runs recorded their inputs are checked on their settings (``config.yaml``); their
    data fingerprint is recorded now."""
    saved_path = run_dir / INPUTS_FILE
    saved = read_json(saved_path) if saved_path.is_file() else {
        "settings": settings_of(RunConfig.from_run_dict(_load_config_dict(run_dir), where=str(run_dir / CONFIG_FILE)))}
    a, b = _flatten(saved["settings"]), _flatten(settings_of(cfg))
    # a setting added after the run was made is, at its default, what the run did (a new setting's default
    # keeps the old behaviour), so it is no difference
    a.update({k: v for k, v in _flatten(_defaults_of(cfg)).items() if k not in a and k in b})
    diffs = [f"{k}: the run has {a.get(k, '(unset)')!r}, this call asks for {b.get(k, '(unset)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    now = data_fingerprint(cfg, data, saved.get("data"))
    if "data" in saved:
        from .data.fingerprint import diff_fingerprints

        diffs += diff_fingerprints(saved["data"], now)
    if not diffs and saved.get("data") != now:  # first check of an old run, or touched-but-equal files
        write_json(saved_path, {"settings": saved["settings"], "data": now})
    return diffs


def check_inputs(run_dir: Path, cfg: RunConfig, data: Any) -> None:
    """Refuse to reuse or resume ``run_dir`` for different inputs, saying what differs."""
    diffs = input_differences(run_dir, cfg, data)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise PrismrecError(
            f"{run_dir} holds a run of different inputs, so it is neither reused nor resumed: {shown}. "
            "Fix: choose a new --out folder (nothing is overwritten), or repeat the run's own settings.")


def reuse_finished(run_dir: Path, model: str, data: Any, **build: Any) -> dict[str, Any] | None:
    """The metrics of the finished run in ``run_dir`` if it was made from the same inputs; None when there
    is no finished run; an error when the inputs differ."""
    if not (run_dir / METRICS_FILE).is_file():
        return None
    check_inputs(run_dir, build_config(model, data, **build), data)
    return read_json(run_dir / METRICS_FILE)


def adopt_trained(src: Path, run_dir: Path, model: str, data: Any, **build: Any) -> bool:
    """Make ``run_dir`` a copy of the run ``src`` trained for the same inputs but with its test set left unscored
    (a tuning trial: the selected setting at the trial seed), to be resumed: ``train_run(..., resume=True)`` then
    stops at once (the copied checkpoint has stopped) and scores the test set with the copied best weights, so
    the run is not trained a second time. False, and nothing written, when ``run_dir`` exists, ``src`` is not a
    finished run with its checkpoint and weights, or its inputs differ."""
    import shutil

    from .train.trainer import CHECKPOINT

    if run_dir.exists() or not all((src / f).is_file() for f in (METRICS_FILE, CHECKPOINT, BEST, CONFIG_FILE)):
        return False
    if input_differences(src, build_config(model, data, **build), data):
        return False
    tmp = run_dir.with_name(run_dir.name + ".adopting")
    shutil.rmtree(tmp, ignore_errors=True)  # what a killed copy left
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(METRICS_FILE, PER_USER_FILE))
    write_json(tmp / TRAINED_AS_FILE, {"run": str(src.resolve())})  # where its training (and its time) was counted
    tmp.rename(run_dir)
    log.info("%s: the run trained as %s, its test set scored now", run_dir, src)
    return True


def _require_run(run_dir: Path) -> None:
    if not (run_dir / CONFIG_FILE).is_file():
        raise PrismrecError(f"{run_dir} is not a prismrec run directory (no {CONFIG_FILE}). "
                            "Fix: pass the --out directory of a `prismrec train` run.")
    if not (run_dir / BEST).is_file():
        raise PrismrecError(f"{run_dir} has no trained weights ({BEST}); the run never finished an evaluation. "
                            f"Fix: prismrec train ... --out {run_dir} --resume")


def load_run(run_dir: str | Path, *, device: str | None = None) -> Run:
    """Rebuild a saved run: its data (from the recorded source), split, model and best weights."""
    run_dir = Path(run_dir)
    _require_run(run_dir)
    cfg = load_run_config(run_dir)
    ds = load_dataset(cfg.data_source, cfg.data)
    split = Split.load(run_dir / SPLIT_FILE, ds)
    model, _ = build_model(cfg, ds, split)
    dev = resolve_device(device or cfg.train.device)
    model.load_state_dict(load_torch(run_dir / BEST, map_location=dev))
    model.to(dev)
    model.eval()
    metrics = read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
    return Run(run_dir, cfg, ds, split, model, metrics)


#: settings that change how a finished run is scored, not what it learned: ``prismrec evaluate --set`` may
#: change them (e.g. ``train.mask_history=false``: RecBole's protocol for sequential models)
EVALUATION_KEYS = ("train.mask_history", "train.mask_valid_in_test", "train.topk", "train.eval_batch_users")


def with_evaluation_settings(cfg: RunConfig, overrides: OverridesLike) -> RunConfig:
    """``cfg`` with its evaluation settings (:data:`EVALUATION_KEYS`) changed; any other key is an error."""
    changes = parse_overrides(overrides)
    bad = [k for k in changes if k not in EVALUATION_KEYS]
    if bad:
        raise PrismrecError(
            f"{', '.join(bad)} cannot change when a finished run is re-scored: only how it is evaluated can "
            f"({', '.join(EVALUATION_KEYS)}). Fix: drop those --set options, or train a new run with them.")
    if not changes:
        return cfg
    train = cfg.train.model_dump()
    train.update({k.split(".", 1)[1]: v for k, v in changes.items()})
    return cfg.model_copy(update={"train": type(cfg.train).model_validate(train)})


def protocol_of(cfg: RunConfig) -> str:
    """How a run's ranking treats the user's known items, for captions: ``history masked`` (the default) or
    ``history not masked`` (RecBole's full ranking of sequential models: UniSRec, VQ-Rec, MISSRec)."""
    return "history masked" if cfg.train.mask_history else "history not masked"


def masked_history(run_dir: str | Path) -> bool | None:
    """Whether a finished run ranked with the user's history masked (its metrics.json; runs written before
    metrics.json recorded it: their config.yaml); None when the folder says neither."""
    metrics = read_json(Path(run_dir) / METRICS_FILE) if (Path(run_dir) / METRICS_FILE).is_file() else {}
    if "mask_history" in metrics:
        return bool(metrics["mask_history"])
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return None
    return bool(RunConfig.from_run_dict(_load_config_dict(Path(run_dir)), where=str(Path(run_dir) / CONFIG_FILE))
                .train.mask_history)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved configuration a run directory was trained with (its ``config.yaml``)."""
    run_dir = Path(run_dir)
    _require_run(run_dir)
    return RunConfig.from_run_dict(_load_config_dict(run_dir), where=str(run_dir / CONFIG_FILE))


def evaluate_run(run_dir: str | Path, stage: str = "test", overrides: OverridesLike = ()) -> dict[str, float]:
    """Re-score a saved run's best weights on its saved split; returns the mean metrics.

    ``overrides`` change only how it is scored (:data:`EVALUATION_KEYS`), e.g. ``train.mask_history=false``
    scores a run trained and selected under the masked protocol without masking the history."""
    run = load_run(run_dir)
    run.config = with_evaluation_settings(run.config, overrides)
    return run.evaluate(stage, keep_per_user=False).metrics


def compare_runs(run_a: str | Path, run_b: str | Path, metric: str = "ndcg@20") -> PairedTest:
    """Paired test between two finished runs on the users both evaluated."""
    za, zb = load_per_user(Path(run_a)), load_per_user(Path(run_b))
    if metric not in za or metric not in zb:
        known = sorted(k for k in za if k != "users")
        raise PrismrecError(f"metric {metric!r} is not in the saved per-user results; known: {', '.join(known)}.")
    return paired_test(za["users"], za[metric], zb["users"], zb[metric], metric)


def load_per_user(run_dir: Path) -> dict[str, np.ndarray]:
    p = run_dir / PER_USER_FILE
    if not p.is_file():
        raise PrismrecError(f"{run_dir} has no {PER_USER_FILE}: it is not a finished run. "
                            "Fix: pass the --out directory of a finished `prismrec train` run.")
    with np.load(p) as z:
        return {k: z[k] for k in z.files}
