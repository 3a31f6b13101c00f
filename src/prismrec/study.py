"""``prismrec tune`` on Optuna: TPE (or grid) search on VALIDATION, pruning, many workers, one study.

A study lives in ``OUT``::

    study.json          what is searched and how (model, data, space, seeds, budget, storage, metric)
    study.journal       Optuna's journal (the default storage; several processes on one machine share it)
    trials/trial-NNNN/seed-S   one run per trial and seed (validation only: the test set is never scored)
    final/<setting>/seed-S     the selected setting over the final seeds (the only test numbers)
    tune.md, trials.csv        the tables

Each trial draws a setting from the model's search space (``search_space`` on the model class, narrowed or
widened by the user), trains it with every trial seed and reports the first seed's validation curve to
Optuna epoch by epoch; a trial whose curve is below the median of the others at the same epoch is pruned
(its run folder is kept and holds ``pruned.json``). The objective is the mean validation ``select`` metric.

Workers. Every worker (``--workers N`` starts N local processes; more can join from other machines with a
database ``--storage``) runs trials until the budget (``--trials``, counting complete, pruned and running
trials) or the ``--timeout`` is reached. A worker records its host and pid in its trial: a RUNNING trial of
this host whose process is gone (a killed worker) is marked FAIL and re-queued with the same setting, and
its retry resumes the killed run from its last checkpoint. With a database storage, Optuna's heartbeat does
the same across machines (``RetryFailedTrialCallback``). A study resumes after a crash: run the same
command again (same ``--out``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import merge_overrides, parse_overrides
from .errors import ConfigError, PrismrecError
from .runs import METRICS_FILE, build_config, train_run
from .search_space import (Dist, applicable_space, decode_params, describe_space, encode_params,
                           grid_values, model_space, parse_dist, random_numbers_per_draw, suggest,
                           to_yaml)
from .utils.io import read_json, write_json, write_text

log = logging.getLogger("prismrec")

STUDY_FILE = "study.json"
JOURNAL_FILE = "study.journal"
PRUNED_FILE = "pruned.json"
HEARTBEAT_SECONDS = 10  # database storages: a trial whose worker is silent for 3 beats is failed and retried
MAX_RETRY = 3
WAIT_POLL_SECONDS = 5.0  # how often the selection looks again at trials that other workers are still running
TPE_STARTUP = 10  # random trials before TPE models the results (Optuna's default, stated in every protocol line)


def require_optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the environment
        raise PrismrecError("prismrec tune needs Optuna. Fix: pip install 'prismrec[tune]' (or pip install optuna), "
                            "or use --sampler grid --grid KEY=V1,V2 for an exact grid without it.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class OverBudget(Exception):
    """A trial drawn after the budget was reached by other workers: recorded as FAIL, never run."""


@dataclass
class StudySpec:
    """What a study searches and how; written to ``OUT/study.json`` so that workers and ``--status`` read it."""

    model: str
    data: str
    space: dict[str, Dist]
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int | None = None
    select: str = "recall@20"
    overrides: dict[str, Any] = field(default_factory=dict)
    config_files: list[str] = field(default_factory=list)
    storage: str = ""
    study_name: str = ""
    trials: int | None = 20
    timeout: float | None = None
    sampler: str = "tpe"
    sampler_seed: int = 0
    prune: bool = True
    prune_startup: int = 3  # trials that complete before any pruning
    prune_warmup: int = 2   # epochs of a trial never pruned
    start_at_defaults: bool = False  # the first trial is the run's own settings (those inside the space)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["space"] = to_yaml(self.space)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StudySpec":
        d = dict(d)
        d["space"] = {k: parse_dist(v, k) for k, v in d["space"].items()}
        return cls(**d)

    @property
    def protocol(self) -> str:
        """One line for a table's caption; says when a TPE budget is all random start-up draws."""
        budget = " and ".join(x for x in [f"{self.trials} trials" if self.trials else "",
                                          f"{self.timeout:g}s" if self.timeout else ""] if x)
        prune = (f", median pruning after {self.prune_warmup} epochs" if self.prune and self.sampler == "tpe"
                 else ", no pruning")
        start = ", the first trial at the defaults" if self.start_at_defaults else ""
        return (f"{budget} {self.sampler.upper()}{tpe_startup_note(self.trials) if self.sampler == 'tpe' else ''} "
                f"on validation {self.select} (trial seeds {self.seeds}{prune}{start})")


