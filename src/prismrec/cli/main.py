"""The ``prismrec`` command line. Users script against it: extend, never break.

Contract (see docs/cli.md):

* ``prismrec train --model NAME --data PATH_OR_NAME --out RUN_DIR [--config FILE] [--set KEY=VALUE ...]
  [--seed N] [--epochs MAX] [--resume]`` writes ``RUN_DIR/metrics.json`` and the run files;
* ``prismrec evaluate RUN_DIR`` re-scores a saved run and prints its test metrics;
* ``prismrec datasets`` lists known datasets with statistics;
* ``prismrec compare`` trains several models x seeds and prints/saves a Markdown and CSV table;
* ``prismrec recommend RUN_DIR --user RAW_ID -k 10`` prints raw item ids and titles;
* ``prismrec tune`` grid-searches on validation, then runs the chosen setting over several seeds;
* ``prismrec significance RUN_A RUN_B`` runs a paired test; ``prismrec models`` lists models;
* ``prismrec explain RUN_DIR --user RAW_ID [-k 5] [--plot PNG]`` attributes a sequential model's
  recommendations to history items and modalities;
* ``prismrec recommend RUN_DIR --users FILE|all --out recs.parquet|recs.csv`` writes many users' top-k;
* ``prismrec report DIR...`` writes one self-contained HTML report of runs, comparisons, tune studies;
* ``prismrec pretrain`` / ``prismrec adapt`` / ``prismrec transfer-report``: ANT transfer (docs/models/ant.md);
* ``prismrec features`` / ``prismrec export`` / ``prismrec serve``: raw items to features, serving bundles, the
  REST service (docs/features.md, docs/serving.md).

User errors exit with status 2 and a one-paragraph message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="prismrec: train, compare, evaluate and serve multimodal recommenders.",
)

_STATE = {"debug": False, "quiet": False, "verbose": False}
#: options of the main callback that may also be written after the command (``prismrec compare ... -v``)
_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet", "--debug")


class _Once(logging.Filter):
    """Each warning (and error) text is shown once per command, however many runs or datasets repeat it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _PlainFormatter(logging.Formatter):
    """Piped or redirected output: one unwrapped line per record, ``warning:`` / ``error:`` before problems."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return f"{record.levelname.lower()}: {msg}" if record.levelno >= logging.WARNING else msg


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """Default: results, one-off notes and warnings (each once); ``-v`` adds the per-epoch lines and debug
    notes; ``-q`` only warnings. On a terminal the lines go through the shared rich console (above the live
    progress line); otherwise plain, never wrapped, lines on stderr."""
    from ..utils.progress import console, stderr_is_terminal

    from ..utils.distributed import env_rank

    # under torchrun only rank 0 logs (the other ranks: errors only; their warnings would repeat rank 0's)
    level = logging.ERROR if env_rank() != 0 else logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("prismrec")
    logger.handlers.clear()
    handler: logging.Handler
    if stderr_is_terminal():
        from rich.logging import RichHandler

        handler = RichHandler(console=console(), show_path=False, show_time=False, markup=False,
                              rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter("%(message)s"))
    handler.addFilter(_Once())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks of errors"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and results"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="details: the per-epoch log lines, debug notes"),
) -> None:
    _STATE["debug"] = debug
    _STATE["quiet"] = quiet
    _STATE["verbose"] = verbose
    _setup_logging(quiet, verbose)


def _progress() -> bool:
    """Draw live progress lines: standard error is a terminal and -q was not given."""
    from ..utils.progress import stderr_is_terminal

    from ..utils.distributed import env_rank

    return not _STATE["quiet"] and stderr_is_terminal() and env_rank() == 0


def _global_flags_first(argv: list[str]) -> list[str]:
    """``prismrec compare ... -v`` as ``prismrec -v compare ...``: the main options are accepted after the
    command too (never after ``--``)."""
    end = argv.index("--") if "--" in argv else len(argv)
    moved = [a for a in argv[:end] if a in _GLOBAL_FLAGS]
    if not moved:
        return argv
    return moved + [a for a in argv[:end] if a not in _GLOBAL_FLAGS] + argv[end:]


def _tracking(track: Optional[str], uri: Optional[str], out: Optional[Path], command: str):
    """The ``--track`` / ``--track-uri`` context of a command (a no-op without ``--track``)."""
    from ..track import tracking

    if uri is not None and track is None:
        from ..errors import PrismrecError

        raise PrismrecError("--track-uri needs --track tensorboard or --track mlflow.")
    return tracking(track, out, uri, command=command)


_TRACK_HELP = "log config, per-epoch and final metrics of every run: tensorboard or mlflow (prismrec[track])"
_TRACK_URI_HELP = ("where: a folder (TensorBoard log root; MLflow file store) or an MLflow tracking URI "
                   "(sqlite:///mlflow.db, http://host:5000); default under --out")


def _one_process(command: str) -> None:
    """Refuse a command that is not data-parallel when torchrun started several processes."""
    from ..errors import PrismrecError
    from ..utils.distributed import launched

    if launched() and os.environ.get("WORLD_SIZE", "1") != "1":
        raise PrismrecError(f"`prismrec {command}` is not data-parallel: under torchrun every process would run all of "
                            "it. Fix: run it without torchrun (only `prismrec train` runs data-parallel: "
                            "torchrun --nproc_per_node N -m prismrec train ...).")


def _print(text: str) -> None:
    from ..utils.distributed import env_rank

    if env_rank() == 0:  # under torchrun only rank 0 prints
        typer.echo(text)


# ------------------------------------------------------------------------------------------------
@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="model name (prismrec models lists them)"),
    data: str = typer.Option(..., "--data", "-d", help="dataset folder, file, or bundled name"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory to create (or to resume)"),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML config file(s), applied in order"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override KEY=VALUE (e.g. train.learning_rate=1e-3)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed (default 0)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="maximum number of epochs"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (auto, cpu, cuda, cuda:1)"),
    track: Optional[str] = typer.Option(None, "--track", help=_TRACK_HELP),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help=_TRACK_URI_HELP),
) -> None:
    """Train one model and write RUN_DIR/metrics.json (test metrics at the best validation epoch)."""
    from ..config import parse_overrides
    from ..runs import train_run

    with _tracking(track, track_uri, out, "train"):
        run = train_run(model, data, out, config_files=config, overrides=parse_overrides(set_), seed=seed,
                        epochs=epochs, resume=resume, progress=_progress(), device=device)
    m = run.metrics
    _print(_metrics_table(m["test"], title=f"{m['model']} on {m['dataset']}: test at best epoch {m['best_epoch']} "
                                           f"(of {m['epochs_run']}, {m['train_seconds']:.1f}s; {_protocol(m)})"))
    _print(f"run saved in {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory made by prismrec train"),
    stage: str = typer.Option("test", "--stage", help="test or valid"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    set_: list[str] = typer.Option([], "--set", "-s", help="change how it is scored, not what it learned: "
                                   "train.mask_history=false (the other protocol), train.mask_valid_in_test, "
                                   "train.topk, train.eval_batch_users"),
) -> None:
    """Re-score a saved run on its saved split and print the metrics (--set: under other evaluation settings)."""
    from ..config import parse_overrides
    from ..runs import evaluate_run, load_run_config, protocol_of, with_evaluation_settings

    if stage not in ("test", "valid"):
        raise typer.BadParameter("--stage is test or valid")
    overrides = parse_overrides(set_)
    protocol = protocol_of(with_evaluation_settings(load_run_config(run_dir), overrides))
    metrics = evaluate_run(run_dir, stage, overrides)
    _print(json.dumps(metrics, indent=2) if as_json
           else _metrics_table(metrics, title=f"{run_dir}: {stage} ({protocol})"))


@app.command()
def datasets(
    root: list[Path] = typer.Option([], "--root", help="extra folder(s) holding datasets"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List bundled datasets and those under data roots (PRISMREC_DATA, ./data, --root) with statistics."""
    from ..api import datasets as list_datasets
    from ..report.tables import datasets_table

    rows = list_datasets(root)
    _print(json.dumps(rows, indent=2) if as_json else datasets_table(rows).markdown())


