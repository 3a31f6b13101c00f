"""Compare several models or configurations over several seeds: one table, mean and spread.

An entry is a model name, optionally with its own settings in brackets, e.g. ``lightgcn``,
``lightgcn[n_layers=2]`` or ``bpr[item_bias=true;reg_weight=0.001]`` (``;`` separates settings).
Every entry x seed trains into ``OUT/<entry>/seed-<seed>``; finished runs are reused and interrupted
ones resumed, so a killed comparison continues where it stopped. All entries share one split
(``data.split_seed``), so per-user results are paired: each entry is tested against the first one
with a paired test on the per-user metric averaged over seeds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .config import Overrides, OverridesLike, merge_overrides, parse_grid, parse_overrides
from .errors import ConfigError
from .report.paired import paired_over_seeds
from .report.tables import Table, history_protocol, num, protocol_caption, pvalue, seed_summary_table
from .runs import (METRICS_FILE, PER_USER_FILE, adopt_trained, load_per_user, masked_history, reuse_finished,
                   train_run)
from .utils.io import read_json, write_text

ENTRY_RE = re.compile(r"^\s*(?P<model>[A-Za-z0-9_\-]+)\s*(?:\[(?P<settings>.*)\])?\s*$")
DEFAULT_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


@dataclass
class Entry:
    """One compared setting: its label (``model[k=v;...]``, also its folder name), the canonical model name
    and its settings as a typed override mapping (bare keys of the model qualified: ``lightgcn.n_layers``)."""

    label: str
    model: str
    overrides: Overrides = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Entry":
        """``NAME`` or ``NAME[key=value;key=value]`` (values parsed like ``--set``)."""
        m = ENTRY_RE.match(text)
        if not m:
            raise ConfigError(f"cannot parse model entry {text!r}; write NAME or NAME[key=value;key=value].")
        settings = [s.strip() for s in (m.group("settings") or "").split(";") if s.strip()]
        for s in settings:
            if "=" not in s:
                raise ConfigError(f"setting {s!r} in entry {text!r} is not key=value.")
        return cls.of(m.group("model"), parse_overrides(settings), label=text.strip())

    @classmethod
    def of(cls, model: str, settings: OverridesLike = None, *, label: str | None = None) -> "Entry":
        """An entry from typed settings; the label defaults to how the command line writes it."""
        from .models import MODELS

        name = MODELS.canonical(model)
        settings = parse_overrides(settings)
        if label is None:
            shown = ";".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items())
            label = f"{model}[{shown}]" if shown else model
        # bare keys inside brackets belong to this model's section unless qualified
        own = merge_overrides(*({f"{name}.{k}" if "." not in k and _is_model_key(name, k) else k: v}
                                for k, v in settings.items()))
        return cls(label=label, model=name, overrides=own)

    @property
    def dirname(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.label).strip("_")


def _is_model_key(model: str, key: str) -> bool:
    """True when the bare ``key`` (or ``key=value``) names a setting of ``model``'s own section."""
    from .models import MODELS

    return key.split("=", 1)[0].strip().lower() in MODELS.get(model).Config.model_fields


@dataclass
class Comparison:
    runs: pd.DataFrame
    summary: pd.DataFrame
    markdown: str
    out: Path
    report: Path | None = None  # OUT/report.html (None when it could not be written: a warning says why)