def tpe_startup_note(trials: int | None) -> str:
    """The protocol line's note when the whole budget is TPE's random start-up trials, else ``""``."""
    if trials and trials <= TPE_STARTUP:
        return f" (all {trials} are TPE's seeded random start-up draws: its model is used from trial {TPE_STARTUP + 1})"
    return ""


def storage_url(storage: str | None, out: Path) -> str:
    """The storage a study uses: a database URL as given, a journal file as an absolute path (a worker started
    from another folder must find the same study), by default the study folder's own ``study.journal``."""
    if storage and is_database(str(storage)):
        return str(storage)
    return str(Path(storage or Path(out) / JOURNAL_FILE).resolve())


def recorded_storage(storage: str, out: Path) -> str:
    """How study.json records the storage: ``""`` for the folder's own journal (so that the folder can be moved or
    read from anywhere and still name its own study), else the URL or the journal's absolute path."""
    return "" if storage == storage_url(None, out) else storage


def stored_storage(recorded: str, out: Path) -> str:
    """The storage a study.json names, resolved against its folder. Files written before 2026-12-05 recorded the
    default journal by a path relative to where the study was started: a relative path to a ``study.journal``
    is this folder's own journal when the folder holds one."""
    if not recorded or (not is_database(recorded) and not Path(recorded).is_absolute()
                        and Path(recorded).name == JOURNAL_FILE and (Path(out) / JOURNAL_FILE).is_file()):
        return storage_url(None, out)
    return storage_url(recorded, out)


def is_database(storage: str) -> bool:
    return "://" in storage


def make_storage(storage: str):
    """A journal file (one machine, several processes) or a database URL (several machines)."""
    optuna = require_optuna()
    if is_database(storage):
        import time

        for attempt in range(5):  # workers starting together race to create Optuna's tables: try again
            try:
                return optuna.storages.RDBStorage(
                    storage, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=3 * HEARTBEAT_SECONDS,
                    heartbeat_stale_trial_callback=getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                                                           optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRY))
            except Exception as exc:  # noqa: BLE001 - sqlalchemy's IntegrityError / ProgrammingError
                if attempt == 4 or "already exists" not in str(exc) and "duplicate key" not in str(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


def open_study(spec: StudySpec, worker_id: int = 0, *, create: bool = True):
    """The study in its storage (created on first use; ``create=False``: only read, nothing is written to the
    storage, an error when it holds no such study), with this worker's sampler and the pruner.

    TPE's random start-up draws are numbered (:func:`indexed_tpe_sampler`): the k-th trial that draws a setting
    gets the k-th draw of the ``sampler_seed`` stream in every process, so a resumed study or one shared by
    several workers tries what the same study run once in one process would. After the start-up trials, TPE's
    own stream is seeded ``sampler_seed + worker_id`` in a study that has no trial yet, and from a different
    stream (``+ 7919 x trials so far``) in one opened again (resumed, or a worker joining late).
    """
    optuna = require_optuna()

    seed = spec.sampler_seed + worker_id
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup, n_warmup_steps=spec.prune_warmup)
              if spec.prune else optuna.pruners.NopPruner())
    missing = (f"{spec.storage} holds no study named {spec.study_name!r}. Fix: pass the --out folder of a prismrec "
               "tune run (and its --storage, if it was given one).")
    if not create and not is_database(spec.storage) and not Path(spec.storage).is_file():
        raise PrismrecError(missing)
    storage = make_storage(spec.storage)
    if spec.study_name in optuna.get_all_study_names(storage):  # loaded: opening a study writes nothing to it
        study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=pruner)
    elif create:
        study = optuna.create_study(study_name=spec.study_name, storage=storage, pruner=pruner,
                                    direction="maximize", load_if_exists=True)
    else:
        raise PrismrecError(missing)
    so_far = len(study.get_trials(deepcopy=False))
    if spec.sampler == "grid":
        study.sampler = optuna.samplers.GridSampler(grid_values(spec.space), seed=seed + 7919 * so_far)
    elif spec.sampler == "tpe":
        study.sampler = indexed_tpe_sampler(spec.sampler_seed, random_numbers_per_draw(spec.space),
                                            seed + 7919 * so_far)
    else:
        raise ConfigError(f"unknown sampler {spec.sampler!r}; use tpe or grid.")
    return study


