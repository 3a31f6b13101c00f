"""The canonical dataset object every reader produces and every model consumes.

A :class:`Dataset` holds

* ``interactions``: one row per event with internal integer ``user`` and ``item`` ids and, when the
  source has them, ``timestamp``, ``rating``, ``label`` (a split given in the data: 0 train,
  1 valid, 2 test) and ``order`` (position in the user's sequence when there are no timestamps);
* ``user_ids`` / ``item_ids``: raw ids (strings), indexed by internal id, and the reverse maps;
* ``items``: the item table (raw id, title, text, image path or URL, price, category, ...), one row
  per internal item id, possibly with items that have no interaction yet (cold items);
* ``modalities``: per-modality feature matrices (:class:`Modality`), one row per internal item id,
  with an availability mask and provenance (encoder, dimension, source file).

Raw ids are always strings, so ``"42"`` from an MMRec file and ``"B00O47ILVA"`` from Amazon behave
alike. Internal ids are contiguous from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import DataError

INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating", "label", "order")


class FeatureShape:
    """``dim`` and ``n_missing`` of anything with ``values`` (items x dim) and an ``available`` mask."""

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def n_missing(self) -> int:
        return int((~self.available).sum())


#: rows cast to float32 at a time by :meth:`Modality.chunks` (~32 MiB of 512-d rows)
CAST_ROWS = 16_384


class Modality(FeatureShape):
    """One item-feature matrix: row ``i`` describes internal item ``i``.

    ``available[i]`` is False where the item has no real feature (missing image, failed encoding);
    such rows read as zeros and models must use the mask, never treat the zeros as a feature.

    Storage: ``stored`` is the matrix as read, float16 or float32, possibly memory-mapped from its
    ``.npy`` file (the readers map feature files, so a 1M x 512 float16 image matrix costs page cache, not
    process memory, until it is read). Readers of the features cast what they need, when they need it:
    ``chunks()`` (float32 blocks of rows, e.g. to fill a model's table), ``rows(idx)`` (a batch's rows),
    ``float32()`` (a fresh whole copy, e.g. for a kNN graph, dropped after use). ``values`` is the whole
    matrix as float32, cast once on first use and kept (for code that indexes it repeatedly).
    """

    def __init__(self, name: str, values: np.ndarray, available: np.ndarray | None = None,
                 provenance: dict[str, Any] | None = None):
        self.name = name
        self.provenance = dict(provenance or {})
        arr = values if isinstance(values, np.ndarray) else np.asarray(values)
        if arr.dtype not in (np.float16, np.float32):
            arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2:
            raise DataError(
                f"modality '{self.name}' must be a 2-D matrix (items x dim), got shape {arr.shape}.",
                file=self.provenance.get("file"),
            )
        self.stored = arr
        self.available = np.ones(len(arr), dtype=bool) if available is None else np.asarray(available, dtype=bool)
        if self.available.shape != (len(arr),):
            raise DataError(
                f"availability mask of modality '{self.name}' has {self.available.shape[0]} entries but the "
                f"feature matrix has {len(arr)} rows.",
                file=self.provenance.get("mask_file"),
                fix="give one boolean per item row.",
            )
        self._values: np.ndarray | None = None
        self.provenance = {**self.provenance, "dim": int(arr.shape[1])}

    @property
    def dim(self) -> int:
        return int(self.stored.shape[1])

    def __len__(self) -> int:
        return len(self.stored)

    def __repr__(self) -> str:
        return f"Modality({self.name!r}, {len(self)} x {self.dim} {self.stored.dtype}, {self.n_missing} missing)"

    @property
    def values(self) -> np.ndarray:
        """The whole matrix as float32 (unavailable rows zero), cast once and kept."""
        if self._values is None:
            self._values = self.float32()
        return self._values

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 rows ``idx`` (unavailable ones zero), cast from storage: a batch's cost, not the matrix's."""
        idx = np.asarray(idx)
        out = np.asarray(self.stored[idx], dtype=np.float32)
        out[~self.available[idx]] = 0.0
        return out

    def chunks(self, rows: int = CAST_ROWS):
        """``(start, float32 block)`` over the matrix, ``rows`` rows at a time."""
        for start in range(0, len(self.stored), rows):
            yield start, self.rows(np.arange(start, min(start + rows, len(self.stored))))

    def float32(self) -> np.ndarray:
        """A fresh float32 copy of the whole matrix (unavailable rows zero), filled block by block."""
        out = np.empty(self.stored.shape, dtype=np.float32)
        for start, block in self.chunks():
            out[start:start + len(block)] = block
        return out

    def take(self, rows: np.ndarray) -> "Modality":
        """The modality for a subset or reordering of items (``rows`` are old internal ids), in its storage
        dtype (a float16 matrix stays float16)."""
        rows = np.asarray(rows)
        return Modality(self.name, np.asarray(self.stored[rows]), self.available[rows], dict(self.provenance))

    def describe(self) -> str:
        enc = self.provenance.get("encoder", "unknown encoder")
        miss = f", {self.n_missing} missing" if self.n_missing else ""
        return f"{self.name} {self.dim}-d ({enc}{miss})"


