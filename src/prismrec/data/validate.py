"""Input validation with errors that name the file, the row or column, and the fix.

Readers call these on what they parsed, before anything is trained. Row numbers in messages are
1-based data rows (the header is not counted) so they match what a user sees in an editor minus the
header line; the message says so.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger("prismrec")

REQUIRED = ("user", "item")
NUMERIC = ("timestamp", "rating", "order")


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1


def check_interactions(df: pd.DataFrame, *, file: str | None = None,
                       names: dict[str, str] | None = None) -> pd.DataFrame:
    """Check an interaction frame with canonical column names; return it with clean dtypes.

    ``names`` maps canonical names to the user's column names, so messages use the user's names.
    """
    names = names or {}
    for col in REQUIRED:
        if col not in df.columns:
            raise DataError(
                f"missing the {col} column (looked for {names.get(col, col)!r}); columns present: "
                f"{', '.join(map(str, df.columns))}.",
                file=file, column=names.get(col, col),
                fix=f"rename the {col} column or map it with --set data.columns.{col}=<name>.",
            )
    if len(df) == 0:
        raise DataError("no interactions.", file=file, fix="check the file is not empty and the filters.")
    out = df.copy()
    for col in REQUIRED:
        bad = out[col].isna().to_numpy().copy()
        if isinstance(out[col].dtype, pd.StringDtype) or out[col].dtype == object:
            bad |= out[col].astype(str).str.strip().eq("").to_numpy()
        if bad.any():
            raise DataError(
                f"{int(bad.sum())} rows have an empty {col} id (first at data row {_first_bad(bad)}).",
                file=file, row=_first_bad(bad), column=names.get(col, col),
                fix="remove those rows or fill in the id.",
            )
    for col in NUMERIC:
        if col in out.columns:
            num = pd.to_numeric(out[col], errors="coerce")
            bad = num.isna().to_numpy() & out[col].notna().to_numpy()
            if bad.any():
                raw = out[col].iloc[_first_bad(bad) - 1]
                raise DataError(
                    f"{col} value {raw!r} is not a number (data row {_first_bad(bad)}).",
                    file=file, row=_first_bad(bad), column=names.get(col, col),
                    fix=f"write {col} as a number (a Unix time for timestamps) or drop the column.",
                )
            if num.isna().any():
                miss = num.isna().to_numpy()
                raise DataError(
                    f"{int(miss.sum())} rows have no {col} (first at data row {_first_bad(miss)}).",
                    file=file, row=_first_bad(miss), column=names.get(col, col),
                    fix=f"fill in every {col} or drop the column.",
                )
            out[col] = num.astype(np.float64 if col != "order" else np.int64)
    if "label" in out.columns:
        lab = pd.to_numeric(out["label"], errors="coerce")
        bad = ~lab.isin([0, 1, 2]).to_numpy()
        if bad.any():
            raise DataError(
                f"split label {str(out['label'].iloc[_first_bad(bad) - 1])!r} is not 0 (train), 1 (valid) or 2 (test) "
                f"(data row {_first_bad(bad)}).",
                file=file, row=_first_bad(bad), column=names.get("label", "x_label"),
                fix="use 0/1/2, or drop the column and choose a split rule with --set data.split=...",
            )
        out["label"] = lab.astype(np.int8)
    return out


def check_integer_ids(series: pd.Series, *, file: str, column: str) -> np.ndarray:
    """MMRec-style files need non-negative integer ids; name the first offending row."""
    num = pd.to_numeric(series, errors="coerce")
    bad = num.isna().to_numpy() | (num.fillna(0) % 1 != 0).to_numpy() | (num.fillna(0) < 0).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise DataError(
            f"id {series.iloc[row - 1]!r} is not a non-negative integer (data row {row}); this format uses "
            "0-based integer ids.",
            file=file, row=row, column=column,
            fix="re-index ids to 0..n-1, or read the file as a plain table with --set data.format=tabular.",
        )
    return num.to_numpy().astype(np.int64)


def check_feature_matrix(values: np.ndarray, *, file: str, n_rows: int | None = None,
                         modality: str = "") -> np.ndarray:
    """Feature matrices must be 2-D, numeric, finite, with one row per item."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise DataError(
            f"feature matrix must be 2-D (items x dim), got shape {arr.shape}.", file=file,
            fix="save an array of shape (n_items, dim).",
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"feature matrix has non-numeric dtype {arr.dtype}.", file=file)
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(
            f"{modality or 'feature'} matrix has {arr.shape[0]} rows but the dataset has {n_rows} items "
            "(row r must hold the features of item r).",
            file=file, fix="write one row per item in item-id order, or check you picked the right dataset.",
        )
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        shown = ", ".join(str(r) for r in rows[:5])
        raise DataError(
            f"{len(rows)} rows contain NaN or inf (rows {shown}{', ...' if len(rows) > 5 else ''}; row r is item r).",
            file=file, row=int(rows[0]),
            fix="re-encode those items, or mark them missing in <modality>_available.npy and store zeros.",
        )
    return arr


def check_unique_ids(ids: pd.Series, *, kind: str, file: str | None, column: str) -> None:
    """An item or user table must list each id once; name the first repeated one and its row."""
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = _first_bad(dup)
        raise DataError(f"{kind} id {str(ids.iloc[row - 1])!r} appears twice (data row {row}).",
                        file=file, row=row, column=column, fix=f"keep one row per {kind}.")


def folder_listing(path) -> str:
    """A short listing of a folder (or the file name) for 'cannot find' messages."""
    return ", ".join(sorted(p.name for p in path.iterdir())[:12]) if path.is_dir() else path.name