def compare(entries: Sequence[str | Entry], data: str | Path, out: str | Path, *, seeds: Sequence[int] = (0,),
            config_files: Sequence[str | Path] = (), overrides: OverridesLike = (), epochs: int | None = None,
            metrics: Sequence[str] = DEFAULT_METRICS, progress: bool = False,
            on_run: Callable[[str, int, dict[str, Any]], None] | None = None, tune_trials: int = 0,
            tune_options: Mapping[str, Any] | None = None, jobs: int | None = 1, ddp: int = 1,
            trained: Mapping[tuple[str, int], Path] | None = None, references: Sequence[str] = ()) -> Comparison:
    """Train (or reuse) every entry x seed under ``out`` and tabulate test metrics (mean, std).

    ``jobs``: runs trained at once, in worker processes with ``cores // jobs`` torch threads each
    (:mod:`prismrec.parallel`; None: two on a CPU with two cores or more, else one; 1: one after the other
    in this process). ``on_run(label, seed, metrics)`` is called as each run ends (reused runs first).

    ``tune_trials > 0``: before its seeds, every entry gets the same search (``tune_trials`` TPE trials on
    validation of its model's search space, its own bracket settings held fixed, the same patience and epochs;
    ``OUT/<entry>/tune``), and its seeds run the selected setting; the table's caption says so.
    ``tune_options`` are passed to :func:`prismrec.study.tune_study` (``workers``, ``select``, ``prune``...).

    ``ddp > 1``: every seed run is trained data-parallel by that many processes (``torchrun``; one run at a
    time, :func:`prismrec.parallel.torchrun_train`); tuning trials still run one process each.

    ``trained[(label, seed)]``: a run of that entry and seed already trained with its test set unscored (a study's
    selected trial at the trial seed; ``tune_trials`` fills it): copied and scored, not trained again
    (:func:`prismrec.runs.adopt_trained`; trained as usual when its inputs differ).

    ``references``: the entries (label, folder name, or a model name listed once) every other entry is tested
    against, each by the paired test over seeds (``diff_vs_<label>``, ``p_vs_<label>``; one p column each in the
    table); default the first entry. ``p_value`` is the test against the first reference."""
    out = Path(out)
    parsed = [e if isinstance(e, Entry) else Entry.parse(e) for e in entries]
    labels = [e.label for e in parsed]
    if len(set(labels)) != len(labels):
        raise ConfigError("the same model entry is listed twice; give each entry different settings.")
    refs = list({e.label: e for e in (find_entry(parsed, r) for r in references)}.values()) or parsed[:1]
    rows = []
    tuned: dict[str, Overrides] = {}
    protocol = None
    trained = dict(trained or {})
    if tune_trials:
        tuned, protocol, selected_runs = _tune_entries(parsed, data, out, tune_trials, seeds, config_files, overrides,
                                                       epochs, dict(tune_options or {}), progress)
        trained.update(selected_runs)
    plan: list[list[Any]] = []  # [entry, seed, run_dir, metrics (None until trained)]
    todo: list[tuple[int, dict[str, Any]]] = []  # (plan index, train_run arguments) of the runs to train
    for entry in parsed:
        for seed in seeds:
            run_dir = out / entry.dirname / f"seed-{seed}"
            settings = merge_overrides(overrides, entry.overrides, tuned.get(entry.label, {}))
            # a finished run is reused only when it was made from the same settings and data
            build = dict(config_files=config_files, overrides=settings, seed=seed, epochs=epochs)
            m = reuse_finished(run_dir, entry.model, data, **build)
            if m is None:
                src = trained.get((entry.label, seed))
                adopted = src is not None and adopt_trained(Path(src), run_dir, entry.model, data, **build)
                resume = adopted or (run_dir.is_dir() and any(run_dir.iterdir()))
                todo.append((len(plan), dict(model=entry.model, data=data, out=run_dir, config_files=config_files,
                                             overrides=settings, seed=seed, epochs=epochs, resume=resume,
                                             progress=progress)))
            elif on_run:
                on_run(entry.label, seed, m)
            plan.append([entry, seed, run_dir, m])

    def trained(i: int, m: dict[str, Any]) -> None:
        plan[todo[i][0]][3] = m
        if on_run:
            on_run(plan[todo[i][0]][0].label, plan[todo[i][0]][1], m)

    from .parallel import default_jobs, run_all, torchrun_train  # several runs at once: see prismrec.parallel

    if ddp > 1:
        run_all([t for _, t in todo], 1, on_result=trained, train=torchrun_train(ddp))
    else:
        run_all([t for _, t in todo], default_jobs(len(todo)) if jobs is None else jobs, progress=progress,
                on_result=trained, train=lambda **kw: train_run(**kw).metrics)
    for entry, seed, run_dir, m in plan:
        row = {"entry": entry.label, "model": m["model"], "seed": seed, "best_epoch": m["best_epoch"],
               "epochs_run": m["epochs_run"], "train_seconds": m["train_seconds"],
               "epoch_seconds": m.get("epoch_seconds"), "eval_seconds": m.get("eval_seconds"),
               "peak_rss_mb": m.get("peak_rss_mb"),
               "mask_history": m["mask_history"] if "mask_history" in m else masked_history(run_dir),
               "run_dir": str(run_dir)}
        row.update({f"test_{k}": m["test"].get(k, np.nan) for k in metrics})
        row.update({f"valid_{k}": m["valid"].get(k, np.nan) for k in metrics})
        rows.append(row)
    runs = pd.DataFrame(rows)
    summary = _summarise(runs, parsed, metrics, out, seeds, refs)
    md = _markdown(summary, metrics, data, seeds, history_protocol(runs["mask_history"]), refs)
    if protocol:
        md = f"Protocol: {protocol}\n\n" + md
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "runs.csv", runs.to_csv(index=False))
    write_text(out / "results.csv", summary.to_csv(index=False))
    write_text(out / "results.md", md)
    from .report.html import write_report_safely  # plots never fail a comparison (a warning instead)

    return Comparison(runs, summary, md, out, write_report_safely([out], out / "report.html"))


