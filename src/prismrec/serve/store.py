"""The service's store of added items: a transactional database, shared by every service process.

``PUT /v1/items/{id}`` answers 201/200 only after the record is **committed**; a write that fails (a full
disk, a lost database) rolls back and the request gets a 5xx, so nothing is half-stored and nothing
acknowledged is lost. Records are append-only rows (``seq`` orders them; a later row for the same item
updates it), each carrying the **model identity** of the bundle that placed it: a bundle never loads
vectors placed by another model (they live in another space).

* default: SQLite, ``STATE_DIR/items.sqlite``, WAL journal with ``synchronous=FULL`` (a commit is on
  disk before the answer; readers never block the writer), safe for several processes on one machine;
* ``--store URL``: any SQLAlchemy database URL, e.g. ``postgresql+psycopg://user@host/db``, so service
  processes on several machines share one catalogue of added items.

Every process polls the store for rows newer than the last it applied (``since``), so an item added
through one process is served by all. The line-per-record ``added.jsonl`` of earlier versions is
migrated once (then renamed ``added.jsonl.migrated``).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

from ..errors import PrismrecError

log = logging.getLogger("prismrec")

SQLITE_FILE = "items.sqlite"
LEGACY_LOG = "added.jsonl"


class StoreError(PrismrecError):
    """The store could not commit a write (mapped to HTTP 507 / 503)."""


class ForeignRecords(PrismrecError):
    """The store holds items placed by another model."""


class ItemStore:
    """Append-only, transactional log of added items for one bundle (one model identity)."""

    def __init__(self, url: str, identity: str):
        try:
            import sqlalchemy as sa
        except ImportError:
            raise PrismrecError("the service's item store needs SQLAlchemy. Fix: pip install 'prismrec[serve]'.") from None
        self.sa, self.url, self.identity = sa, url, identity
        self.lock = threading.Lock()
        kwargs: dict[str, Any] = {"future": True} if sa.__version__.startswith("1.") else {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine = sa.create_engine(url, pool_pre_ping=True, **kwargs)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record):  # noqa: ANN001
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        meta = sa.MetaData()
        self.table = sa.Table(
            "prismrec_added_items", meta,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("item", sa.String(128), nullable=False, index=True),
            sa.Column("model_identity", sa.String(64), nullable=False, index=True),
            sa.Column("record", sa.Text, nullable=False),
        )
        try:
            for attempt in range(5):  # service processes starting together race to create the table
                try:
                    meta.create_all(self.engine)
                    break
                except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
                    if attempt == 4 or not any(t in str(exc) for t in ("already exists", "duplicate key", "locked")):
                        raise
                    import time

                    time.sleep(0.2 * (attempt + 1))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"cannot open the item store {self.safe_url}: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0]}. Fix: check the --state folder or the --store URL.") from None

    @classmethod
    def for_state_dir(cls, state_dir: Path, identity: str) -> "ItemStore":
        state_dir.mkdir(parents=True, exist_ok=True)
        store = cls(f"sqlite:///{(state_dir / SQLITE_FILE).resolve()}", identity)
        store.migrate_legacy(state_dir / LEGACY_LOG)
        return store

    @property
    def safe_url(self) -> str:
        """The URL without its password (for messages)."""
        return self.sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # ------------------------------------------------------------------------------------- writes
    def append(self, record: dict[str, Any]) -> int:
        """Commit one record; returns its sequence number. Raises :class:`StoreError` when the commit fails
        (then nothing was stored)."""
        row = {"item": record["item"], "model_identity": self.identity,
               "record": json.dumps(record, ensure_ascii=True, allow_nan=False)}
        try:
            with self.lock, self.engine.begin() as conn:
                res = conn.execute(self.table.insert().values(**row))
                return int(res.inserted_primary_key[0])
        except self.sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the item store could not commit the write ({str(exc).splitlines()[0]}); nothing "
                             "was stored") from None

    def migrate_legacy(self, path: Path) -> int:
        """Import an ``added.jsonl`` of an earlier version once (torn lines are skipped), then rename it."""
        if not path.is_file():
            return 0
        rows = []
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                rec = json.loads(line)
                rows.append({"item": str(rec["item"]), "model_identity": self.identity,
                             "record": json.dumps(rec, ensure_ascii=True, allow_nan=False)})
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s line %d is unreadable (%s); not migrated", path, n, exc)
        with self.lock, self.engine.begin() as conn:
            if rows:
                conn.execute(self.table.insert(), rows)
        path.replace(path.with_name(path.name + ".migrated"))
        log.warning("migrated %d added item(s) from %s into the item store (assumed placed by this bundle's "
                    "model, which earlier versions did not record)", len(rows), path)
        return len(rows)

    # -------------------------------------------------------------------------------------- reads
    def since(self, seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """This model's records after ``seq``, in order."""
        t = self.table
        q = (self.sa.select(t.c.seq, t.c.record)
             .where(t.c.seq > seq, t.c.model_identity == self.identity).order_by(t.c.seq))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        for s, rec in rows:
            yield int(s), json.loads(rec)

    def foreign(self) -> dict[str, int]:
        """``{model identity: number of records}`` of records placed by other models."""
        t = self.table
        q = (self.sa.select(t.c.model_identity, self.sa.func.count())
             .where(t.c.model_identity != self.identity).group_by(t.c.model_identity))
        with self.engine.connect() as conn:
            return {str(k): int(v) for k, v in conn.execute(q).all()}

    def close(self) -> None:
        self.engine.dispose()
