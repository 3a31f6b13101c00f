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

_STATE = {"debug": False, "quiet": False}


def _setup_logging(quiet: bool, verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("prismrec")
    logger.handlers.clear()
    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False, markup=False,
                          rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks of errors"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only warnings and results"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    _STATE["debug"] = debug
    _STATE["quiet"] = quiet
    _setup_logging(quiet, verbose)


def _progress() -> bool:
    return not _STATE["quiet"] and sys.stderr.isatty()


def _print(text: str) -> None:
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
) -> None:
    """Train one model and write RUN_DIR/metrics.json (test metrics at the best validation epoch)."""
    from ..runs import train_run

    run = train_run(model, data, out, config_files=config, overrides=set_, seed=seed, epochs=epochs,
                    resume=resume, progress=_progress(), device=device)
    m = run.metrics
    _print(_metrics_table(m["test"], title=f"{m['model']} on {m['dataset']}: test at best epoch {m['best_epoch']} "
                                           f"(of {m['epochs_run']}, {m['train_seconds']:.1f}s)"))
    _print(f"run saved in {out}")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory made by prismrec train"),
    stage: str = typer.Option("test", "--stage", help="test or valid"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Re-score a saved run on its saved split and print the metrics."""
    from ..runs import evaluate_run

    if stage not in ("test", "valid"):
        raise typer.BadParameter("--stage is test or valid")
    metrics = evaluate_run(run_dir, stage)
    _print(json.dumps(metrics, indent=2) if as_json else _metrics_table(metrics, title=f"{run_dir}: {stage}"))


@app.command()
def datasets(
    root: list[Path] = typer.Option([], "--root", help="extra folder(s) holding datasets"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List bundled datasets and those under data roots (PRISMREC_DATA, ./data, --root) with statistics."""
    from ..config import DataConfig
    from ..data import list_known, read_dataset
    from ..errors import PrismrecError

    if root:
        os.environ["PRISMREC_DATA"] = os.pathsep.join([*map(str, root), os.environ.get("PRISMREC_DATA", "")])
    rows = []
    for name, path in list_known():
        try:
            ds = read_dataset(path, DataConfig())
        except PrismrecError as exc:
            rows.append({"name": name, "path": str(path), "error": str(exc).split(". ")[0]})
            continue
        st = ds.stats()
        rows.append({"name": name, "path": str(path), **{k: st[k] for k in
                     ("format", "users", "items", "interactions", "density", "given_split")},
                     "modalities": "; ".join(st["modalities"].values()) or "-"})
    if as_json:
        _print(json.dumps(rows, indent=2))
        return
    lines = ["| name | format | users | items | interactions | density | split | modalities |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | unreadable: {r['error']} | | | | | | |")
        else:
            lines.append(f"| {r['name']} | {r['format']} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | "
                         f"{r['density']:.5f} | {'given' if r['given_split'] else '-'} | {r['modalities']} |")
    _print("\n".join(lines))


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
) -> None:
    """Train several models (x seeds) on one split; print and save a Markdown and CSV table."""
    from ..compare import compare as run_compare

    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    log = logging.getLogger("prismrec")

    def on_run(label: str, seed: int, m: dict) -> None:
        log.info("%s seed %d: test %s", label, seed,
                 ", ".join(f"{k} {m['test'][k]:.4f}" for k in metrics.split(",") if k in m["test"]))

    res = run_compare(model, data, out, seeds=seed_list, config_files=config, overrides=set_, epochs=epochs,
                      metrics=[m.strip().lower() for m in metrics.split(",")], progress=_progress(), on_run=on_run)
    _print(res.markdown)
    _print(f"tables saved in {out}/results.md and {out}/results.csv")


