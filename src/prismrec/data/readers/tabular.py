"""Plain tables: CSV / TSV / TXT (optionally ``.gz``) or Parquet, with a column mapping.

Layout:

* a single file ``<name>.csv|.tsv|.txt|.parquet`` (text files may end in ``.gz``) with a header row
  and one interaction per row; or
* a folder (or the path of its ``interactions.<ext>``) holding the interactions file
  (``interactions.<ext>``, or the only table in the folder apart from ``items.<ext>`` /
  ``users.<ext>``), an optional item file ``items.<ext>``, an optional user file ``users.<ext>``
  (user id column plus attributes; users without interactions are dropped) and optional
  ``<modality>_feat*.npy`` files whose row ``r`` holds the features of data row ``r`` of the item
  file (``<modality>_available.npy`` masks and ``features.json`` as for MMRec folders). Without an
  item file, items are numbered in order of first appearance and feature files must have one row
  per item in that order.

Delimiters: ``,`` for ``.csv`` (``;`` when the header has no comma), tab for ``.tsv``; for ``.txt`` the
first of tab, comma, semicolon or ``|`` found in the header, else runs of whitespace. Parquet needs
``pyarrow``.

Columns are named by ``data.columns`` (``--set data.columns.user=uid``): interaction keys ``user``,
``item``, ``timestamp``, ``rating``, ``label`` (given split: 0/1/2 or train/valid/test), ``order``
(position in the user's sequence); item-file keys ``item_id``, ``title``, ``text``, ``image``,
``price``, ``category``, ``brand``. Unmapped columns are guessed from common names (see
:data:`GUESSES`); ``user`` and ``item`` are required. Timestamps may be numbers (Unix time) or dates
(ISO 8601 such as ``2019-05-01`` or ``2019-05-01T12:00:00``, read as UTC and converted to Unix
seconds). Ids are read as strings, so ``007`` and ``7`` are different ids. Every other column of
the item file is kept under its own name; ``price`` is read as a number (``$12.99`` -> 12.99).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DataConfig
from ...errors import DataError
from ...registry import suggest
from ..dataset import Dataset, build_dataset
from ..validate import check_header, check_interactions, check_unique_ids, folder_listing
from . import register_reader
from .common import first_line, load_folder_modalities, parse_price, raw_ids, read_table

log = logging.getLogger("prismrec")

TEXT_EXT = (".csv", ".tsv", ".txt")
EXTENSIONS = TEXT_EXT + tuple(e + ".gz" for e in TEXT_EXT) + (".parquet",)
GUESSES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userID", "user", "uid", "reviewerID", "visitorid", "userId"),
    "item": ("item_id", "itemID", "item", "iid", "asin", "movieId", "productId", "itemid"),
    "timestamp": ("timestamp", "time", "ts", "unixReviewTime", "datetime"),
    "rating": ("rating", "overall", "score"),
    "label": ("label", "x_label", "split"),
    "order": ("order", "seq_pos", "position"),
}
ITEM_KEYS = ("item_id", "title", "text", "image", "price", "category", "brand")
SPLIT_NAMES = {"train": 0, "valid": 1, "validation": 1, "val": 1, "dev": 1, "test": 2}


def _is_table(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(EXTENSIONS) and not p.name.startswith(".")


def _stem(p: Path) -> str:
    return p.name.removesuffix(".gz").rsplit(".", 1)[0]


def _files(path: Path) -> tuple[Path, Path | None, Path | None] | None:
    """(interactions file, item file, user file) for a file or folder; None when there is no clear choice.

    A lone table file is read alone, unless it is ``interactions.<ext>``: then its folder is read.
    """
    if _is_table(path):
        if _stem(path) != "interactions":
            return path, None, None
        path = path.parent
    if not path.is_dir():
        return None
    tables = [p for p in sorted(path.iterdir()) if _is_table(p)]
    inter = [p for p in tables if _stem(p) == "interactions"]
    if not inter:
        inter = [p for p in tables if _stem(p) not in ("items", "users")]
    if len(inter) != 1:
        return None
    items = [p for p in tables if _stem(p) == "items"]
    users = [p for p in tables if _stem(p) == "users"]
    return inter[0], (items[0] if len(items) == 1 else None), (users[0] if len(users) == 1 else None)


def detect(path: Path) -> bool:
    return _files(path) is not None


def _sep(path: Path) -> str | None:
    """Delimiter of a text table (see the module docstring); None means runs of whitespace."""
    head = first_line(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".tsv"):
        return "\t"
    if name.endswith(".csv"):
        return ";" if "," not in head and ";" in head else ","
    for sep in ("\t", ",", ";", "|"):
        if sep in head:
            return sep
    return None


def _columns(path: Path) -> list[str]:
    """Column names of a table without reading its rows."""
    if path.name.lower().endswith(".parquet"):
        pq = _pyarrow(path)
        try:
            names = list(pq.read_schema(path).names)
        except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors subclass these
            raise DataError(f"cannot read as Parquet: {exc}", file=str(path)) from None
        check_header(names, file=str(path))
        return names
    sep = _sep(path)
    return [str(c) for c in read_table(path, sep=sep if sep else r"\s+", nrows=0).columns]


def _pyarrow(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs the pyarrow package.",
            file=str(path),
            fix="pip install pyarrow (or convert the file to CSV).",
        ) from None
    return pq


def _load(path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    """Read the given columns of a table; text cells as strings (ids keep leading zeros), empty as NaN."""
    if path.name.lower().endswith(".parquet"):
        pq = _pyarrow(path)
        try:
            return pq.read_table(path, columns=usecols).to_pandas()
        except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors subclass these
            raise DataError(f"cannot read as Parquet: {exc}", file=str(path)) from None
    sep = _sep(path)
    return read_table(
        path, sep=sep if sep else r"\s+", usecols=usecols, dtype=str, keep_default_na=False, na_values=[""]
    )


def _resolve(
    path: Path,
    present: list[str],
    keys: tuple[str, ...],
    mapping: dict[str, str],
    required: tuple[str, ...],
    guesses: dict[str, tuple[str, ...]],
) -> dict[str, str]:
    """Canonical key -> column name: the mapping when given (it must exist), else the first guess present."""
    lower = {c.lower(): c for c in present}
    out: dict[str, str] = {}
    for key in keys:
        if key in mapping:
            if mapping[key] not in present:
                raise DataError(
                    f"data.columns.{key}={mapping[key]!r} is not a column.{suggest(mapping[key], present)} "
                    f"Columns present: {', '.join(present)}.",
                    file=str(path),
                    column=mapping[key],
                    fix=f"set data.columns.{key} to one of the columns present.",
                )
            out[key] = mapping[key]
            continue
        cands = guesses.get(key, (key,))
        hit = next((c for c in cands if c in present), None) or next(
            (lower[c.lower()] for c in cands if c.lower() in lower), None
        )
        if hit is not None:
            out[key] = hit
        elif key in required:
            raise DataError(
                f"no {key} column: tried {', '.join(cands)}; columns present: {', '.join(present)}.",
                file=str(path),
                column=key,
                fix=f"name the column with --set data.columns.{key}=<column>.",
            )
    return out


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 1


def _timestamps(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Unix seconds from numbers or ISO dates; a value that is neither is an error naming its row."""
    if pd.api.types.is_datetime64_any_dtype(values):
        dt = pd.to_datetime(values, utc=True)
        return (dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    num = pd.to_numeric(values, errors="coerce")
    given = values.notna().to_numpy()
    bad = num.isna().to_numpy() & given
    if not bad.any():
        return num
    if bad.sum() * 2 < given.sum():  # mostly numbers: report the first value that is not
        row = _first_bad(bad)
    else:
        dt = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        bad_dt = dt.isna().to_numpy() & given
        if not bad_dt.any():
            return (dt - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        row = _first_bad(bad_dt)
    raise DataError(
        f"timestamp value {values.iloc[row - 1]!r} is neither a number (Unix time) nor an ISO date "
        f"(data row {row}).",
        file=str(path),
        row=row,
        column=column,
        fix="write timestamps as Unix seconds or as dates like 2019-05-01T12:00:00, or drop the column.",
    )


def _labels(values: pd.Series) -> pd.Series:
    """Split labels: numbers stay, train/valid/test names become 0/1/2 (others are left for validation)."""
    named = values.astype(str).str.strip().str.lower().map(SPLIT_NAMES)
    return named.where(named.notna(), values)


def _read_items(path: Path, cfg: DataConfig, item_column: str | None) -> pd.DataFrame:
    """The item file: canonical columns renamed, every other column kept, one row per item id."""
    present = _columns(path)
    mapping = {k: v for k, v in cfg.columns.items() if k in ITEM_KEYS}
    if "item_id" not in mapping and item_column in present:
        mapping["item_id"] = item_column
    guesses = {"item_id": GUESSES["item"], **{k: (k,) for k in ITEM_KEYS[1:]}}
    found = _resolve(path, present, ITEM_KEYS, mapping, ("item_id",), guesses)
    table = _load(path)
    table = table.rename(columns={v: k for k, v in found.items()})
    ids = table["item_id"]
    blank = (ids.isna() | ids.astype(str).str.strip().eq("")).to_numpy()
    if blank.any():
        raise DataError(
            "empty item id.",
            file=str(path),
            row=_first_bad(blank),
            column=found["item_id"],
            fix="give every item row an id.",
        )
    table["item_id"] = ids.astype(str)
    check_unique_ids(table["item_id"], kind="item", file=str(path), column=found["item_id"])
    if "price" in table.columns:
        table["price"] = parse_price(table["price"])
    for col in table.columns:
        if table[col].dtype != object and not isinstance(table[col].dtype, pd.StringDtype):
            continue
        if col in ("item_id", "price"):
            continue
        table[col] = table[col].fillna("")
    return table


def _read_users(path: Path, cfg: DataConfig, user_column: str) -> pd.DataFrame:
    """The user file: ``user_id`` (the interactions' user column, or a guessed one) plus other columns."""
    present = _columns(path)
    mapping = {"user": user_column} if user_column in present else {}
    found = _resolve(path, present, ("user",), mapping, ("user",), GUESSES)
    table = _load(path).rename(columns={found["user"]: "user_id"})
    check_unique_ids(table["user_id"], kind="user", file=str(path), column=found["user"])
    table["user_id"] = table["user_id"].astype(str)
    return table


@register_reader("tabular", "plain CSV/TSV/Parquet table(s) with a column mapping (data.columns)", detect)
def read(path: Path, cfg: DataConfig) -> Dataset:
    found = _files(path)
    if found is None:
        raise DataError(
            f"no interactions table in {path} (contents: {folder_listing(path)}).",
            file=str(path),
            fix="name the interactions file interactions.csv (or .tsv/.parquet), or pass the file's path.",
        )
    inter_path, item_path, user_path = found
    known = set(GUESSES) | set(ITEM_KEYS)
    unknown = sorted(set(cfg.columns) - known)
    if unknown:
        raise DataError(
            f"unknown data.columns key {unknown[0]!r}.{suggest(unknown[0], known)}",
            fix=f"use the keys {', '.join(GUESSES)} (interactions) or {', '.join(ITEM_KEYS)} (item file).",
        )
    present = _columns(inter_path)
    mapping = {k: v for k, v in cfg.columns.items() if k in GUESSES}
    cols = _resolve(inter_path, present, tuple(GUESSES), mapping, ("user", "item"), GUESSES)
    raw = _load(inter_path, usecols=list(dict.fromkeys(cols.values())))
    frame = pd.DataFrame({"user": raw_ids(raw[cols["user"]]), "item": raw_ids(raw[cols["item"]])})
    if "timestamp" in cols:
        frame["timestamp"] = _timestamps(raw[cols["timestamp"]], inter_path, cols["timestamp"])
    for key in ("rating", "order"):
        if key in cols:
            frame[key] = raw[cols[key]].to_numpy()
    if "label" in cols:
        frame["label"] = _labels(raw[cols["label"]]).to_numpy()

    items = None
    if item_path is not None:
        items = _read_items(item_path, cfg, cols["item"])
        n_items = len(items)
    else:
        n_items = int(frame["item"].nunique())
    folder_mode = _stem(inter_path) == "interactions" or path.is_dir()
    name = inter_path.parent.name if folder_mode else _stem(inter_path)
    frame = check_interactions(frame, file=str(inter_path), names=cols)
    users = _read_users(user_path, cfg, cols["user"]) if user_path is not None else None
    # feature files belong to a dataset folder; a lone table file does not pick up its neighbours'
    modalities = load_folder_modalities(inter_path.parent, n_items) if folder_mode else {}
    ds = build_dataset(
        name,
        frame,
        items=items,
        modalities=modalities,
        users=users,
        source={
            "format": "tabular",
            "path": str(path),
            "interactions_file": str(inter_path),
            "columns": cols,
        },
        file=str(inter_path),
    )
    if users is not None and ds.interactions["user"].nunique() < ds.n_users:
        ds = ds.subset(np.ones(ds.n_interactions, dtype=bool), drop_unused_items=False)  # users never seen
    return ds