def indexed_tpe_sampler(seed: int, numbers: int, tpe_seed: int):
    """Optuna's TPE (``constant_liar``) with numbered random start-up draws: the k-th trial of a study that
    draws its setting (not queued, not a retry, not refused for the budget) gets the k-th setting of the one
    ``seed`` stream, whichever process draws it and whenever.

    Optuna's random sampler takes ``numbers`` uniform numbers per setting
    (:func:`~prismrec.search_space.random_numbers_per_draw`), so draw ``k`` is a fresh ``RandomSampler(seed)``
    that first spends ``k x numbers`` of them: the settings of an uninterrupted
    one-process study are those of Optuna's own TPE start-up, and a killed-and-resumed study, or one shared by
    several workers, draws the same ones. Once ``TPE_STARTUP`` trials are complete or pruned (TPE's rule), TPE
    models the results with its own stream, seeded ``tpe_seed``."""
    optuna = require_optuna()
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    class IndexedStartupTPESampler(optuna.samplers.TPESampler):
        def __init__(self) -> None:
            super().__init__(seed=tpe_seed, constant_liar=True, n_startup_trials=TPE_STARTUP)
            self._draw: tuple[int, Any] | None = None  # (trial number, its random sampler)

        def sample_independent(self, study, trial, param_name, param_distribution):
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if len(finished) >= TPE_STARTUP:
                return super().sample_independent(study, trial, param_name, param_distribution)
            if self._draw is None or self._draw[0] != trial.number:
                stream, one = optuna.samplers.RandomSampler(seed=seed), FloatDistribution(0.0, 1.0)
                for _ in range(numbers * _draws_before(study, trial.number)):  # one uniform number each
                    stream.sample_independent(study, trial, "skip", one)
                self._draw = (trial.number, stream)
            return self._draw[1].sample_independent(study, trial, param_name, param_distribution)

    return IndexedStartupTPESampler()


def drew_its_setting(trial) -> bool:
    """True for a trial whose setting came from the sampler: not queued (defaults and retries carry
    ``fixed_params``), not a storage's heartbeat retry (``failed_trial``), not refused for the budget."""
    queued = {"fixed_params", "failed_trial"} & trial.system_attrs.keys()
    return not queued and not trial.user_attrs.get("over_budget")


def _draws_before(study, number: int) -> int:
    """Trials numbered below ``number`` that drew their setting (:func:`drew_its_setting`)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and drew_its_setting(t))


# ------------------------------------------------------------------------------------------- workers
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study) -> list[int]:
    """RUNNING trials of this host whose worker process is gone -> FAIL, and their setting queued again
    (the retry resumes the killed run). Returns the numbers of the trials failed here."""
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not pid or pid == os.getpid() or _alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failed_reason", "worker process gone")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # another worker failed it first
            continue
        retries = int(t.user_attrs.get("retries", 0))
        if retries < MAX_RETRY:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.user_attrs.get("retry_of", t.number),
                                                      "retries": retries + 1}, skip_if_exists=False)
        failed.append(t.number)
        log.warning("trial %d: its worker (pid %s) is gone; marked failed and queued again", t.number, pid)
    return failed


def _counted(study, below: int | None = None) -> int:
    """Trials that count toward the budget: complete, pruned and running (not failed, not over budget)."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states)
               if (below is None or t.number < below) and not t.user_attrs.get("over_budget"))