@app.command()
def tune(
    model: str = typer.Option(..., "--model", "-m"),
    data: str = typer.Option(..., "--data", "-d"),
    out: Path = typer.Option(..., "--out", "-o"),
    grid: list[str] = typer.Option(..., "--grid", "-g", help="KEY=V1,V2,... (repeatable); values parsed as YAML"),
    seeds: str = typer.Option("0", "--seeds", help="seeds of each trial (selection uses their mean)"),
    final_seeds: str = typer.Option("0,1,2", "--final-seeds", help="seeds for the chosen setting ('' to skip)"),
    select: str = typer.Option("recall@20", "--select", help="validation metric that picks the setting"),
    config: list[Path] = typer.Option([], "--config", "-c"),
    set_: list[str] = typer.Option([], "--set", "-s"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
) -> None:
    """Grid search on VALIDATION, then the chosen setting over several seeds (test mean and spread)."""
    from ..compare import tune as run_tune
    from ..config import parse_value
    from ..errors import ConfigError

    space: dict[str, list] = {}
    for g in grid:
        if "=" not in g:
            raise ConfigError(f"--grid {g!r} is not KEY=V1,V2. Example: --grid reg_weight=1e-4,1e-3")
        key, vals = g.split("=", 1)
        space[key.strip()] = [parse_value(v.strip()) for v in _split_values(vals)]
    log = logging.getLogger("prismrec")
    res = run_tune(model, data, out, space, seeds=[int(s) for s in seeds.split(",") if s.strip()],
                   final_seeds=[int(s) for s in final_seeds.split(",") if s.strip()], config_files=config,
                   overrides=set_, epochs=epochs, select=select.lower(), progress=_progress(),
                   on_run=lambda label, seed, m: log.info("%s seed %d: valid %s %.4f", label, seed, select,
                                                          m["valid"].get(select.lower(), float("nan"))))
    _print(res.markdown)


def _split_values(text: str) -> list[str]:
    """Split V1,V2 on commas outside brackets, so list values like [1,2] stay whole."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [v for v in [*out, cur] if v.strip()]


@app.command()
def recommend(
    run_dir: Path = typer.Argument(...),
    user: list[str] = typer.Option(..., "--user", "-u", help="raw user id (repeatable)"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="number of items"),
    include_seen: bool = typer.Option(False, "--include-seen", help="do not filter items the user already has"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the top-k raw item ids (and titles) for one or more users of a saved run."""
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
    from ..evaluate.explain import explain_user
    from ..runs import load_run

    ex = explain_user(load_run(run_dir), user, k)
    _print(json.dumps(ex.as_dict(), indent=2) if as_json else ex.text())
    if not no_plot:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(user))
        path = ex.plot(plot or Path(run_dir) / "explain" / f"{safe}.png")
        if not as_json:
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
    from ..models import MODELS

    for name in MODELS.names():
        cls = MODELS.get(name)
        fields = ", ".join(f"{k}={v.default!r}" for k, v in cls.Config.model_fields.items())
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        _print(f"{name:12s} [{cls.family}] {doc}\n{'':12s} {fields or '(no settings)'}")


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
    from ..data import load_dataset
    from ..data.features_io import save_item_features
    from ..errors import PrismrecError
    from ..evaluate.feature_quality import data_config
    from ..models.general.alignrec_stage1 import AlignConfig, retrieval_table, train_alignment

    ds = load_dataset(data, data_config(config, set_))
    names = sorted(modality or ds.modalities)
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
    _print(f"stage 1 on {ds.name}: {', '.join(names)} -> {dim}-d, best held-out loss at epoch {rep['best_epoch']} "
           f"(of {rep['epochs_run']}); held-out retrieval:\n")
    _print(retrieval_table(rep))
    _print(f"\nwrote {out} ({int(res.available.sum())} of {len(res.available)} items with a feature); use it with "
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
    from ..data import load_dataset, make_split
    from ..evaluate.feature_quality import data_config, feature_quality
    from ..models.general.alignrec_stage1 import AlignConfig
    from ..utils.io import write_json

    if stage not in ("test", "valid"):
        raise typer.BadParameter("--stage is test or valid")
    cfg = data_config(config, set_)
    ds = load_dataset(data, cfg)
    split = make_split(ds, cfg)
    rep = feature_quality(ds, split, modalities=modality or None, k=k, aligned=aligned,
                          align_cfg=AlignConfig(seed=seed), mask_ratio=mask_ratio, seed=seed, stage=stage,
                          filter_cold_users=cfg.filter_cold_users)
    _print(f"feature quality on {ds.name} ({stage}, item-kNN k={k}, {100 * mask_ratio:.0f} % of items masked):\n")
    _print(rep.markdown())
    if out is not None:
        write_json(out, rep.as_dict())
        _print(f"\nsaved {out}")


@app.command()
def features(
    modality: str = typer.Option(..., "--modality", help="text, image, caption or price"),
    out: Path = typer.Option(..., "--out", "-o", help="FILE.npz (id-keyed) or DATA_DIR/<name>_feat.npy (row-aligned)"),
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
    from ..errors import PrismrecError
    from ..features.encoders import build_encoder
    from ..features.extract import extract, pick_column, read_items

    if (data is None) == (items is None):
        raise PrismrecError("give exactly one of --data (a dataset) or --items (an item table).")
    if modality not in ("text", "image", "caption", "price"):
        raise PrismrecError(f"unknown --modality {modality!r}. Fix: --modality text, image, caption or price.")
    if threads:
        import torch

        torch.set_num_threads(threads)
    order = None
    if data is not None:
        from ..data import read_dataset
        from ..config import DataConfig

        ds = read_dataset(data, DataConfig())
        table = ds.items.copy()
        table["item_id"] = ds.item_ids.astype(str)
        order = ds.item_ids
        root = image_root or Path(ds.source.get("path", ".") if isinstance(ds.source, dict) else ".")
        name = ds.name
    else:
        table = read_items(items)
        root = image_root or items.parent
        name = items.stem
    if limit:
        table, order = table.iloc[:limit].reset_index(drop=True), None
    col = pick_column(table, modality, column)
    stats = None
    if modality == "price":
        from ..features.encoders import PriceEncoder

        stats = PriceEncoder(encoder or "log-quantile").fit(table[col].tolist()).settings
    enc = build_encoder(modality, encoder, captioner=captioner, text_spec=text_encoder, image_root=root,
                        batch_size=batch_size, price_stats=stats)
    cache_dir = None if no_cache else (cache or out.expanduser().parent / ".prismrec-cache")
    res = extract(table, enc, column=col, modality=modality, out=out, cache_dir=cache_dir, batch_size=batch_size,
                  image_root=root, dataset=name, progress=_progress(), item_order=order)
    m = res.manifest
    miss = ", ".join(f"{k} {v}" for k, v in m["missing"].items()) or "none"
    rate = f", {m['items_per_second']} items/s" if m["items_per_second"] else ""
    _print(f"{modality}: {m['items']} items -> {m['dim']}-d with {m['encoder']} ({m['encoded_now']} encoded in "
           f"{m['seconds']:.1f}s{rate}, {m['from_cache']} from cache); missing: {miss}")
    _print(f"wrote {res.out} and {res.out.name}.manifest.json")


def _encoder_sets(encoder: list[str]) -> list[str]:
    """--encoder MODALITY=NAME -> ant.feature_encoders.MODALITY=NAME overrides."""
    from ..errors import ConfigError

    out = []
    for e in encoder:
        if "=" not in e:
            raise ConfigError(f"--encoder {e!r} is not MODALITY=NAME. Example: --encoder text=all-MiniLM-L6-v2")
        m, name = e.split("=", 1)
        out.append(f"ant.feature_encoders.{m.strip()}={json.dumps(name.strip())}")
    return out


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
    from ..train.transfer import pretrain as run_pretrain

    meta = run_pretrain(data, out, config_files=config, overrides=[*_encoder_sets(encoder), *set_], seed=seed,
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
    from ..train.transfer import adapt as run_adapt

    run = run_adapt(pretrained, data, strategy, out, config_files=config, overrides=[*_encoder_sets(encoder), *set_],
                    seed=seed, epochs=epochs, resume=resume, progress=_progress(), device=device)
    m = run.metrics
    _print(_metrics_table(m["test"], title=f"ant ({strategy}) on {m['dataset']}: test at best epoch {m['best_epoch']} "
                                           f"(of {m['epochs_run']}, {m['train_seconds']:.1f}s)"))
    _print(f"run saved in {out}")


@app.command("transfer-report")
def transfer_report(
    run_dirs: list[Path] = typer.Argument(..., help="finished prismrec adapt runs (every strategy and seed)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for transfer.md/.json/.png"),
    metrics: str = typer.Option("recall@10,recall@50,ndcg@10,ndcg@50", "--metrics"),
    no_plot: bool = typer.Option(False, "--no-plot"),
) -> None:
    """Each strategy against scratch per target: mean +- std, difference, paired test, negative-transfer flag."""
    from ..train.transfer import transfer_report as report, write_report

    ms = [x.strip().lower() for x in metrics.split(",") if x.strip()]
    if out is not None:
        md, png = write_report(run_dirs, out, metrics=ms, plot=not no_plot)
        _print(md)
        _print(f"\nsaved {out}/transfer.md, transfer.json" + (f", {png.name}" if png else ""))
    else:
        md, _ = report(run_dirs, metrics=ms)
        _print(md)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    out: Path = typer.Option(..., "--out", "-o", help="bundle directory to create"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the files of an existing bundle"),
) -> None:
    """Write a self-contained serving bundle (item/user vectors, id maps, titles, config, weights)."""
    from ..serve.bundle import export_bundle, load_bundle

    path = export_bundle(run_dir, out, overwrite=overwrite)
    b = load_bundle(path)
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
    cold_start: str = typer.Option("knn", "--cold-start",
                                   help="placing added items: knn (feature neighbours) or model (LIRDRec's item tower)"),
) -> None:
    """Serve a bundle over HTTP (FastAPI; API key from PRISMREC_API_KEY in the X-API-Key header)."""
    from ..errors import PrismrecError
    from ..serve.app import ServeSettings, create_app

    key = os.environ.get("PRISMREC_API_KEY", "")
    if not key:
        raise PrismrecError("PRISMREC_API_KEY is not set. Fix: export PRISMREC_API_KEY=<a secret>; clients send it "
                            "in the X-API-Key header.")
    try:
        import uvicorn
    except ImportError:
        raise PrismrecError("prismrec serve needs uvicorn and fastapi. Fix: pip install 'prismrec[serve]'.") from None
    settings = ServeSettings(api_key=key, state_dir=state, ann_threshold=ann_threshold, max_k=max_k,
                             max_body_bytes=int(max_body_mb * 2 ** 20), threads=workers_threads, cold_start=cold_start)
    uvicorn.run(create_app(bundle, settings), host=host, port=port, timeout_keep_alive=30,
                log_level="warning" if _STATE["quiet"] else "info")


def _metrics_table(metrics: dict, title: str) -> str:
    names = sorted({k.split("@")[0] for k in metrics})
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    lines = [title, "", "| metric | " + " | ".join(f"@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{metrics.get(f'{n}@{k}', float('nan')):.4f}" for k in ks) + " |")
    return "\n".join(lines)


def main() -> None:
    """Console entry point: user errors become one paragraph and exit status 2."""
    from ..errors import PrismrecError

    debug = "--debug" in sys.argv or os.environ.get("PRISMREC_DEBUG") == "1"
    try:
        app()
    except PrismrecError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; a run resumes with the same command plus --resume", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug or an environment problem: still one paragraph unless --debug
        if debug:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback, "
                   "and please report it)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
