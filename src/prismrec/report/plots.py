"""Plots of reports (matplotlib is optional and imported only when a plot is drawn)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("prismrec")
_WARNED: list[bool] = []  # the missing-matplotlib warning is given once per process


def pyplot(required: bool = False) -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; None (with a warning) when matplotlib is
    missing, or a user error when ``required``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if required:
            from ..errors import PrismrecError

            raise PrismrecError("plotting needs matplotlib. Fix: pip install 'prismrec[plot]'.") from None
        if not _WARNED:
            log.warning("matplotlib is not installed; plots are left out (pip install matplotlib)")
            _WARNED.append(True)
        return None
    return plt


def save(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (parents created) and close it."""
    plt = pyplot(required=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def difference_bars(panels: dict[str, Sequence[dict[str, Any]]], labels: Sequence[str], path: str | Path,
                    *, xlabel: str = "vs reference (%)") -> Path | None:
    """Horizontal bars of relative differences with their CI, one panel per key of ``panels``.

    Each panel is a list of ``{"label", "diff", "ci": (low, high), "base", "pvalue"}`` (missing labels
    draw as 0); a bar is red when significantly below 0 (p < 0.05), green when above, grey otherwise.
    Returns the path, or None without matplotlib.
    """
    fig = difference_bars_figure(panels, labels, xlabel=xlabel)
    return None if fig is None else save(fig, path)


def difference_bars_figure(panels: dict[str, Sequence[dict[str, Any]]], labels: Sequence[str], *,
                           xlabel: str = "vs reference (%)") -> Any:
    """The figure of :func:`difference_bars` (None without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 1.2 + 0.45 * len(labels)), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels.items()):
        vals, errs, colors = [], [], []
        for lab in labels:
            r = next((r for r in rows if r["label"] == lab), None)
            base = r["base"] if r else 0.0
            v = 100 * r["diff"] / base if r and base else 0.0
            lo, hi = (100 * np.asarray(r["ci"]) / base) if r and base else (0.0, 0.0)
            vals.append(v)
            errs.append([v - lo, hi - v])
            sig = r is not None and r["pvalue"] < 0.05
            colors.append("tab:red" if sig and r["diff"] < 0 else "tab:green" if sig and r["diff"] > 0 else "tab:gray")
        y = np.arange(len(labels))
        ax.barh(y, vals, xerr=np.asarray(errs).T, color=colors)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(list(labels) if ax is axes[0][0] else [""] * len(labels), fontsize=8)
        ax.set_title(f"{title}: {xlabel}", fontsize=9)
    return fig


# ------------------------------------------------------------------------------------ the HTML report's plots
# Each returns a matplotlib figure (or None without matplotlib); prismrec.report.html embeds it as PNG.
# Entries keep one colour across every plot of a report (``colors``: label -> colour).

def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """``fig`` as PNG bytes (closed afterwards)."""
    import io

    plt = pyplot(required=True)
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def palette(labels: Sequence[str]) -> dict[str, Any]:
    """One colour per label (matplotlib's tab10, then tab20), stable in the order given ({} without
    matplotlib: the plots are then left out anyway)."""
    plt = pyplot()
    if plt is None:
        return {}
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[:width - 1] + "…"


def _clipped_err(means: Sequence[float], stds: Sequence[float]) -> np.ndarray:
    """Error bars of one standard deviation, the lower one cut at 0 (metrics are never negative)."""
    m, s = np.nan_to_num(np.asarray(means, dtype=float)), np.asarray(stds, dtype=float)
    return np.vstack([np.minimum(s, np.maximum(m, 0.0)), s])


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def metric_bars(values: dict[str, dict[str, Sequence[float]]], metrics: Sequence[str], *,
                colors: dict[str, Any] | None = None, title: str = "test", highlight: str | None = None) -> Any:
    """One panel per metric: a bar per entry at the mean over seeds, the standard deviation as an error
    bar and each seed as a dot. ``values[entry][metric]`` lists the per-seed values."""
    plt = pyplot()
    if plt is None:
        return None
    labels = list(values)
    colors = colors or palette(labels)
    n = len(metrics)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.2 * cols, 2 + 0.55 * len(labels) * cols),
                                                  0.6 + 2.9 * rows), squeeze=False)
    x = np.arange(len(labels))
    for i, metric in enumerate(metrics):
        ax = axes[i // cols][i % cols]
        per = [np.asarray(values[lab].get(metric, []), dtype=float) for lab in labels]
        means = [float(np.nanmean(v)) if len(v) else np.nan for v in per]
        stds = [float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0 for v in per]
        bars = ax.bar(x, means, yerr=_clipped_err(means, stds), capsize=3, color=[colors[lab] for lab in labels],
                      alpha=0.85)
        for bar, lab in zip(bars, labels):
            if lab == highlight:
                bar.set_edgecolor("black")
                bar.set_linewidth(2.0)
        for j, v in enumerate(per):
            if len(v) > 1:
                ax.plot(np.full(len(v), x[j]) + np.linspace(-0.15, 0.15, len(v)), v, "o", ms=3, color="black",
                        alpha=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels([_short(lab, 18) for lab in labels], rotation=30 if len(labels) > 3 else 0,
                           ha="right" if len(labels) > 3 else "center", fontsize=8)
        ax.set_title(f"{title} {metric}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    return fig


def validation_curves(curves: dict[str, list[dict[str, Any]]], metric: str, *,
                      colors: dict[str, Any] | None = None) -> Any:
    """Validation ``metric`` and training loss per epoch: one line per run (entries share a colour, seeds
    are separate lines) and a dot at each run's best validation epoch. ``curves[entry]`` lists runs as
    ``{"epochs", "valid", "loss_epochs", "loss", "best_epoch"}``."""
    plt = pyplot()
    if plt is None:
        return None
    labels = list(curves)
    colors = colors or palette(labels)
    has_loss = any(len(r["loss"]) for runs in curves.values() for r in runs)
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(11 if has_loss else 6, 3.6), squeeze=False)
    ax = axes[0][0]
    for lab in labels:
        for i, r in enumerate(curves[lab]):
            if not len(r["epochs"]):
                continue
            ax.plot(r["epochs"], r["valid"], color=colors[lab], lw=1.3, alpha=0.85, label=_short(lab) if i == 0 else None,
                    marker="." if len(r["epochs"]) < 30 else None)
            if r.get("best_epoch") in r["epochs"]:
                j = list(r["epochs"]).index(r["best_epoch"])
                ax.plot([r["epochs"][j]], [r["valid"][j]], "o", color=colors[lab], mec="black", ms=6)
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_title(f"validation {metric} (dot: best epoch, whose weights are tested)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if has_loss:
        ax = axes[0][1]
        for lab in labels:
            for i, r in enumerate(curves[lab]):
                if len(r["loss"]):
                    ax.plot(r["loss_epochs"], r["loss"], color=colors[lab], lw=1.3, alpha=0.85,
                            label=_short(lab) if i == 0 else None)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_title("training loss", fontsize=9)
        ax.grid(alpha=0.3)
    return fig


def group_bars(values: dict[str, dict[str, Sequence[float]]], groups: Sequence[str], group_labels: Sequence[str],
               metric: str, *, title: str, colors: dict[str, Any] | None = None) -> Any:
    """Grouped bars: one group per segment (user-activity bucket, item group), one bar per entry at the
    mean over seeds with the standard deviation as error bar. ``values[entry][group]`` lists per-seed
    values of ``metric``."""
    plt = pyplot()
    if plt is None:
        return None
    labels = list(values)
    colors = colors or palette(labels)
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + len(groups) * max(1.4, 0.35 + 0.22 * len(labels))), 3.4))
    x = np.arange(len(groups))
    for i, lab in enumerate(labels):
        per = [np.asarray(values[lab].get(g, []), dtype=float) for g in groups]
        means = [float(np.mean(v)) if len(v) else np.nan for v in per]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in per]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=_clipped_err(means, stds), capsize=2, color=colors[lab],
               label=_short(lab), alpha=0.85)
    ax.set_xticks(x)
    ax.set_xticklabels(list(group_labels), fontsize=8)
    ax.set_ylabel(metric, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def feature_quality_bars(rows: Sequence[dict[str, Any]], metric: str = "recall@20") -> Any:
    """Feature-quality results: one panel per protocol, a bar per feature set (full colour) and per
    masked modality (pale), at ``metric``."""
    plt = pyplot()
    if plt is None:
        return None
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    feats = list(dict.fromkeys(r["features"] for r in rows))
    colors = palette(feats)
    n_rows = max(sum(1 for r in rows if r["protocol"] == p) for p in protocols)
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 0.9 + 0.3 * n_rows), squeeze=False)
    for ax, proto in zip(axes[0], protocols):
        sub = [r for r in rows if r["protocol"] == proto]
        y = np.arange(len(sub))
        vals = [r["metrics"].get(metric, np.nan) for r in sub]
        bars = ax.barh(y, vals, color=[colors[r["features"]] for r in sub])
        for bar, r in zip(bars, sub):
            if r.get("masked"):
                bar.set_alpha(0.35)
                bar.set_hatch("//")
        ax.set_yticks(y)
        ax.set_yticklabels([_short(r["features"], 30) + (f"  (masked {r['masked']})" if r.get("masked") else "")
                            for r in sub], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{proto}: {metric}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return fig