def _tune_entries(entries: list[Entry], data: Any, out: Path, trials: int, seeds: Sequence[int],
                  config_files: Sequence[str | Path], overrides: OverridesLike, epochs: int | None,
                  options: dict[str, Any], progress: bool
                  ) -> tuple[dict[str, Overrides], str, dict[tuple[str, int], Path]]:
    """The same search for every entry: ``trials`` trials (trial seed: the first seed), then its best setting, the
    protocol line, and each entry's selected trial run at the trial seed (its first seed run, already trained)."""
    from .runs import build_config
    from .search_space import canonical_key
    from .study import tpe_startup_note, tune_study

    patience = {build_config(e.model, data, config_files=config_files,
                             overrides=merge_overrides(overrides, e.overrides)).train.patience for e in entries}
    if len(patience) > 1:
        raise ConfigError(f"compare --tune gives every model the same patience rule, and the entries set different "
                          f"train.patience values ({sorted(patience)}). Fix: set it once with --set train.patience=N.")
    tuned: dict[str, Overrides] = {}
    selected_runs: dict[tuple[str, int], Path] = {}
    spec = None
    for e in entries:
        fixed: dict[str, Any] = {}
        for key in e.overrides:  # an entry's own settings are held fixed: they leave its space
            try:
                fixed[canonical_key(e.model, key)] = None
            except ConfigError:
                pass
        res = tune_study(e.model, data, out / e.dirname / "tune", space=fixed, trials=trials, seeds=[seeds[0]],
                         final_seeds=(), config_files=config_files, overrides=merge_overrides(overrides, e.overrides),
                         epochs=epochs, progress=progress, **options)
        spec = res.spec
        selected_runs.update({(e.label, s): p for s, p in res.selected_runs.items()})
        tuned[e.label] = merge_overrides({k if k.startswith(("train.", "data.")) else f"{e.model}.{k}": v
                                          for k, v in res.best_params.items()},
                                         {"train.valid_metric": spec.select})
    assert spec is not None
    prune = f"median pruning after {spec.prune_warmup} epochs" if spec.prune else "no pruning"
    protocol = (f"each model: {trials} trials TPE{tpe_startup_note(trials)} on validation {spec.select} "
                f"(trial seed {seeds[0]}, {prune}, "
                f"patience {patience.pop()}{f', at most {epochs} epochs' if epochs else ''}), then seeds "
                f"{', '.join(map(str, seeds))} of the selected setting; test scored only for those runs.")
    return tuned, protocol, selected_runs


def find_entry(entries: Sequence[Entry], name: str) -> Entry:
    """The entry ``name`` names: its label, its folder name, or its model when that model is listed once."""
    hits = [e for e in entries if name in (e.label, e.dirname)] or [e for e in entries if e.model == name]
    if len(hits) != 1:
        why = "names no entry" if not hits else "is listed more than once"
        raise ConfigError(f"--ref {name!r} {why}; give one of the entries' labels: "
                          f"{', '.join(e.label for e in entries)}.")
    return hits[0]


