"""Batch inference: the top-k items of many users of a saved run, written to one CSV or Parquet file.

``prismrec recommend RUN_DIR --users FILE|all --out recs.parquet|recs.csv`` (and
:func:`prismrec.api.recommend_batch`). The users are every user of the run's dataset (``all``) or the
raw ids of a file: one id per line, or a CSV whose header has a ``user`` column. Scores come from
:meth:`prismrec.runs.Run.recommend_chunks`, the code behind ``Run.recommend``: the model prepares its
scores once, then chunks of users are scored, masked (items the user already has) and cut to the top
``k``, so memory stays bounded whatever the number of users. Each chunk is appended to the output as
soon as it is ready; the file appears atomically when the last chunk is written.

The output has one row per (user, rank): ``user``, ``rank`` (1 = best), ``item`` (raw id), ``score``,
``title``, users in the order given (dataset order for ``all``), exactly the rows ``Run.recommend``
returns for the same users.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Sequence

from .errors import DataError, PrismrecError
from .utils.io import write_stream

log = logging.getLogger("prismrec")

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def output_format(out: str | Path) -> str:
    """``csv`` or ``parquet`` from the file name's suffix (a user error otherwise)."""
    fmt = FORMATS.get(Path(out).suffix.lower())
    if fmt is None:
        raise PrismrecError(f"--out {out}: the recommendations are written as CSV or Parquet, chosen by the file "
                            "name. Fix: end it with .csv or .parquet (e.g. --out recs.parquet).")
    return fmt


def read_user_file(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, raw user id)`` of a user file: one id per line (blank lines skipped), or a CSV
    whose first line is a header with a ``user`` column. Ids are kept as text (``007`` stays ``007``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file.", file=str(path),
                        fix="pass a file with one raw user id per line (or a CSV with a 'user' column), or 'all'.")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        lines = fh.read().splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    header = [c.strip().lower() for c in next(csv.reader([first]))] if first else []
    out: list[tuple[int, str]] = []
    if "user" in header:
        col = header.index("user")
        reader = csv.reader(lines)
        next(reader)
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            if col >= len(row) or not row[col].strip():
                raise DataError(f"line {reader.line_num}: no value in the 'user' column.", file=str(path),
                                fix="give every row a user id, or remove the row.")
            out.append((reader.line_num, row[col].strip()))
    elif "," in first:
        raise DataError(f"line 1 looks like a CSV header ({first.strip()!r}) but has no 'user' column.",
                        file=str(path), fix="name the column of raw user ids 'user', or write one id per line.")
    else:
        out = [(i + 1, ln.strip()) for i, ln in enumerate(lines) if ln.strip()]
    if not out:
        raise DataError("holds no user ids.", file=str(path), fix="write one raw user id per line.")
    return out


def users_from_file(path: str | Path, known: Any) -> list[str]:
    """The raw ids of a user file, every one checked against ``known`` (a container of raw user ids);
    an unknown id is an error naming the file and its line."""
    rows = read_user_file(path)
    bad = [(n, u) for n, u in rows if u not in known]
    if bad:
        n, u = bad[0]
        more = f" ({len(bad) - 1} more unknown ids, on lines {', '.join(str(b[0]) for b in bad[1:6])}" \
               f"{', ...' if len(bad) > 6 else ''})" if len(bad) > 1 else ""
        raise DataError(f"line {n}: unknown user id {u!r}{more}; the run's dataset has no such user.",
                        file=str(path), fix="use raw user ids of the run's dataset (as in its interaction file), "
                                            "or --users all.")
    return [u for _, u in rows]


def write_recommendations(run: Any, out: str | Path, users: Sequence[Any] | None = None, k: int = 10, *,
                          exclude_seen: bool = True, chunk_users: int | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Write the top-``k`` of ``users`` (raw ids; None = every user) of a loaded run to ``out`` (.csv or
    .parquet), chunk by chunk. Returns ``out``, ``users``, ``rows`` and ``format``."""
    from tqdm.auto import tqdm

    out = Path(out)
    fmt = output_format(out)
    n_users = run.dataset.n_users if users is None else len(users)
    chunks = run.recommend_chunks(None if users is None else list(users), k, exclude_seen=exclude_seen,
                                  chunk_users=chunk_users)
    counts = {"rows": 0}
    bar = tqdm(total=n_users, unit="user", desc="recommend", disable=not progress, dynamic_ncols=True, leave=False)

    def frames():
        for frame in chunks:
            counts["rows"] += len(frame)
            bar.update(frame.attrs.get("users", 0))
            yield frame

    try:
        write_stream(out, (_write_csv if fmt == "csv" else _write_parquet)(frames()))
    finally:
        bar.close()
    log.debug("wrote %d recommendations for %d users to %s", counts["rows"], n_users, out)
    return {"out": out, "users": n_users, "rows": counts["rows"], "format": fmt}


def _write_csv(frames):
    def write(fh) -> None:
        first = True
        for frame in frames:
            fh.write(frame.to_csv(index=False, header=first).encode("utf-8"))
            first = False
        if first:  # no users: still a valid file with its header
            fh.write(b"user,rank,item,score,title\n")
    return write


def _write_parquet(frames):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PrismrecError("writing Parquet needs pyarrow. Fix: pip install 'prismrec[parquet]', or write CSV "
                            "(--out recs.csv).") from None
    schema = pa.schema([("user", pa.string()), ("rank", pa.int64()), ("item", pa.string()),
                        ("score", pa.float32()), ("title", pa.string())])

    def write(fh) -> None:
        writer = pq.ParquetWriter(fh, schema)
        try:
            for frame in frames:
                writer.write_table(pa.Table.from_pandas(frame.astype({"user": str, "item": str, "title": str}),
                                                        schema=schema, preserve_index=False))
        finally:
            writer.close()
    return write
