"""RecBole atomic files: ``<name>.inter`` (or ``.inter.gz``) plus optional ``<name>.item``, ``<name>.user``.

Layout (RecBole's "atomic files", e.g. ``recbole/dataset_example/ml-100k/``):

* every file is tab-separated with a typed header row: each field is ``name:type`` with type one of
  ``token``, ``token_seq`` (space-separated tokens), ``float``, ``float_seq``;
* ``<name>.inter`` (or ``<name>.inter.gz``): one interaction per row. ``user_id`` and ``item_id``
  (any token, e.g. ``196``, ``1m_1`` or a movie title) name the user and the item; ``rating`` and
  ``timestamp`` are kept when present; other fields (``label:float`` click labels, review text) are
  ignored. Other field names can be given with ``--set data.columns.user=<field>`` (keys ``user``,
  ``item``, ``rating``, ``timestamp``; names without the ``:type`` suffix);
* RecBole benchmark splits ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter``
  with the same fields (no ``item_id_list``) are read instead of ``<name>.inter`` when that is
  absent, and give the split label (0 train, 1 valid, 2 test);
* ``<name>.item`` (optional): ``item_id`` plus attributes. Every field is kept under its name
  without the type suffix (``float`` fields as numbers, ``token_seq`` as space-separated text);
  ``movie_title`` becomes ``title``. When there is no ``text`` field, ``text`` joins the textual
  fields: the title, a year field in parentheses, then ``<Field>: <value>`` for each other token
  field (``class``/``genre`` read "Genres"), e.g. ``Toy Story (1995). Genres: Animation Children's
  Comedy``. Internal item ``i`` is data row ``i`` of ``.item``; items in ``.item`` without any
  interaction are kept (catalogue items); items that occur only in ``.inter`` are appended
  (with a warning) and have no feature rows;
* ``<name>.user`` (optional): ``user_id`` plus attributes, kept as the users table;
* ``<modality>_feat*.npy`` (optional, with ``<modality>_available.npy`` masks and
  ``features.json``): row ``r`` holds the features of the ``r``-th data row of ``.item``. Without
  a ``.item`` file items are numbered in order of first appearance in ``.inter`` and the feature
  files must have exactly one row per item.

Other atomic files (``.kg``, ``.link``, ``.net``) are ignored. The format is detected from an
``.inter`` file whose header fields all carry RecBole types and that is not a UniSRec split file
(those have an ``item_id_list`` field and are read by the ``unisrec`` reader).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import DataConfig
from ...errors import DataError
from ..dataset import Dataset, build_dataset
from ..validate import check_interactions, folder_listing
from . import register_reader
from .common import first_line, load_folder_modalities, parse_typed_header, raw_ids, read_table, strip_gz

log = logging.getLogger("prismrec")

SPLITS = ("train", "valid", "test")
INTER_FIELDS = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
TITLE_FIELDS = ("title", "movie_title")
GENRE_FIELDS = ("class", "genre", "genres")


def _inter_files(path: Path) -> tuple[str, list[Path]] | None:
    """(dataset name, interaction files) for a folder or file: one ``<name>.inter[.gz]`` file, or the
    ``<name>.{train,valid,test}.inter`` benchmark files. None when there is no unambiguous choice."""
    if path.is_file():
        base = strip_gz(path.name)
        if not base.endswith(".inter"):
            return None
        stem = base[: -len(".inter")]
        if stem.endswith(tuple(f".{s}" for s in SPLITS)):
            return _benchmark_files(path.parent, stem.rsplit(".", 1)[0])
        return stem, [path]
    if not path.is_dir():
        return None
    for cand in (path / f"{path.name}.inter", path / f"{path.name}.inter.gz"):
        if cand.is_file():
            return path.name, [cand]
    whole = [
        p
        for p in sorted(path.iterdir())
        if strip_gz(p.name).endswith(".inter")
        and not strip_gz(p.name).endswith(tuple(f".{s}.inter" for s in SPLITS))
    ]
    if len(whole) == 1:
        return strip_gz(whole[0].name)[: -len(".inter")], whole
    if whole:
        return None
    stems = {
        strip_gz(p.name).rsplit(".", 2)[0]
        for p in path.iterdir()
        if strip_gz(p.name).endswith(tuple(f".{s}.inter" for s in SPLITS))
    }
    if len(stems) == 1:
        return _benchmark_files(path, stems.pop())
    return None


def _benchmark_files(folder: Path, stem: str) -> tuple[str, list[Path]] | None:
    files = []
    for split in SPLITS:
        found = [
            p for p in (folder / f"{stem}.{split}.inter", folder / f"{stem}.{split}.inter.gz") if p.is_file()
        ]
        if found:
            files.append(found[0])
    names = [strip_gz(p.name) for p in files]
    if f"{stem}.train.inter" not in names or f"{stem}.test.inter" not in names:
        return None
    return stem, files


def _header(path: Path) -> list[tuple[str, str]] | None:
    return parse_typed_header(first_line(path))


def detect(path: Path) -> bool:
    found = _inter_files(path)
    if found is None:
        return False
    head = _header(found[1][0])
    return head is not None and not any(name == "item_id_list" for name, _ in head)


def _read_atomic(
    path: Path,
    fields: list[tuple[str, str]] | None = None,
    usecols: list[str] | None = None,
    numeric: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Read one atomic file as strings, columns named without the ``:type`` suffix.

    Values are kept verbatim (no quoting, empty cells become NaN) so that tokens such as movie titles
    with quotes or ``NA`` survive. Columns in ``numeric`` are parsed as floats when every value is a
    number (fast path for big files); otherwise they stay strings and validation names the bad row.
    """
    fields = fields if fields is not None else _header(path)
    if fields is None:
        raise DataError(
            f"the header is not a RecBole typed header: {first_line(path)[:120]!r}.",
            file=str(path),
            row=0,
            fix="write the header as tab-separated name:type fields "
            "(types token, token_seq, float, float_seq).",
        )
    names = [n for n, _ in fields]
    dup = pd.Index(names).duplicated()
    if dup.any():
        raise DataError(
            f"field {names[int(np.flatnonzero(dup)[0])]!r} appears twice in the header.",
            file=str(path),
            column=names[int(np.flatnonzero(dup)[0])],
            fix="give every field a distinct name.",
        )
    kw = {
        "sep": "\t",
        "header": 0,
        "names": names,
        "usecols": usecols,
        "quoting": 3,
        "keep_default_na": False,
        "na_values": [""],
        "index_col": False,
    }
    if numeric:
        try:
            return read_table(path, dtype={n: (np.float64 if n in numeric else str) for n in names}, **kw)
        except DataError:
            pass
    return read_table(path, dtype=str, **kw)


