"""Public Amazon review dumps (McAuley lab, UCSD), 2014 and 2018 releases; plain or gzip-compressed.

Layout: a review file, or a folder holding exactly one review file and optionally one meta file.

* 2014 reviews ``reviews_<Category>[_5].json[.gz]`` and 2018 reviews ``<Category>[_5].json[.gz]``:
  one JSON object per line with ``reviewerID`` (user), ``asin`` (item), ``overall`` (rating) and
  ``unixReviewTime`` (Unix seconds); other keys (review text, votes, images) are ignored.
* ``meta_<Category>.json[.gz]``: one product per line. 2014 lines are Python dict literals (read
  with ``ast.literal_eval``): ``asin``, ``title``, ``description`` (text), ``price`` (number),
  ``imUrl``, ``categories`` (list of category paths), ``brand``, ``salesRank``. 2018 lines are JSON:
  ``asin``, ``title``, ``description`` (list of paragraphs), ``brand``, ``category`` (one path as a
  list), ``price`` (text such as ``"$12.99"``, ``""`` or ``"$1.00 - $3.00"``), ``imageURL`` /
  ``imageURLHighRes`` (lists), ``main_cat``. The layout is recognised per line from its keys, so
  either parser and either key set work for any file. When a review file is given by path, the meta
  file is ``meta_<Category>.json[.gz]`` next to it.
* ``<modality>_feat*.npy`` (optional, in the folder): row ``r`` holds the features of item ``r`` in
  the order below.

The item table has ``item_id`` (asin), ``title``, ``description``, ``brand``, ``category`` (the
first category path joined with ``" > "``), ``price`` (float; the first number of a price text, NaN
when there is none), ``image`` (the first image URL) and ``text``: MMRec's sentence recipe, the
title, brand, category names and description joined by spaces. Items are numbered in order of first
appearance in the review file. Products in the meta file without any review are dropped (the
dataset is the reviewed catalogue); reviewed products missing from the meta file keep empty
attributes. Duplicate meta lines for one asin (the 2018 files have some) keep the first.

Files are streamed line by line (they can be several GB); meta lines whose asin is not reviewed are
not parsed. Lines that cannot be parsed, or that lack ``reviewerID``/``asin`` (or ``overall`` /
``unixReviewTime`` when the first line has them; ``asin`` in meta files), are skipped and counted; a
warning gives the count and the first bad line number, and more than 10% bad lines is an error.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...config import DataConfig
from ...errors import DataError
from ..dataset import Dataset, build_dataset
from . import register_reader
from .common import first_line, load_folder_modalities, open_text, parse_price, raw_ids

log = logging.getLogger("prismrec")

MAX_BAD_SHARE = 0.10
REVIEW_RE = re.compile(r"^(?:reviews_)?(?P<cat>.+?)(?:_5)?\.json(?:\.gz)?$")
REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
ASIN_RE = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")


def _is_json(p: Path) -> bool:
    return p.is_file() and p.name.endswith((".json", ".json.gz"))


def _looks_like_reviews(p: Path) -> bool:
    head = first_line(p)
    return '"reviewerID"' in head or "'reviewerID'" in head


def _files(path: Path, sniff: bool = True) -> tuple[Path, Path | None] | None:
    """(review file, meta file or None) for a review file or a folder; None when there is no clear choice.

    With ``sniff`` (detection) a review file must also start with a line naming ``reviewerID``;
    without it that is only used to choose among several JSON files.
    """
    if _is_json(path):
        if path.name.startswith("meta_") or (sniff and not _looks_like_reviews(path)):
            return None
        m = REVIEW_RE.match(path.name)
        metas = [path.parent / f"meta_{m.group('cat')}{ext}" for ext in (".json.gz", ".json")] if m else []
        return path, next((p for p in metas if p.is_file()), None)
    if not path.is_dir():
        return None
    jsons = [p for p in sorted(path.iterdir()) if _is_json(p)]
    reviews = [p for p in jsons if not p.name.startswith("meta_")]
    if sniff or len(reviews) > 1:  # e.g. a features.json manifest next to the review file
        reviews = [p for p in reviews if _looks_like_reviews(p)]
    metas = [p for p in jsons if p.name.startswith("meta_")]
    if len(reviews) != 1 or len(metas) > 1:
        return None
    return reviews[0], (metas[0] if metas else None)


def detect(path: Path) -> bool:
    return _files(path) is not None


def _parse(line: str) -> Any:
    """One record: JSON (2014 reviews, all 2018 files) or a Python literal (2014 meta files)."""
    if line.startswith("{'"):
        return ast.literal_eval(line)
    try:
        return json.loads(line)
    except ValueError:
        return ast.literal_eval(line)


def _records(
    path: Path, required: tuple[str, ...], what: str, wanted: Callable[[str], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the parsed records of a JSON-lines file, skipping (and counting) bad lines.

    ``wanted`` is a cheap test on the raw line: lines it rejects are counted but not parsed (meta
    files list far more products than a review subset uses, and parsing is the slow part). After
    the last line: warn about skipped lines, or raise a DataError when more than 10% were bad or no
    line was good.
    """
    total = bad = 0
    first_bad = None
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            total += 1
            if wanted is not None and not wanted(line):
                continue
            try:
                rec = _parse(line)
                ok = isinstance(rec, dict) and all(rec.get(k) not in (None, "") for k in required)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                ok = False
            if not ok:
                bad += 1
                first_bad = first_bad or lineno
                continue
            yield rec
    if total == 0:
        raise DataError(f"the {what} file is empty.", file=str(path), fix="check the download is complete.")
    if bad > MAX_BAD_SHARE * total or bad == total:
        raise DataError(
            f"{bad} of {total} lines ({100 * bad / total:.1f}%) could not be read as {what} records "
            f"(each line must be one JSON object with {', '.join(required)}; first bad line {first_bad}).",
            file=str(path),
            row=first_bad,
            fix="re-download the file (it may be truncated or not an Amazon review dump).",
        )
    if bad:
        log.warning(
            "%s: skipped %d of %d lines that could not be parsed or lack %s (first at line %d).",
            path.name,
            bad,
            total,
            "/".join(required),
            first_bad,
        )


