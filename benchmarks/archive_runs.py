"""Keep the small files of finished comparisons so that a later session can build on them without retraining.

A session's `bench_out/` does not outlive its machine, yet an equal-budget table grows across sessions (one
model per lane) and its paired tests need every row's per-user results. This copies, from a `compare` /
`compare --tune` folder, every file that the table, the paired tests and the reuse of finished runs read
(`metrics.json`, `per_user_test.npz`, `config.yaml`, `inputs.json`, `runs.csv`, each study's
`study.json` / `study.journal`, logs), and leaves out the weights (`*.pt`) and the split (`split.npz`, which a
run rebuilds from `data.split_seed`) and `report.html` (the next compare writes it again). Symbolic links are kept as links.

Restoring is a copy back: `cp -r benchmarks/results/tuned_topk/scientific bench_out/tuned_topk/`; then the
composite `prismrec compare ... --tune 6` of docs/benchmarks.md reuses the finished studies and seed runs
(`reuse_finished` checks that each was made from the same settings and data), and `benchmarks/paired.py`
and `benchmarks/collect_tuned.py` read the folder as they read the original.

Usage: python benchmarks/archive_runs.py bench_out/tuned_topk/scientific benchmarks/results/tuned_topk/scientific
       [--entries lgmrec,mentor] [--max-mb 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

SKIP_SUFFIXES = (".pt", ".tmp")
SKIP_NAMES = {"split.npz", "report.html"}  # rebuilt by the next compare


def archive(src: Path, dst: Path, entries: list[str] | None = None, max_bytes: int = 2 << 20) -> tuple[int, int]:
    """Copy the small result files of ``src`` into ``dst`` (same layout); returns (files, bytes) copied.
    An existing file in ``dst`` is replaced only through a temporary name (atomic per file)."""
    if not src.is_dir():
        raise SystemExit(f"{src} is not a folder. Fix: pass a `prismrec compare --out` folder.")
    n_files = n_bytes = 0
    tops = [src / e for e in entries] if entries else [src]
    for top in tops:
        if not top.exists():
            raise SystemExit(f"{top} does not exist. Fix: name entries as their folders under {src} are named.")
        for root, dirs, files in os.walk(top):  # links to folders are listed in dirs, not followed
            if "checkpoint.pt" in files and "metrics.json" not in files:
                print(f"left out (unfinished run: it resumes from its checkpoint): {root}")
                continue
            for name in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]:
                p = Path(root) / name
                if name in SKIP_NAMES or name.endswith(SKIP_SUFFIXES):
                    continue
                out = dst / p.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                if p.is_symlink():
                    if out.is_symlink() or out.exists():
                        out.unlink()
                    out.symlink_to(os.readlink(p))
                    continue
                if p.stat().st_size > max_bytes:
                    print(f"left out (over {max_bytes >> 20} MB): {p}")
                    continue
                tmp = out.with_name(out.name + ".tmp")
                shutil.copy2(p, tmp)
                os.replace(tmp, out)
                n_files += 1
                n_bytes += p.stat().st_size
    for f in ("runs.csv", "results.md", "results_vs_first.md", "results_vs_freedom.md"):
        if entries and (src / f).is_file():  # the folder's own table, beside the chosen entries
            shutil.copy2(src / f, dst / f)
    return n_files, n_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--entries", default="", help="comma-separated entry folders (default: the whole folder)")
    ap.add_argument("--max-mb", type=float, default=2.0)
    a = ap.parse_args()
    entries = [e for e in a.entries.split(",") if e] or None
    n, b = archive(a.src, a.dst, entries, int(a.max_mb * (1 << 20)))
    print(f"{n} files, {b / 1e6:.2f} MB: {a.src} -> {a.dst}")


if __name__ == "__main__":
    main()
