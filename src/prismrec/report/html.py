"""One self-contained HTML report (``prismrec report DIR...``, written by ``prismrec compare`` at the end).

The page needs nothing at view time: the style sheet is inline, every plot is a PNG embedded as a
``data:`` URI, and there is no script. It reads what runs leave on disk and recomputes nothing but the
paired tests (with :mod:`prismrec.report.paired`, the one rule over seeds):

* a **run directory** (``metrics.json``, ``history.jsonl``, ``per_user_test.npz``): the run's facts, its
  test and validation metrics, validation curves per epoch, results by user activity and by item
  popularity, and for a sequential model an attribution example (:mod:`prismrec.evaluate.explain`);
* a **compare folder** (``runs.csv``, ``results.md``, ``OUT/<entry>/seed-<s>/`` runs): the results table,
  metric bars with error bars over seeds, validation curves, the paired-test matrix, segment results,
  per-run facts, and the attribution example of each sequential entry;
* a **tune folder** (``tune.md``, ``trials/``, ``final/``): the grid table, the validation metric per
  setting, then the ``trials`` and ``final`` comparisons as above;
* a **transfer report folder** (``transfer.json`` of ``prismrec transfer-report --out``): the table and its
  difference plot;
* a **feature-quality JSON** (``prismrec evaluate-features --out F.json``), given as a file or found at
  the top of any folder above: its table and bars.

A section whose data is missing is left out; the attribution example is guarded, so its failure only
leaves that section out (with a warning).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import PrismrecError
from ..utils.io import read_json, write_text
from . import plots
from .paired import paired_over_seeds, verdict
from .tables import (Table, count, feature_quality_table, inline_html, metrics_table, num, parse_markdown_tables,
                     pvalue, signed)

log = logging.getLogger("prismrec")

REPORT_FILE = "report.html"
SEGMENT_LABELS = {"popular_items": "popular items", "long_tail_items": "long-tail items",
                  "warm_items": "warm items (in training)", "cold_items": "cold items (never in training)"}
SEGMENT_SHORT = {"popular_items": "popular", "long_tail_items": "long tail", "warm_items": "warm", "cold_items": "cold"}
SEGMENT_ORDER = ("popular_items", "long_tail_items", "warm_items", "cold_items")
FQ_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


# ------------------------------------------------------------------------------------------------ entry points
def write_report(paths: Sequence[str | Path], out: str | Path | None = None, *, title: str | None = None,
                 explain: bool = True) -> Path:
    """Write the report of ``paths`` to ``out`` (default ``DIR/report.html`` for one folder, the JSON's
    name with ``.html`` for one file, ``./report.html`` for several) atomically; returns the path."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise PrismrecError("prismrec report needs at least one run directory, compare, tune or transfer folder.")
    if out is None:
        one = paths[0]
        out = (one / REPORT_FILE if one.is_dir() else one.with_suffix(".html")) if len(paths) == 1 else Path(REPORT_FILE)
    out = Path(out)
    if out.is_dir():
        out = out / REPORT_FILE
    text = build_report(paths, title=title, explain=explain)
    return write_text(out, text)


def write_report_safely(paths: Sequence[str | Path], out: str | Path | None = None, **kw: Any) -> Path | None:
    """:func:`write_report`, but a failure (a plotting library problem, an unreadable file) is a warning
    and returns None: ``prismrec compare`` calls this, and a report never fails a comparison."""
    try:
        return write_report(paths, out, **kw)
    except Exception as exc:  # noqa: BLE001 - the report is a by-product; the tables are already saved
        removed = ""
        if out is not None and Path(out).is_file():  # an older report would describe other runs
            Path(out).unlink()
            removed = f"; removed the older {out}"
        log.warning("no HTML report written (%s: %s)%s", type(exc).__name__, exc, removed)
        return None


def build_report(paths: Sequence[str | Path], *, title: str | None = None, explain: bool = True) -> str:
    """The HTML text of the report of ``paths`` (see the module docstring for what each kind holds)."""
    doc = _Doc(explain=explain)
    for p in (Path(x) for x in paths):
        kind = detect(p)
        {"run": _run_section, "compare": _compare_section, "tune": _tune_section, "transfer": _transfer_section,
         "features": _features_section}[kind](doc, p)
    names = ", ".join(p.name or str(p) for p in map(Path, paths))
    return doc.render(title or f"prismrec report: {names}", [str(p) for p in paths])


