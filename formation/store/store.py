"""The store: one synchronous facade over the database for the orchestrator, grading and the CLI.

The orchestrator calls it from a worker thread (``asyncio.to_thread``); every method opens its own short
transaction, so calls from several threads are safe. Database errors leave as :class:`StoreError`, translated
here and only here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Select, bindparam, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, SQLModel

from formation.clock import Clock, WallClock
from formation.errors import StoreError
from formation.states import JobState, job_states_leading_to
from formation.store import ageing as _ageing
from formation.store import alarms as _alarms
from formation.store import chamber as _chamber
from formation.store import grades as _grades
from formation.store import holds as _holds
from formation.store import queue as _queue
from formation.store import racks as _racks
from formation.store.engine import create_schema, make_engine
from formation.store.models import (
    SAMPLE_COLUMNS,
    Cell,
    Job,
    Lot,
    Recipe,
    Run,
    Sample,
    StepResult,
)
from formation.store.samples import check_block, insert_block

_T = TypeVar("_T", bound=SQLModel)

# Stay well below SQLite's bound-parameter limit in IN (...) lists.
_IN_CHUNK = 5_000

_RUN_COLUMNS = frozenset(c.name for c in Run.__table__.columns)  # type: ignore[attr-defined]
_STEP_RESULT_COLUMNS = [c.name for c in StepResult.__table__.columns if c.name != "id"]  # type: ignore[attr-defined]


#: DB-API 2.0 error classes, most specific first: a driver's own error (psycopg's ForeignKeyViolation from COPY) is
#: named by its standard kind, so a refusal reads the same on SQLite and PostgreSQL.
_DBAPI_KINDS = (
    "IntegrityError",
    "DataError",
    "OperationalError",
    "ProgrammingError",
    "NotSupportedError",
    "InternalError",
    "InterfaceError",
    "DatabaseError",
)


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, SQLAlchemyError):
        return type(exc).__name__
    names = {cls.__name__ for cls in type(exc).__mro__}
    return next((kind for kind in _DBAPI_KINDS if kind in names), type(exc).__name__)


def _values(states: Iterable[JobState]) -> list[str]:
    return sorted(s.value for s in states)


def _table(model: type[SQLModel]) -> Any:
    return model.__table__  # type: ignore[attr-defined]


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _update_runs(conn: Connection, updates: list[dict[str, Any]]) -> None:
    """Run updates grouped by column set, one executemany per group."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in updates:
        columns = tuple(sorted(k for k in row if k != "id"))
        unknown = set(columns) - _RUN_COLUMNS
        if unknown or "id" not in row:
            raise ValueError(f"bad run update {row!r}: unknown columns {sorted(unknown)} or no id")
        if columns:
            groups.setdefault(columns, []).append({"run_pk": row["id"], **{f"v_{c}": row[c] for c in columns}})
    run_t = _table(Run)
    for columns, params in groups.items():
        stmt = update(run_t).where(run_t.c.id == bindparam("run_pk"))
        conn.execute(stmt.values({c: bindparam(f"v_{c}", type_=run_t.c[c].type) for c in columns}), params)


