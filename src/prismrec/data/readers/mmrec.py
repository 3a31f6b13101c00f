"""MMRec folders: ``<name>.inter`` (tab-separated, ``userID itemID [x_label] ...``) and ``*_feat.npy``.

Layout (as in enoche/MMRec ``data/``):

* ``<name>.inter``: header row; ``userID`` and ``itemID`` are 0-based integers; ``x_label`` (0 train,
  1 valid, 2 test) is optional; ``rating``, ``timestamp`` and ``seq_pos`` (sequence position) are
  kept when present; other columns are ignored.
* ``<modality>_feat.npy``: row ``r`` holds the features of ``itemID == r`` (``image_feat.npy``,
  ``text_feat.npy``, ``audio_feat.npy``, ...); ``<modality>_available.npy`` (bool) marks rows that
  hold a real feature.
* optional ``items.tsv`` (``itemID`` plus e.g. ``asin``, ``title``, ``text``) and ``users.tsv``
  (``userID`` plus attributes), and ``features.json`` with feature provenance.

As in MMRec, the number of items is ``max(itemID) + 1`` (items that occur only in valid/test keep
their index); feature files or ``items.tsv`` may list more items (catalogue items with no
interaction yet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DataConfig
from ...errors import DataError
from ..dataset import Dataset, build_dataset
from ..validate import check_feature_layout, check_integer_ids, check_unique_ids, load_array
from . import register_reader
from .common import find_feature_files, load_folder_modalities, read_table

USER, ITEM, LABEL = "userID", "itemID", "x_label"
OPTIONAL = {"rating": "rating", "timestamp": "timestamp", "seq_pos": "order", LABEL: "label"}


def _inter_file(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".inter":
        return path
    if not path.is_dir():
        return None
    preferred = path / f"{path.name}.inter"
    if preferred.is_file():
        return preferred
    files = [p for p in sorted(path.glob("*.inter")) if not p.name.endswith((".train.inter", ".valid.inter",
                                                                                ".test.inter"))]
    return files[0] if len(files) == 1 else None


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().rstrip("\n\r").split("\t")


def detect(path: Path) -> bool:
    f = _inter_file(path)
    if f is None:
        return False
    head = _header(f)
    return USER in head and ITEM in head


@register_reader("mmrec", "MMRec folder: <name>.inter (userID, itemID, x_label) + <modality>_feat.npy", detect)
def read(path: Path, cfg: DataConfig) -> Dataset:
    inter_path = _inter_file(path)
    if inter_path is None:
        raise DataError(f"no single <name>.inter file in {path}.", file=str(path),
                        fix="put exactly one MMRec .inter file in the folder (or name it <folder>.inter).")
    folder = inter_path.parent
    head = _header(inter_path)
    for col in (USER, ITEM):
        if col not in head:
            raise DataError(f"missing the {col} column; header is: {', '.join(head)}.", file=str(inter_path),
                            column=col, fix=f"MMRec files need {USER} and {ITEM} columns (tab-separated).")
    usecols = [c for c in head if c in (USER, ITEM) or c in OPTIONAL]
    raw = read_table(inter_path, sep="\t", usecols=usecols)
    if len(raw) == 0:
        raise DataError("no interactions (the file has a header but no rows).", file=str(inter_path),
                        fix="check the file is complete.")
    items_tsv = folder / "items.tsv"
    item_table = None
    if items_tsv.is_file():
        item_table = read_table(items_tsv, sep="\t", quoting=3, dtype=str, keep_default_na=False)
        if ITEM not in item_table.columns:
            raise DataError(f"items.tsv has no {ITEM} column.", file=str(items_tsv), column=ITEM)
    feat_files = find_feature_files(folder)
    feat_rows = {}
    for name, p in feat_files.items():
        arr = load_array(p, mmap_mode="r")
        check_feature_layout(arr, file=str(p))
        feat_rows[name] = int(arr.shape[0])
    # ids are array indices: rows that the item table or the feature files hold are always acceptable ids
    catalogue = max([len(item_table) if item_table is not None else 0, *feat_rows.values()])
    users = check_integer_ids(raw[USER], file=str(inter_path), column=USER)
    items = check_integer_ids(raw[ITEM], file=str(inter_path), column=ITEM, allowed=catalogue)

    n_items = int(items.max()) + 1
    if item_table is not None:
        ids = check_integer_ids(item_table[ITEM], file=str(items_tsv), column=ITEM, allowed=catalogue)
        check_unique_ids(pd.Series(ids), kind="item", file=str(items_tsv), column=ITEM)
        n_items = max(n_items, int(ids.max()) + 1 if len(ids) else 0)
    if feat_rows and len(set(feat_rows.values())) == 1 and max(feat_rows.values()) > n_items:
        n_items = max(feat_rows.values())
    for name, rows in feat_rows.items():
        if rows != n_items:
            raise DataError(
                f"modality '{name}' has {rows} rows but {inter_path.name} implies {n_items} items "
                f"(itemID 0..{n_items - 1}; row r must hold the features of itemID r).",
                file=str(feat_files[name]),
                fix="regenerate the features for every item, in itemID order.",
            )

    table = pd.DataFrame({"item_id": np.arange(n_items).astype(str)})
    if item_table is not None:
        for col in item_table.columns:
            if col == ITEM:
                continue
            full = np.full(n_items, "", dtype=object)
            full[ids] = item_table[col].to_numpy()
            table[col] = full
    user_table = None
    users_tsv = folder / "users.tsv"
    if users_tsv.is_file():
        ut = read_table(users_tsv, sep="\t", dtype=str, keep_default_na=False)
        if USER in ut.columns:
            uids = check_integer_ids(ut[USER], file=str(users_tsv), column=USER, allowed=len(ut))
            check_unique_ids(pd.Series(uids), kind="user", file=str(users_tsv), column=USER)
            n_users = max(int(users.max()) + 1, int(uids.max()) + 1 if len(uids) else 0)
            user_table = pd.DataFrame({"user_id": np.arange(n_users).astype(str)})
            for col in ut.columns:
                if col != USER:
                    full = np.full(n_users, "", dtype=object)
                    full[uids] = ut[col].to_numpy()
                    user_table[col] = full
    if user_table is None:  # MMRec numbers users 0..max; keep that numbering
        user_table = pd.DataFrame({"user_id": np.arange(int(users.max()) + 1).astype(str)})

    frame = pd.DataFrame({"user": users, "item": items})
    for col, canon in OPTIONAL.items():
        if col in raw.columns:
            frame[canon] = raw[col].to_numpy()
    ds = build_dataset(
        folder.name, frame, items=table, modalities=load_folder_modalities(folder, n_items), users=user_table,
        source={"format": "mmrec", "path": str(folder), "interactions_file": str(inter_path)},
        file=str(inter_path),
    )
    # users with no interaction at all (ids skipped in the file) carry no information: drop them.
    if ds.interactions["user"].nunique() < ds.n_users:
        ds = ds.subset(np.ones(ds.n_interactions, dtype=bool), drop_unused_items=False)
    return ds