def run_dir_of(out: Path, trial) -> Path:
    """A retry reuses the folder of the trial it retries, so it resumes that run."""
    from optuna.storages import RetryFailedTrialCallback

    base = trial.user_attrs.get("retry_of")
    if base is None and hasattr(trial, "_trial_id"):  # a database storage's heartbeat retry
        import warnings

        frozen = trial.study._storage.get_trial(trial._trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # retry_history is marked experimental
            history = RetryFailedTrialCallback.retry_history(frozen)
        base = history[0] if history else None
    return out / "trials" / f"trial-{int(trial.number if base is None else base):04d}"


def make_objective(spec: StudySpec, out: Path, *, progress: bool = False,
                   on_trial: Callable[[int, dict[str, Any], float | None, str], None] | None = None):
    optuna = require_optuna()

    def objective(trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if spec.trials and _counted(trial.study, below=trial.number) >= spec.trials:
            trial.set_user_attr("over_budget", True)
            raise OverBudget(f"trial {trial.number} drawn after the budget of {spec.trials} trials was reached")
        params = suggest(trial, spec.space)
        overrides = merge_overrides(spec.overrides, _qualified(spec.model, params))
        trial_dir = run_dir_of(out, trial)
        trial.set_user_attr("run_dir", str(trial_dir))
        values = []
        for i, seed in enumerate(spec.seeds):
            run_dir = trial_dir / f"seed-{seed}"
            if (run_dir / PRUNED_FILE).is_file():  # a pruned run is never continued
                raise optuna.TrialPruned()

            def on_epoch(row: dict[str, Any], first: bool = i == 0, run_dir: Path = run_dir) -> None:
                valid = row.get("valid")
                if not first or not valid or spec.select not in valid:
                    return
                trial.report(float(valid[spec.select]), int(row["epoch"]))
                if trial.should_prune():
                    write_json(run_dir / PRUNED_FILE, {"trial": trial.number, "epoch": int(row["epoch"]),
                                                       "value": float(valid[spec.select])})
                    trial.set_user_attr("epochs_run", int(row["epoch"]))
                    raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

            resume = run_dir.is_dir() and any(run_dir.iterdir())
            m = train_run(spec.model, spec.data, run_dir, config_files=spec.config_files, overrides=overrides,
                          seed=seed, epochs=spec.epochs, resume=resume, progress=progress, on_epoch=on_epoch,
                          test=False).metrics
            if i == 0:
                trial.set_user_attr("epochs_run", int(m.get("epochs_run", 0)))
                trial.set_user_attr("best_epoch", int(m.get("best_epoch", 0)))
            values.append(float(m["valid"][spec.select]))
        value = sum(values) / len(values)
        if on_trial:
            on_trial(trial.number, params, value, "complete")
        return value

    return objective


def _qualified(model: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {k if k.startswith("train.") or k.startswith("data.") else f"{model}.{k}": v for k, v in params.items()}


def run_worker(out: str | Path, worker_id: int = 0, *, progress: bool = False,
               on_trial: Callable[[int, dict[str, Any], float | None, str], None] | None = None) -> None:
    """Run trials of the study in ``out`` until its budget or timeout is reached (many may run at once)."""
    out = Path(out)
    spec = load_spec(out)
    study = open_study(spec, worker_id)
    objective = make_objective(spec, out, progress=progress, on_trial=on_trial)
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    started = _started_at(out)
    while True:
        fail_dead_trials(study)
        if spec.trials and _counted(study) >= spec.trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        if spec.timeout and started and time.time() - started >= spec.timeout:
            break  # the budget counts from the study's first start, across resumes
        if spec.sampler == "grid" and _grid_done(study, spec):
            break
        study.optimize(objective, n_trials=1, catch=(OverBudget,))


def _grid_done(study, spec: StudySpec) -> bool:
    import math

    from optuna.trial import TrialState

    n = math.prod(len(v) for v in grid_values(spec.space).values())
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) >= n


def _started_at(out: Path) -> float | None:
    p = out / "started.json"
    if not p.is_file():
        write_json(p, {"time": time.time()})
    try:
        return float(read_json(p)["time"])
    except Exception:
        return None


def load_spec(out: Path) -> StudySpec:
    p = Path(out) / STUDY_FILE
    if not p.is_file():
        raise PrismrecError(f"{out} holds no study ({STUDY_FILE}). Fix: pass the --out folder of a prismrec tune run.")
    spec = StudySpec.from_json(read_json(p))
    spec.storage = stored_storage(spec.storage, Path(out))
    return spec


def write_spec(out: Path, spec: StudySpec) -> None:
    """Write study.json; a study resumed with other search settings is refused (its trials would mix)."""
    p = out / STUDY_FILE
    new = spec.to_json()
    new["storage"] = recorded_storage(spec.storage, out)
    if p.is_file():
        old = read_json(p)
        keep = ("trials", "timeout", "storage")  # the budget may grow on resume; storage is per call
        defaults = {f.name: f.default for f in fields(StudySpec) if f.default is not MISSING}
        diffs = [k for k in new if k not in keep and old.get(k, defaults.get(k)) != json.loads(json.dumps(new[k]))]
        if diffs:
            raise PrismrecError(f"{out} holds a study with other settings ({', '.join(diffs)}); nothing is mixed. "
                                "Fix: choose a new --out, or repeat the study's own settings.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(p, new)


def start_workers(out: Path, workers: int, *, python: str | None = None) -> None:
    """``workers`` local processes (``prismrec tune --worker OUT``); waits for all; logs in OUT/worker-N.log."""
    procs = []
    for i in range(workers):
        logf = open(out / f"worker-{i}.log", "a")
        procs.append((subprocess.Popen([python or sys.executable, "-m", "prismrec", "-q", "tune", "--worker", str(out),
                                        "--worker-id", str(i)], stdout=logf, stderr=subprocess.STDOUT), logf))
    bad = []
    for i, (p, logf) in enumerate(procs):
        rc = p.wait()
        logf.close()
        if rc != 0:
            bad.append(f"worker {i} (exit {rc}, see {out / f'worker-{i}.log'})")
    if bad:
        log.warning("some workers failed: %s; run the same command again to resume", ", ".join(bad))


# ----------------------------------------------------------------------------------------- the study
@dataclass
class StudyResult:
    spec: StudySpec
    trials: Any  # pandas frame: number, state, value, epochs_run, params
    best_params: dict[str, Any]
    best_value: float
    final: Any  # Comparison or None
    markdown: str
    selected_runs: dict[int, Path] = field(default_factory=dict)  # the selected trial's run per trial seed


def tune_study(model: str, data: str | Path, out: str | Path, *, space: Mapping[str, Dist | None] | None = None,
               trials: int | None = 20, timeout: float | None = None, sampler: str = "tpe",
               seeds: Sequence[int] = (0,), final_seeds: Sequence[int] = (0, 1, 2),
               config_files: Sequence[str | Path] = (), overrides: Any = (), epochs: int | None = None,
               select: str | None = None, storage: str | None = None, study_name: str | None = None,
               workers: int = 1, prune: bool = True, prune_warmup: int | None = None, prune_startup: int = 3,
               sampler_seed: int = 0, start_at_defaults: bool = False, progress: bool = False,
               on_trial: Callable[[int, dict[str, Any], float | None, str], None] | None = None,
               on_run: Callable[[str, int, dict[str, Any]], None] | None = None) -> StudyResult:
    """Search ``model``'s space on validation (Optuna), then run the best setting with ``final_seeds``.

    ``space`` narrows or widens the model's declared space (a key given replaces that entry, None drops
    it); the search runs in ``workers`` local processes (1: in this process) sharing ``storage`` (default
    the journal ``OUT/study.journal``). Running it again with the same ``out`` resumes the study.
    ``start_at_defaults``: the study's first trial is the run's own settings (the model's defaults with the
    given config files and overrides) for every searched key they fall inside; the sampler draws the rest."""
    require_optuna()
    out = Path(out)
    if not trials and not timeout:
        raise ConfigError("give the search a budget: --trials N and/or --timeout SECONDS.")
    from .models import MODELS

    name = MODELS.canonical(model)
    full = model_space(name, dict(space or {}))
    if not full:
        raise ConfigError(f"model '{name}' has nothing to tune (empty search space).")
    ov = parse_overrides(overrides)
    cfg = build_config(name, data, config_files=config_files, overrides=ov, epochs=epochs)
    full = applicable_space(name, full, cfg.params)  # keys the run's settings make inert leave the space
    if not full:
        raise ConfigError(f"model '{name}' has nothing to tune (empty search space).")
    if prune_warmup is None and (out / STUDY_FILE).is_file():  # a resumed study keeps the warm-up it began with
        prune_warmup = load_spec(out).prune_warmup
    if prune_warmup is None:
        # a trial is never pruned before it could have been early-stopped: a warm-up of 2 epochs pruned every
        # slow-starting (low learning-rate) setting of BPR on baby, docs/benchmarks.md §1.7
        prune_warmup = cfg.train.patience * cfg.train.eval_every
    select = (select or cfg.train.valid_metric).lower()
    ov = merge_overrides(ov, {"train.valid_metric": select})  # early stopping, pruning and selection agree
    spec = StudySpec(model=name, data=str(data),
                     space=full, seeds=list(seeds), epochs=epochs, select=select, overrides=_jsonable(ov),
                     config_files=[str(p) for p in config_files], storage=storage_url(storage, out),
                     study_name=study_name or f"{name}", trials=trials, timeout=timeout, sampler=sampler,
                     sampler_seed=sampler_seed, prune=prune, prune_warmup=prune_warmup, prune_startup=prune_startup,
                     start_at_defaults=start_at_defaults)
    write_spec(out, spec)
    if start_at_defaults:
        enqueue_defaults(open_study(spec), encode_params(full, default_point(full, cfg)))
    log.info("study %s in %s: %s; space: %s", spec.study_name, out, spec.protocol, describe_space(full))
    if workers > 1:
        open_study(spec)  # the storage's tables and the study exist before the workers race to them
        start_workers(out, workers)
    else:
        run_worker(out, 0, progress=progress, on_trial=on_trial)
    return finish_study(out, final_seeds=final_seeds, progress=progress, on_run=on_run)


def default_point(space: Mapping[str, Dist], cfg: Any) -> dict[str, Any]:
    """The run's own value of each searched key (``train.*`` / ``data.*`` / the model's), where it lies inside
    the key's distribution; keys whose value lies outside are left to the sampler."""
    point = {}
    for key, dist in space.items():
        section, _, name = key.partition(".")
        src = {"train": cfg.train, "data": cfg.data}.get(section) if name else None
        value = getattr(src, name, None) if src is not None else getattr(cfg.params, key, None)
        if value is not None and dist.contains(value):
            point[key] = value
    return point


def enqueue_defaults(study, point: Mapping[str, Any]) -> None:
    """Queue ``point`` as the study's first trial, once (not again on resume, nor when it already has trials)."""
    if point and not study.get_trials(deepcopy=False):
        study.enqueue_trial(dict(point), user_attrs={"defaults": True})


def _jsonable(ov: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(ov)))
    except (TypeError, ValueError):
        raise ConfigError("tune overrides must be plain values (numbers, text, lists, mappings).") from None


def wait_for_running_trials(study, *, database: bool = False, say_every: float = 300.0) -> None:
    """Block until no trial of the study is RUNNING, so that the setting is selected from the whole budget.

    This process's own workers have finished when it gets here, but a worker that joined from another shell
    (``prismrec tune --worker OUT``) or another machine may still be training the study's last trial: selecting
    then would ignore it (and it may be the best). A running trial whose local worker is gone is failed as on
    resume; on a database, Optuna's heartbeat fails a silent remote worker's trial."""
    optuna = require_optuna()
    from optuna.trial import TrialState

    said = None
    while True:
        fail_dead_trials(study)
        if database:
            optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        now = time.monotonic()
        if said is None or now - said >= say_every:
            who = ", ".join(f"trial {t.number} ({t.user_attrs.get('host', '?')} pid {t.user_attrs.get('pid', '?')})"
                            for t in running)
            log.warning("waiting for %s to finish before selecting the setting (a worker of this study still runs "
                        "it; stop that worker to have the trial failed and retried on the next run)", who)
            said = now
        time.sleep(WAIT_POLL_SECONDS)


def best_trial(study):
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        raise PrismrecError("the study has no complete trial yet. Fix: run it (longer), or see prismrec tune --status.")
    return max(done, key=lambda t: (t.value, -t.number))


def trials_frame(study):
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("over_budget"):
            continue
        # a failed trial is a killed run: its span runs to when a later start noticed it (not compute), and its
        # retry resumes the run from its checkpoint, so only complete and pruned trials have a duration
        timed = t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if timed else None,
                     "epochs_run": t.user_attrs.get("epochs_run"), "best_epoch": t.user_attrs.get("best_epoch"),
                     "retry_of": t.user_attrs.get("retry_of"), "run_dir": t.user_attrs.get("run_dir"),
                     **{f"param_{k}": v for k, v in t.params.items()}})
    return pd.DataFrame(rows)