class Store:
    """Lots, cells, recipes, jobs, runs, step results, samples and alarms in one database."""

    def __init__(self, url: str, *, clock: Clock | None = None) -> None:
        self.url = url
        try:
            self.engine: Engine = make_engine(url)
        except SQLAlchemyError as exc:  # a malformed URL or a driver that is not installed
            raise StoreError(f"cannot use the database URL: {exc.__class__.__name__}") from exc
        self._clock = clock or WallClock()
        self._dbapi_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- plumbing ------------------------------------------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database errors become StoreError: SQLAlchemy's, and the driver's own from raw COPY."""
        try:
            yield
        except (SQLAlchemyError, self._dbapi_error) as exc:
            detail = exc.args[0] if exc.args else exc
            raise StoreError(f"database error: {_error_kind(exc)}: {detail}") from exc

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """One transaction."""
        with self._translated(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._translated(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    def _insert_ignore(self, conn: Connection, model: type[SQLModel], keys: list[str]) -> Insert:
        """INSERT that silently skips rows conflicting on ``keys`` (SQLite and PostgreSQL)."""
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(_table(model)).on_conflict_do_nothing(index_elements=keys)

    def _all(self, model: type[_T], *where: Any, order_by: Sequence[Any] = ()) -> list[_T]:
        with self._session() as session:
            return list(session.scalars(select(model).where(*where).order_by(*order_by)).all())

    def create_schema(self) -> None:
        """Create a new database at the current schema revision, or check this one is at it.

        SchemaError (one line: its revision, the one needed, `formation db upgrade`) when it is not.
        """
        with self._translated():
            create_schema(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def checkpoint(self) -> None:
        """Fold SQLite's write-ahead log into the database (PASSIVE: never blocks a writer); no-op elsewhere.

        The sample writer calls this from its own thread every few seconds, so the fsync of a checkpoint is
        never paid inside a sample write.
        """
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- lots, cells, recipes ------------------------------------------------------------------------------

    def upsert_lot_and_cells(self, cells: Iterable[tuple[str, str, float]]) -> int:
        """Record ``(cell_id, lot, nominal_capacity_ah)`` rows; returns how many cells were new.

        Idempotent: known cells are left as they are. A cell already in another lot (or listed in two lots)
        raises StoreError naming it, and nothing is written.
        """
        wanted: dict[str, tuple[str, float]] = {}
        clashes: list[str] = []
        for cell_id, lot, nominal_ah in cells:
            if cell_id in wanted and wanted[cell_id][0] != lot:
                clashes.append(f"{cell_id} (listed in lots {wanted[cell_id][0]!r} and {lot!r})")
            wanted[cell_id] = (lot, float(nominal_ah))
        if not wanted:
            return 0
        now_s = self._clock.now()
        cell_t = _table(Cell)
        with self._begin() as conn:
            known: dict[str, str] = {}
            for chunk in _chunks(list(wanted)):
                known.update(conn.execute(select(cell_t.c.id, cell_t.c.lot_id).where(cell_t.c.id.in_(chunk))).all())
            clashes += [
                f"{cid} (already in lot {lot!r}, not {wanted[cid][0]!r})"
                for cid, lot in known.items()
                if lot != wanted[cid][0]
            ]
            if clashes:
                raise StoreError(f"cells in another lot: {', '.join(sorted(clashes))}")
            lots = sorted({lot for lot, _ in wanted.values()})
            conn.execute(self._insert_ignore(conn, Lot, ["id"]), [{"id": lot, "created_s": now_s} for lot in lots])
            new = [
                {"id": cid, "lot_id": lot, "nominal_capacity_ah": ah, "created_s": now_s}
                for cid, (lot, ah) in wanted.items()
                if cid not in known
            ]
            if new:
                conn.execute(insert(cell_t), new)
        return len(new)

    def cell(self, cell_id: str) -> Cell | None:
        """The cell with this serial, or None."""
        with self._session() as session:
            return session.get(Cell, cell_id)

    def lot(self, lot_id: str) -> Lot | None:
        """The lot with this name, or None."""
        with self._session() as session:
            return session.get(Lot, lot_id)

    def lot_cells(self, lot_id: str) -> list[Cell]:
        """The cells of a lot, by serial."""
        return self._all(Cell, Cell.lot_id == lot_id, order_by=[Cell.id])

    def save_recipe(
        self,
        sha256: str,
        name: str,
        version: str,
        chemistry: str | None,
        nominal_capacity_ah: float,
        body_json: str,
        source_text: str,
    ) -> bool:
        """Store a recipe under its content hash; True if it was new (a known hash is left untouched)."""
        row = {
            "sha256": sha256,
            "name": name,
            "version": version,
            "chemistry": chemistry,
            "nominal_capacity_ah": nominal_capacity_ah,
            "body_json": body_json,
            "source_text": source_text,
            "created_s": self._clock.now(),
        }
        with self._begin() as conn:
            # RETURNING, not rowcount: PostgreSQL's driver reports -1 for an INSERT through SQLAlchemy 2.1.
            stmt = self._insert_ignore(conn, Recipe, ["sha256"]).returning(_table(Recipe).c.sha256)
            return conn.execute(stmt, row).first() is not None

    def recipe(self, sha256: str) -> Recipe | None:
        """The recipe with this content hash, or None."""
        with self._session() as session:
            return session.get(Recipe, sha256)

    # -- jobs and runs -------------------------------------------------------------------------------------

    def create_job(
        self,
        recipe_sha256: str,
        cabinet: str,
        channels: str,
        clock_scale: float,
        started_s: float,
        note: str | None = None,
        *,
        state: JobState = JobState.RUNNING,
    ) -> int:
        """Record a launch; returns the new job id."""
        row = {
            "recipe_sha256": recipe_sha256,
            "cabinet": cabinet,
            "channels": channels,
            "state": JobState(state).value,
            "clock_scale": clock_scale,
            "started_s": started_s,
            "note": note,
        }
        job_t = _table(Job)
        with self._begin() as conn:
            return int(conn.execute(insert(job_t).returning(job_t.c.id), row).scalar_one())

    def finish_job(self, job_id: int, state: JobState, ended_s: float) -> None:
        """Set a job's final state and end time (a job already in a final state keeps it)."""
        state = JobState(state)
        job_t = _table(Job)
        with self._begin() as conn:
            conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.state.in_(_values(job_states_leading_to(state))))
                .values(state=state.value, ended_s=ended_s)
            )
            exists = conn.execute(select(job_t.c.id).where(job_t.c.id == job_id)).first() is not None
        if not exists:
            raise StoreError(f"no job {job_id}")

    def set_job_state(self, job_id: int, state: JobState) -> bool:
        """Move a job to ``state`` if its transition table allows it from the stored state (a final state is
        never overwritten). Returns whether it changed; StoreError if there is no such job."""
        state = JobState(state)
        job_t = _table(Job)
        with self._begin() as conn:
            done = conn.execute(
                update(job_t)
                .where(job_t.c.id == job_id, job_t.c.state.in_(_values(job_states_leading_to(state))))
                .values(state=state.value)
            )
            exists = conn.execute(select(job_t.c.id).where(job_t.c.id == job_id)).first() is not None
        if not exists:
            raise StoreError(f"no job {job_id}")
        return bool(done.rowcount)

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first."""
        return self._all(Job, order_by=[Job.id])

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        with self._session() as session:
            return session.get(Job, job_id)

    def create_runs(self, job_id: int, rows: list[dict[str, Any]]) -> list[int]:
        """Insert the runs of a job in one executemany; returns their ids in the order of ``rows``."""
        if not rows:
            return []
        run_t = _table(Run)
        params = [{"step_index": 0, "journal": "{}", "last_rec": 0, **row, "job_id": job_id} for row in rows]
        stmt = insert(run_t).returning(run_t.c.id, sort_by_parameter_order=True)
        with self._begin() as conn:
            return [int(i) for i in conn.execute(stmt, params).scalars()]

    def update_runs(self, updates: list[dict[str, Any]]) -> None:
        """Update runs: each dict holds ``id`` and the columns to set (one executemany per column set)."""
        if updates:
            with self._begin() as conn:
                _update_runs(conn, updates)

    def get_run(self, run_id: int) -> Run | None:
        """The run with this id, or None."""
        with self._session() as session:
            return session.get(Run, run_id)

    def job_runs(self, job_id: int) -> list[Run]:
        """The runs of a job, by channel."""
        return self._all(Run, Run.job_id == job_id, order_by=[Run.channel, Run.id])

    def runs_in_state(self, cabinet: str, states: Iterable[str]) -> list[Run]:
        """The runs of a cabinet in any of ``states`` (re-attach after a restart), by channel."""
        return self._all(Run, Run.cabinet == cabinet, Run.state.in_(list(states)), order_by=[Run.channel, Run.id])  # type: ignore[attr-defined]

    def cell_runs(self, cell_id: str) -> list[Run]:
        """Every run of a cell, oldest first."""
        return self._all(Run, Run.cell_id == cell_id, order_by=[Run.started_s, Run.id])

    # -- step results --------------------------------------------------------------------------------------

    def add_step_results(self, rows: list[dict[str, Any]]) -> int:
        """Insert step results, skipping any (run_id, step_index) already stored; returns how many are new."""
        if not rows:
            return 0
        defaults = {"details": "{}", "start_voltage_v": None, "end_voltage_v": None, "step_id": None, "cycle": 0}
        params = [{**defaults, **r} for r in rows]
        with self._begin() as conn:
            # RETURNING yields only the rows actually inserted (executemany rowcount is unreliable).
            stmt = self._insert_ignore(conn, StepResult, ["run_id", "step_index"])
            return len(conn.execute(stmt.returning(_table(StepResult).c.id), params).all())

    def step_results(self, job_id: int | None = None, run_id: int | None = None) -> pd.DataFrame:
        """Step results with the run's job_id, cell_id, cabinet and channel, by run then step."""
        sr, run = _table(StepResult), _table(Run)
        stmt = select(
            *[sr.c[c] for c in ["id", *_STEP_RESULT_COLUMNS]],
            run.c.job_id,
            run.c.cell_id,
            run.c.cabinet,
            run.c.channel,
        ).join(run, run.c.id == sr.c.run_id)
        if job_id is not None:
            stmt = stmt.where(run.c.job_id == job_id)
        if run_id is not None:
            stmt = stmt.where(sr.c.run_id == run_id)
        with self._begin() as conn:
            result = conn.execute(stmt.order_by(sr.c.run_id, sr.c.step_index))
            return pd.DataFrame(result.all(), columns=list(result.keys()))

    # -- samples -------------------------------------------------------------------------------------------

    def write_samples(self, block: np.ndarray, run_updates: list[dict[str, Any]] | None = None) -> int:
        """Append a sample block (columns SAMPLE_COLUMNS); returns the number of rows written.

        ``run_updates`` (as for :meth:`update_runs`, typically ``last_rec``) commit in the same transaction,
        so a crash can never store samples without the cursor that says they are stored.
        """
        arr = check_block(block)
        with self._begin() as conn:
            written = insert_block(conn, arr)
            if run_updates:
                _update_runs(conn, run_updates)
        return written

    def samples(self, run_id: int, *, with_cycle: bool = False, with_sub_step: bool = False) -> pd.DataFrame:
        """The samples of a run in record order, one column per SAMPLE_COLUMNS name (and ``cycle``, ``sub_step``
        if asked)."""
        sample_t = _table(Sample)
        columns = [*SAMPLE_COLUMNS, *(["cycle"] if with_cycle else []), *(["sub_step"] if with_sub_step else [])]
        stmt = select(*[sample_t.c[c] for c in columns]).where(sample_t.c.run_id == run_id)
        with self._begin() as conn:
            rows = conn.execute(stmt.order_by(sample_t.c.rec, sample_t.c.id)).all()
        frame = pd.DataFrame(rows, columns=columns)
        # SQLite hands back NaN measurements as NULL; None -> NaN keeps every measured column float64.
        ints = ("run_id", "rec", "step_index", "cycle", "sub_step")
        return frame.astype({c: "int64" if c in ints else "float64" for c in columns})

    def max_sample_rec(self, job_id: int) -> int | None:
        """The highest data-log record stored for a job (where a re-attached host resumes draining)."""
        sample_t, run = _table(Sample), _table(Run)
        stmt = (
            select(func.max(sample_t.c.rec))
            .select_from(sample_t)
            .join(run, run.c.id == sample_t.c.run_id)
            .where(run.c.job_id == job_id)
        )
        with self._begin() as conn:
            value = conn.execute(stmt).scalar_one()
        return None if value is None else int(value)

    def sample_count(self, job_id: int | None = None) -> int:
        """How many samples are stored (for one job, or in total)."""
        sample_t, run = _table(Sample), _table(Run)
        stmt = select(func.count()).select_from(sample_t)
        if job_id is not None:
            stmt = stmt.join(run, run.c.id == sample_t.c.run_id).where(run.c.job_id == job_id)
        with self._begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    # -- alarms (formation/store/alarms.py) ---------------------------------------------------------------------
    add_alarm = _alarms.add_alarm
    alarms = _alarms.alarms

    # -- work queue and cabinet leases (formation/store/queue.py) ------------------------------------------------
    hold_lease = _queue.hold_lease
    release_lease = _queue.release_lease
    take_over_lease = _queue.take_over_lease
    leases = _queue.leases
    claim_job = _queue.claim_job
    queue_job_start = _queue.queue_job_start
    jobs_in_states = _queue.jobs_in_states
    job_state = _queue.job_state

    # -- operator holds (formation/store/holds.py) ------------------------------------------------------------
    request_continue = _holds.request_continue
    continue_count = _holds.continue_count

    # -- chambers: decimated samples and valve wear (formation/store/chamber.py) -------------------------------
    add_chamber_samples = _chamber.add_chamber_samples
    chamber_samples = _chamber.chamber_samples
    save_valve_switches = _chamber.save_valve_switches
    valve_switches = _chamber.valve_switches

    # -- ageing racks: where each cell sits (formation/store/racks.py) ----------------------------------------
    latest_runs = _racks.latest_runs
    rack_places = _racks.rack_places
    place_cells = _racks.place_cells

    # -- ageing jobs: readings and K per cell (formation/store/ageing.py) ---------------------------------------
    create_ageing_job = _ageing.create_ageing_job
    ageing_jobs = _ageing.ageing_jobs
    set_ageing_job_state = _ageing.set_ageing_job_state
    add_ageing_readings = _ageing.add_ageing_readings
    ageing_readings = _ageing.ageing_readings
    taken_checkpoints = _ageing.taken_checkpoints
    save_ageing_results = _ageing.save_ageing_results
    ageing_results = _ageing.ageing_results

    # -- grades --------------------------------------------------------------------------------------------

    def query_frame(self, stmt: Select[Any]) -> pd.DataFrame:
        """Run a read-only SELECT (built by a caller such as grading) into a DataFrame, errors translated."""
        with self._begin() as conn:
            result = conn.execute(stmt)
            keys, rows = list(result.keys()), result.all()
        # Column-wise: DataFrame(rows) would probe every Row object for namedtuple fields, raising per row.
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(keys)
        return pd.DataFrame({k: pd.Series(list(c), dtype=object) for k, c in zip(keys, columns, strict=True)})

    save_grades = _grades.save_grades
    grades = _grades.grades