@app.command()
def compare(
    model: list[str] = typer.Option(..., "--model", "-m", help="model entry, repeatable: NAME or NAME[k=v;k=v]"),
    data: str = typer.Option(..., "--data", "-d"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for every run and the tables"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds"),
    config: list[Path] = typer.Option([], "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override for every run (model.key applies to that model)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    metrics: str = typer.Option("recall@10,recall@20,ndcg@10,ndcg@20", "--metrics"),
    tune: int = typer.Option(0, "--tune", min=0, help="TRIALS: tune every model with the same number of TPE trials "
                             "on validation (its declared search space) before its seeds"),
    tune_workers: int = typer.Option(1, "--tune-workers", min=1, help="local worker processes of each search"),
    tune_prune_warmup: Optional[int] = typer.Option(None, "--tune-prune-warmup", min=0, help="epochs of a trial never "
                                                    "pruned (default: the patience, train.patience x eval_every)"),
    tune_start_at_defaults: bool = typer.Option(False, "--tune-start-at-defaults", help="each search's first trial "
                                                "is that model's own settings (its defaults, --set)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="runs trained at once, each with cores/N "
                                       "torch threads (default: 2 on a CPU with 2+ cores, 1 on a GPU)"),
    ddp: int = typer.Option(1, "--ddp", min=1, help="train each run data-parallel with N processes (torchrun; gloo "
                            "on CPU, NCCL on GPU), one run at a time; tuning trials stay one process"),
    ref: list[str] = typer.Option([], "--ref", help="entry every other entry is tested against (paired over seeds), "
                                  "repeatable: one p column each (default: the first --model)"),
    track: Optional[str] = typer.Option(None, "--track", help=_TRACK_HELP),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help=_TRACK_URI_HELP),
) -> None:
    """Train several models (x seeds) on one split; print and save a Markdown and CSV table."""
    _one_process("compare")
    from ..compare import compare as run_compare
    from ..config import parse_overrides

    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    log = logging.getLogger("prismrec")

    def on_run(label: str, seed: int, m: dict) -> None:  # the one result line of each run
        log.info("%s seed %d: test %s (best epoch %s of %s, %.1fs)", label, seed,
                 ", ".join(f"{k} {m['test'][k]:.4f}" for k in metrics.split(",") if k in m["test"]),
                 m.get("best_epoch"), m.get("epochs_run"), m.get("train_seconds") or 0.0)

    with _tracking(track, track_uri, out, "compare"):
        res = run_compare(model, data, out, seeds=seed_list, config_files=config, overrides=parse_overrides(set_),
                          epochs=epochs,
                          metrics=[m.strip().lower() for m in metrics.split(",")], progress=_progress(), on_run=on_run,
                          tune_trials=tune, tune_options={"workers": tune_workers, "prune_warmup": tune_prune_warmup,
                                                               "start_at_defaults": tune_start_at_defaults}
                          if tune else None, jobs=jobs,
                          ddp=ddp, references=ref)
    _print(res.markdown)
    _print(f"tables saved in {out}/results.md and {out}/results.csv")
    if res.report is not None:
        _print(f"report saved in {res.report}")


