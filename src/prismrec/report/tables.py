"""One table builder for every report: Markdown for people, CSV for tools.

A :class:`Table` is a caption (the protocol line: data, stage, seeds, how the epoch or setting was
chosen), a header and rows of cells. Cells are written by the caller with the formatting helpers
below, so every report prints numbers the same way: metrics with four decimals, ``mean ± std`` over
seeds, p-values with three significant digits, ``–`` for a value that does not exist, the best value
of a column in bold.
"""

from __future__ import annotations

import csv
import html as _html
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

DASH = "–"  # a value that does not exist (no p-value for the reference row, no run, NaN)


def missing(value: Any) -> bool:
    """``None`` or NaN."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 4) -> str:
    """A metric or a time: ``0.1234``; ``–`` when missing."""
    return DASH if missing(value) else f"{float(value):.{digits}f}"


def signed(value: Any, digits: int = 4) -> str:
    """A difference: ``+0.0123``."""
    return DASH if missing(value) else f"{float(value):+.{digits}f}"


def mean_std(mean: Any, std: Any = None, digits: int = 4) -> str:
    """``mean ± std`` over seeds (just the mean when ``std`` is None, i.e. one seed)."""
    if missing(mean):
        return DASH
    if std is None:
        return num(mean, digits)
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"


def pvalue(p: Any) -> str:
    """A p-value with three significant digits; ``–`` when there is none."""
    return DASH if missing(p) else f"{float(p):.3g}"


def ci(low: Any, high: Any, digits: int = 4) -> str:
    """A confidence interval of a difference: ``[-0.0010, +0.0030]``."""
    return f"[{signed(low, digits)}, {signed(high, digits)}]"


def count(value: Any, missing_as: str = "") -> str:
    """A count or size with thousands separators, rounded to an integer (``12,345``)."""
    if missing(value) or value == "":
        return missing_as
    return f"{value:,}" if isinstance(value, int) else f"{float(value):,.0f}"


def bold(cell: str) -> str:
    return f"**{cell}**" if cell and cell != DASH else cell


def best_rows(values: Iterable[Any], higher_is_better: bool = True) -> set[int]:
    """Indices of the best value (every tie), NaN and None ignored."""
    vals = [(i, float(v)) for i, v in enumerate(values) if not missing(v)]
    if not vals:
        return set()
    best = max(v for _, v in vals) if higher_is_better else min(v for _, v in vals)
    return {i for i, v in vals if v == best}


def history_protocol(masked: Iterable[bool | None]) -> str:
    """How the runs of a table ranked: ``history masked`` (the user's known items are not ranked),
    ``history not masked`` (RecBole's full ranking of sequential models, under which UniSRec, VQ-Rec and
    MISSRec report), or ``history masked in some runs only`` when a table mixes them (None: a run that
    does not say; ignored)."""
    kinds = set(bool(m) for m in masked if m is not None)
    if kinds == {True}:
        return "history masked"
    if kinds == {False}:
        return "history not masked"
    return "history masked in some runs only: see mask_history in runs.csv" if kinds else ""


def protocol_caption(data: Any, seeds: Sequence[Any], *, stage: str = "Test metrics",
                     selection: str = "epoch chosen on validation", history: str | None = None) -> str:
    """The protocol line above a results table, e.g. ``Test metrics on `demo`, mean ± std over seeds
    0, 1, 2 (epoch chosen on validation; history masked).`` (``history``: :func:`history_protocol`)."""
    return (f"{stage} on `{data}`, mean ± std over seeds {', '.join(map(str, seeds))} "
            f"({selection}{f'; {history}' if history else ''}).")


def _md_cell(cell: Any) -> str:
    text = "" if cell is None else str(cell)
    return text.replace("\n", " ").replace("|", "\\|")


@dataclass
class Table:
    """Columns, rows of (already formatted) cells and an optional caption line."""

    columns: Sequence[str]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str | None = None

    def add(self, *cells: Any) -> "Table":
        """Append a row; a short row is padded with empty cells."""
        if len(cells) > len(self.columns):
            raise ValueError(f"row has {len(cells)} cells for {len(self.columns)} columns: {cells!r}")
        self.rows.append([*cells, *[""] * (len(self.columns) - len(cells))])
        return self

    def mark_best(self, column: int | str, values: Sequence[Any], higher_is_better: bool = True,
                  rows: Sequence[int] | None = None) -> "Table":
        """Bold the cells of ``column`` whose value (``values``, one per row in ``rows``, default every
        row) is the best."""
        col = self.columns.index(column) if isinstance(column, str) else column
        rows = list(range(len(self.rows))) if rows is None else list(rows)
        if len(values) != len(rows):
            raise ValueError(f"{len(values)} values for {len(rows)} rows")
        for i in best_rows(values, higher_is_better):
            r = self.rows[rows[i]]
            r[col] = bold(str(r[col]))
        return self

    def markdown(self) -> str:
        """The caption (if any), a blank line and the Markdown table, without a final newline."""
        lines = [] if self.caption is None else [self.caption, ""]
        lines.append("| " + " | ".join(_md_cell(c) for c in self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def csv(self) -> str:
        """The same cells as CSV (header first; the caption is not part of it)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(self.columns))
        w.writerows([["" if c is None else str(c).replace("**", "") for c in row] for row in self.rows])
        return buf.getvalue()

    def html(self, *, cls: str = "") -> str:
        """The caption and the table as an HTML ``<table>`` (cells escaped; Markdown ``**bold**`` and
        ``code`` marks become ``<strong>`` and ``<code>``; numeric-looking cells get class ``num``)."""
        attr = f' class="{_html.escape(cls)}"' if cls else ""
        parts = [f"<table{attr}>"]
        if self.caption:
            parts.append(f"<caption>{inline_html(self.caption)}</caption>")
        parts.append("<thead><tr>" + "".join(f"<th>{inline_html(c)}</th>" for c in self.columns) + "</tr></thead>")
        parts.append("<tbody>")
        for row in self.rows:
            cells = []
            for c in row:
                text = "" if c is None else str(c)
                num_cls = ' class="num"' if _NUMERIC.match(text.replace("**", "")) else ""
                cells.append(f"<td{num_cls}>{inline_html(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.markdown()


_NUMERIC = re.compile(r"^\s*[-+±–]?\s*[\d.,]+(e[-+]?\d+)?\s*(±\s*[\d.,]+)?\s*%?\s*$|^\s*–\s*$")


def inline_html(text: Any) -> str:
    """A Markdown-ish table cell as HTML: escaped, ``**x**`` -> ``<strong>``, `` `x` `` -> ``<code>``."""
    out = _html.escape("" if text is None else str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def parse_markdown_tables(text: str) -> list[Table]:
    """The tables of a Markdown text written by :meth:`Table.markdown` (a caption line, a blank line, the
    header, the ``|---|`` rule, the rows); the cells are kept as written. Used to re-render saved reports."""
    lines = text.splitlines()
    tables: list[Table] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            caption = lines[j].strip() if j >= 0 and not lines[j].startswith("|") else None
            t = Table(_md_row(lines[i]), caption=caption)
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _md_row(lines[i])
                t.add(*cells[:len(t.columns)])
                i += 1
            tables.append(t)
        else:
            i += 1
    return tables


def _md_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def metrics_table(metrics: dict[str, float], title: str | None = None) -> Table:
    """One run's metrics as ``| metric | @10 | @20 |`` (rows: metric names, columns: cut-offs)."""
    names = sorted({k.split("@")[0] for k in metrics})
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    t = Table(["metric", *(f"@{k}" for k in ks)], caption=title)
    for n in names:
        t.add(n, *(num(metrics.get(f"{n}@{k}", float("nan"))) for k in ks))
    return t


def seed_summary_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str], *, label: str = "model",
                       label_of=lambda r: f"`{r['entry']}`", lead: Sequence[tuple[str, Any]] = (),
                       extra: Sequence[tuple[str, Any]] = (), best: bool = False,
                       caption: str | None = None) -> Table:
    """One row per model: its label, the ``lead`` columns, ``mean ± std`` over seeds of each metric (from
    ``<metric>_mean`` / ``<metric>_std``), then the ``extra`` columns; ``lead`` and ``extra`` are
    ``(header, function of the row -> cell)``. ``best`` bolds the best mean of each metric."""
    t = Table([label, *(h for h, _ in lead), *metrics, *(h for h, _ in extra)], caption=caption)
    for r in rows:
        t.add(label_of(r), *(fn(r) for _, fn in lead),
              *(mean_std(r[f"{k}_mean"], r.get(f"{k}_std")) for k in metrics), *(fn(r) for _, fn in extra))
    if best:
        for j, k in enumerate(metrics):
            t.mark_best(1 + len(lead) + j, [r[f"{k}_mean"] for r in rows])
    return t


