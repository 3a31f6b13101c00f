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


def _v(value):
    """A cell value for a message: numpy scalars as plain Python values (``inf``, not ``np.float64(inf)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _rows(n: int) -> str:
    return f"{n} such row{'s' if n != 1 else ''}"


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
            inf = ~np.isfinite(num.to_numpy(dtype=np.float64))
            if inf.any():
                raise DataError(
                    f"{col} value {_v(out[col].iloc[_first_bad(inf) - 1])!r} is not a finite number "
                    f"({_rows(int(inf.sum()))}, first at data row {_first_bad(inf)}).",
                    file=file, row=_first_bad(inf), column=names.get(col, col),
                    fix=f"write a finite {col}{' (Unix seconds)' if col == 'timestamp' else ''}, or drop those rows "
                        "or the column.",
                )
            if col == "rating" and (num < 0).any():
                neg = (num < 0).to_numpy()
                raise DataError(
                    f"rating value {_v(out[col].iloc[_first_bad(neg) - 1])!r} is negative ({_rows(int(neg.sum()))}, "
                    f"first at data row {_first_bad(neg)}); every row counts as an interaction, so a negative "
                    "rating (usually a dislike) would be learned as a positive.",
                    file=file, row=_first_bad(neg), column=names.get(col, col),
                    fix="remove the rows with negative ratings (dislikes), or shift the scale to start at 0 and "
                        "keep the positives with --set data.min_rating=<value>.",
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


MAX_INDEX_ID = 2**31 - 1  # integer ids are array indices: beyond this no array (or int32 index) holds them
SPARSE_IDS = (10, 1000)   # the largest index id may be at most 10 x the number of distinct ids + 1000


def check_integer_ids(series: pd.Series, *, file: str, column: str, allowed: int = 0) -> np.ndarray:
    """MMRec-style files need non-negative integer ids that are array indices; name the first offending row.

    As ids index arrays of ``max(id) + 1`` rows, an id above :data:`MAX_INDEX_ID`, or a largest id more
    than ``10 x distinct ids + 1000`` (mostly unused rows: 1e9 would allocate a billion items), is an
    error, never a silent overflow or a MemoryError. ``allowed``: a number of rows that other files
    justify (an item table, feature matrices), so ids below it are always accepted.
    """
    num = pd.to_numeric(series, errors="coerce")
    val = num.to_numpy(dtype=np.float64, na_value=np.nan)
    fix = "re-index ids to 0..n-1, or read the file as a plain table with --set data.format=tabular."
    bad = ~np.isfinite(val) | (np.nan_to_num(val) % 1 != 0) | (np.nan_to_num(val) < 0)
    if bad.any():
        row = _first_bad(bad)
        raise DataError(
            f"id {_v(series.iloc[row - 1])!r} is not a non-negative integer (data row {row}); this format uses "
            "0-based integer ids.",
            file=file, row=row, column=column, fix=fix,
        )
    if len(val) == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(np.argmax(val))
    n_distinct = int(pd.unique(val).size)
    limit = min(MAX_INDEX_ID, max(SPARSE_IDS[0] * n_distinct + SPARSE_IDS[1], allowed) - 1)
    if val[top] > limit:
        raise DataError(
            f"id {_v(series.iloc[top])!r} is too large (data row {top + 1}): this format uses ids as 0-based array "
            f"indices, so it would make {val[top] + 1:.0f} rows for {n_distinct} distinct ids (at most {limit} is "
            "accepted here: 10 x the distinct ids + 1000, or the rows of the item table and feature files).",
            file=file, row=top + 1, column=column, fix=fix,
        )
    return val.astype(np.int64)


def check_feature_layout(arr: np.ndarray, *, file: str) -> None:
    """Shape and dtype of a feature matrix (2-D, real numbers, at least one column); reads no data, so a
    memory map can be checked before it is loaded."""
    if arr.ndim != 2:
        raise DataError(
            f"feature matrix must be 2-D (items x dim), got shape {arr.shape}.", file=file,
            fix="save an array of shape (n_items, dim).",
        )
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"feature matrix has complex dtype {arr.dtype}; features must be real numbers.", file=file,
                        fix="save the real part (or the magnitude) as float32: numpy.save(path, x.real.astype('float32')).")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"feature matrix has non-numeric dtype {arr.dtype}.", file=file,
                        fix="save a float32 array of shape (n_items, dim).")
    if arr.shape[1] == 0:
        raise DataError(f"feature matrix has 0 columns (shape {arr.shape}); each item needs at least one value.",
                        file=file, fix="write an array of shape (n_items, dim) with dim >= 1, or remove the file.")


def check_feature_matrix(values: np.ndarray, *, file: str, n_rows: int | None = None,
                         modality: str = "") -> np.ndarray:
    """Feature matrices must be 2-D, real, finite, with at least one column and one row per item.

    float16 and float32 matrices are returned as they are (a memory-mapped file stays mapped; the check
    reads it in blocks); other numeric types are cast to float32."""
    arr = np.asarray(values)
    check_feature_layout(arr, file=file)
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(
            f"{modality or 'feature'} matrix has {arr.shape[0]} rows but the dataset has {n_rows} items "
            "(row r must hold the features of item r).",
            file=file, fix="write one row per item in item-id order, or check you picked the right dataset.",
        )
    if arr.dtype not in (np.float16, np.float32):  # float16 / float32 stay as stored (a mapped file stays mapped)
        arr = arr.astype(np.float32)
    step = max(1, (64 * 2**20) // max(arr.shape[1] * arr.dtype.itemsize, 1))  # ~64 MiB of rows at a time
    bad = [start + np.flatnonzero(~np.isfinite(arr[start:start + step]).all(axis=1))
           for start in range(0, len(arr), step)]
    rows = np.concatenate(bad) if bad else np.zeros(0, np.int64)
    if len(rows):
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


def check_header(names, *, file: str | None) -> None:
    """A table's header must name each column once: pandas would rename the second copy (``a.1``) or read
    only one of them, silently. Blank names are left alone (trailing separators)."""
    seen: dict[str, int] = {}
    for pos, name in enumerate(str(n).strip() for n in names):
        if not name:
            continue
        if name in seen:
            raise DataError(
                f"column {name!r} appears twice in the header (columns {seen[name] + 1} and {pos + 1}); only one "
                "of them would be read.",
                file=file, column=name, fix="rename or remove one of the two columns.",
            )
        seen[name] = pos


NPY_FIX = ("save a plain numeric array with numpy.save(path, array.astype('float32')); files holding Python "
           "objects (pickles) are never loaded.")


def load_array(path, *, mmap_mode: str | None = None, fix: str = NPY_FIX) -> np.ndarray:
    """A ``.npy`` file, safely: never a pickle, a bounded header, and the data size checked against the
    header before anything is allocated. Every failure is a DataError naming the file and ``fix``."""
    from numpy.lib import format as npf

    file = str(path)
    try:
        with open(path, "rb") as fh:
            try:
                version = npf.read_magic(fh)
            except ValueError:
                raise DataError("not a .npy file (it does not start with the NumPy header; a pickle or another "
                                "format?).", file=file, fix=fix) from None
            read_header = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            start = fh.tell()
            fh.seek(0, 2)
            size = fh.tell() - start
    except DataError:
        raise
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read the file: {getattr(exc, 'strerror', None) or exc}.", file=file, fix=fix) from None
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError or tokenize errors
        reason = (str(exc).strip().splitlines() or [""])[0].rstrip(".") if isinstance(exc, ValueError) else ""
        raise DataError(f"the .npy header is damaged or too large ({reason or 'not a valid header dictionary'}).",
                        file=file, fix="write the file again with numpy.save(path, array) (its header is a short "
                                       "dictionary; this one is not loaded).") from None
    if dtype.hasobject:
        raise DataError(f"holds Python objects (dtype {dtype}), i.e. a pickle; it is not loaded.", file=file, fix=fix)
    need = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if size < need:
        raise DataError(f"the file is truncated: its header announces shape {shape} ({dtype}, {need} bytes) but only "
                        f"{size} bytes follow.", file=file,
                        fix="write the file again (numpy.save) or restore it from a copy; it was cut short (a full "
                            "disk or an interrupted copy?).")
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read as a NumPy array: {exc}", file=file, fix=fix) from None


def load_npz(path, *, fix: str = NPY_FIX) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, safely (no pickles); a damaged file is a DataError naming it."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "pickle" in reason.lower() or "object arrays" in reason.lower():
            reason = "it holds Python objects (pickles), which are never loaded"
        raise DataError(f"cannot read as .npz: {reason}.", file=str(path), fix=fix) from None


def folder_listing(path) -> str:
    """A short listing of a folder (or the file name) for 'cannot find' messages."""
    return ", ".join(sorted(p.name for p in path.iterdir())[:12]) if path.is_dir() else path.name