def _field_name(cfg: DataConfig, key: str) -> str:
    return cfg.columns.get(key, INTER_FIELDS[key])


def _read_interactions(files: list[Path], cfg: DataConfig) -> pd.DataFrame:
    """Concatenate the interaction file(s) with canonical column names (label added for benchmark splits)."""
    unknown = set(cfg.columns) - set(INTER_FIELDS)
    if unknown:
        raise DataError(
            f"data.columns key {min(unknown)!r} is not used by RecBole files.",
            fix=f"use the keys {', '.join(INTER_FIELDS)} (field names without the :type suffix).",
        )
    frames = []
    for path in files:
        head = _header(path)
        if head is None:
            raise DataError(
                f"the header is not a RecBole typed header: {first_line(path)[:120]!r}.",
                file=str(path),
                row=0,
                fix="write the header as name:type fields (e.g. user_id:token item_id:token rating:float).",
            )
        names = [n for n, _ in head]
        if "item_id_list" in names:
            raise DataError(
                "this is a sequential (UniSRec) split file with an item_id_list field, not an atomic "
                "interaction file.",
                file=str(path),
                column="item_id_list",
                fix="read the folder with --set data.format=unisrec.",
            )
        for key in ("user", "item"):
            if _field_name(cfg, key) not in names:
                raise DataError(
                    f"missing the {_field_name(cfg, key)} field; header fields are {', '.join(names)}.",
                    file=str(path),
                    column=_field_name(cfg, key),
                    fix=f"name the {key} field {INTER_FIELDS[key]}:token, or map it with "
                    f"--set data.columns.{key}=<field>.",
                )
        keep = {_field_name(cfg, k): k for k in INTER_FIELDS if _field_name(cfg, k) in names}
        numeric = tuple(
            n for n, t in head if n in keep and keep[n] in ("rating", "timestamp") and t == "float"
        )
        frame = _read_atomic(path, head, usecols=list(keep), numeric=numeric).rename(columns=keep)
        frame["user"], frame["item"] = raw_ids(frame["user"]), raw_ids(frame["item"])
        if len(files) > 1:  # benchmark split: check each file on its own so errors name it
            split = strip_gz(path.name).rsplit(".", 2)[1]
            frame["label"] = SPLITS.index(split)
            check_interactions(frame, file=str(path), names={k: _field_name(cfg, k) for k in INTER_FIELDS})
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1:  # concatenating categoricals with different categories gives strings again
        out["user"], out["item"] = raw_ids(out["user"]), raw_ids(out["item"])
    return out