def _read_reviews(path: Path) -> pd.DataFrame:
    """The review file as a frame with raw ``user``, ``item``, ``rating`` and ``timestamp`` columns."""
    cols: dict[str, list[Any]] = {k: [] for k in REVIEW_KEYS}
    try:  # rating and time are required on every line when the first line has them
        head = _parse(first_line(path).strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        head = {}
    required = tuple(
        k for k in REVIEW_KEYS if k in ("reviewerID", "asin") or (isinstance(head, dict) and k in head)
    )
    for rec in _records(path, required, "review"):
        for k, values in cols.items():
            values.append(rec.get(k))
    frame = pd.DataFrame(
        {
            "user": raw_ids(pd.Series(cols["reviewerID"], dtype=object)),
            "item": raw_ids(pd.Series(cols["asin"], dtype=object)),
        }
    )
    for key, canon in (("overall", "rating"), ("unixReviewTime", "timestamp")):
        values = pd.Series(cols[key], dtype=object)
        if values.notna().any():  # a key absent from every line is simply not in the data
            frame[canon] = values.to_numpy()
    return frame


def _text(value: Any) -> str:
    """A meta value as one line of text: lists (2018 descriptions) joined, runs of whitespace collapsed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value if v not in (None, "")).strip()
    return " ".join(str(value).split())


def _category_path(rec: dict[str, Any]) -> list[str]:
    """The category path: 2018 ``category`` (a list) or the first path of 2014 ``categories``."""
    cat = rec.get("category")
    if isinstance(cat, list) and cat:
        return [_text(c) for c in cat if _text(c)]
    cats = rec.get("categories")
    if isinstance(cats, list) and cats:
        first = cats[0]
        if isinstance(first, list):
            return [_text(c) for c in first if _text(c)]
        return [_text(c) for c in cats if isinstance(c, str) and _text(c)]
    return []


def _image(rec: dict[str, Any]) -> str:
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        value = rec.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v), None)
        if isinstance(value, str) and value:
            return value
    return ""


def _read_meta(path: Path, keep: set[str]) -> pd.DataFrame:
    """Meta records of the reviewed asins in ``keep`` (first line per asin) as an attribute table."""
    fields: dict[str, Callable[[dict[str, Any]], Any]] = {
        "title": lambda r: _text(r.get("title")),
        "description": lambda r: _text(r.get("description")),
        "brand": lambda r: _text(r.get("brand")),
        "category": lambda r: " > ".join(_category_path(r)),
        "price": lambda r: r.get("price"),
        "image": _image,
        "_category_words": lambda r: " ".join(_category_path(r)),
    }
    out: dict[str, list[Any]] = {"item_id": [], **{k: [] for k in fields}}
    seen: set[str] = set()

    def wanted(line: str) -> bool:  # parse only lines whose asin is reviewed (or cannot be seen)
        m = ASIN_RE.search(line)
        return m is None or m.group(1) in keep

    for rec in _records(path, ("asin",), "product", wanted):
        asin = str(rec["asin"])
        if asin not in keep or asin in seen:
            continue
        seen.add(asin)
        out["item_id"].append(asin)
        for key, get in fields.items():
            out[key].append(get(rec))
    table = pd.DataFrame(out)
    table["price"] = parse_price(pd.Series(out["price"], dtype=object))
    return table


@register_reader(
    "amazon", "Amazon review dumps (2014/2018): reviews JSON lines + meta_<Category>.json[.gz]", detect
)
def read(path: Path, cfg: DataConfig) -> Dataset:
    found = _files(path, sniff=False)
    if found is None:
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:12]) if path.is_dir() else path.name
        raise DataError(
            f"no single Amazon review file in {path} (contents: {listing}).",
            file=str(path),
            fix="keep one review file (reviews_<Cat>.json.gz or <Cat>.json.gz) and at most one "
            "meta_<Cat> file in the folder, or pass the review file's path.",
        )
    review_path, meta_path = found
    inter = _read_reviews(review_path)
    catalogue = pd.unique(inter["item"].astype(str).to_numpy(dtype=object))
    items = pd.DataFrame({"item_id": catalogue})
    if meta_path is not None:
        meta = _read_meta(meta_path, set(catalogue))
        items = items.merge(meta, on="item_id", how="left", sort=False)
        for col in ("title", "description", "brand", "category", "image", "_category_words"):
            items[col] = items[col].fillna("")
        missing = len(catalogue) - len(meta)
        if missing:
            log.warning(
                "%s: %d of %d reviewed products have no line in %s; their attributes are empty.",
                review_path.name,
                missing,
                len(catalogue),
                meta_path.name,
            )
        # MMRec's sentence: title, brand, category names and description, space-separated
        parts = [items[c].astype(str) for c in ("title", "brand", "_category_words", "description")]
        text = parts[0]
        for part in parts[1:]:
            text = text + np.where((text != "") & (part != ""), " ", "") + part
        items["text"] = text.str.strip()
        items = items.drop(columns="_category_words")
    m = REVIEW_RE.match(review_path.name)
    name = path.name if path.is_dir() else (m.group("cat") if m else review_path.name.split(".")[0])
    folder = review_path.parent
    return build_dataset(
        name,
        inter,
        items=items,
        modalities=load_folder_modalities(folder, len(items)) if path.is_dir() else {},
        source={
            "format": "amazon",
            "path": str(path),
            "interactions_file": str(review_path),
            "meta_file": str(meta_path) if meta_path else None,
        },
        file=str(review_path),
    )