def _summarise(runs: pd.DataFrame, entries: list[Entry], metrics: Sequence[str], out: Path,
               seeds: Sequence[int], refs: Sequence[Entry]) -> pd.DataFrame:
    per_user = {r.label: _per_user_seeds(out / r.dirname, seeds, metrics[-1]) for r in refs}
    recs = []
    for e in entries:
        sub = runs[runs["entry"] == e.label]
        rec: dict[str, Any] = {"entry": e.label, "seeds": len(sub)}
        for k in metrics:
            vals = sub[f"test_{k}"].to_numpy(float)
            rec[f"{k}_mean"] = float(np.mean(vals))
            rec[f"{k}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        rec["train_seconds_mean"] = float(sub["train_seconds"].mean())
        rec["epoch_seconds_mean"] = float(sub["epoch_seconds"].mean())
        rec["best_epoch_mean"] = float(sub["best_epoch"].mean())
        other = per_user[e.label] if e.label in per_user else _per_user_seeds(out / e.dirname, seeds, metrics[-1])
        for i, ref in enumerate(refs):
            if e is not ref and other is not None and per_user[ref.label] is not None:
                t = paired_over_seeds(per_user[ref.label], other, metrics[-1])
                rec[f"diff_vs_{ref.label}"] = t.diff
                rec[f"p_vs_{ref.label}"] = t.t_pvalue
                if i == 0:
                    rec["p_value"] = t.t_pvalue
        recs.append(rec)
    return pd.DataFrame(recs)


def _per_user_seeds(entry_dir: Path, seeds: Sequence[int], metric: str) -> list[dict[str, np.ndarray]] | None:
    """The per-user test results of every seed of one entry (None if a seed lacks them or the metric)."""
    acc = []
    for s in seeds:
        run_dir = entry_dir / f"seed-{s}"
        if not (run_dir / PER_USER_FILE).is_file():
            return None
        z = load_per_user(run_dir)
        if metric not in z:
            return None
        acc.append(z)
    return acc


def _markdown(summary: pd.DataFrame, metrics: Sequence[str], data: Any, seeds: Sequence[int],
              history: str | None = None, refs: Sequence[Entry] = ()) -> str:
    extra: list[tuple[str, Any]] = [("s/epoch", lambda r: num(r["epoch_seconds_mean"], 3)),
                                    ("best epoch", lambda r: num(r["best_epoch_mean"], 0))]
    for ref in refs:
        if f"p_vs_{ref.label}" in summary.columns:
            extra.append((f"p vs {ref.label} ({metrics[-1]})",
                          lambda r, col=f"p_vs_{ref.label}": pvalue(r.get(col))))
    table = seed_summary_table(summary.to_dict("records"), metrics, extra=extra,
                               caption=protocol_caption(data, seeds, history=history))
    return table.markdown() + "\n"


@dataclass
class TuneResult:
    trials: pd.DataFrame
    best: Entry
    final: Comparison | None
    markdown: str


def grid_entries(model: str, grid: Mapping[str, Sequence[Any]] | Sequence[str]) -> list[Entry]:
    """Every combination of a small grid (``{key: [values]}``, or ``KEY=V1,V2`` strings) as compare entries,
    labelled ``model[k=v;...]``."""
    import itertools

    space = parse_grid(grid)
    keys = list(space)
    combos = itertools.product(*(space[k] for k in keys))
    return [Entry.of(model, dict(zip(keys, values))) for values in combos]


def tune(model: str, data: str | Path, out: str | Path, grid: Mapping[str, Sequence[Any]] | Sequence[str], *,
         seeds: Sequence[int] = (0,), final_seeds: Sequence[int] = (), config_files: Sequence[str | Path] = (),
         overrides: OverridesLike = (), epochs: int | None = None, select: str = "recall@20",
         progress: bool = False, on_run: Callable[[str, int, dict[str, Any]], None] | None = None) -> TuneResult:
    """Grid search selected on the VALIDATION metric ``select`` (mean over ``seeds``).

    Every trial is a run under ``out/trials``; the chosen setting is then run with ``final_seeds``
    (reusing trials with the same seed) under ``out/final``, whose table reports test mean and spread.
    """
    out = Path(out)
    entries = grid_entries(model, grid)
    metrics = list(dict.fromkeys([select, *DEFAULT_METRICS]))
    trials = compare(entries, data, out / "trials", seeds=seeds, config_files=config_files, overrides=overrides,
                     epochs=epochs, metrics=metrics, progress=progress, on_run=on_run)
    per_entry = trials.runs.groupby("entry", sort=False)[f"valid_{select}"].mean()
    best_label = str(per_entry.idxmax())
    best = next(e for e in entries if e.label == best_label)
    final = None
    if final_seeds:
        final_dir = out / "final"
        for s in final_seeds:  # reuse trial runs of the chosen setting
            src = out / "trials" / best.dirname / f"seed-{s}"
            dst = final_dir / best.dirname / f"seed-{s}"
            if (src / METRICS_FILE).is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src.resolve(), target_is_directory=True)
        final = compare([best], data, final_dir, seeds=final_seeds, config_files=config_files,
                        overrides=overrides, epochs=epochs, metrics=list(DEFAULT_METRICS), progress=progress,
                        on_run=on_run)
    table = trials.runs.groupby("entry", sort=False).agg(
        **{f"valid_{select}": (f"valid_{select}", "mean"), f"test_{select}": (f"test_{select}", "mean"),
           "best_epoch": ("best_epoch", "mean")}).reset_index()
    t = Table(["setting", f"valid {select}", f"test {select}", "best epoch"],
              caption=f"Grid for `{model}` on `{data}`, selected on validation {select} (seeds {list(seeds)}); "
                      f"chosen: `{best.label}`")
    for _, r in table.iterrows():
        mark = " **(chosen)**" if r["entry"] == best.label else ""
        t.add(f"`{r['entry']}`{mark}", num(r[f"valid_{select}"]), num(r[f"test_{select}"]), num(r["best_epoch"], 0))
    md = t.markdown() + "\n"
    if final is not None:
        md += "\n" + final.markdown
    write_text(out / "tune.md", md)
    write_text(out / "trials.csv", trials.runs.to_csv(index=False))
    return TuneResult(trials.runs, best, final, md)