def _item_text(table: pd.DataFrame, fields: list[tuple[str, str]]) -> pd.Series:
    """One descriptive sentence per item from its textual fields (see the module docstring)."""
    n = len(table)
    text = pd.Series([""] * n, index=table.index, dtype=object)

    def add(part: pd.Series) -> None:
        nonlocal text
        part = part.fillna("").astype(str).str.strip()
        sep = np.where((text != "") & (part != ""), ". ", "")
        text = text + sep + part

    title = table["title"].fillna("").astype(str).str.strip() if "title" in table.columns else None
    year_fields = [name for name, typ in fields if "year" in name.lower() and typ in ("token", "float")]
    if title is not None:
        if year_fields:
            year = pd.to_numeric(table[year_fields[0]], errors="coerce")
            year_text = year.round().astype("Int64").astype(str).where(year.notna(), "").astype(str)
            has = (year_text != "") & ~title.str.contains(r"\(\d{1,4}\)\s*$", regex=True)
            title = title.where(~has, title + " (" + year_text + ")")
        add(title)
    for name, typ in fields:
        if name in ("item_id", "title", *TITLE_FIELDS, *year_fields) or typ not in ("token", "token_seq"):
            continue
        label = "Genres" if name.lower() in GENRE_FIELDS else name.replace("_", " ").capitalize()
        values = table[name].fillna("").astype(str).str.strip()
        add(values.where(values == "", label + ": " + values))
    return text


def _read_attributes(path: Path, key: str, role: str) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """An ``.item`` or ``.user`` file as a table keyed by ``key`` (renamed ``item_id``/``user_id``)."""
    fields = _header(path)
    table = _read_atomic(path, fields)
    if key not in table.columns:
        raise DataError(
            f"missing the {key} field; header fields are {', '.join(table.columns)}.",
            file=str(path),
            column=key,
            fix=f"the first field of a .{role} file is {key}:token.",
        )
    if table[key].isna().any():
        row = int(np.flatnonzero(table[key].isna().to_numpy())[0]) + 1
        raise DataError(f"empty {key}.", file=str(path), row=row, column=key, fix=f"give every row a {key}.")
    dup = table[key].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0]) + 1
        raise DataError(
            f"{key} {table[key].iloc[row - 1]!r} appears twice.",
            file=str(path),
            row=row,
            column=key,
            fix=f"keep one row per {role}.",
        )
    for name, typ in fields:
        if typ == "float" and name != key:
            num = pd.to_numeric(table[name], errors="coerce")
            bad = (num.isna() & table[name].notna()).to_numpy()
            if bad.any():
                log.warning(
                    "%s: %d values of float field %r are not numbers (first at data row %d); read as NaN.",
                    path.name,
                    int(bad.sum()),
                    name,
                    int(np.flatnonzero(bad)[0]) + 1,
                )
            table[name] = num.astype(np.float64)
    return table.rename(columns={key: f"{role}_id"}), fields


@register_reader(
    "recbole", "RecBole atomic files: <name>.inter[.gz] (typed header) + optional .item/.user", detect
)
def read(path: Path, cfg: DataConfig) -> Dataset:
    found = _inter_files(path)
    if found is None:
        raise DataError(
            f"no single <name>.inter (or .inter.gz) file in {path} (contents: {folder_listing(path)}).",
            file=str(path),
            fix="put exactly one RecBole .inter file in the folder, or pass the file's path.",
        )
    name, files = found
    folder = files[0].parent
    inter = _read_interactions(files, cfg)

    item_file = folder / f"{name}.item"
    items = None
    if item_file.is_file():
        items, fields = _read_attributes(item_file, _field_name(cfg, "item"), "item")
        fields = [(("item_id" if n == _field_name(cfg, "item") else n), t) for n, t in fields]
        title_src = next((f for f in TITLE_FIELDS if f in items.columns), None)
        if title_src and title_src != "title":
            items = items.rename(columns={title_src: "title"})
            fields = [("title" if n == title_src else n, t) for n, t in fields]
        if "text" not in items.columns:
            items["text"] = _item_text(items, fields)
        missing = ~inter["item"].isin(items["item_id"])
        if missing.any():
            log.warning(
                "%s: %d interactions name %d items that are not in %s; they are added without attributes "
                "or features.",
                name,
                int(missing.sum()),
                inter.loc[missing, "item"].nunique(),
                item_file.name,
            )
        n_items = len(items)
    else:
        n_items = int(inter["item"].nunique())

    users = None
    user_file = folder / f"{name}.user"
    if user_file.is_file():
        users, _ = _read_attributes(user_file, _field_name(cfg, "user"), "user")

    ds = build_dataset(
        name,
        inter,
        items=items,
        modalities=load_folder_modalities(folder, n_items),
        users=users,
        source={
            "format": "recbole",
            "path": str(folder),
            "interactions_file": ", ".join(str(f) for f in files),
        },
        file=str(files[0]) if len(files) == 1 else str(folder),
    )
    if users is not None and ds.interactions["user"].nunique() < ds.n_users:
        # users listed in .user without any interaction carry no information: drop them.
        ds = ds.subset(np.ones(ds.n_interactions, dtype=bool), drop_unused_items=False)
    return ds
