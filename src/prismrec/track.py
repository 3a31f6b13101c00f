"""Experiment tracking: the runs of ``train``, ``compare`` and ``tune`` logged to TensorBoard or MLflow.

``--track tensorboard`` or ``--track mlflow`` (CLI), ``track=`` (Python API) or the :func:`tracking`
context manager. Every run trained inside (every entry x seed of a comparison, every trial and final
seed of a study, in worker processes too) logs:

* its configuration: the resolved settings (MLflow parameters and ``config.yaml`` artifact; TensorBoard
  text and hyper-parameters);
* per epoch (through the trainer's ``on_epoch`` hook): ``train/loss`` and the loss terms, ``time/train_s``
  and ``time/eval_s``, and after each evaluation ``valid/<metric>`` for every metric and cut-off;
* when it ends: ``test/<metric>`` and ``best_valid/<metric>`` (at the selected epoch), ``run/best_epoch``,
  ``run/epochs_run``, ``run/train_seconds``, ``run/epoch_seconds``.

Grouping. TensorBoard: one sub-folder per run under the command's folder (``OUT/tensorboard`` by default,
``URI/<OUT name>`` with ``--track-uri URI``); a comparison's run ``OUT/lirdrec/seed-0`` logs to
``OUT/tensorboard/lirdrec/seed-0``, a single ``train`` to ``OUT/tensorboard`` itself. MLflow: experiment
``prismrec`` (or ``$MLFLOW_EXPERIMENT_NAME``) of the store ``OUT/mlruns`` (a local file store; or
``--track-uri``: a folder, ``sqlite:///mlflow.db``, ``http://host:5000``); a ``compare`` or ``tune`` is a
parent run with one nested run per run (named by its folder under OUT) and the result tables as
artifacts, a ``train`` one run. MLflow metric names cannot hold ``@``: ``recall@20`` is logged as
``recall_at_20`` there.

MLflow 3 keeps its file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; prismrec sets it
(unless already set) for the local default store, which needs neither a server nor a database.

Runs reused by ``compare`` (finished earlier) are not logged again; a resumed run logs the epochs it
trains. The tracking settings travel in environment variables (``PRISMREC_TRACK*``), so worker processes
started inside the block (``tune --workers``) log into the same group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import PrismrecError

log = logging.getLogger("prismrec")

KINDS = ("tensorboard", "mlflow")
EXTRA = "pip install 'prismrec[track]'"
_ENV = ("PRISMREC_TRACK", "PRISMREC_TRACK_STORE", "PRISMREC_TRACK_OUT", "PRISMREC_TRACK_PARENT",
        "PRISMREC_TRACK_EXPERIMENT")


def check_kind(kind: str) -> str:
    k = str(kind).strip().lower()
    if k not in KINDS:
        raise PrismrecError(f"--track {kind!r} is not a tracker. Fix: --track tensorboard or --track mlflow.")
    return k


def require(kind: str) -> None:
    """Import the tracker's package now (a one-paragraph error naming the extra when it is missing)."""
    try:
        if kind == "tensorboard":
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        else:
            import mlflow  # noqa: F401
    except ImportError as exc:
        pkg = "tensorboard" if kind == "tensorboard" else "mlflow"
        raise PrismrecError(f"--track {kind} needs the {pkg} package, which is not installed ({exc}). Fix: {EXTRA} "
                            f"(or pip install {pkg}).") from None


def metric_key(kind: str, name: str) -> str:
    """``valid/recall@20`` as TensorBoard shows it; ``valid/recall_at_20`` for MLflow (no ``@`` allowed)."""
    return name.replace("@", "_at_") if kind == "mlflow" else name


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _mlflow_store(uri: str | None, out: Path) -> str:
    if uri is None:
        return (out / "mlruns").resolve().as_uri()
    if "://" in uri or uri.startswith(("file:", "sqlite:", "postgresql", "mysql", "databricks")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def _allow_file_store(store: str) -> None:
    if store.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _mlflow_client(store: str):
    _allow_file_store(store)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store)


def _experiment(client) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "prismrec"
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name)


