"""UniSRec / RecBole sequential files: ``<name>.{train,valid,test}.inter`` plus index, text and feature files.

Layout (as produced by UniSRec's preprocessing, e.g. ``dataset/downstream/Scientific/``):

* ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter``: tab-separated, header
  ``user_id:token  item_id_list:token_seq  item_id:token``. ``user_id`` and the item tokens are
  indices (see the index files); ``item_id_list`` is the space-separated history (oldest first) and
  ``item_id`` the next item. For each user the test row holds the whole sequence but its last item
  as history, the valid row the sequence minus its last two items, and the train file is augmented
  with every shorter prefix (one row per target).
* ``<name>.item2index`` / ``<name>.user2index`` (optional): ``raw id<TAB>index`` per line, no header
  (asin and reviewerID for Amazon data). Without them the index tokens are the raw ids.
* ``<name>.text`` (optional): ``item_id:token<TAB>text:token_seq`` with a header (a headerless
  two-column file is accepted too), keyed by the raw item id.
* ``*_feat*.npy`` (optional): row ``r`` holds the features of item index ``r``;
  ``<modality>_available.npy`` masks and ``features.json`` provenance as for MMRec folders.
* ``<name>.<suffix>`` with ``suffix`` starting with ``feat`` (e.g. ``Scientific.feat1CLS``):
  raw little-endian float32 matrices, row ``r`` = item index ``r``; the dimension is
  ``file size / 4 / number of items`` and the modality is named after the suffix.

Each user's full sequence is rebuilt: normally the test row's history plus its target. Histories
truncated to a maximum length (UniSRec keeps the last 50 items) are rebuilt by chaining the
augmented train rows. Every row must agree with the rebuilt sequence (the valid target is the last
history item of the test row, each train row is a prefix, ...); otherwise a DataError names the file
and row. The interactions get ``order`` (position in the sequence) and ``label``: 2 for the test
target, 1 for the valid target, 0 for every other item (including the first history items, which are
never a target). Item ``i`` is index ``i``; items that never occur keep their row (catalogue
items). Users are numbered by index. The item table holds ``item_id``, ``text`` and ``title`` (the
text before its first ". ", which is the product title in UniSRec's Amazon texts).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DataConfig
from ...errors import DataError
from ..dataset import Dataset, Modality, build_dataset
from ..validate import check_feature_matrix, load_array
from . import register_reader
from .common import first_line, load_folder_modalities, parse_typed_header, raw_ids, read_manifest, read_table

log = logging.getLogger("prismrec")

SPLITS = ("train", "valid", "test")
USER, HIST, TARGET = "user_id", "item_id_list", "item_id"


def _find(path: Path) -> tuple[Path, str] | None:
    """(folder, dataset name) for a folder holding ``<name>.test.inter`` (or one of the split files)."""
    if path.is_file():
        for split in SPLITS:
            if path.name.endswith(f".{split}.inter"):
                return path.parent, path.name[: -len(f".{split}.inter")]
        return None
    if not path.is_dir():
        return None
    names = sorted({p.name[: -len(f".{s}.inter")] for s in SPLITS for p in path.glob(f"*.{s}.inter")})
    if len(names) == 1:
        return path, names[0]
    match = [n for n in names if n.lower() == path.name.lower()]
    return (path, match[0]) if len(match) == 1 else None


def detect(path: Path) -> bool:
    found = _find(path)
    if found is None:
        return False
    folder, name = found
    for split in SPLITS:
        head = parse_typed_header(first_line(folder / f"{name}.{split}.inter"))
        if head is not None:
            return any(n == HIST for n, _ in head)
    return False


def _read_index(path: Path, kind: str) -> pd.Series | None:
    """``raw<TAB>index`` lines as a Series raw id by index (0..n-1); None when the file is absent."""
    if not path.is_file():
        return None
    table = read_table(
        path, sep="\t", header=None, dtype=str, quoting=3, keep_default_na=False, index_col=False
    )
    if table.shape[1] < 2:
        raise DataError(
            f"expected 'raw id<TAB>index' on each line, found {table.shape[1]} column.",
            file=str(path),
            row=1,
            fix=f"write one '<raw {kind} id>\\t<index>' pair per line, no header.",
        )
    idx = pd.to_numeric(table[1], errors="coerce")
    bad = (idx.isna() | (idx.fillna(0) % 1 != 0) | (idx.fillna(0) < 0)).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(
            f"index {table[1].iloc[row - 1]!r} is not a non-negative integer.",
            file=str(path),
            row=row,
            column="index",
            fix="the second column holds 0-based integer indices.",
        )
    idx = idx.astype(np.int64).to_numpy()
    order = np.argsort(idx, kind="stable")
    if not np.array_equal(idx[order], np.arange(len(idx))):
        dup = pd.Series(idx).duplicated().to_numpy()
        row = int(np.flatnonzero(dup)[0]) + 1 if dup.any() else None
        raise DataError(
            f"the indices are not 0..{len(idx) - 1}, each once "
            f"({'index ' + str(idx[row - 1]) + ' repeats' if row else 'some are missing'}).",
            file=str(path),
            row=row,
            column="index",
            fix="re-number the entries contiguously from 0.",
        )
    return pd.Series(table[0].to_numpy(dtype=object)[order])


def _read_split(path: Path, split: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One split file as (rows, history tokens flat, history offsets); rows have user, target, hlen."""
    if not path.is_file():
        raise DataError(
            f"missing {path.name}; a UniSRec folder has {path.name.rsplit('.', 2)[0]}."
            "{train,valid,test}.inter.",
            file=str(path),
            fix="copy all three split files into the folder.",
        )
    head = parse_typed_header(first_line(path))
    names = [n for n, _ in head] if head else first_line(path).split("\t")
    for col in (USER, HIST, TARGET):
        if col not in names:
            raise DataError(
                f"missing the {col} field; header is: {first_line(path)[:120]!r}.",
                file=str(path),
                column=col,
                fix=f"the header is {USER}:token\\t{HIST}:token_seq\\t{TARGET}:token.",
            )
    frame = read_table(
        path,
        sep="\t",
        header=0,
        names=names,
        usecols=[USER, HIST, TARGET],
        dtype=str,
        quoting=3,
        keep_default_na=False,
        index_col=False,
    )
    if len(frame) == 0:
        raise DataError("no rows.", file=str(path), fix="check the file is complete.")
    for col in (USER, TARGET):
        blank = frame[col].str.strip().eq("").to_numpy()
        if blank.any():
            row = int(np.flatnonzero(blank)[0]) + 1
            raise DataError(
                f"empty {col}.",
                file=str(path),
                row=row,
                column=col,
                fix="every row needs a user and a target item.",
            )
    tokens = frame[HIST].str.split()
    hlen = tokens.str.len().to_numpy(np.int64)
    flat = np.asarray(tokens.explode().dropna().to_numpy(dtype=object))
    offsets = np.zeros(len(frame) + 1, dtype=np.int64)
    np.cumsum(hlen, out=offsets[1:])
    rows = pd.DataFrame(
        {
            "split": np.int8(split),
            "row": np.arange(1, len(frame) + 1),
            "user": frame[USER].to_numpy(),
            "target": frame[TARGET].str.strip().to_numpy(),
            "hlen": hlen,
        }
    )
    return rows, flat, offsets


