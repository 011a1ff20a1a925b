"""Schema revisions of the store: Alembic, configured in code, with the migrations shipped in the package.

Revision ``0001`` is the schema as ``create_schema`` made it before migrations existed; a database holding those
tables but no ``alembic_version`` is recognised as ``0001``. Three ways in:

- :func:`ensure_schema` (what :meth:`Store.create_schema` does for everything that opens a database to work in
  it): a new database is created at head in one go and stamped; one at head passes; anything else is refused
  with :class:`~formation.errors.SchemaError` (``formation db upgrade`` is the way forward).
- :func:`upgrade` (``formation db upgrade``): the migrations from the database's revision to head.
- :func:`read_state` (``formation db current``): where a database stands.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from formation.errors import SchemaError
from formation.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

#: The revision of a database made before migrations existed (``create_schema`` at git commit 00694c5).
BASE_REVISION = "0001"

#: The tables such a database holds: all of them, or it is not one ``formation db upgrade`` knows how to stamp.
BASE_TABLES = frozenset(
    {
        "lot",
        "cell",
        "recipe",
        "job",
        "run",
        "step_result",
        "sample",
        "alarm",
        "grade",
        "chamber_sample",
        "valve_switches",
    }
)

#: Tables in the line's database that are not formation's models (APScheduler's job store): never migrated.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's filter: formation's tables only (another library's table is neither created nor dropped)."""
    return not (type_ == "table" and name in FOREIGN_TABLES)


def migrations_path() -> Path:
    """The folder of ``env.py`` and ``versions/`` inside the installed package."""
    return Path(str(files("formation.store.migrations")))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration without any ini file; commands run on ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The shipped revisions (parsed once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision: the schema of the models in this code."""
    head = script_directory().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("no migrations shipped")
    return head


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None when empty) and whether ``alembic_version`` records it."""

    revision: str | None
    head: str
    recorded: bool
    known: bool

    @property
    def empty(self) -> bool:
        """No formation table at all: a new database."""
        return self.revision is None

    @property
    def current(self) -> bool:
        """At this code's head, recorded as such."""
        return self.recorded and self.revision == self.head

    def describe(self) -> str:
        """``0001``, ``0001 (unversioned: made before migrations)`` or ``none (empty)``."""
        if self.revision is None:
            return "none (empty)"
        return self.revision if self.recorded else f"{self.revision} (unversioned: made before migrations)"


def read_state(conn: Connection) -> SchemaState:
    """The database's revision, read from ``alembic_version`` or recognised from its tables.

    SchemaError when it records several heads (formation never branches), or holds some of the tables of
    revision 0001 and no revision (a partial or foreign schema that stamping would misdescribe).
    """
    head = head_revision()
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"database records several schema revisions ({', '.join(heads)}): repair alembic_version")
    if heads:
        return SchemaState(heads[0], head, recorded=True, known=_known(heads[0]))
    tables = set(inspect(conn).get_table_names())
    if not tables & BASE_TABLES:
        return SchemaState(None, head, recorded=False, known=True)
    missing = sorted(BASE_TABLES - tables)
    if missing:
        raise SchemaError(
            f"database holds formation tables but no schema revision and lacks {', '.join(missing)}: "
            f"it predates revision {BASE_REVISION} and cannot be upgraded"
        )
    return SchemaState(BASE_REVISION, head, recorded=False, known=True)


def _known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except Exception:  # alembic raises for an id it has never seen
        return False


def _newer(state: SchemaState) -> SchemaError:
    return SchemaError(
        f"database at revision {state.revision}, which this formation does not know (its newest is {state.head}): "
        "upgrade formation to work in it"
    )


#: Key of the PostgreSQL advisory lock that serialises schema creation and upgrades (any constant unique to us).
_SCHEMA_LOCK_KEY = 0x666F726D6174  # "format"


def _lock_schema(conn: Connection) -> None:
    """Wait for any other process creating or upgrading the schema; the lock is released at commit.

    Two daemons starting on a new plant database would otherwise both find it empty and race to create it. On
    PostgreSQL an advisory lock; on SQLite the database's write lock, taken now (``BEGIN IMMEDIATE``) so that the
    tables are created inside one transaction: another process (a `run launch` beside a starting daemon) then sees
    no table or all of them, never the half of a schema that is still being made.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})")
    elif conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


#: Attempts at opening a new SQLite database whose schema another process is creating at the same moment.
_LOCKED_TRIES = 50


def ensure_schema(engine: Engine) -> SchemaState:
    """Create a new database at head (every table, then the revision stamp), or check one is at head.

    An existing database at another revision is refused with SchemaError, one line naming both revisions. On
    SQLite, a connection that read the empty file while another created the schema may be refused the write lock
    at once (SQLite's deadlock guard, "database is locked"): it tries again and then finds the schema made.
    """
    for attempt in range(_LOCKED_TRIES):
        try:
            return _ensure_schema(engine)
        except OperationalError as exc:
            if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == _LOCKED_TRIES - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")  # pragma: no cover


def _ensure_schema(engine: Engine) -> SchemaState:
    with engine.begin() as conn:
        state = read_state(conn)
        if not state.current:
            _lock_schema(conn)
            state = read_state(conn)  # as the process that held the lock left it
        if state.current:
            return state
        if state.empty:
            SQLModel.metadata.create_all(conn)
            MigrationContext.configure(conn).stamp(script_directory(), "head")
            return SchemaState(state.head, state.head, recorded=True, known=True)
    if not state.known:
        raise _newer(state)
    unversioned = "" if state.recorded else " (unversioned: made before migrations)"
    raise SchemaError(
        f"database at revision {state.revision}{unversioned}, this formation needs {state.head}: "
        "run `formation db upgrade`"
    )


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the state before, and the revision after."""

    before: SchemaState
    after: str

    @property
    def changed(self) -> bool:
        """Whether any migration ran or a stamp was written."""
        return not self.before.current


def upgrade(engine: Engine) -> Upgrade:
    """Bring a database to head in one transaction (atomic where DDL is transactional, as on PostgreSQL).

    An empty database gets the whole chain; one made before migrations is stamped 0001 first. A database at a
    revision this code does not know is refused with SchemaError before anything is written.
    """
    with engine.begin() as conn:
        _lock_schema(conn)
        before = read_state(conn)
        if not before.known:
            raise _newer(before)
        if not before.current:
            config = alembic_config(conn)
            if before.revision is not None and not before.recorded:
                command.stamp(config, BASE_REVISION)
            command.upgrade(config, "head")
        after = MigrationContext.configure(conn).get_current_heads()
    return Upgrade(before, after[0] if after else before.head)
