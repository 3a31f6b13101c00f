"""``prismrec features``: encode a catalogue's raw items into a feature file, batched and resumable.

Inputs: the item table of a dataset (any layout ``--data`` reads) or a plain items file
(CSV/TSV/JSONL/Parquet with an ``item_id`` column). The input column per kind defaults to
``text`` (else ``title``, else ``description``) for text, ``image`` (else ``image_path``, ``imUrl``,
``image_url``) for images and captions, ``price`` for prices; ``--column`` overrides.

Missing-input rule (stated, counted, never silently zero): an item whose input is empty, whose image
file does not exist, is an http(s) URL (never downloaded), or cannot be decoded, gets
``available = False`` and a zero row; the manifest counts each reason and lists the first ids.
Models read the mask (missing rows become a learned "missing" vector or drop out of kNN graphs).

Resumable cache: ``CACHE_DIR/<encoder key>/part-NNNNN.npz`` shards (ids, input hashes, values, ok,
reasons), written atomically after every ``--flush-every`` items. The key is the item id plus the
encoder (name, version, settings); an item whose input changed (different hash) is encoded again. A
killed run restarts where it stopped, and a finished run re-uses every row.

Outputs: ``.npz`` (raw item ids + values + available + provenance; attach with
``--set data.extra_features.NAME=FILE``) or ``<modality>_feat.npy`` inside a dataset folder
(row-aligned, plus ``<modality>_available.npy`` and an entry in ``features.json``), and a manifest
``OUT.manifest.json`` (encoder, version, dimension, date, counts, throughput).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import DataError, PrismrecError
from ..utils.io import check_out_dir, make_dir, read_json, write_json, write_npz
from ..utils.io import clean_temp_files
from .encoders import Encoder

log = logging.getLogger("prismrec")

COLUMNS = {"text": ("text", "title", "description", "name"),
           "image": ("image", "image_path", "imUrl", "image_url", "imurl"),
           "caption": ("image", "image_path", "imUrl", "image_url", "imurl"),
           "price": ("price",)}
MISSING_RULE = ("an item whose input is empty, whose image file is missing, is an http(s) URL (not "
                "downloaded) or cannot be decoded is written with available=False and a zero row; it is counted "
                "here by reason and models treat it as missing through the mask")


@dataclass
class ExtractResult:
    ids: np.ndarray
    values: np.ndarray
    available: np.ndarray
    manifest: dict[str, Any]
    out: Path | None


def read_items(path: str | Path) -> pd.DataFrame:
    """A plain item table (CSV/TSV/JSONL/Parquet) with an ``item_id`` column (``asin``/``itemID`` accepted).

    Text must be UTF-8; the file must hold at least one item, each id once and non-empty; problems are
    DataErrors naming the file, row and column."""
    from ..data.readers.common import read_table
    from ..data.validate import check_header, check_unique_ids

    p = Path(path).expanduser()
    fix = "give a UTF-8 CSV/TSV/JSONL/Parquet file with an item_id column and one row per item."
    if not p.is_file():
        raise DataError("items file not found.", file=str(p), fix=fix)
    if p.stat().st_size == 0:
        raise DataError("the items file is empty.", file=str(p), fix=fix)
    name = p.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        try:
            df = pd.read_json(p, lines=name.endswith((".jsonl", ".jsonl.gz")), dtype=False, encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"the file is not UTF-8 text ({exc.reason}).", file=str(p),
                            fix="re-save it as UTF-8 (JSON is always UTF-8).") from None
        except ValueError as exc:
            raise DataError(f"cannot parse as {'JSON lines' if 'jsonl' in name else 'JSON'}: {exc}", file=str(p),
                            fix="write one JSON object per line (.jsonl) or a JSON array of objects (.json).") from None
    elif name.endswith(".parquet"):
        try:
            df = pd.read_parquet(p)
        except ImportError:
            raise DataError("reading Parquet needs the pyarrow package.", file=str(p),
                            fix="pip install pyarrow (or convert the file to CSV).") from None
        except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors subclass these
            raise DataError(f"cannot read as Parquet: {exc}", file=str(p), fix=fix) from None
        check_header(df.columns, file=str(p))
    else:
        df = read_table(p, sep="," if ".csv" in name else "\t", dtype=str, keep_default_na=False)
    col = next((alt for alt in ("item_id", "itemID", "item_id:token", "asin", "id") if alt in df.columns), None)
    if col is None:
        raise DataError(f"no item_id column (columns: {', '.join(map(str, df.columns[:10]))}).", file=str(p),
                        column="item_id", fix="name the id column item_id.")
    if len(df) == 0:
        raise DataError("the items file has no rows (only a header).", file=str(p), fix=fix)
    df = df.rename(columns={col: "item_id"})
    blank = (df["item_id"].isna() | df["item_id"].astype(str).str.strip().eq("")).to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0]) + 1
        raise DataError(f"empty item id (data row {row}).", file=str(p), row=row, column=col,
                        fix="give every item row an id.")
    df["item_id"] = df["item_id"].astype(str)
    check_unique_ids(df["item_id"], kind="item", file=str(p), column=col)
    return df


def pick_column(items: pd.DataFrame, kind: str, column: str | None) -> str:
    if column:
        if column not in items.columns:
            raise PrismrecError(f"--column {column!r} is not in the item table (columns: "
                                f"{', '.join(map(str, items.columns))}).")
        return column
    for c in COLUMNS[kind]:
        if c in items.columns:
            return c
    raise PrismrecError(f"the item table has no column for {kind} input (looked for {', '.join(COLUMNS[kind])}; "
                        f"columns: {', '.join(map(str, items.columns))}). Fix: pass --column NAME.")


def _input_hash(value: Any, root: Path | None, is_file: bool) -> str:
    h = hashlib.sha1(repr(value).encode())
    if is_file and isinstance(value, str) and value and not value.startswith(("http://", "https://")):
        p = Path(value).expanduser()
        if not p.is_absolute() and root is not None:
            p = root / p
        if len(str(p)) < 4096 and p.is_file():  # a replaced photo under the same name is encoded again
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """Shards of encoded rows for one encoder key; see the module docstring."""

    def __init__(self, root: Path, encoder: Encoder):
        self.dir = root / encoder.key
        make_dir(self.dir, "cache folder")
        self.dim = encoder.dim
        self.rows: dict[str, tuple[str, np.ndarray, bool, str]] = {}
        for part in sorted(self.dir.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as z:
                    for i, h, v, ok, r in zip(z["ids"], z["hashes"], z["values"], z["ok"], z["reasons"]):
                        self.rows[str(i)] = (str(h), v, bool(ok), str(r))
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable cache shard %s (its items are encoded again)", part)
        self._next = len(list(self.dir.glob("part-*.npz")))
        self._pending: list[tuple[str, str, np.ndarray, bool, str]] = []

    def get(self, item_id: str, h: str):
        row = self.rows.get(item_id)
        return row if row is not None and row[0] == h else None

    def put(self, item_id: str, h: str, value: np.ndarray, ok: bool, reason: str) -> None:
        self.rows[item_id] = (h, value, ok, reason)
        self._pending.append((item_id, h, value, ok, reason))

    def flush(self) -> None:
        if not self._pending:
            return
        ids, hs, vs, oks, rs = zip(*self._pending)
        write_npz(self.dir / f"part-{self._next:05d}.npz", ids=np.asarray(ids), hashes=np.asarray(hs),
                  values=np.stack(vs).astype(np.float32), ok=np.asarray(oks, bool), reasons=np.asarray(rs))
        self._next += 1
        self._pending.clear()


def extract(items: pd.DataFrame, encoder: Encoder, *, column: str, modality: str, out: Path | None = None,
            cache_dir: Path | None = None, batch_size: int = 64, flush_every: int = 1024,
            image_root: Path | None = None, dataset: str | None = None, progress: bool = False,
            on_batch: Callable[[int], None] | None = None, item_order: np.ndarray | None = None) -> ExtractResult:
    """Encode ``items[column]`` with ``encoder``; write ``out`` (.npz or .npy) and its manifest."""
    ids = items["item_id"].astype(str).to_numpy()
    inputs = items[column].tolist()
    inputs = [None if (isinstance(v, float) and np.isnan(v)) else v for v in inputs]
    n = len(ids)
    values = np.zeros((n, encoder.dim), np.float32)
    ok = np.zeros(n, bool)
    reasons = np.asarray([""] * n, dtype=object)
    cache = FeatureCache(cache_dir, encoder) if cache_dir is not None else None
    is_file = encoder.kind in ("image", "caption")
    hashes = [_input_hash(v, image_root, is_file) for v in inputs]
    todo = []
    for r in range(n):
        hit = cache.get(ids[r], hashes[r]) if cache is not None else None
        if hit is None:
            todo.append(r)
        else:
            values[r], ok[r], reasons[r] = hit[1], hit[2], hit[3]
    cached = n - len(todo)
    if cached:
        log.info("%d of %d items come from the cache %s", cached, n, cache.dir if cache else "")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="item", desc=f"{modality} ({encoder.name})", dynamic_ncols=True)
    t0 = time.perf_counter()
    since_flush = 0
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        v, o = encoder.encode([inputs[r] for r in rows])
        detail = getattr(encoder, "last_reasons", None)
        for j, r in enumerate(rows):
            values[r], ok[r] = v[j], bool(o[j])
            if not o[j]:
                reasons[r] = (detail[j] if detail and detail[j] else "empty_or_invalid_input")
            if cache is not None:
                cache.put(ids[r], hashes[r], values[r], ok[r], reasons[r])
        since_flush += len(rows)
        if cache is not None and since_flush >= flush_every:
            cache.flush()
            since_flush = 0
        if bar is not None:
            bar.update(len(rows))
        if on_batch is not None:
            on_batch(start + len(rows))
    if cache is not None:
        cache.flush()
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()

    missing: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    for r in np.flatnonzero(~ok):
        missing[reasons[r]] = missing.get(reasons[r], 0) + 1
        examples.setdefault(reasons[r], [])
        if len(examples[reasons[r]]) < 10:
            examples[reasons[r]].append(str(ids[r]))
    manifest = {
        **encoder.provenance(),
        "modality": modality,
        "dataset": dataset,
        "input_column": column,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "items": n,
        "available": int(ok.sum()),
        "missing": missing,
        "missing_examples": examples,
        "missing_rule": MISSING_RULE,
        "encoded_now": len(todo),
        "from_cache": cached,
        "seconds": round(seconds, 3),
        "items_per_second": round(len(todo) / seconds, 2) if seconds > 0 and todo else None,
        "batch_size": batch_size,
        "versions": {"prismrec": __version__, "python": platform.python_version(), **_lib_versions()},
    }
    if out is not None:
        out = write_features(out, ids, values, ok, manifest, item_order=item_order)
    return ExtractResult(ids, values, ok, manifest, out)


def _lib_versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__}


def write_features(out: Path, ids: np.ndarray, values: np.ndarray, ok: np.ndarray, manifest: dict[str, Any],
                   item_order: np.ndarray | None = None) -> Path:
    """``.npz`` (id-keyed) or ``<modality>_feat.npy`` (row-aligned + mask + features.json) plus a manifest."""
    from ..data.features_io import save_item_features

    out = Path(out).expanduser()
    if out.suffix == ".npz":
        save_item_features(out, ids, values, available=ok, provenance=manifest)
    elif out.suffix == ".npy":
        if item_order is None or not np.array_equal(np.asarray(item_order, dtype=str), ids.astype(str)):
            raise PrismrecError("a row-aligned .npy output needs every item of a dataset in its order (--data, no "
                                "--limit). Fix: write .npz instead (it attaches by item id).")
        if not out.name.endswith("_feat.npy"):
            raise PrismrecError(f"--out {out.name}: a row-aligned file must be named <modality>_feat.npy so the "
                                "dataset reader finds it. Fix: e.g. --out DATA_DIR/text_feat.npy, or write .npz.")
        from ..utils.io import write_bytes

        mod = out.name[: -len("_feat.npy")]
        for path, arr in ((out, values.astype(np.float32)), (out.with_name(f"{mod}_available.npy"), ok)):
            import io

            buf = io.BytesIO()
            np.save(buf, arr)
            write_bytes(path, buf.getvalue())
        mf = out.with_name("features.json")
        data = read_json(mf, fix="fix or delete features.json (it only records provenance; it is rewritten).") \
            if mf.is_file() else {}
        data.setdefault("modalities", {})[mod] = {k: v for k, v in manifest.items() if k != "missing_examples"}
        write_json(mf, data)
    else:
        raise PrismrecError(f"--out {out}: use a .npz file (id-keyed) or DATA_DIR/<modality>_feat.npy.")
    write_json(out.with_name(out.name + ".manifest.json"), manifest)
    return out


MODALITIES = ("text", "image", "caption", "price")


def output_path(out: str | Path, modality: str, *, row_aligned: bool) -> Path:
    """The feature file that ``--out`` names: a file (``.npz`` or ``<modality>_feat.npy``) as given, or, for
    a folder (an existing one, a path ending with ``/``, or a path without a suffix), the file in it:
    ``<modality>_feat.npy`` (row-aligned: the items of a dataset, in order, no ``--limit``) or
    ``<modality>.npz`` (id-keyed: an item table, or ``--limit``)."""
    text = str(out)
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir() or (not path.exists() and not path.suffix):
        return path / (f"{modality}_feat.npy" if row_aligned else f"{modality}.npz")
    return path


def extract_features(modality: str, out: str | Path, *, data: str | Path | None = None,
                     items: str | Path | None = None, encoder: str | None = None, column: str | None = None,
                     image_root: str | Path | None = None, captioner: str | None = None,
                     text_encoder: str | None = None, batch_size: int = 64, cache: str | Path | None = None,
                     use_cache: bool = True, limit: int | None = None, threads: int | None = None,
                     progress: bool = False) -> ExtractResult:
    """Encode the items of a dataset (``data``: name or path) or of an item table (``items``: a
    CSV/TSV/JSONL/Parquet file with ``item_id``) into the feature file ``out``.

    ``encoder`` defaults per modality (docs/features.md); ``cache`` defaults to
    ``OUT_DIR/.prismrec-cache`` (``use_cache=False``: neither read nor written); ``limit`` keeps the
    first items (trials); ``threads`` sets torch's CPU threads.
    """
    from .encoders import PriceEncoder, build_encoder

    if (data is None) == (items is None):
        raise PrismrecError("give exactly one of --data (a dataset) or --items (an item table).")
    if modality not in MODALITIES:
        raise PrismrecError(f"unknown --modality {modality!r}. Fix: --modality text, image, caption or price.")
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = output_path(out, modality, row_aligned=data is not None and not limit)
    check_out_dir(out.parent, "--out folder")  # before any work: a file where a folder should be
    clean_temp_files(out.parent, recursive=False, older_than=600)  # stale leftovers of a killed extraction
    if cache and use_cache:
        check_out_dir(cache, "--cache folder")
    order = None
    if data is not None:
        from ..config import DataConfig
        from ..data import read_dataset

        ds = read_dataset(data, DataConfig())
        table = ds.items.copy()
        table["item_id"] = ds.item_ids.astype(str)
        order = ds.item_ids
        root = Path(image_root) if image_root else Path(ds.source.get("path", ".") if isinstance(ds.source, dict)
                                                        else ".")
        name = ds.name
    else:
        items = Path(items)
        table = read_items(items)
        root = Path(image_root) if image_root else items.parent
        name = items.stem
    if limit:
        table, order = table.iloc[:limit].reset_index(drop=True), None
    col = pick_column(table, modality, column)
    stats = None
    if modality == "price":
        stats = PriceEncoder(encoder or "log-quantile").fit(table[col].tolist()).settings
    enc = build_encoder(modality, encoder, captioner=captioner, text_spec=text_encoder, image_root=root,
                        batch_size=batch_size, price_stats=stats)
    cache_dir = None if not use_cache else (Path(cache) if cache else out.expanduser().parent / ".prismrec-cache")
    return extract(table, enc, column=col, modality=modality, out=out, cache_dir=cache_dir, batch_size=batch_size,
                   image_root=root, dataset=name, progress=progress, item_order=order)