def detect(path: Path) -> str:
    """``run``, ``compare``, ``tune``, ``transfer`` or ``features`` (a user error for anything else)."""
    if path.is_file() and path.suffix.lower() == ".json":
        data = _read_json(path)
        if _is_feature_quality(data):
            return "features"
        if _is_transfer(data):
            return "transfer"
    elif path.is_dir():
        if (path / "tune.md").is_file() or (path / "trials" / "runs.csv").is_file():
            return "tune"
        if (path / "runs.csv").is_file():
            return "compare"
        if (path / "metrics.json").is_file():
            return "run"
        if (path / "transfer.json").is_file():
            return "transfer"
        if (path / "config.yaml").is_file():
            raise PrismrecError(f"{path} is a run that has not finished (no metrics.json). Fix: finish it with "
                                f"prismrec train ... --out {path} --resume, then report it.")
    elif not path.exists():
        raise PrismrecError(f"{path} does not exist. Fix: pass a run directory, a compare, tune or transfer-report "
                            "folder, or a feature-quality JSON file.")
    raise PrismrecError(f"{path} is neither a finished run directory (metrics.json), a compare folder (runs.csv), a "
                        "tune folder (tune.md), a transfer report (transfer.json) nor a feature-quality JSON file "
                        "(prismrec evaluate-features --out). Fix: pass one of those.")


# ----------------------------------------------------------------------------------------------- the document
@dataclass
class _Doc:
    explain: bool = True
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[int, str, str]] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    figures: int = 0

    def heading(self, level: int, title: str) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
        anchor, n = slug, 1
        while anchor in self._ids:
            n += 1
            anchor = f"{slug}-{n}"
        self._ids.add(anchor)
        if level <= 3:
            self.toc.append((level, anchor, title))
        self.parts.append(f'<h{level} id="{anchor}">{inline_html(title)}</h{level}>')

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def para(self, text: str, cls: str = "") -> None:
        self.parts.append(f'<p{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{inline_html(text)}</p>')

    def table(self, table: Table, cls: str = "") -> None:
        """A table, its caption as a paragraph above it (a <caption> would wrap at the table's width)."""
        if table.caption:
            self.para(table.caption, "caption")
        bare = Table(table.columns, table.rows)
        self.parts.append(f'<div class="scroll">{bare.html(cls=cls)}</div>')

    def figure(self, fig: Any, caption: str, alt: str) -> None:
        """Embed a matplotlib figure as a PNG data URI (a note instead when matplotlib is missing)."""
        if fig is None:
            self.para("(plot left out: matplotlib is not installed; pip install matplotlib)", "note")
            return
        self.png(plots.png_bytes(fig), caption, alt)

    def png(self, data: bytes, caption: str, alt: str) -> None:
        self.figures += 1
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.parts.append(f'<figure><img class="plot" alt="{html.escape(alt)}" src="{src}">'
                          f"<figcaption>{inline_html(caption)}</figcaption></figure>")

    def render(self, title: str, sources: Sequence[str]) -> str:
        from .. import __version__

        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        toc = "".join(f'<li class="l{level}"><a href="#{a}">{inline_html(t)}</a></li>' for level, a, t in self.toc)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"  # no favicon request when the page is served over HTTP
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{inline_html(title)}</h1>\n"
            f"<p class=\"meta\">Written {when} by prismrec {html.escape(__version__)} from "
            + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources) + ".</p>\n"
            + (f"<nav><ul>{toc}</ul></nav>\n" if toc else "")
            + "\n".join(self.parts) + "\n</main>\n</body>\n</html>\n"
        )