# ------------------------------------------------------------------------------------------- a group
@contextlib.contextmanager
def tracking(kind: str | None, out: str | Path | None, uri: str | None = None, *,
             command: str = "train") -> Iterator[dict[str, str] | None]:
    """Track every run trained inside the block (``kind`` None: nothing is tracked).

    ``out`` is the command's output folder (a ``train`` run directory, a ``compare`` or ``tune`` folder);
    ``command`` is ``train`` (one run) or ``compare`` / ``tune`` (a group: an MLflow parent run). Yields the
    settings (environment variables) that the runs read."""
    if kind is None:
        yield None
        return
    kind = check_kind(kind)
    require(kind)
    out_path = Path(out if out is not None else "runs").expanduser().resolve()
    env = {"PRISMREC_TRACK": kind, "PRISMREC_TRACK_OUT": str(out_path)}
    client = parent = None
    if kind == "tensorboard":
        env["PRISMREC_TRACK_STORE"] = str(Path(uri).expanduser().resolve() / out_path.name if uri
                                          else out_path / "tensorboard")
    else:
        store = _mlflow_store(uri, out_path)
        env["PRISMREC_TRACK_STORE"] = store
        client = _mlflow_client(store)
        env["PRISMREC_TRACK_EXPERIMENT"] = _experiment(client)
        if command != "train":
            parent = client.create_run(env["PRISMREC_TRACK_EXPERIMENT"], run_name=f"{command} {out_path.name}",
                                       tags={"prismrec.command": command, "prismrec.out": str(out_path)})
            env["PRISMREC_TRACK_PARENT"] = parent.info.run_id
    saved = {k: os.environ.get(k) for k in _ENV}
    for k in _ENV:
        os.environ.pop(k, None)
    os.environ.update(env)
    status = "FAILED"
    try:
        yield env
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if command != "train":
            _close_group(kind, env, out_path, client, parent, status)
    if kind == "mlflow":
        log.info("tracked in MLflow: %s (experiment %s); view with: mlflow ui --backend-store-uri %s",
                 env["PRISMREC_TRACK_STORE"], os.environ.get("MLFLOW_EXPERIMENT_NAME") or "prismrec",
                 env["PRISMREC_TRACK_STORE"])
    else:
        log.info("tracked in TensorBoard: %s; view with: tensorboard --logdir %s", env["PRISMREC_TRACK_STORE"],
                 env["PRISMREC_TRACK_STORE"])


def _close_group(kind: str, env: dict[str, str], out: Path, client, parent, status: str) -> None:
    """The group's result tables: MLflow artifacts of the parent run; TensorBoard text at the group's root."""
    tables = [p for p in (out / "results.md", out / "results.csv", out / "tune.md", out / "trials.csv",
                          out / "report.html") if p.is_file()]
    try:
        if kind == "mlflow" and parent is not None:
            for p in tables:
                client.log_artifact(parent.info.run_id, str(p))
            client.set_terminated(parent.info.run_id, status)
        elif kind == "tensorboard" and any(p.suffix == ".md" for p in tables):
            from torch.utils.tensorboard import SummaryWriter

            with contextlib.closing(SummaryWriter(env["PRISMREC_TRACK_STORE"])) as w:
                for p in tables:
                    if p.suffix == ".md":
                        w.add_text(p.stem, p.read_text())
    except Exception as exc:  # noqa: BLE001 - tracking never fails a finished command
        log.warning("experiment tracking: could not record the result tables (%s)", exc)


