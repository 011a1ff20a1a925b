"""Engines: SQLite (WAL, embedded default) or PostgreSQL (``postgresql+psycopg://``), and schema creation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url

from formation.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

#: SQLite page cache per connection in KiB: the sample index soon outgrows the 2 MiB default.
SQLITE_CACHE_KIB = 32_768

#: WAL pages before SQLite checkpoints inside a commit (backstop; 16384 pages of 4 KiB = 64 MiB).
SQLITE_AUTOCHECKPOINT_PAGES = 16_384

#: How long a SQLite writer waits for another writer's lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite database file."""
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # First, so that switching a new file to WAL waits for another process doing the same instead of failing.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets the display and CLI read while the orchestrator writes; NORMAL is durable across
        # application crashes in WAL mode and only risks the last commits on power loss.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        # The sample writer checkpoints in the background (Store.checkpoint); the automatic checkpoint, which
        # runs inside a commit and pays its fsync there, stays only as a backstop for a much larger log.
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite gets WAL, ``synchronous=NORMAL``, foreign keys and a busy timeout.

    ``postgresql://`` and ``postgres://`` URLs are routed to the psycopg 3 driver.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    # pre_ping: a restarted database server must not cost the line a failed write.
    return create_engine(parsed, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    """Create a new database at the current schema revision, or check an existing one is at it (idempotent).

    A database at an older revision raises SchemaError: it must be migrated (``formation db upgrade``), never
    patched by creating the tables it lacks.
    """
    from formation.store.migrate import ensure_schema  # imports Alembic: only where a database is opened

    ensure_schema(engine)