_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#ffffff;--head:#f3f5f9;--accent:#2c5fb3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"DejaVu Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:24px;margin:4px 0 6px}
h2{font-size:20px;margin:34px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:24px 0 6px;color:var(--accent)}
h4{font-size:14px;margin:16px 0 4px}
p.meta,p.note,p.caption,figcaption{color:var(--muted);font-size:12.5px}
p.caption{margin:12px 0 2px}
nav{background:var(--head);border:1px solid var(--line);border-radius:6px;padding:8px 14px;margin:12px 0}
nav ul{margin:0;padding-left:16px;columns:2}
nav li.l3{margin-left:14px;font-size:13px}
a{color:var(--accent);text-decoration:none}
code{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px;background:#f1f3f7;
padding:0 3px;border-radius:3px}
.scroll{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;font-size:13px}
caption{caption-side:top;text-align:left;color:var(--muted);font-size:12.5px;padding:0 0 4px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.facts thead{display:none}
table.facts td.num{text-align:left}
table.facts td:first-child{color:var(--muted);white-space:nowrap}
table.matrix td{text-align:center;white-space:nowrap;font-variant-numeric:tabular-nums}
table.matrix td.better{background:#d8f0dc}
table.matrix td.worse{background:#f8dcdc}
table.matrix td.same{background:#f4f5f7}
table.matrix td.self{background:#e9ebef;color:var(--muted)}
table.matrix small{color:var(--muted)}
figure{margin:10px 0 18px}
img.plot{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
"""


# ---------------------------------------------------------------------------------------------- reading runs
@dataclass
class _Run:
    path: Path
    label: str
    seed: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def valid_metric(self) -> str:
        return str(self.metrics.get("valid_metric") or "recall@20")

    def curve(self, metric: str | None = None) -> dict[str, Any]:
        metric = metric or self.valid_metric
        ep = [(h["epoch"], h["valid"][metric]) for h in self.history
              if isinstance(h.get("valid"), dict) and metric in h["valid"] and "epoch" in h]
        loss = [(h["epoch"], h["loss"]) for h in self.history if "loss" in h and "epoch" in h
                and isinstance(h["loss"], (int, float)) and np.isfinite(h["loss"])]
        return {"epochs": [e for e, _ in ep], "valid": [v for _, v in ep], "loss_epochs": [e for e, _ in loss],
                "loss": [v for _, v in loss], "best_epoch": self.metrics.get("best_epoch")}

    def per_user(self) -> dict[str, np.ndarray] | None:
        p = self.path / "per_user_test.npz"
        if not p.is_file():
            return None
        with np.load(p) as z:
            return {k: z[k] for k in z.files}


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise PrismrecError(f"{path} is not readable JSON ({exc}).") from None


def _load_run(path: Path, label: str | None = None, seed: int | None = None) -> _Run | None:
    mfile = path / "metrics.json"
    if not mfile.is_file():
        return None
    m = _read_json(mfile)
    history = []
    hfile = path / "history.jsonl"
    if hfile.is_file():
        for line in hfile.read_text().splitlines():
            try:
                history.append(json.loads(line))
            except ValueError:
                continue
    return _Run(path, label or str(m.get("model", path.name)), int(m.get("seed", 0) if seed is None else seed), m,
                history)


def run_dir_candidates(folder: Path, recorded: str) -> list[Path]:
    """Where a ``runs.csv`` row's run may be, most likely first. ``runs.csv`` records each run's path as it
    was at compare time; the folder may have moved since (archived, copied from another machine), and the old
    path may then hold something else, so the same ``<entry>/seed-<s>`` under ``folder`` comes first."""
    given = Path(recorded)
    return [Path(folder) / given.parent.name / given.name, given]


def _compare_runs(folder: Path) -> tuple[dict[str, list[_Run]], list[str]]:
    """``{entry: [runs in seed order]}`` of a compare folder (from ``runs.csv``) and its test metrics."""
    import csv

    with open(folder / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    metrics = [c[len("test_"):] for c in (rows[0].keys() if rows else []) if c.startswith("test_")]
    entries: dict[str, list[_Run]] = {}
    for r in rows:
        cands = run_dir_candidates(folder, r["run_dir"]) if r.get("run_dir") else []
        run = next((x for x in (_load_run(c, r["entry"], int(r["seed"])) for c in cands if c.is_dir()) if x), None)
        if run is not None:
            entries.setdefault(r["entry"], []).append(run)
    return entries, metrics


# ------------------------------------------------------------------------------------------------- sections
def _run_section(doc: _Doc, path: Path) -> None:
    run = _load_run(path)
    assert run is not None
    m = run.metrics
    doc.heading(2, f"Run {path.name}: {m.get('model', '?')} on {m.get('dataset', '?')}")
    facts = Table(["", ""])
    split = m.get("split") or {}
    for key, value in (
        ("model", f"`{m.get('model')}`"), ("dataset", f"`{m.get('dataset')}` ({m.get('data_source', '')})"),
        ("seed", m.get("seed")),
        ("best epoch", f"{m.get('best_epoch')} of {m.get('epochs_run')} run"
                       + (" (stopped early)" if m.get("stopped_early") else "")),
        ("selected on", f"validation {run.valid_metric}"),
        ("split", f"{split.get('rule', '?')}: " + ", ".join(f"{k} {count(v)}" for k, v in split.items()
                                                            if k != "rule")),
        ("test users", count(m.get("test_users"))), ("parameters", count(m.get("n_params"))),
        ("training", f"{num(m.get('train_seconds'), 1)} s ({num(m.get('epoch_seconds'), 3)} s/epoch, "
                     f"{num(m.get('eval_seconds'), 3)} s/evaluation) on {m.get('device', '?')}"),
        ("peak memory", f"{count(m.get('peak_rss_mb'))} MB"),
        ("versions", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())),
    ):
        facts.add(key, "" if value is None else value)
    doc.table(facts, "facts")
    if m.get("test"):
        doc.table(metrics_table(m["test"], "Test metrics (weights of the best validation epoch)"))
    if m.get("valid"):
        doc.table(metrics_table(m["valid"], "Validation metrics at the best epoch"))
    _curves(doc, {run.label: [run]})
    _segments(doc, {run.label: [run]})
    _feature_quality_files(doc, path)
    _attribution(doc, {run.label: [run]})


def _compare_section(doc: _Doc, folder: Path, *, title: str | None = None, paired: bool = True) -> None:
    entries, metrics = _compare_runs(folder)
    doc.heading(2, title or f"Comparison {folder.name}")
    first = next((r for runs in entries.values() for r in runs), None)
    if (folder / "results.md").is_file():
        for t in parse_markdown_tables((folder / "results.md").read_text()):
            doc.table(t)
    if first is None:
        doc.para("No finished run in this folder yet.", "note")
        return
    seeds = sorted({r.seed for runs in entries.values() for r in runs})
    values = {e: {k: [r.metrics.get("test", {}).get(k, np.nan) for r in runs] for k in metrics}
              for e, runs in entries.items()}
    metrics = [k for k in metrics if np.isfinite(np.asarray([v for by in values.values() for v in by[k]], float)).any()]
    colors = plots.palette(list(entries))
    if metrics:
        doc.heading(3, "Test metrics over seeds")
        doc.figure(plots.metric_bars(values, metrics, colors=colors),
                   f"Bars: mean over seeds {', '.join(map(str, seeds))}; error bars: standard deviation over seeds; "
                   "dots: the seeds.", "test metrics per model with error bars over seeds")
    _curves(doc, entries, colors)
    if paired and len(entries) > 1:
        _paired_matrix(doc, entries, metrics)
    _segments(doc, entries, colors)
    doc.heading(3, "Runs")
    t = Table(["model", "seed", "best epoch", "epochs run", "train s", "s/epoch", "peak MB", "run"])
    for e, runs in entries.items():
        for r in runs:
            m = r.metrics
            t.add(f"`{e}`", r.seed, m.get("best_epoch"), m.get("epochs_run"), num(m.get("train_seconds"), 1),
                  num(m.get("epoch_seconds"), 3), count(m.get("peak_rss_mb")), f"`{r.path.parent.name}/{r.path.name}`")
    doc.table(t)
    _feature_quality_files(doc, folder)
    _attribution(doc, entries)


def _tune_section(doc: _Doc, folder: Path) -> None:
    doc.heading(2, f"Tuning {folder.name}")
    select = best = None
    if (folder / "tune.md").is_file():
        text = (folder / "tune.md").read_text()
        found = re.search(r"selected on validation (\S+?) ", text)
        select = found.group(1) if found else None
        chosen = re.search(r"chosen: `([^`]+)`", text)
        best = chosen.group(1) if chosen else None
        tables = parse_markdown_tables(text)
        if tables:
            doc.table(tables[0])
    trials = folder / "trials"
    if (trials / "runs.csv").is_file():
        entries, _ = _compare_runs(trials)
        select = select or next((r.valid_metric for runs in entries.values() for r in runs), "recall@20")
        values = {e: {select: [r.metrics.get("valid", {}).get(select, np.nan) for r in runs]} for e, runs in entries.items()}
        doc.figure(plots.metric_bars(values, [select], title="validation", highlight=best),
                   f"The validation {select} of every setting (mean over the trial seeds; the chosen setting is "
                   "outlined). Settings are chosen on validation only; test metrics never enter the choice.",
                   "validation metric per grid setting")
        _compare_section(doc, trials, title="Trials (every grid setting)", paired=False)
    if (folder / "final" / "runs.csv").is_file():
        _compare_section(doc, folder / "final", title="Final runs of the chosen setting")


def _transfer_section(doc: _Doc, path: Path) -> None:
    from .transfer import plot_panels, rows_table

    file = path / "transfer.json" if path.is_dir() else path
    rows = _read_json(file)
    doc.heading(2, f"Transfer report {path.name}")
    doc.para("Each strategy against training from scratch on the target: mean ± std over seeds, the difference, "
             "its 95 % bootstrap interval and the paired tests on per-user results averaged over the seeds.")
    doc.table(rows_table(rows))
    if rows:
        panels, labels = plot_panels(rows)
        doc.figure(plots.difference_bars_figure(panels, labels, xlabel="vs scratch (%)"),
                   "Relative difference to scratch with its 95 % interval; red: significantly worse (negative "
                   "transfer), green: significantly better, grey: no significant difference (paired t, p < 0.05).",
                   "difference to scratch per strategy")


def _features_section(doc: _Doc, path: Path) -> None:
    data = _read_json(path)
    s = data.get("settings", {})
    doc.heading(2, f"Feature quality {path.name}")
    doc.para(f"Item features of `{s.get('dataset', '?')}` judged without training a recommender ({s.get('stage', 'test')} "
             f"users, {s.get('split', '?')} split, item-kNN k={s.get('k', '?')}, "
             f"{100 * float(s.get('mask_ratio', 0)):.0f} % of items losing the masked modality).")
    rows = data.get("rows", [])
    metrics = [m for m in FQ_METRICS if rows and m in rows[0].get("metrics", {})]
    doc.table(feature_quality_table(rows, metrics))
    if rows:
        doc.figure(plots.feature_quality_bars(rows, "recall@20" if "recall@20" in metrics else metrics[-1]),
                   "Full colour: the feature set; hatched: the same with one modality masked for part of the items.",
                   "feature quality per feature set and protocol")


def _feature_quality_files(doc: _Doc, folder: Path) -> None:
    for p in sorted(folder.glob("*.json")):
        if p.name in ("metrics.json", "transfer.json") or p.stat().st_size > 5_000_000:
            continue
        try:
            if _is_feature_quality(read_json(p)):
                _features_section(doc, p)
        except (OSError, ValueError):
            continue


def _is_feature_quality(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("rows"), list) and isinstance(data.get("settings"), dict)
            and all(isinstance(r, dict) and "protocol" in r and "features" in r for r in data["rows"]))


def _is_transfer(data: Any) -> bool:
    return isinstance(data, list) and all(isinstance(r, dict) and "strategy" in r and "setting" in r for r in data)


# ------------------------------------------------------------------------------------------------ the parts
def _curves(doc: _Doc, entries: dict[str, list[_Run]], colors: dict[str, Any] | None = None) -> None:
    metric = next((r.valid_metric for runs in entries.values() for r in runs), "recall@20")
    curves = {e: [r.curve(metric) for r in runs] for e, runs in entries.items()}
    if not any(len(c["epochs"]) for cs in curves.values() for c in cs):
        return
    doc.heading(3, "Validation curves")
    doc.figure(plots.validation_curves({e: c for e, c in curves.items() if any(len(x["epochs"]) for x in c)}, metric,
                                       colors=colors),
               f"Validation {metric} after each evaluated epoch (one line per seed) and the training loss. "
               "A model without training (popularity) is a single point at epoch 0.", f"validation {metric} per epoch")


def _paired_matrix(doc: _Doc, entries: dict[str, list[_Run]], metrics: Sequence[str]) -> None:
    per_user = {e: [r.per_user() for r in runs] for e, runs in entries.items()}
    labels = [e for e, zs in per_user.items() if zs and all(z is not None for z in zs)]
    wanted = [m for m in ("ndcg@20", "recall@20") if m in metrics] or list(metrics[-1:])
    wanted = [m for m in wanted if labels and all(m in z for e in labels for z in per_user[e])]
    if len(labels) < 2 or not wanted:
        return
    doc.heading(3, "Paired tests")
    doc.para("Cell (row, column): the row's mean minus the column's, over the users both evaluated, after averaging "
             "each user's metric over that model's seeds (one observation per user; docs/evaluation.md), with the "
             "paired t-test p-value. Green: the row is significantly better (p < 0.05), red: significantly worse, "
             "grey: no significant difference.")
    for metric in wanted:
        cells: dict[tuple[str, str], Any] = {}
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                cells[(b, a)] = paired_over_seeds(per_user[a], per_user[b], metric)  # b - a
        head = "".join(f"<th>{inline_html(f'`{c}`')}</th>" for c in labels)
        body = []
        for r in labels:
            tds = []
            for c in labels:
                if r == c:
                    tds.append('<td class="self">–</td>')
                    continue
                t = cells.get((r, c))
                sign = 1.0
                if t is None:
                    t, sign = cells[(c, r)], -1.0
                v = verdict(t)
                v = {"better": "worse", "worse": "better"}.get(v, v) if sign < 0 else v
                cls = {"better": "better", "worse": "worse"}.get(v, "same")
                tds.append(f'<td class="{cls}" title="{html.escape(v)}; 95% CI of the difference '
                           f'{html.escape(_ci_text(t, sign))}; {t.n_users} users">{signed(sign * t.diff)}'
                           f"<br><small>p {pvalue(t.t_pvalue)}</small></td>")
            body.append(f"<tr><th>{inline_html(f'`{r}`')}</th>{''.join(tds)}</tr>")
        doc.add(f'<div class="scroll"><table class="matrix"><caption>Test {html.escape(metric)}: row minus column'
                f'</caption><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _ci_text(t: Any, sign: float) -> str:
    lo, hi = sorted((sign * t.ci_low, sign * t.ci_high))
    return f"[{signed(lo)}, {signed(hi)}]"


def _segments(doc: _Doc, entries: dict[str, list[_Run]], colors: dict[str, Any] | None = None) -> None:
    segs = {e: [(r.metrics.get("segments") or {}).get("test") or {} for r in runs] for e, runs in entries.items()}
    if not any(s for ss in segs.values() for s in ss):
        return
    metric = next((r.valid_metric for runs in entries.values() for r in runs), "recall@20")
    sample = next(s for ss in segs.values() for s in ss if s)
    if not any(metric in v for v in sample.get("user_activity", {}).values()):
        metric = next((k for v in sample.get("user_activity", {}).values() for k in v if k != "users"), metric)
    doc.heading(3, "Results by segment")
    # users bucketed by their number of training interactions
    buckets = list(dict.fromkeys(b for ss in segs.values() for s in ss for b in s.get("user_activity", {})))
    buckets.sort(key=lambda b: int(re.match(r"\d+", b).group()) if re.match(r"\d+", b) else 0)
    if buckets:
        users = {b: next((s["user_activity"][b].get("users") for ss in segs.values() for s in ss
                          if b in s.get("user_activity", {})), None) for b in buckets}
        values = {e: {b: [s["user_activity"][b][metric] for s in ss if b in s.get("user_activity", {})]
                      for b in buckets} for e, ss in segs.items()}
        doc.figure(plots.group_bars(values, buckets, [f"{b}\n({count(users[b])} users)" for b in buckets], metric,
                                    title=f"test {metric} by user activity (training interactions)", colors=colors),
                   "Users grouped by their number of training interactions; mean over seeds, error bars: standard "
                   "deviation over seeds.", "metric by user-activity bucket")
        doc.table(_segment_table(values, buckets, users, metric, "user activity"))
    groups = [g for g in SEGMENT_ORDER if any(g in s for ss in segs.values() for s in ss)]
    groups += sorted({g for ss in segs.values() for s in ss for g in s} - set(groups) - {"user_activity"})
    if groups:
        users = {g: next((s[g].get("users") for ss in segs.values() for s in ss if g in s), None) for g in groups}
        values = {e: {g: [s[g][metric] for s in ss if g in s and metric in s[g]] for g in groups}
                  for e, ss in segs.items()}
        names = [SEGMENT_LABELS.get(g, g.replace("_", " ")) for g in groups]
        short = [SEGMENT_SHORT.get(g, n) for n, g in zip(names, groups)]
        doc.figure(plots.group_bars(values, groups, [f"{n}\n({count(users[g])} users)" for n, g in zip(short, groups)],
                                    metric, title=f"test {metric} by item popularity", colors=colors),
                   "The metric restricted to test items of each group (the ranking is still over all items), over the "
                   "users who have such items. Popular: the 20 % of training items with the most interactions; "
                   "long tail: the other items seen in training; cold: items never seen in training (only on splits "
                   "that hold items out, such as cold_items).", "metric by item popularity")
        doc.table(_segment_table(values, groups, users, metric, "item group", names))


def _segment_table(values: dict[str, dict[str, list[float]]], groups: Sequence[str], users: dict[str, Any],
                   metric: str, what: str, names: Sequence[str] | None = None) -> Table:
    names = list(names or groups)
    t = Table(["model", *names], caption=f"Test {metric} by {what} (mean over seeds); users per group: "
                                         + ", ".join(f"{n} {count(users[g])}" for n, g in zip(names, groups)))
    for e, by in values.items():
        t.add(f"`{e}`", *(num(np.mean(by[g])) if by.get(g) else "–" for g in groups))
    for j, g in enumerate(groups):
        col = [float(np.mean(by[g])) if by.get(g) else None for by in values.values()]
        if len({v for v in col if v is not None}) > 1:  # nothing to single out when all are equal
            t.mark_best(1 + j, col)
    return t


def _attribution(doc: _Doc, entries: dict[str, list[_Run]]) -> None:
    """An attribution example for the first run of each sequential entry; any failure leaves it out."""
    if not doc.explain:
        return
    from ..models import MODELS

    for label, runs in entries.items():
        run = runs[0]
        try:
            if MODELS.get(str(run.metrics.get("model"))).family != "sequential":
                continue
        except Exception:  # noqa: BLE001 - an unknown model name: nothing to explain
            continue
        try:
            fragment, png, caption = _explain(run)
        except Exception as exc:  # noqa: BLE001 - guarded: the report goes on without this section
            log.warning("attribution example of %s left out of the report (%s: %s)", run.path, type(exc).__name__, exc)
            continue
        doc.heading(3, f"Attribution example: {label}")
        doc.add(fragment)
        doc.png(png, caption, "attribution of recommendations to history items and modalities")


def _explain(run: _Run, k: int = 5) -> tuple[str, bytes, str]:
    from ..evaluate.explain import explain_user
    from ..runs import load_run

    loaded = load_run(run.path, device="cpu")
    user = _example_user(loaded, run)
    ex = explain_user(loaded, user, k)
    with tempfile.TemporaryDirectory() as tmp:
        png = ex.plot(Path(tmp) / "explain.png").read_bytes()
    share = ex.modality_share()
    t = Table(["rank", "item", "title", "score", *(f"{p} share" for p in ex.parts), "most helpful history items"],
              caption=f"User `{ex.user}` (seed {run.seed}): the top {len(ex.recommended)} recommendations, the share "
                      "of each input part in each, and the history items that pushed it up most.")
    for r, item in enumerate(ex.recommended):
        order = np.argsort(-ex.by_item[r])[:3]
        t.add(r + 1, f"`{item}`", ex.titles[r][:60], num(ex.scores[r], 3),
              *(f"{100 * s:.0f} %" for s in share[r]),
              ", ".join(f"h{i + 1} `{ex.history[i]}` {signed(ex.by_item[r, i], 3)}" for i in order))
    hist = ", ".join(f"h{i + 1} `{h}`" for i, h in enumerate(ex.history))
    intro = (f"<p>How the model's recommendations for one user come from the user's history (gradient x input, "
             f"<code>prismrec explain</code>). History seen by the model, oldest first: {inline_html(hist)}.</p>")
    caption = ("Left: contribution of each history item to each recommendation (red pushes it up, blue down). "
               "Right: share of the id embedding and of each modality.")
    return intro + f'<div class="scroll">{t.html()}</div>', png, caption


def _example_user(loaded: Any, run: _Run, target: int = 8) -> str:
    """A test user the model got right (recall > 0 when any), with a history near ``target`` items."""
    z = run.per_user()
    lengths = np.diff(loaded.split.history("all").matrix.indptr)
    if z is not None and len(z["users"]):
        users = np.asarray(z["users"])
        key = next((k for k in (f"recall@{loaded.config.train.topk[-1]}", "recall@20", "recall@50") if k in z), None)
        if key is not None and (z[key] > 0).any():
            users = users[z[key] > 0]
    else:
        users = np.flatnonzero(lengths > 0)
    best = users[np.argmin(np.abs(lengths[users] - target), axis=0)]
    return str(loaded.dataset.user_ids[int(best)])