@app.command()
def tune(
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    data: Optional[str] = typer.Option(None, "--data", "-d"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="study folder (the same --out resumes the study)"),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="trial budget (complete + pruned; default 20 "
                                         "when no --timeout)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="time budget of the search, in seconds"),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="tpe (default) or grid (exact; the default with --grid)"),
    space: list[str] = typer.Option([], "--space", help="narrow/widen the model's space: KEY=loguniform(a,b) | "
                                    "uniform(a,b) | int(a,b) | [v1,v2] | none (repeatable)"),
    space_file: Optional[Path] = typer.Option(None, "--space-file", help="YAML {key: distribution}"),
    grid: list[str] = typer.Option([], "--grid", "-g", help="exact grid KEY=V1,V2,... (repeatable; --sampler grid)"),
    seeds: str = typer.Option("0", "--seeds", help="seeds of each trial (selection uses their mean)"),
    final_seeds: str = typer.Option("0,1,2", "--final-seeds", help="seeds for the chosen setting ('' to skip)"),
    select: Optional[str] = typer.Option(None, "--select", help="validation metric that picks the setting "
                                         "(default: train.valid_metric)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="journal file (default OUT/study.journal) or a "
                                          "database URL (postgresql+psycopg://...)"),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="default: the model name"),
    workers: int = typer.Option(1, "--workers", min=1, help="local worker processes sharing the study"),
    no_prune: bool = typer.Option(False, "--no-prune", help="never stop a trial early"),
    prune_warmup: Optional[int] = typer.Option(None, "--prune-warmup", min=0, help="epochs of a trial never pruned "
                                               "(default: the patience, train.patience x eval_every)"),
    start_at_defaults: bool = typer.Option(False, "--start-at-defaults", help="the first trial is the run's own "
                                           "settings (model defaults, --config, --set) inside the space"),
    status: Optional[Path] = typer.Option(None, "--status", help="print the progress of the study in this folder"),
    worker: Optional[Path] = typer.Option(None, "--worker", help="run trials of the study in this folder (internal)"),
    worker_id: int = typer.Option(0, "--worker-id", help="(with --worker)"),
    config: list[Path] = typer.Option([], "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    track: Optional[str] = typer.Option(None, "--track", help=_TRACK_HELP),
    track_uri: Optional[str] = typer.Option(None, "--track-uri", help=_TRACK_URI_HELP),
) -> None:
    """Search hyper-parameters on VALIDATION (Optuna TPE with pruning, or an exact grid), then run the
    chosen setting over several seeds (test mean and spread). See docs/cli.md."""
    _one_process("tune")
    from .tune_cli import run_tune_command

    args = locals()
    searching = status is None and worker is None  # workers inherit the tracking of the command that started them
    with _tracking(track if searching else None, track_uri if searching else None, out, "tune"):
        run_tune_command(args, _print, progress=_progress())