def search_cost(frame) -> dict[str, float]:
    """What a search spent (``frame``: :func:`trials_frame`): its trials' ``epochs``, the ``seconds`` of its complete
    and pruned trials, and ``saved_epochs``, the epochs pruning saved: an estimate, each pruned trial counted as if it
    had run as many epochs as the complete trials did on average (what it would have run is unknown once stopped)."""
    if not len(frame):
        return {"epochs": 0, "seconds": 0.0, "saved_epochs": 0.0}
    epochs = frame["epochs_run"].astype(float).fillna(0)
    done, pruned = epochs[frame["state"] == "complete"], epochs[frame["state"] == "pruned"]
    saved = float((done.mean() - pruned).clip(lower=0).sum()) if len(done) and len(pruned) else 0.0
    return {"epochs": int(epochs.sum()), "seconds": float(frame["seconds"].astype(float).fillna(0).sum()),
            "saved_epochs": saved}


def cost_text(cost: Mapping[str, float]) -> str:
    text = f"{cost['epochs']} epochs in all, {cost['seconds']:.0f} s of trials"
    if cost["saved_epochs"]:
        share = cost["saved_epochs"] / (cost["epochs"] + cost["saved_epochs"])
        text += (f"; pruning saved about {cost['saved_epochs']:.0f} epochs ({share:.0%}, estimated at the complete "
                 "trials' mean length)")
    return text