# --------------------------------------------------------------------------------------------- a run
class RunTracker:
    """One run's tracking: :meth:`start` (configuration), :meth:`epoch` (the trainer's ``on_epoch``),
    :meth:`finish` (final metrics) or :meth:`end` (a run that stopped with an error). A logging failure in
    the middle of a run is a warning (once), never a failed run."""

    kind = ""

    def __init__(self) -> None:
        self._broken = False

    def _safe(self, fn: Callable[[], None]) -> None:
        if self._broken:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - tracking never fails a run
            self._broken = True
            log.warning("experiment tracking (%s) stopped for this run: %s", self.kind, exc)

    def start(self, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self._safe(lambda: self._start(config, tags))

    def epoch(self, row: Mapping[str, Any]) -> None:
        self._safe(lambda: self._log(epoch_metrics(row), int(row["epoch"])))

    def finish(self, metrics: Mapping[str, Any]) -> None:
        self._safe(lambda: self._log(final_metrics(metrics), int(metrics.get("best_epoch") or 0)))
        self.end("FINISHED")

    def end(self, status: str) -> None:
        self._safe(lambda: self._end(status))
        self._broken = True  # nothing after the end

    # backends
    def _start(self, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def _log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _end(self, status: str) -> None:
        raise NotImplementedError


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one history row: loss and its terms, seconds, validation metrics."""
    out: dict[str, float] = {}
    skip = {"epoch", "valid", "train_s", "eval_s"}
    for k, v in row.items():
        if k in skip or isinstance(v, (dict, list, str)) or v is None:
            continue
        out[f"train/{k}"] = float(v)
    for k in ("train_s", "eval_s"):
        if row.get(k) is not None:
            out[f"time/{k}"] = float(row[k])
    for k, v in (row.get("valid") or {}).items():
        out[f"valid/{k}"] = float(v)
    return out


def final_metrics(m: Mapping[str, Any]) -> dict[str, float]:
    out = {f"test/{k}": float(v) for k, v in (m.get("test") or {}).items()}
    out.update({f"best_valid/{k}": float(v) for k, v in (m.get("valid") or {}).items()})
    for k in ("best_epoch", "epochs_run", "train_seconds", "epoch_seconds", "eval_seconds", "peak_rss_mb"):
        if isinstance(m.get(k), (int, float)):
            out[f"run/{k}"] = float(m[k])
    return out


class TensorBoardRun(RunTracker):
    kind = "tensorboard"

    def __init__(self, logdir: Path):
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        self.writer = SummaryWriter(str(logdir))
        self._hparams: dict[str, Any] = {}
        self._final: dict[str, float] = {}

    def _start(self, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        import yaml

        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(dict(config), sort_keys=False) + "```")
        self.writer.add_text("run", "  \n".join(f"{k}: {v}" for k, v in tags.items()))
        self._hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                         for k, v in flatten(config).items()}

    def _log(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def _end(self, status: str) -> None:
        if status == "FINISHED" and self._hparams and self._final:
            # the HParams dashboard: the settings against the final test metrics
            self.writer.add_hparams(self._hparams, {f"hparam/{k}": v for k, v in self._final.items()}, run_name=".")
        elif status != "FINISHED":
            self.writer.add_text("status", status)
        self.writer.close()

    def finish(self, metrics: Mapping[str, Any]) -> None:
        self._final = {k: v for k, v in final_metrics(metrics).items() if k.startswith("test/")}
        super().finish(metrics)


class MLflowRun(RunTracker):
    kind = "mlflow"

    def __init__(self, store: str, experiment: str, name: str, parent: str | None):
        super().__init__()
        self.client = _mlflow_client(store)
        tags = {"mlflow.parentRunId": parent} if parent else {}
        self.run_id = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id

    def _start(self, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, str(v)[:500]) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(f"prismrec.{k}", str(v)) for k, v in tags.items()])
        self.client.log_dict(self.run_id, dict(config), "config.yaml")

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(metric_key("mlflow", k), v, ts, step) for k, v in values.items()]
        for i in range(0, len(ms), 500):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 500])

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def run_tracker(config: Mapping[str, Any], run_dir: str | Path | None, *, tags: Mapping[str, Any] = ()
                ) -> RunTracker | None:
    """The tracker of a run about to train (None when no tracking is active): started with ``config``
    (the run's settings as a mapping) and ``tags`` (model, dataset, seed, ...)."""
    kind = os.environ.get("PRISMREC_TRACK")
    if not kind:
        return None
    out = Path(os.environ.get("PRISMREC_TRACK_OUT") or ".")
    store = os.environ["PRISMREC_TRACK_STORE"]
    if run_dir is None:
        rel = Path(time.strftime("run-%Y%m%d-%H%M%S"))
    else:
        rd = Path(run_dir).expanduser().resolve()
        try:
            rel = rd.relative_to(out)
        except ValueError:
            rel = Path(rd.name)
    name = out.name if str(rel) == "." else rel.as_posix()
    tags = {**dict(tags), "run_dir": str(run_dir) if run_dir is not None else "(in memory)"}
    if kind == "tensorboard":
        tracker: RunTracker = TensorBoardRun(Path(store) / rel)
    else:
        tracker = MLflowRun(store, os.environ["PRISMREC_TRACK_EXPERIMENT"], name,
                            os.environ.get("PRISMREC_TRACK_PARENT"))
    tracker.start(config, {k: str(v) for k, v in tags.items()})
    return tracker


def chain(*callbacks: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None] | None:
    """One ``on_epoch`` hook calling each given hook in order (None when there is none)."""
    fns = [c for c in callbacks if c is not None]
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]

    def call(row: dict[str, Any]) -> None:
        for f in fns:
            f(row)

    return call


@contextlib.contextmanager
def tracked(tracker: RunTracker | None) -> Iterator[None]:
    """Ends ``tracker`` with the right status when the block raises (an interrupted or pruned run)."""
    if tracker is None:
        yield
        return
    try:
        yield
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException as exc:
        tracker.end("KILLED" if type(exc).__name__ == "TrialPruned" else "FAILED")
        raise