@app.command()
def recommend(
    run_dir: Path = typer.Argument(...),
    user: list[str] = typer.Option([], "--user", "-u", help="raw user id (repeatable)"),
    users: Optional[str] = typer.Option(None, "--users", help="batch: FILE (one raw user id per line, or a CSV with "
                                        "a 'user' column) or 'all' (every user); needs --out"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the recommendations to recs.parquet or "
                                       "recs.csv instead of printing them"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="number of items"),
    include_seen: bool = typer.Option(False, "--include-seen", help="do not filter items the user already has"),
    as_json: bool = typer.Option(False, "--json"),
    chunk_users: Optional[int] = typer.Option(None, "--chunk-users", min=1,
                                              help="users scored at a time with --out (default: as evaluation)"),
) -> None:
    """Print the top-k raw item ids (and titles) for one or more users of a saved run, or write them for
    many users (--users FILE|all --out recs.parquet|recs.csv)."""
    from ..errors import PrismrecError

    if bool(user) == (users is not None):
        raise PrismrecError("give the users either with --user RAW_ID (repeatable) or with --users FILE|all, not "
                            + ("both." if user else "neither.") + " Example: prismrec recommend RUN --users all "
                            "--out recs.parquet")
    if out is None and users is not None:
        raise PrismrecError("--users writes a file. Fix: add --out recs.parquet (or recs.csv).")
    if out is not None:
        if as_json:
            raise PrismrecError("--json prints and --out writes a file. Fix: choose one of them.")
        from ..api import recommend_batch

        res = recommend_batch(run_dir, out, users if users is not None else user, k, exclude_seen=not include_seen,
                              chunk_users=chunk_users, progress=_progress())
        _print(f"wrote {res['rows']:,} recommendations (top {k}) for {res['users']:,} users to {res['out']}")
        return
    from ..runs import load_run

    frame = load_run(run_dir).recommend(user, k, exclude_seen=not include_seen)
    if as_json:
        _print(frame.to_json(orient="records", indent=2))
        return
    for u, grp in frame.groupby("user", sort=False):
        _print(f"user {u}:")
        for _, r in grp.iterrows():
            title = f"  {r['title']}" if r["title"] else ""
            _print(f"  {r['rank']:>3}. {r['item']}{title}")


