"""Helpers shared by the readers: delimited-file reading, feature files, manifests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import DataError
from ...utils.io import read_json
from ..dataset import Modality
from ..validate import check_feature_matrix, check_header, load_array

FEATURE_RE = re.compile(r"^(?P<mod>[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*?)_feat(?P<tag>[A-Za-z0-9_]*)\.npy$")
MANIFEST = "features.json"


def read_table(path: Path, sep: str | None = None, **kw: Any) -> pd.DataFrame:
    """Read a delimited text file (optionally .gz); errors name the file.

    The header must name each column once (:func:`~prismrec.data.validate.check_header`); text must be
    UTF-8; an empty file is an error that says so."""
    if sep is None:
        sep = "," if path.name.endswith((".csv", ".csv.gz")) else "\t"
    kind = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}.get(sep, "whitespace")
    try:
        if kw.get("names") is not None:
            check_header(kw["names"], file=str(path))
        elif kw.get("header", "infer") in ("infer", 0):  # pandas renames a repeated column silently: look first
            head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False,
                               quoting=kw.get("quoting", 0), encoding=kw.get("encoding"))
            check_header(head.iloc[0].tolist() if len(head) else [], file=str(path))
        return pd.read_csv(path, sep=sep, **kw)
    except UnicodeDecodeError as exc:
        raise DataError(f"the file is not UTF-8 text ({exc.reason}: byte 0x{exc.object[exc.start]:02x}; Latin-1 or "
                        "Windows-1252?).", file=str(path),
                        fix="re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8 "
                            "(or 'Save as CSV UTF-8' in a spreadsheet).") from None
    except pd.errors.EmptyDataError:
        raise DataError("the file is empty (no header, no rows).", file=str(path),
                        fix="check the path and that the file was written completely.") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse as a {kind}-separated table: {exc}",
                        file=str(path), fix="check the delimiter, quoting and encoding (UTF-8).") from None


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``features.json``: per-modality provenance written by ``prismrec features`` (or by hand)."""
    p = folder / MANIFEST
    if not p.is_file():
        return {}
    data = read_json(p, fix="fix the JSON, or delete the file (it only records the features' provenance).")
    return data.get("modalities", data) if isinstance(data, dict) else {}


def find_feature_files(folder: Path) -> dict[str, Path]:
    """Map modality name -> ``<modality>_feat*.npy`` file; the name is the part before ``_feat``."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*_feat*.npy")):
        m = FEATURE_RE.match(p.name)
        if m:
            found.setdefault(m.group("mod"), []).append(p)
    out: dict[str, Path] = {}
    for mod, paths in found.items():
        if len(paths) == 1:
            out[mod] = paths[0]
        else:  # several files for one modality: name each by its full stem
            for p in paths:
                out[p.stem.replace("_feat", "")] = p
    return out


def load_modality(name: str, path: Path, n_items: int | None, provenance: dict[str, Any] | None = None,
                  mask_path: Path | None = None) -> Modality:
    """Load one ``.npy`` feature file (and optional boolean availability mask) as a Modality."""
    # memory-mapped: float16 / float32 files are read block by block when used, never copied whole here
    values = check_feature_matrix(load_array(path, mmap_mode="r"), file=str(path), n_rows=n_items, modality=name)
    available = None
    if mask_path is not None and mask_path.is_file():
        available = load_array(mask_path).astype(bool).reshape(-1)
    prov = {"file": str(path), "encoder": "unknown", **(provenance or {})}
    if mask_path is not None and mask_path.is_file():
        prov["mask_file"] = str(mask_path)
    return Modality(name, values, available, prov)


def load_folder_modalities(folder: Path, n_items: int | None) -> dict[str, Modality]:
    """Every ``<modality>_feat*.npy`` in ``folder`` (with ``<modality>_available.npy`` masks)."""
    manifest = read_manifest(folder)
    mods = {}
    for name, path in find_feature_files(folder).items():
        prov = dict(manifest.get(name, {}))
        prov.pop("file", None)
        mods[name] = load_modality(name, path, n_items, prov, folder / f"{name.split('_')[0]}_available.npy")
    return mods


# Helpers for text files that may be gzip-compressed, RecBole-style typed headers and prices. -------

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def open_text(path: Path):
    """Open a text file for reading, transparently decompressing ``.gz``; undecodable bytes are replaced."""
    import gzip

    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def first_line(path: Path) -> str:
    """The first line of a (possibly gzip-compressed) text file without its line break; '' if unreadable."""
    try:
        with open_text(path) as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, EOFError):
        return ""


def strip_gz(name: str) -> str:
    """``ml-1m.inter.gz`` -> ``ml-1m.inter``."""
    return name.removesuffix(".gz")


def parse_typed_header(line: str) -> list[tuple[str, str]] | None:
    """Split a RecBole header (``user_id:token<TAB>rating:float``) into (name, type) pairs.

    Returns None when any field lacks a known ``:type`` suffix, so callers can tell typed headers
    from plain ones.
    """
    out = []
    for field in line.split("\t"):
        name, sep, typ = field.strip().rpartition(":")
        if not sep or not name or typ not in RECBOLE_TYPES:
            return None
        out.append((name, typ))
    return out or None


_PRICE_RE = r"^\s*[$€£]?\s*(\d[\d,]*(?:\.\d+)?)"


def parse_price(values: pd.Series) -> pd.Series:
    """Prices as floats: numbers stay, strings like ``"$12.99"`` or ``"$1.00 - $3.00"`` give their first
    number, anything else (``""``, HTML fragments) gives NaN."""
    num = pd.to_numeric(values, errors="coerce")
    text = values.astype(object).where(num.isna() & values.notna())
    if text.notna().any():
        found = text.dropna().astype(str).str.extract(_PRICE_RE, expand=False)
        found = found.str.replace(",", "", regex=False)
        num = num.astype(np.float64)
        num.loc[found.index] = pd.to_numeric(found, errors="coerce")
    return num.astype(np.float64)


def raw_ids(values: pd.Series) -> pd.Series:
    """Raw ids as a categorical of strings, blank ids as missing (so validation reports them).

    A categorical keeps millions of repeated id strings cheap, and it sidesteps the string branch of
    ``check_interactions`` (which under pandas 3 copy-on-write modifies a read-only mask in place).
    """
    text = values.astype("string")
    return text.mask(text.str.strip().eq("").fillna(False)).astype("category")