# ---------------------------------------------------------------------------------- the toolkit's tables
def datasets_table(rows: Sequence[dict[str, Any]]) -> Table:
    """``prismrec datasets``: one row per dataset (:func:`prismrec.data.catalog.dataset_stats`)."""
    t = Table(["name", "format", "users", "items", "interactions", "density", "split", "modalities"])
    for r in rows:
        if "error" in r:
            t.add(r["name"], f"unreadable: {r['error']}")
        else:
            t.add(r["name"], r["format"], count(r["users"]), count(r["items"]), count(r["interactions"]),
                  num(r["density"], 5), "given" if r["given_split"] else "-", r["modalities"])
    return t


def retrieval_table(report: dict[str, Any]) -> Table:
    """AlignRec stage 1's held-out retrieval accuracy: random baseline, untrained heads, aligned."""
    t = Table(["query -> target", "held-out items", "random top-1 / top-10", "untrained top-1 / top-10",
               "aligned top-1 / top-10"])
    for pair, after in report.get("retrieval_after", {}).items():
        before = report["retrieval_before"].get(pair, {})
        t.add(pair, after["n"], f"{num(after['random_top1'])} / {num(after['random_top10'])}",
              f"{num(before.get('top1'))} / {num(before.get('top10'))}", f"{num(after['top1'])} / {num(after['top10'])}")
    return t


def feature_quality_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> Table:
    """``prismrec evaluate-features``: feature set x protocol x masked modality, the metrics and the
    relative change of Recall@20 when the modality is masked."""
    short = [m.replace("recall", "R").replace("ndcg", "N") for m in metrics]
    t = Table(["features", "protocol", "masked", *short, "ΔR@20"])
    for r in rows:
        drop = f"{100 * r['drop_recall@20']:+.1f} %" if r.get("drop_recall@20") is not None else ""
        t.add(r["features"], r["protocol"], r["masked"] or "-", *(num(r["metrics"][m]) for m in metrics), drop)
    return t
