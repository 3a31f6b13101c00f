"""Atomic file writes: a reader never sees a half-written file, and a killed run leaves the old one.

Each writer writes to a temporary file in the same folder, flushes it to disk and renames it over the
target (``os.replace`` is atomic on POSIX and Windows). A write that fails (a full or read-only disk,
a file where a folder should be) raises :class:`~prismrec.errors.OutputError`, which names the path
and the fix; the target keeps its previous content and no temporary file is left.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from ..errors import DataError, OutputError, PrismrecError
from .distributed import check_writer


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    check_writer(path)  # under torchrun only rank 0 writes
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; keep the usual permissions
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            if os.path.exists(tmp):
                os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, PrismrecError):
            raise write_error(path, exc) from None
        raise
    return path


# Output paths that cannot be written: one paragraph naming the path and the fix (errors.OutputError). ------

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def write_error(path: str | Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` for an ``OSError`` raised while writing ``path`` (keeps its ``errno``)."""
    path = Path(path)
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        text = (f"cannot write {path}: the disk is full ({reason}). Fix: free space on the disk that holds "
                f"{path.parent}, or write the output to another disk; nothing was half-written (an existing "
                "file keeps its previous content).")
    elif exc.errno in _NOT_WRITABLE:
        text = (f"cannot write {path}: the folder {path.parent} is not writable ({reason}). Fix: choose an "
                "output path on a writable disk (--out, --state, --cache), or make the folder writable "
                "(chmod/chown, or remount the disk read-write).")
    elif exc.errno == errno.ENOTDIR:
        return not_a_folder(path.parent)
    else:
        text = (f"cannot write {path}: {reason}. Fix: check that the path is a folder on a working disk you "
                "can write to.")
    err = OutputError(text)
    err.errno = exc.errno  # not strerror/filename: OSError.__str__ would then replace the message
    return err


def user_os_error(exc: OSError) -> OutputError | None:
    """One paragraph for an ``OSError`` raised outside the atomic writers that the user can fix (a full or
    read-only disk, a permission, a file where a folder should be); None for anything else."""
    name = exc.filename
    if exc.errno in _FULL or exc.errno == errno.EROFS:
        return write_error(Path(name) if name else Path("the output"), exc)
    if name and exc.errno in (errno.EACCES, errno.EPERM):
        err = OutputError(f"cannot access {name}: {exc.strerror or exc}. Fix: check the permissions of the file and "
                          "of its folder, or choose another path.")
        err.errno = exc.errno
        return err
    if name and exc.errno == errno.ENOTDIR:
        return not_a_folder(Path(name))
    return None


def not_a_folder(path: str | Path, what: str = "") -> OutputError:
    """The error for a folder that cannot exist because it, or one of its parents, is a file."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if (p.exists() or p.is_symlink()) and not p.is_dir()), path)
    label = f"{what} {path}" if what else f"folder {path}"
    err = OutputError(f"cannot create the {label}: {blocker} is a file, not a folder. Fix: choose a path whose "
                      f"parent folders are folders (or move the file {blocker} away).")
    err.errno = errno.ENOTDIR
    return err


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Refuse early (before any work) an output folder that cannot be one: it or a parent is a file."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise not_a_folder(path, what)
            break
    return path


def make_dir(path: str | Path, what: str = "") -> Path:
    """``mkdir -p`` whose failures (a file in the way, a read-only or full disk) are an OutputError."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise not_a_folder(path, what) from None
    except OSError as exc:
        raise write_error(path / ".", exc) from None
    return path


def clean_temp_files(folder: str | Path, *, recursive: bool = True, older_than: float = 0.0) -> int:
    """Remove the temporary files (``.NAME.XXXX.tmp``) that a killed writer left in ``folder``; returns how
    many. Called when a run, a pre-training or the service starts again in that folder. In a folder that
    other processes may be writing to at the same time (the service's state, a feature folder), pass
    ``older_than`` (seconds) so that only stale files go."""
    import time

    now = time.time()
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        try:
            if p.is_file() and now - p.stat().st_mtime >= older_than:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n


def write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def write_stream(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Write ``path`` atomically by calling ``write(fh)`` on a binary file handle: for output produced in
    parts (batch recommendations), so a reader never sees a partial file however long writing takes."""
    return _atomic(path, write)


def write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda fh: fh.write(text), mode="w")


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_yaml(path: str | Path, obj: Any) -> Path:
    return write_text(path, yaml.safe_dump(obj, sort_keys=False))


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def save_torch(path: str | Path, obj: Any) -> Path:
    """Save a state dict (tensors, numbers, strings, lists, dicts only) atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes(path, buf.getvalue())


DAMAGED_FIX = ("restore the file from a copy, or make it again: a run, by training again into a new --out (a "
               "damaged metrics.json alone: delete it and repeat the train command with --resume); a bundle, with "
               "prismrec export RUN_DIR --out DIR --overwrite.")


def load_torch(path: str | Path, map_location: Any = "cpu", *, fix: str = DAMAGED_FIX) -> Any:
    """Load a checkpoint with ``weights_only=True``: no arbitrary code runs from a file.

    A truncated or damaged file (a full disk, an interrupted copy) or one holding other objects than
    tensors and plain values is a DataError naming the file and ``fix``."""
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise DataError("holds objects other than tensors and plain values; it is not loaded (only "
                            "weights are, never code).", file=str(path), fix=fix) from None
        raise DataError(f"cannot read the checkpoint, it is truncated or damaged ({_first_line(exc)}).",
                        file=str(path), fix=fix) from None
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the checkpoint, it is truncated or damaged ({_first_line(exc)}).",
                        file=str(path), fix=fix) from None


def read_json(path: str | Path, *, fix: str = DAMAGED_FIX) -> Any:
    """Parse a JSON file; invalid JSON (a truncated file) is a DataError naming the file, line and ``fix``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (the file is "
                        "truncated or damaged).", file=str(path), fix=fix) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); the file is damaged.",
                        file=str(path), fix=fix) from None


def _first_line(exc: BaseException) -> str:
    """The first sentence of a library's error message (torch appends paragraphs of advice)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text.split(". This is an internal")[0][:200] or type(exc).__name__


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
