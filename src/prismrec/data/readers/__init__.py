"""Readers turn a folder (or file) in a known format into a :class:`~prismrec.data.dataset.Dataset`.

Each reader module registers itself with :data:`READERS` and gives a cheap ``detect`` test. The
format of a folder is the first reader, in :data:`DETECTION_ORDER`, whose test passes; or the one
named by ``data.format``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...config import DataConfig
from ...errors import DataError
from ...registry import Registry
from ..dataset import Dataset


@dataclass(frozen=True)
class Reader:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, DataConfig], Dataset]


READERS: Registry[Reader] = Registry("data format")


def register_reader(name: str, description: str, detect: Callable[[Path], bool], aliases: tuple[str, ...] = ()):
    """Decorator for a ``read(path, cfg) -> Dataset`` function."""

    def deco(read: Callable[[Path, DataConfig], Dataset]) -> Callable[[Path, DataConfig], Dataset]:
        READERS.register(name, aliases=aliases)(Reader(name, description, detect, read))
        return read

    return deco


# Import order is detection order: the most specific formats first.
from . import unisrec, recbole, mmrec, amazon, tabular  # noqa: E402,F401

DETECTION_ORDER = ("unisrec", "recbole", "mmrec", "amazon", "tabular")


def detect_format(path: Path) -> str:
    for name in DETECTION_ORDER:
        if READERS.get(name).detect(path):
            return name
    from ..validate import folder_listing

    raise DataError(
        f"cannot tell the format of {path} (contents: {folder_listing(path)}).",
        fix="name it with --set data.format=" + "|".join(DETECTION_ORDER) + ", or see docs/data.md for the layouts.",
    )


def read_path(path: Path, cfg: DataConfig) -> Dataset:
    fmt = cfg.format or detect_format(path)
    reader = READERS.get(fmt)
    ds = reader.read(path, cfg)
    ds.source.setdefault("format", reader.name)
    ds.source.setdefault("path", str(path))
    return ds