def finish_study(out: str | Path, *, final_seeds: Sequence[int] = (0, 1, 2), progress: bool = False,
                 on_run: Callable[[str, int, dict[str, Any]], None] | None = None) -> StudyResult:
    """The best trial's setting over ``final_seeds`` (test scored only here) and the tables."""
    from .compare import Entry, compare
    from .report.tables import Table, num

    out = Path(out)
    spec = load_spec(out)
    study = open_study(spec)
    wait_for_running_trials(study, database=is_database(spec.storage))
    best = best_trial(study)
    frame = trials_frame(study)
    # the selected trial's runs are the final runs of its trial seeds: scored there, not trained again
    trial_dir = out / "trials" / Path(best.user_attrs["run_dir"]).name if "run_dir" in best.user_attrs else None
    selected_runs = {s: trial_dir / f"seed-{s}" for s in spec.seeds} if trial_dir is not None else {}
    final = None
    if final_seeds:
        entry = Entry.of(spec.model, _qualified_for_entry(decode_params(spec.space, best.params)))
        final = compare([entry], spec.data, out / "final", seeds=list(final_seeds), config_files=spec.config_files,
                        overrides=spec.overrides, epochs=spec.epochs,
                        metrics=list(dict.fromkeys([spec.select, "recall@10", "recall@20", "ndcg@10", "ndcg@20"])),
                        progress=progress, on_run=on_run,
                        trained={(entry.label, s): p for s, p in selected_runs.items()})
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    t = Table(["trial", "state", f"valid {spec.select}", "epochs", "setting"],
              caption=f"`prismrec tune` of `{spec.model}` on `{spec.data}`: {spec.protocol}; "
                      f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
                      f"{counts.get('fail', 0)} failed, {cost_text(search_cost(frame))}. Test is scored only for "
                      f"the selected setting (trial {best.number}).")
    for _, r in frame.sort_values("number").iterrows():
        params = {k[6:]: r[k] for k in frame.columns if k.startswith("param_") and r[k] == r[k]}
        mark = " **(chosen)**" if r["number"] == best.number else ""
        t.add(f"{r['number']}{mark}", r["state"], num(r["value"]) if r["value"] == r["value"] else "-",
              "-" if r["epochs_run"] != r["epochs_run"] or r["epochs_run"] is None else str(int(r["epochs_run"])),
              ", ".join(f"{k}={_show(v)}" for k, v in params.items()))
    md = t.markdown() + "\n"
    if final is not None:
        md += f"\nProtocol: {spec.protocol}, then the selected setting with seeds {list(final_seeds)}.\n\n" + final.markdown
    write_text(out / "tune.md", md)
    write_text(out / "trials.csv", frame.to_csv(index=False))
    return StudyResult(spec, frame, decode_params(spec.space, best.params), float(best.value), final, md,
                       selected_runs)


