"""What a run was trained on: the files of its data source (size, modification time, content hash).

A run records the fingerprint of its data beside its resolved settings (``inputs.json``), so that a
finished run is reused, or a killed one resumed, only on the same data. Hashing is the costly part, so a
file whose size and modification time equal the recorded ones keeps its recorded hash; a file that was
touched but not changed (same hash) still matches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

def source_files(path: str | Path) -> list[Path]:
    """The data files of a source: the file itself, or the files directly inside the folder."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    return sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_source(path: str | Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"path": ..., "files": {name: {"size", "mtime_ns", "sha256"}}}`` of a data source; entries of
    ``known`` (an earlier fingerprint) whose size and mtime still match are reused without hashing."""
    p = Path(path)
    base = p if p.is_dir() else p.parent
    old = (known or {}).get("files", {})
    files: dict[str, Any] = {}
    for f in source_files(p):
        st = f.stat()
        name = str(f.relative_to(base))
        prev = old.get(name)
        if prev and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns:
            files[name] = prev
        else:
            files[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(f)}
    return {"path": str(p.resolve()), "files": files}


def diff_fingerprints(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two data fingerprints, one line per file (content, not times)."""
    if "in_memory" in saved or "in_memory" in now:
        return [] if saved.get("in_memory") == now.get("in_memory") else ["the in-memory dataset's interactions"]
    a, b = saved.get("files", {}), now.get("files", {})
    out = [f"data file {n} is new" for n in sorted(set(b) - set(a))]
    out += [f"data file {n} is gone" for n in sorted(set(a) - set(b))]
    out += [f"data file {n} changed (size {a[n]['size']:,} -> {b[n]['size']:,} bytes, different content)"
            for n in sorted(set(a) & set(b)) if a[n].get("sha256") != b[n].get("sha256")]
    return out