def _codes(
    tokens: np.ndarray,
    index: pd.Index,
    what: str,
    rows: pd.DataFrame,
    row_of: np.ndarray,
    files: list[Path],
    column: str,
) -> np.ndarray:
    """Map tokens to positions in ``index``; an unknown token is an error naming its file and row."""
    codes = index.get_indexer(tokens)
    bad = codes < 0
    if bad.any():
        r = int(row_of[np.flatnonzero(bad)[0]])
        raise DataError(
            f"{what} token {tokens[np.flatnonzero(bad)[0]]!r} is not in the index file.",
            file=str(files[int(rows["split"].iloc[r])]),
            row=int(rows["row"].iloc[r]),
            column=column,
            fix=f"use the indices listed in the .{what}2index file, or remove that file to use the "
            "tokens as ids.",
        )
    return codes.astype(np.int64)


def _rebuild_truncated(
    u_rows: pd.DataFrame, hist: np.ndarray, offsets: np.ndarray, targets: np.ndarray
) -> tuple[list[int], dict[int, int]] | None:
    """Chain a user's rows whose histories hit the length cap into the full sequence.

    ``u_rows`` are the user's rows (index = global row number). Rows shorter than the cap are
    prefixes and fix the start of the sequence; each capped row's history must then equal the last
    ``cap`` items built so far. Returns (sequence, row -> position), or None when no prefix anchors
    the chain.
    """
    cap = int(u_rows["hlen"].max())
    short = u_rows[u_rows["hlen"] < cap]
    if short.empty:
        return None
    anchor = int(short["hlen"].idxmax())
    seq = hist[offsets[anchor] : offsets[anchor + 1]].tolist() + [int(targets[anchor])]
    pos = {int(r): int(h) for r, h in zip(short.index, short["hlen"])}
    windows: dict[tuple[int, ...], list[int]] = {}
    for r in u_rows[u_rows["hlen"] == cap].sort_values(["split", "row"]).index:
        windows.setdefault(tuple(hist[offsets[r] : offsets[r + 1]].tolist()), []).append(int(r))
    while True:
        nxt = windows.get(tuple(seq[-cap:]))
        if not nxt:
            break
        r = nxt.pop(0)
        pos[r] = len(seq)
        seq.append(int(targets[r]))
    return seq, pos


