"""The negative-transfer report (``prismrec transfer-report``) over finished ANT adaptation runs.

For each target, each strategy against ``scratch``: mean and spread of the test metrics over seeds, the
difference and a paired test on per-user results; written as ``transfer.md``, ``transfer.json`` and (with
matplotlib) ``transfer.png``. The runs come from :func:`prismrec.transfer.adapt`.

Unlike the rest of :mod:`prismrec.report` (tables, the paired rule, plots: used by the runs layer), this
module reads run directories, so it sits above :mod:`prismrec.runs`; the CLI calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import PrismrecError
from ..runs import load_per_user
from ..utils.io import read_json, write_json, write_text
from .paired import paired_over_seeds
from .paired import verdict as paired_verdict
from .plots import difference_bars
from .tables import Table, bold, ci, mean_std, pvalue, signed

DEFAULT_METRICS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50")


def _collect(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, dict[int, Path]]]:
    """``{setting: {strategy: {seed: run_dir}}}`` of finished ANT runs; a setting is source(s) -> target
    [modalities], so runs with different modalities are never compared with each other.

    A from-scratch run does not depend on the source (it loads no pre-trained weights), so one set of
    scratch runs serves every setting with the same target and modalities."""
    out: dict[str, dict[str, dict[int, Path]]] = {}
    scratch: dict[str, dict[int, Path]] = {}
    for rd in run_dirs:
        rd = Path(rd)
        if not (rd / "metrics.json").is_file():
            raise PrismrecError(f"{rd} is not a finished run (no metrics.json). Fix: pass finished `prismrec adapt` runs.")
        m = read_json(rd / "metrics.json")
        strategy = m.get("strategy") or (m.get("model_info") or {}).get("strategy") or m.get("model")
        if strategy and strategy.startswith("scratch"):
            strategy = "scratch"
        target = m.get("dataset", "?")
        src = "+".join(m.get("pretrain_sources", [])) or "-"
        mods = "+".join(sorted((m.get("model_info") or {}).get("modalities", {})))
        tail = f" [{mods}]" if mods else ""
        seed = int(m.get("seed", 0))
        if strategy == "scratch":
            scratch.setdefault(target + tail, {}).setdefault(seed, rd)
            continue
        key = (f"{src} -> {target}" if src != "-" else target) + tail
        out.setdefault(key, {}).setdefault(strategy, {})[seed] = rd
    for key, by_strat in out.items():
        base = scratch.get(key.split(" -> ")[-1])
        if base:
            by_strat["scratch"] = base
    for key, base in scratch.items():  # scratch runs with no transfer run to compare with
        if not any(k.split(" -> ")[-1] == key for k in out):
            out[key] = {"scratch": base}
    return out


def transfer_report(run_dirs: Sequence[str | Path], *, metrics: Sequence[str] = DEFAULT_METRICS,
                    plot: str | Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table (and optional PNG) of every strategy against ``scratch`` per target.

    For each metric: mean +- std over seeds of scratch and of the strategy, the difference, and the
    toolkit's paired test over seeds (:mod:`prismrec.report.paired`: each user's metric averaged over
    the seeds both have, then paired t / Wilcoxon on users); a row is flagged **negative transfer**
    when the difference is below 0 with paired-t p < 0.05.
    """
    groups = _collect(run_dirs)
    rows: list[dict[str, Any]] = []
    table = _table()
    for setting, by_strat in sorted(groups.items()):
        base = by_strat.get("scratch")
        if not base:
            table.add(setting, "(no scratch run)")
            continue
        for strat in [s for s in ("finetune", "adaptor", "relearn") if s in by_strat] + \
                     sorted(s for s in by_strat if s not in ("scratch", "finetune", "adaptor", "relearn")):
            runs = by_strat[strat]
            seeds = sorted(set(base) & set(runs))
            if not seeds:
                continue
            pa = [load_per_user(base[s]) for s in seeds]
            pb = [load_per_user(runs[s]) for s in seeds]
            ma = [read_json(base[s] / "metrics.json")["test"] for s in seeds]
            mb = [read_json(runs[s] / "metrics.json")["test"] for s in seeds]
            for metric in metrics:
                if metric not in pa[0]:
                    continue
                t = paired_over_seeds(pa, pb, metric)
                va, vb = np.array([m[metric] for m in ma]), np.array([m[metric] for m in mb])
                verdict = {"worse": "negative transfer", "better": "positive transfer"}.get(
                    paired_verdict(t), "no significant difference")
                row = {"setting": setting, "strategy": strat, "metric": metric, "seeds": seeds,
                       "scratch_mean": float(va.mean()), "scratch_std": float(va.std(ddof=1)) if len(va) > 1 else 0.0,
                       "mean": float(vb.mean()), "std": float(vb.std(ddof=1)) if len(vb) > 1 else 0.0,
                       "diff": t.diff, "ci": [t.ci_low, t.ci_high], "t_pvalue": t.t_pvalue,
                       "wilcoxon_pvalue": t.wilcoxon_pvalue, "verdict": verdict}
                rows.append(row)
                _add_row(table, row)
    md = table.markdown()
    if plot is not None and rows:
        _plot(rows, Path(plot))
    return md, rows


def _table() -> Table:
    return Table(["setting", "strategy", "metric", "scratch", "strategy", "diff", "95% CI", "t p", "Wilcoxon p",
                  "seeds", "verdict"])


def _add_row(table: Table, row: dict[str, Any]) -> None:
    spread = len(row["seeds"]) > 1
    table.add(row["setting"], row["strategy"], row["metric"],
              mean_std(row["scratch_mean"], row["scratch_std"] if spread else None),
              mean_std(row["mean"], row["std"] if spread else None), signed(row["diff"]), ci(*row["ci"]),
              pvalue(row["t_pvalue"]), pvalue(row["wilcoxon_pvalue"]), len(row["seeds"]),
              bold(row["verdict"]) if row["verdict"] == "negative transfer" else row["verdict"])


def rows_table(rows: list[dict[str, Any]]) -> Table:
    """The report's table from its rows (as saved in ``transfer.json``)."""
    table = _table()
    for row in rows:
        _add_row(table, row)
    return table


def plot_panels(rows: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The panels (one per metric) and bar labels (setting | strategy) of the report's plot, from its rows
    (as in ``transfer.json``)."""
    labels = [f"{s} | {st}" for s, st in sorted({(r["setting"], r["strategy"]) for r in rows})]
    panels = {metric: [{"label": f"{r['setting']} | {r['strategy']}", "diff": r["diff"], "ci": r["ci"],
                        "base": r["scratch_mean"], "pvalue": r["t_pvalue"]} for r in rows if r["metric"] == metric]
              for metric in sorted({r["metric"] for r in rows})}
    return panels, labels


def _plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Bar chart: relative difference to scratch (%) per setting x strategy, one panel per metric."""
    panels, labels = plot_panels(rows)
    return difference_bars(panels, labels, path, xlabel="vs scratch (%)")


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metrics: Sequence[str] = DEFAULT_METRICS,
                 plot: bool = True) -> tuple[str, Path | None]:
    """Write ``transfer.md``, ``transfer.json`` and (with matplotlib) ``transfer.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "transfer.png" if plot else None
    md, rows = transfer_report(run_dirs, metrics=metrics, plot=png)
    write_text(out_dir / "transfer.md", md + "\n")
    write_json(out_dir / "transfer.json", rows)
    return md, (png if png is not None and png.is_file() else None)