@dataclass
class Dataset:
    """Interactions, item table, item features and id maps of one dataset (see module docstring)."""

    name: str
    interactions: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    items: pd.DataFrame
    modalities: dict[str, Modality] = field(default_factory=dict)
    users: pd.DataFrame | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_ids = np.asarray(self.user_ids, dtype=object)
        self.item_ids = np.asarray(self.item_ids, dtype=object)
        self._user_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None
        for m in self.modalities.values():
            if len(m) != self.n_items:
                raise DataError(
                    f"modality '{m.name}' has {len(m)} rows but the dataset has {self.n_items} items "
                    "(row r must hold the features of item r).",
                    file=m.provenance.get("file"),
                    fix="write one feature row per item, in item-id order.",
                )

    # sizes -----------------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns

    @property
    def has_given_split(self) -> bool:
        return "label" in self.interactions.columns

    @property
    def has_order(self) -> bool:
        return self.has_timestamps or "order" in self.interactions.columns

    # id maps ---------------------------------------------------------------------------------------
    @property
    def user_index(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = {raw: i for i, raw in enumerate(self.user_ids)}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = {raw: i for i, raw in enumerate(self.item_ids)}
        return self._item_index

    def users_to_internal(self, raw: Iterable[Any]) -> np.ndarray:
        """Map raw user ids to internal ids; unknown ids raise an error that lists a few known ones."""
        return _lookup(self.user_index, raw, "user", self.user_ids)

    def items_to_internal(self, raw: Iterable[Any]) -> np.ndarray:
        return _lookup(self.item_index, raw, "item", self.item_ids)

    def item_titles(self, items: np.ndarray) -> list[str]:
        """A short human-readable label per internal item (title, else text, else raw id)."""
        for col in ("title", "text", "name"):
            if col in self.items.columns:
                vals = self.items[col].to_numpy()[items]
                return [str(v)[:90] if isinstance(v, str) and v else "" for v in vals]
        return ["" for _ in items]

    # sequences -------------------------------------------------------------------------------------
    def chronological(self) -> pd.DataFrame:
        """Interactions sorted by user, then time (or given order), stably."""
        keys = ["user"]
        if self.has_timestamps:
            keys.append("timestamp")
        if "order" in self.interactions.columns:
            keys.append("order")
        return self.interactions.sort_values(keys, kind="stable")

    # derived datasets ------------------------------------------------------------------------------
    def with_modalities(self, names: list[str] | None) -> "Dataset":
        """Keep only the named modalities (None keeps all); unknown names are an error."""
        if names is None:
            return self
        missing = [n for n in names if n not in self.modalities]
        if missing:
            raise DataError(
                f"modality {missing[0]!r} is not in dataset '{self.name}'. "
                f"Available: {', '.join(self.modalities) or 'none'}.",
                fix="set data.modalities to a subset of the available ones.",
            )
        return self._replace(modalities={n: self.modalities[n] for n in names})

    def subset(self, keep_rows: np.ndarray, *, drop_unused_items: bool, drop_unused_users: bool = True) -> "Dataset":
        """Keep the interaction rows in ``keep_rows`` (bool mask) and renumber ids contiguously.

        Items without interactions are kept unless ``drop_unused_items`` (k-core drops them; a plain
        de-duplication keeps cold catalogue items).
        """
        inter = self.interactions.loc[np.asarray(keep_rows, dtype=bool)].reset_index(drop=True)
        user_keep = np.unique(inter["user"].to_numpy()) if drop_unused_users else np.arange(self.n_users)
        item_keep = np.unique(inter["item"].to_numpy()) if drop_unused_items else np.arange(self.n_items)
        user_map = np.full(self.n_users, -1, dtype=np.int64)
        user_map[user_keep] = np.arange(len(user_keep))
        item_map = np.full(self.n_items, -1, dtype=np.int64)
        item_map[item_keep] = np.arange(len(item_keep))
        inter["user"] = user_map[inter["user"].to_numpy()]
        inter["item"] = item_map[inter["item"].to_numpy()]
        users = None if self.users is None else self.users.iloc[user_keep].reset_index(drop=True)
        return Dataset(
            name=self.name,
            interactions=inter,
            user_ids=self.user_ids[user_keep],
            item_ids=self.item_ids[item_keep],
            items=self.items.iloc[item_keep].reset_index(drop=True),
            modalities={k: m.take(item_keep) for k, m in self.modalities.items()},
            users=users,
            source=dict(self.source),
        )

    def _replace(self, **changes: Any) -> "Dataset":
        fields = dict(
            name=self.name, interactions=self.interactions, user_ids=self.user_ids, item_ids=self.item_ids,
            items=self.items, modalities=self.modalities, users=self.users, source=self.source,
        )
        fields.update(changes)
        return Dataset(**fields)

    def stats(self) -> dict[str, Any]:
        n_pairs = self.n_users * max(self.n_items, 1)
        out: dict[str, Any] = {
            "name": self.name,
            "format": self.source.get("format", "?"),
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / n_pairs if n_pairs else 0.0,
            "timestamps": self.has_timestamps,
            "given_split": self.has_given_split,
            "modalities": {k: m.describe() for k, m in self.modalities.items()},
        }
        items_seen = self.interactions["item"].nunique()
        if items_seen < self.n_items:
            out["items_without_interactions"] = self.n_items - items_seen
        return out

    def __repr__(self) -> str:
        mods = ", ".join(m.describe() for m in self.modalities.values()) or "no features"
        return (
            f"Dataset({self.name!r}: {self.n_users} users, {self.n_items} items, "
            f"{self.n_interactions} interactions; {mods})"
        )


def _lookup(index: dict[str, int], raw: Iterable[Any], kind: str, known: np.ndarray) -> np.ndarray:
    out = []
    for r in raw:
        key = str(r)
        if key not in index:
            sample = ", ".join(map(str, known[:5]))
            raise DataError(f"unknown {kind} id {key!r}. Known {kind} ids look like: {sample}, ...")
        out.append(index[key])
    return np.asarray(out, dtype=np.int64)


def build_dataset(
    name: str,
    interactions: pd.DataFrame,
    *,
    items: pd.DataFrame | None = None,
    modalities: dict[str, Modality] | None = None,
    users: pd.DataFrame | None = None,
    source: dict[str, Any] | None = None,
    file: str | None = None,
    items_file: str | None = None,
) -> Dataset:
    """Assemble a :class:`Dataset` from raw-id frames; the one place that maps raw ids to internal ids.

    ``interactions`` has raw ``user`` and ``item`` columns (any type; converted to ``str``) and may have
    ``timestamp``, ``rating``, ``label`` and ``order``. ``items`` (column ``item_id`` plus attributes)
    fixes the item order: internal id ``i`` is row ``i`` of ``items``; items that occur only in the
    interactions are appended in order of first appearance. Modalities must already be aligned with
    the rows of ``items``. Users are numbered in order of first appearance (or by ``users``' order).
    """
    from .validate import check_interactions, check_unique_ids

    inter = check_interactions(interactions, file=file)
    # factorize once, then convert only the distinct ids to strings (1M rows: ~10x faster than per row)
    u_codes, u_uniques = pd.factorize(inter["user"], sort=False)
    i_codes, i_uniques = pd.factorize(inter["item"], sort=False)
    u_uniques = np.asarray([str(x) for x in u_uniques], dtype=object)
    i_uniques = np.asarray([str(x) for x in i_uniques], dtype=object)

    if items is not None:
        if "item_id" not in items.columns:
            raise DataError("item table has no 'item_id' column.", file=items_file or file, column="item_id")
        items = items.copy()
        items["item_id"] = items["item_id"].astype(str)
        check_unique_ids(items["item_id"], kind="item", file=items_file or file, column="item_id")
        catalogue = items["item_id"].to_numpy(dtype=object)
    else:
        catalogue = np.empty(0, dtype=object)
    extra = i_uniques[pd.Index(catalogue).get_indexer(i_uniques) < 0]
    item_ids = np.concatenate([catalogue, np.asarray(extra, dtype=object)])
    if items is None:
        items = pd.DataFrame({"item_id": item_ids})
    elif len(extra):
        items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
        modalities = {
            k: Modality(m.name, np.vstack([m.values, np.zeros((len(extra), m.dim), np.float32)]),
                        np.concatenate([m.available, np.zeros(len(extra), bool)]), m.provenance)
            for k, m in (modalities or {}).items()
        }

    if users is not None and "user_id" in users.columns:
        users = users.copy()
        users["user_id"] = users["user_id"].astype(str)
        base = users["user_id"].to_numpy(dtype=object)
        extra_u = u_uniques[pd.Index(base).get_indexer(u_uniques) < 0]
        user_ids = np.concatenate([base, np.asarray(extra_u, dtype=object)])
        if len(extra_u):
            users = pd.concat([users, pd.DataFrame({"user_id": extra_u})], ignore_index=True)
    else:
        user_ids = u_uniques

    out = inter.copy()
    out["user"] = pd.Index(user_ids).get_indexer(u_uniques)[u_codes].astype(np.int64)
    out["item"] = pd.Index(item_ids).get_indexer(i_uniques)[i_codes].astype(np.int64)
    return Dataset(
        name=name,
        interactions=out.reset_index(drop=True),
        user_ids=user_ids,
        item_ids=item_ids,
        items=items.reset_index(drop=True),
        modalities=modalities or {},
        users=users,
        source=source or {},
    )