def _sequences(
    rows: pd.DataFrame, hist: np.ndarray, offsets: np.ndarray, files: list[Path], item_names: np.ndarray
):
    """Rebuild every user's sequence and each row's target position, and check all rows agree.

    ``hist`` and ``rows['target_code']`` are item codes; ``item_names`` gives their tokens for messages.

    Returns (seq_user, seq_item, seq_pos, seq_label) as flat arrays ordered by user then position.
    """
    targets = rows["target_code"].to_numpy()
    users = rows["user_code"].to_numpy()
    hlen = rows["hlen"].to_numpy()
    n_users = int(users.max()) + 1
    # the base row of each user: the longest history, the latest split on ties (normally the test row)
    order = np.lexsort((rows["split"].to_numpy(), hlen, users))
    last = np.r_[users[order][1:] != users[order][:-1], True]
    base = np.full(n_users, -1, dtype=np.int64)
    base[users[order][last]] = order[last]
    n_rows = np.bincount(users, minlength=n_users)
    pos = hlen.copy()  # untruncated histories start at position 0
    seq_len = np.where(base >= 0, hlen[np.maximum(base, 0)] + 1, 0)
    rebuilt: dict[int, list[int]] = {}
    # more rows than history items: the histories were cut at a maximum length; chain the windows
    for u in np.flatnonzero((base >= 0) & (n_rows > hlen[np.maximum(base, 0)])):
        u_rows = rows.iloc[np.flatnonzero(users == u)]
        out = _rebuild_truncated(u_rows, hist, offsets, targets)
        if out is None:
            continue
        seq, row_pos = out
        rebuilt[int(u)] = seq
        seq_len[u] = len(seq)
        left = [r for r in u_rows.index if r not in row_pos]
        if left:
            r = left[0]
            raise DataError(
                f"user {rows['user'].iloc[r]!r}: this row's history does not continue the sequence "
                "rebuilt from the other rows (histories capped at a maximum length must overlap the "
                "previous row by all but one item).",
                file=str(files[int(rows["split"].iloc[r])]),
                row=int(rows["row"].iloc[r]),
                column=HIST,
                fix="regenerate the split files from the same interaction sequences.",
            )
        pos[list(row_pos)] = list(row_pos.values())

    starts = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(seq_len, out=starts[1:])
    seq_item = np.empty(starts[-1], dtype=np.int64)
    has = base >= 0
    b = base[has]
    # vectorised copy of each base row's history + target into the flat sequence array
    lens = hlen[b]
    within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    seq_item[np.repeat(starts[:-1][has], lens) + within] = hist[np.repeat(offsets[b], lens) + within]
    seq_item[starts[:-1][has] + lens] = targets[b]
    for u, seq in rebuilt.items():
        seq_item[starts[u] : starts[u + 1]] = seq

    def fail(r: int, message: str, column: str) -> None:
        raise DataError(
            f"user {rows['user'].iloc[r]!r}: {message}",
            file=str(files[int(rows["split"].iloc[r])]),
            row=int(rows["row"].iloc[r]),
            column=column,
            fix="regenerate the split files from the same interaction sequences "
            "(train rows are prefixes of the valid row, the valid row of the test row).",
        )

    # every target must sit inside its user's sequence and match it ...
    L = seq_len[users]
    outside = pos >= L
    if outside.any():
        r = int(np.flatnonzero(outside)[0])
        fail(r, f"the history ({hlen[r]} items) is longer than the user's test history.", HIST)
    wrong = seq_item[starts[users] + pos] != targets
    if wrong.any():
        r = int(np.flatnonzero(wrong)[0])
        expected = item_names[seq_item[starts[users[r]] + pos[r]]]
        fail(
            r,
            f"the target item {rows['target'].iloc[r]!r} differs from item {pos[r]} of the user's sequence "
            f"({expected!r}, rebuilt from the longest row).",
            TARGET,
        )
    # ... and every history item too (items before the sequence start, when capped, are not compared)
    row_of = np.repeat(np.arange(len(rows)), hlen)
    j = np.arange(len(hist)) - offsets[row_of]
    at = pos[row_of] - hlen[row_of] + j
    ok = at >= 0
    mism = np.zeros(len(hist), dtype=bool)
    mism[ok] = seq_item[starts[users[row_of[ok]]] + at[ok]] != hist[ok]
    if mism.any():
        r = int(row_of[np.flatnonzero(mism)[0]])
        k = int(np.flatnonzero(mism)[0])
        fail(
            r,
            "the history is not the start of the user's sequence rebuilt from the longest row "
            f"(history item {int(j[k])} is {item_names[hist[k]]!r}, expected "
            f"{item_names[seq_item[starts[users[r]] + at[k]]]!r}).",
            HIST,
        )
    # the valid target is the second-to-last item, the test target the last one, once per user
    labels = np.zeros(len(seq_item), dtype=np.int8)
    for split, label in ((2, 2), (1, 1)):
        sel = np.flatnonzero(rows["split"].to_numpy() == split)
        dup = pd.Series(users[sel]).duplicated().to_numpy()
        if dup.any():
            fail(
                int(sel[np.flatnonzero(dup)[0]]),
                f"the user has more than one row in the {SPLITS[split]} file.",
                USER,
            )
        expect = L[sel] - 1 - ((split == 1) & np.isin(users[sel], users[rows["split"].to_numpy() == 2]))
        off = pos[sel] != expect
        if off.any():
            r = int(sel[np.flatnonzero(off)[0]])
            fail(
                r,
                f"the {SPLITS[split]} target is item {pos[r]} of the user's {L[r]}-item sequence, "
                f"expected item {int(expect[np.flatnonzero(off)[0]])} (the valid target must be the last "
                "history item of the test row).",
                TARGET,
            )
        labels[starts[users[sel]] + pos[sel]] = label
    train = np.flatnonzero(rows["split"].to_numpy() == 0)
    late = labels[starts[users[train]] + pos[train]] != 0
    if late.any():
        fail(
            int(train[np.flatnonzero(late)[0]]),
            "a train row's target is the user's valid or test item.",
            TARGET,
        )
    seq_user = np.repeat(np.arange(n_users), seq_len)
    seq_pos = np.arange(len(seq_item)) - starts[seq_user]
    return seq_user, seq_item, seq_pos, labels