def _qualified_for_entry(params: Mapping[str, Any]) -> dict[str, Any]:
    return dict(params)  # Entry.of qualifies the model's bare keys; train.* stays as it is


def _show(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def study_status(out: str | Path, storage: str | None = None) -> dict[str, Any]:
    """Progress of the study in ``out``: trials per state, best value and setting, running trials."""
    out = Path(out)
    spec = load_spec(out)
    if storage:
        spec.storage = storage_url(storage, out)
    study = open_study(spec, create=False)  # a read: the journal is left as it is
    frame = trials_frame(study)
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    res: dict[str, Any] = {"study": spec.study_name, "model": spec.model, "storage": spec.storage,
                           "budget": {"trials": spec.trials, "timeout": spec.timeout},
                           "complete": counts.get("complete", 0), "pruned": counts.get("pruned", 0),
                           "failed": counts.get("fail", 0), "running": counts.get("running", 0),
                           "waiting": counts.get("waiting", 0), "select": spec.select, "cost": search_cost(frame)}
    try:
        b = best_trial(study)
        res["best"] = {"trial": b.number, "value": b.value, "params": dict(b.params)}
    except PrismrecError:
        res["best"] = None
    res["running_trials"] = [{"trial": int(r["number"]), "run_dir": r["run_dir"]}
                             for _, r in frame.iterrows() if r["state"] == "running"]
    return res


def status_text(s: Mapping[str, Any]) -> str:
    budget = s["budget"]
    lines = [f"study {s['study']} ({s['model']}) in {s['storage']}",
             f"trials: {s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed, {s['running']} running, "
             f"{s['waiting']} waiting (budget: {budget['trials'] or '-'} trials, timeout {budget['timeout'] or '-'})",
             f"spent: {cost_text(s['cost'])}"]
    if s["best"]:
        params = ", ".join(f"{k}={_show(v)}" for k, v in s["best"]["params"].items())
        lines.append(f"best: trial {s['best']['trial']}, valid {s['select']} {s['best']['value']:.4f}: {params}")
    else:
        lines.append("best: none yet")
    return "\n".join(lines)
