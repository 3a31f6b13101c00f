"""Where datasets are found: bundled names, data roots, or a path.

``--data`` accepts

* the name of a bundled dataset (``demo``), shipped inside the package;
* the name of a folder under a data root: each folder listed in ``PRISMREC_DATA`` (``os.pathsep``
  separated), then ``./data``;
* a path to a folder (or file) in any supported format.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError

BUNDLED_PACKAGE = "prismrec.data.bundled"


def bundled_root() -> Path:
    return Path(str(resources.files(BUNDLED_PACKAGE)))


def bundled_names() -> list[str]:
    root = bundled_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def data_roots(extra: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Existing data roots in lookup order: ``extra``, then ``PRISMREC_DATA``, then ``./data``."""
    roots = [Path(p).expanduser() for p in extra]
    roots += [Path(p).expanduser() for p in os.environ.get("PRISMREC_DATA", "").split(os.pathsep) if p]
    roots.append(Path("data"))
    return [r for r in roots if r.is_dir()]


def resolve_source(source: str | os.PathLike) -> Path:
    """Turn a dataset name or path into an existing path (errors list what is available)."""
    text = str(source)
    p = Path(text).expanduser()
    if p.exists() and (os.sep in text or p.is_absolute() or text.startswith(".") or text not in bundled_names()):
        return p.resolve()
    if text in bundled_names():
        return bundled_root() / text
    for root in data_roots():
        cand = root / text
        if cand.exists():
            return cand.resolve()
    known = bundled_names() + sorted({q.name for r in data_roots() for q in r.iterdir() if q.is_dir()})
    from ..registry import suggest

    raise DataError(
        f"no dataset named or found at '{text}'.{suggest(text, known)} Known names: {', '.join(known) or 'none'}.",
        fix="pass a folder path, a bundled name (prismrec datasets lists them), or add a data root to PRISMREC_DATA.",
    )


def list_known(extra_roots: Sequence[str | os.PathLike] = ()) -> list[tuple[str, Path]]:
    """(name, path) of bundled datasets and of every folder under the data roots (``extra_roots`` first)."""
    out = [(n, bundled_root() / n) for n in bundled_names()]
    for root in data_roots(extra_roots):
        for q in sorted(root.iterdir()):
            if q.is_dir() and not q.name.startswith("."):
                out.append((q.name, q.resolve()))
    return out


def canonical_source(source: str | os.PathLike) -> str:
    """What a run records as its data source: a bundled name stays a name, anything else becomes the
    resolved absolute path, so the run reloads without the data roots that found it."""
    text = str(source)
    try:
        path = resolve_source(text)
    except DataError:
        return text  # not found yet: loading reports it with the full message
    if text in bundled_names() and path == bundled_root() / text:
        return text
    return str(path)


def dataset_stats(extra_roots: Sequence[str | os.PathLike] = ()) -> list[dict[str, Any]]:
    """One row per known dataset (:func:`list_known`): name, path, format, users, items,
    interactions, density, given_split and modalities, or ``error`` (the first sentence of why it
    cannot be read)."""
    from ..config import DataConfig
    from ..errors import PrismrecError
    from . import read_dataset

    rows: list[dict[str, Any]] = []
    for name, path in list_known(extra_roots):
        try:
            ds = read_dataset(path, DataConfig())
        except PrismrecError as exc:
            rows.append({"name": name, "path": str(path), "error": str(exc).split(". ")[0]})
            continue
        st = ds.stats()
        rows.append({"name": name, "path": str(path), **{k: st[k] for k in
                     ("format", "users", "items", "interactions", "density", "given_split")},
                     "modalities": "; ".join(st["modalities"].values()) or "-"})
    return rows
