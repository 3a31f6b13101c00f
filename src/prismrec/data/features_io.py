"""Feature files that live outside a dataset folder: read them as extra modalities, write them safely.

``prismrec features`` (extraction) and AlignRec's stage 1 write item features as ``.npz`` files
with the raw item ids, so they attach to a dataset by id, whatever order or preprocessing::

    ids        (n,)   raw item ids (strings)
    values     (n, d) float32
    available  (n,)   bool, optional (False = no real feature for that item)
    provenance ()     JSON string, optional (encoder, dimension, date, ...)

A plain ``.npy`` is also accepted; its row ``r`` must be item ``r`` of the dataset as read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from ..utils.io import write_npz
from .dataset import Dataset, Modality
from .validate import check_feature_matrix, check_unique_ids, load_array, load_npz


def save_item_features(path: str | Path, ids: np.ndarray, values: np.ndarray, *, available: np.ndarray | None = None,
                       provenance: dict[str, Any] | None = None) -> Path:
    """Write an id-keyed feature file (atomically)."""
    values = np.asarray(values, dtype=np.float32)
    arrays = {"ids": np.asarray([str(i) for i in ids]), "values": values,
              "available": np.ones(len(values), bool) if available is None else np.asarray(available, bool),
              "provenance": np.array(json.dumps({**(provenance or {}), "dim": int(values.shape[1])}))}
    return write_npz(path, **arrays)


def load_item_features(ds: Dataset, name: str, path: str | Path) -> Modality:
    """Read one feature file and align it with ``ds``'s items (by raw id for .npz, by row for .npy).

    Items of the dataset that the file does not cover are marked unavailable (not zero-filled silently).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"feature file for modality '{name}' not found.", file=str(p),
                        fix="check data.extra_features (name: path to .npz or .npy).")
    if p.suffix == ".npy":
        values = check_feature_matrix(load_array(p), file=str(p), n_rows=ds.n_items, modality=name)
        return Modality(name, values, None, {"file": str(p), "encoder": "unknown"})
    z = load_npz(p, fix="write it with prismrec.data.features_io.save_item_features (arrays ids, values, "
                        "optional available and provenance; no object arrays).")
    for key in ("ids", "values"):
        if key not in z:
            raise DataError(f"missing array '{key}' (has {', '.join(z)}).", file=str(p),
                            fix="write it with prismrec.data.features_io.save_item_features.")
    ids = z["ids"].astype(str).reshape(-1)
    values = check_feature_matrix(z["values"], file=str(p), modality=name)
    if len(ids) != len(values):
        raise DataError(f"{len(ids)} ids but {len(values)} feature rows.", file=str(p),
                        fix="write one id per feature row.")
    check_unique_ids(pd.Series(ids), kind="item", file=str(p), column="ids")
    avail_in = z["available"].astype(bool).reshape(-1) if "available" in z else np.ones(len(ids), bool)
    if len(avail_in) != len(ids):
        raise DataError(f"{len(avail_in)} availability flags but {len(ids)} ids.", file=str(p),
                        fix="write one boolean per id in 'available'.")
    try:
        prov = json.loads(str(z["provenance"])) if "provenance" in z else {}
    except ValueError:
        raise DataError("the 'provenance' array is not a JSON string.", file=str(p),
                        fix="store provenance as a JSON string, or leave it out.") from None
    prov = prov if isinstance(prov, dict) else {}
    pos = {raw: i for i, raw in enumerate(ids)}
    rows = np.asarray([pos.get(str(raw), -1) for raw in ds.item_ids], dtype=np.int64)
    found = rows >= 0
    if not found.any():
        raise DataError(f"none of the file's {len(ids)} item ids belongs to dataset '{ds.name}'.", file=str(p),
                        fix="use features extracted from this dataset (ids are raw item ids).")
    out = np.zeros((ds.n_items, values.shape[1]), dtype=np.float32)
    out[found] = values[rows[found]]
    available = np.zeros(ds.n_items, dtype=bool)
    available[found] = avail_in[rows[found]]
    return Modality(name, out, available, {"encoder": "unknown", **prov, "file": str(p)})


def attach_features(ds: Dataset, files: dict[str, str]) -> Dataset:
    """Add every ``name -> file`` of ``data.extra_features`` as a modality (replacing one of that name)."""
    if not files:
        return ds
    mods = dict(ds.modalities)
    for name, path in files.items():
        mods[name] = load_item_features(ds, name, path)
    return ds._replace(modalities=mods)