def _raw_feature_files(folder: Path, name: str) -> dict[str, Path]:
    """``<name>.feat*`` raw float32 files, keyed by their suffix."""
    return {p.name[len(name) + 1 :]: p for p in sorted(folder.glob(f"{name}.feat*")) if p.is_file()}


def _load_raw_features(folder: Path, name: str, n_items: int) -> dict[str, Modality]:
    """UniSRec's raw float32 feature files as modalities named after their suffix (``feat1CLS``)."""
    manifest = read_manifest(folder)
    mods = {}
    for suffix, path in _raw_feature_files(folder, name).items():
        size = os.path.getsize(path)
        if size % 4 or (size // 4) % n_items or size == 0:
            raise DataError(
                f"raw float32 feature file of {size} bytes is not a whole number of values for each of the "
                f"{n_items} items ({size / 4 / n_items:.3f} per item; row r must hold item index r).",
                file=str(path),
                fix="write n_items x dim little-endian float32 values, in item-index order.",
            )
        values = np.fromfile(path, dtype="<f4").reshape(n_items, -1)
        values = check_feature_matrix(values, file=str(path), n_rows=n_items, modality=suffix)
        mask = folder / f"{suffix}_available.npy"
        available = load_array(mask).astype(bool).reshape(-1) if mask.is_file() else None
        prov = {"encoder": "unknown", **manifest.get(suffix, {}), "file": str(path), "layout": "raw float32"}
        mods[suffix] = Modality(suffix, values, available, prov)
    return mods


@register_reader(
    "unisrec", "UniSRec folder: <name>.{train,valid,test}.inter (item_id_list) + .text/.item2index", detect
)
def read(path: Path, cfg: DataConfig) -> Dataset:
    found = _find(path)
    if found is None:
        raise DataError(
            f"no <name>.test.inter (with .train/.valid) in {path}.",
            file=str(path),
            fix="point at the folder holding the UniSRec split files.",
        )
    folder, name = found
    files = [folder / f"{name}.{s}.inter" for s in SPLITS]
    parts = [_read_split(f, i) for i, f in enumerate(files)]
    rows = pd.concat([p[0] for p in parts], ignore_index=True)
    hist_tokens = np.concatenate([p[1] for p in parts])
    offsets = np.concatenate(
        [[0]] + [p[2][1:] + sum(len(q[1]) for q in parts[:i]) for i, p in enumerate(parts)]
    )

    item_index = _read_index(folder / f"{name}.item2index", "item")
    user_index = _read_index(folder / f"{name}.user2index", "user")
    row_of = np.repeat(np.arange(len(rows)), rows["hlen"].to_numpy())
    if item_index is not None:
        item_tokens = pd.Index(np.arange(len(item_index)).astype(str))
        item_raw = item_index.to_numpy(dtype=object)
    else:
        seen = pd.unique(np.concatenate([hist_tokens, rows["target"].to_numpy(dtype=object)]))
        num = pd.to_numeric(pd.Series(seen), errors="coerce")
        if num.notna().all() and (num % 1 == 0).all() and (num >= 0).all():
            n = int(num.max()) + 1  # index tokens: item r is index r, even if never seen
            item_tokens = pd.Index(np.arange(n).astype(str))
        else:
            item_tokens = pd.Index(seen)
        item_raw = item_tokens.to_numpy(dtype=object)
    n_items = len(item_tokens)
    hist = _codes(hist_tokens, item_tokens, "item", rows, row_of, files, HIST)
    rows["target_code"] = _codes(
        rows["target"].to_numpy(dtype=object), item_tokens, "item", rows, np.arange(len(rows)), files, TARGET
    )
    if user_index is not None:
        user_tokens = pd.Index(np.arange(len(user_index)).astype(str))
        user_raw = user_index.to_numpy(dtype=object)
    else:
        user_tokens = pd.Index(pd.unique(rows["user"].to_numpy(dtype=object)))
        num = pd.to_numeric(pd.Series(user_tokens), errors="coerce")
        if num.notna().all():
            user_tokens = user_tokens[np.argsort(num.to_numpy(), kind="stable")]
        user_raw = user_tokens.to_numpy(dtype=object)
    rows["user_code"] = _codes(
        rows["user"].to_numpy(dtype=object), user_tokens, "user", rows, np.arange(len(rows)), files, USER
    )

    seq_user, seq_item, seq_pos, labels = _sequences(
        rows, hist, offsets, files, item_tokens.to_numpy(dtype=object)
    )
    inter = pd.DataFrame(
        {
            "user": raw_ids(pd.Series(user_raw[seq_user])),
            "item": raw_ids(pd.Series(item_raw[seq_item])),
            "order": seq_pos,
            "label": labels,
        }
    )

    items = pd.DataFrame({"item_id": item_raw})
    text_file = folder / f"{name}.text"
    if text_file.is_file():
        head = parse_typed_header(first_line(text_file))
        names = [n for n, _ in head] if head else ["item_id", "text"]
        text = read_table(
            text_file,
            sep="\t",
            header=0 if head else None,
            names=names,
            dtype=str,
            quoting=3,
            keep_default_na=False,
            index_col=False,
        )
        key = names[0] if "item_id" not in names else "item_id"
        col = "text" if "text" in names else next(n for n in names if n != key)
        text = text.drop_duplicates(key).set_index(key)[col].str.strip()
        items["text"] = text.reindex(items["item_id"]).fillna("").to_numpy()
        items["title"] = items["text"].str.split(". ", n=1, regex=False).str[0].str.strip()
        unmatched = int((~text.index.isin(items["item_id"])).sum())
        if unmatched:
            log.warning(
                "%s: %d texts in %s name items that are not in the dataset; ignored.",
                name,
                unmatched,
                text_file.name,
            )

    modalities = load_folder_modalities(folder, n_items)
    for key, mod in _load_raw_features(folder, name, n_items).items():
        if key in modalities:
            raise DataError(
                f"modality {key!r} is given twice ({modalities[key].provenance.get('file')} and "
                f"{mod.provenance['file']}).",
                file=str(mod.provenance["file"]),
                fix="keep one of the two files.",
            )
        modalities[key] = mod
    ds = build_dataset(
        name,
        inter,
        items=items,
        modalities=modalities,
        source={"format": "unisrec", "path": str(folder), "interactions_file": str(files[2])},
        file=str(files[2]),
    )
    return ds