@app.command()
def explain(
    run_dir: Path = typer.Argument(...),
    user: str = typer.Option(..., "--user", "-u", help="raw user id"),
    k: int = typer.Option(5, "-k", "--k", min=1, max=100, help="number of recommendations to explain"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG path (default RUN_DIR/explain/USER.png)"),
    no_plot: bool = typer.Option(False, "--no-plot", help="text only"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show how much each history item and each modality contributed to a sequential model's top-k
    recommendations for a user (gradient x input, Demure's contribution), as text and a saved plot."""
    from ..api import explain as run_explain

    ex, path = run_explain(run_dir, user, k, plot=False if no_plot else (plot or True))
    _print(json.dumps(ex.as_dict(), indent=2) if as_json else ex.text())
    if path is not None and not as_json:
        _print(f"plot saved to {path}")


@app.command()
def significance(
    run_a: Path = typer.Argument(...),
    run_b: Path = typer.Argument(...),
    metric: str = typer.Option("ndcg@20", "--metric"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Paired test of two runs on the same split (per-user metric): t-test, Wilcoxon, bootstrap CI."""
    from ..runs import compare_runs

    t = compare_runs(run_a, run_b, metric.lower())
    _print(json.dumps(t.as_dict(), indent=2) if as_json else t.summary(str(run_a), str(run_b)))


@app.command()
def models() -> None:
    """List the registered models with their settings and defaults."""
    from ..api import describe_models

    for m in describe_models():
        fields = ", ".join(f"{k}={v!r}" for k, v in m["settings"].items())
        _print(f"{m['name']:12s} [{m['family']}] {m['doc']}\n{'':12s} {fields or '(no settings)'}")


@app.command()
def align(
    data: str = typer.Option(..., "--data", "-d", help="dataset folder, file, or bundled name"),
    out: Path = typer.Option(..., "--out", "-o", help="feature file to write (.npz, keyed by raw item id)"),
    epochs: int = typer.Option(100, "--epochs", min=0, help="maximum stage-1 epochs (early-stopped)"),
    seed: int = typer.Option(0, "--seed", help="stage-1 seed"),
    dim: int = typer.Option(128, "--dim", min=2, help="dimension of the aligned feature"),
    modality: list[str] = typer.Option([], "--modality", help="modalities to align (default: all)"),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s); their data: section is used"),
    set_: list[str] = typer.Option([], "--set", "-s", help="data override KEY=VALUE (e.g. data.kcore=5)"),
) -> None:
    """AlignRec stage 1: align the item modalities into ONE feature and write it as a feature file."""
    from ..api import align as run_align
    from ..config import parse_overrides
    from ..evaluate.feature_quality import data_config
    from ..report.tables import retrieval_table

    res = run_align(data, out, data_config=data_config(config, parse_overrides(set_)), modalities=modality,
                    epochs=epochs, seed=seed, dim=dim)
    rep = res["report"]
    _print(f"stage 1 on {res['dataset']}: {', '.join(res['modalities'])} -> {dim}-d, best held-out loss at epoch "
           f"{rep['best_epoch']} (of {rep['epochs_run']}); held-out retrieval:\n")
    _print(retrieval_table(rep).markdown())
    _print(f"\nwrote {out} ({res['available']} of {res['items']} items with a feature); use it with "
           f"--set 'data.extra_features={{aligned: {out}}}'")


@app.command("evaluate-features")
def evaluate_features(
    data: str = typer.Option(..., "--data", "-d", help="dataset folder, file, or bundled name"),
    modality: list[str] = typer.Option([], "--modality", help="modalities to judge (default: all)"),
    k: int = typer.Option(20, "--k", min=1, help="neighbours per item of the item-kNN protocol"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON file for the results"),
    aligned: bool = typer.Option(False, "--aligned", help="also judge the stage-1 aligned feature (trained now)"),
    mask_ratio: float = typer.Option(0.5, "--mask-ratio", min=0.0, max=1.0, help="share of items losing a modality"),
    seed: int = typer.Option(0, "--seed", help="seed of the masking and of stage 1"),
    stage: str = typer.Option("test", "--stage", help="test or valid"),
    config: list[Path] = typer.Option([], "--config", "-c", help="YAML file(s); their data: section is used"),
    set_: list[str] = typer.Option([], "--set", "-s", help="data override KEY=VALUE (e.g. data.kcore=5)"),
) -> None:
    """Judge item features without training a recommender: zero-shot, item-kNN CF, masked modality."""
    from ..api import feature_quality
    from ..config import parse_overrides
    from ..evaluate.feature_quality import data_config

    if stage not in ("test", "valid"):
        raise typer.BadParameter("--stage is test or valid")
    rep = feature_quality(data, data_config=data_config(config, parse_overrides(set_)),
                          modalities=modality or None, k=k, aligned=aligned, mask_ratio=mask_ratio, seed=seed, stage=stage, out=out)
    _print(f"feature quality on {rep.settings['dataset']} ({stage}, item-kNN k={k}, {100 * mask_ratio:.0f} % of items "
           f"masked):\n")
    _print(rep.markdown())
    if out is not None:
        _print(f"\nsaved {out}")


@app.command()
def features(
    modality: str = typer.Option(..., "--modality", help="text, image, caption or price"),
    out: str = typer.Option(..., "--out", "-o", help="FILE.npz (id-keyed), DATA_DIR/<name>_feat.npy (row-aligned), "
                            "or a folder: DIR/ gets <modality>_feat.npy (--data) or <modality>.npz (--items, --limit)"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="dataset folder or name (its item table is read)"),
    items: Optional[Path] = typer.Option(None, "--items", help="or: a CSV/TSV/JSONL/Parquet item table with item_id"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="encoder spec (default per modality; docs/features.md)"),
    column: Optional[str] = typer.Option(None, "--column", help="input column (default: text/title, image, price)"),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="folder relative image paths start from"),
    captioner: Optional[str] = typer.Option(None, "--captioner", help="local transformers image-to-text model (caption)"),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="text encoder for captions"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    cache: Optional[Path] = typer.Option(None, "--cache", help="resumable cache folder (default OUT_DIR/.prismrec-cache)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the cache"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N items (for trials)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch CPU threads"),
) -> None:
    """Encode raw item text, images, captions or prices into a feature file any model can use."""
    from ..api import extract_features

    res = extract_features(modality, out, data=data, items=items, encoder=encoder, column=column,
                           image_root=image_root, captioner=captioner, text_encoder=text_encoder,
                           batch_size=batch_size, cache=cache, use_cache=not no_cache, limit=limit, threads=threads,
                           progress=_progress())
    m = res.manifest
    miss = ", ".join(f"{k} {v}" for k, v in m["missing"].items()) or "none"
    rate = f", {m['items_per_second']} items/s" if m["items_per_second"] else ""
    _print(f"{modality}: {m['items']} items -> {m['dim']}-d with {m['encoder']} ({m['encoded_now']} encoded in "
           f"{m['seconds']:.1f}s{rate}, {m['from_cache']} from cache); missing: {miss}")
    _print(f"wrote {res.out} and {res.out.name}.manifest.json")


def _transfer_overrides(encoder: list[str], set_: list[str]) -> dict:
    """``--encoder MODALITY=NAME`` (as ``ant.feature_encoders.MODALITY``) then ``--set``, as one typed mapping."""
    from ..config import merge_overrides, parse_overrides
    from ..errors import ConfigError

    encoders = {}
    for e in encoder:
        if "=" not in e:
            raise ConfigError(f"--encoder {e!r} is not MODALITY=NAME. Example: --encoder text=all-MiniLM-L6-v2")
        m, name = e.split("=", 1)
        encoders[f"ant.feature_encoders.{m.strip()}"] = name.strip()
    return merge_overrides(encoders, parse_overrides(set_))


@app.command()
def pretrain(
    data: list[str] = typer.Option(..., "--data", "-d", help="source dataset (repeatable: several domains)"),
    out: Path = typer.Option(..., "--out", "-o", help="directory for model.pt and pretrain.json"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="number of pre-training epochs"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    config: list[Path] = typer.Option([], "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override KEY=VALUE (ant.*, train.*, data.*)"),
    encoder: list[str] = typer.Option([], "--encoder", help="declare MODALITY=ENCODER for data recording none"),
    device: Optional[str] = typer.Option(None, "--device"),
    resume: bool = typer.Option(False, "--resume", help="continue the pre-training in --out from its last epoch"),
) -> None:
    """ANT multi-domain pre-training (batches mix the domains); refuses to mix feature spaces."""
    _one_process("pretrain")
    from ..transfer import pretrain as run_pretrain

    meta = run_pretrain(data, out, config_files=config, overrides=_transfer_overrides(encoder, set_), seed=seed,
                        epochs=epochs, device=device, progress=_progress(), resume=resume)
    mods = ", ".join(f"{m} ({s['encoder']}, {s['dim']}-d)" for m, s in meta["modalities"].items())
    _print(f"pre-trained ANT on {', '.join(s['name'] for s in meta['sources'])} [{mods}]: {meta['epochs_run']} epochs, "
           f"{meta['epoch_seconds']:.2f}s/epoch, best training loss {meta['best_loss']:.4f} at epoch {meta['best_epoch']}")
    _print(f"saved in {out}")


@app.command()
def adapt(
    pretrained: Path = typer.Option(..., "--pretrained", "-p", help="directory written by prismrec pretrain"),
    data: str = typer.Option(..., "--data", "-d", help="target dataset"),
    strategy: str = typer.Option("relearn", "--strategy", help="relearn | finetune | adaptor | scratch"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory to create (or to resume)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="maximum number of epochs"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    config: list[Path] = typer.Option([], "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override KEY=VALUE"),
    encoder: list[str] = typer.Option([], "--encoder", help="declare MODALITY=ENCODER for data recording none"),
    resume: bool = typer.Option(False, "--resume"),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Adapt a pre-trained ANT to a target dataset; writes a run directory like prismrec train."""
    from ..transfer import adapt as run_adapt

    run = run_adapt(pretrained, data, strategy, out, config_files=config,
                    overrides=_transfer_overrides(encoder, set_), seed=seed, epochs=epochs, resume=resume, progress=_progress(), device=device)
    m = run.metrics
    _print(_metrics_table(m["test"], title=f"ant ({strategy}) on {m['dataset']}: test at best epoch {m['best_epoch']} "
                                           f"(of {m['epochs_run']}, {m['train_seconds']:.1f}s; {_protocol(m)})"))
    _print(f"run saved in {out}")


@app.command("transfer-report")
def transfer_report(
    run_dirs: list[Path] = typer.Argument(..., help="finished prismrec adapt runs (every strategy and seed)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for transfer.md/.json/.png"),
    metrics: str = typer.Option("recall@10,recall@50,ndcg@10,ndcg@50", "--metrics"),
    no_plot: bool = typer.Option(False, "--no-plot"),
) -> None:
    """Each strategy against scratch per target: mean +- std, difference, paired test, negative-transfer flag."""
    from ..report.transfer import transfer_report as report, write_report

    ms = [x.strip().lower() for x in metrics.split(",") if x.strip()]
    if out is not None:
        md, png = write_report(run_dirs, out, metrics=ms, plot=not no_plot)
        _print(md)
        _print(f"\nsaved {out}/transfer.md, transfer.json" + (f", {png.name}" if png else ""))
    else:
        md, _ = report(run_dirs, metrics=ms)
        _print(md)


@app.command()
def report(
    paths: list[Path] = typer.Argument(..., help="run directories, compare / tune / transfer-report folders, "
                                       "feature-quality JSON files"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default DIR/report.html for one "
                                       "folder, ./report.html for several)"),
    title: Optional[str] = typer.Option(None, "--title", help="page title"),
    no_explain: bool = typer.Option(False, "--no-explain", help="leave out the attribution example of sequential runs"),
) -> None:
    """One self-contained HTML file (plots embedded, nothing fetched when viewed): curves, bars with error
    bars over seeds, paired tests, segments, feature quality, attribution examples."""
    from ..api import report as run_report

    path = run_report(paths, out, title=title, explain=not no_explain)
    _print(f"report written to {path}")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to create"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the files of an existing bundle"),
) -> None:
    """Write a self-contained serving bundle (item/user vectors, id maps, titles, config, weights)."""
    from ..api import export as run_export

    b = run_export(run_dir, out, overwrite=overwrite)
    path = b.path
    _print(f"bundle {path}: {b.meta['model']} on {b.meta['dataset']}, {len(b.item_ids)} items x {b.meta['dim']}-d, "
           f"{len(b.user_ids)} users; serve it with: PRISMREC_API_KEY=... prismrec serve {path}")


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="a bundle directory made by prismrec export"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    state: Optional[Path] = typer.Option(None, "--state", help="folder for added items (default BUNDLE/state)"),
    ann_threshold: int = typer.Option(50_000, "--ann-threshold", min=1,
                                      help="catalogues of at least this many items use an ANN (IVF) index"),
    max_k: int = typer.Option(100, "--max-k", min=1, help="largest k a request may ask for"),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", min=0.01, help="largest request body (MiB)"),
    workers_threads: int = typer.Option(1, "--threads", min=1, help="torch/FAISS threads per request"),
    workers: int = typer.Option(1, "--workers", min=1, help="service processes (they share the item store)"),
    store: Optional[str] = typer.Option(None, "--store", help="item store database URL (e.g. "
                                        "postgresql+psycopg://user@host/db) shared by several machines; default: "
                                        "SQLite in the state folder"),
    cold_start: str = typer.Option("knn", "--cold-start",
                                   help="placing added items: knn (feature neighbours) or model (LIRDRec's item tower)"),
) -> None:
    """Serve a bundle over HTTP (FastAPI; API key from PRISMREC_API_KEY in the X-API-Key header)."""
    from ..api import serve as run_serve

    # uvicorn's own lines (start-up chatter, one access line per request) only with -v
    run_serve(bundle, host=host, port=port, log_level="info" if _STATE["verbose"] else "warning", state_dir=state,
              ann_threshold=ann_threshold, max_k=max_k, max_body_bytes=int(max_body_mb * 2 ** 20),
              threads=workers_threads, cold_start=cold_start, workers=workers, store_url=store)


def _protocol(metrics: dict) -> str:
    """Whether a run's ranking masked the user's history (its metrics.json), for table titles."""
    return "history masked" if metrics.get("mask_history", True) else "history not masked"


def _metrics_table(metrics: dict, title: str) -> str:
    from ..report.tables import metrics_table

    return metrics_table(metrics, title).markdown()


def main() -> None:
    """Console entry point: user errors become one paragraph and exit status 2."""
    from ..errors import PrismrecError

    debug = "--debug" in sys.argv or os.environ.get("PRISMREC_DEBUG") == "1"
    try:
        app(args=_global_flags_first(sys.argv[1:]))
    except PrismrecError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; a run resumes with the same command plus --resume", err=True)
        sys.exit(130)
    except OSError as exc:  # a disk or permission problem outside the atomic writers: the path and the fix
        from ..utils.io import user_os_error

        err = None if debug else user_os_error(exc)
        if err is None:
            if debug:
                raise
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback, "
                       "and please report it)", err=True)
            sys.exit(1)
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug or an environment problem: still one paragraph unless --debug
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback, "
                   "and please report it)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
