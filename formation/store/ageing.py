"""Ageing jobs in the store: the job (plan, rack, state), each checkpoint's readings, and K per cell.

Bound as :class:`~formation.store.store.Store` methods. A reading is unique per (job, checkpoint, cell), so a
checkpoint taken again after a crash adds nothing twice (the rows that are there are kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

import pandas as pd
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from formation.store.models import AgeingJob, AgeingReading, AgeingResult

#: States of an ageing job; the open ones are taken up by a runner (the daemon, or a foreground process).
AGEING_STATES = ("queued", "running", "interrupted", "done", "aborted")
OPEN_AGEING_STATES = ("queued", "running", "interrupted")

#: Columns of an ageing reading row (what :func:`add_ageing_readings` takes and :func:`ageing_readings` returns).
READING_COLUMNS: tuple[str, ...] = (
    "ageing_job_id",
    "cell_id",
    "position",
    "k",
    "stage",
    "ts_s",
    "ocv_v",
    "acir_mohm",
    "cell_temperature_c",
    "chamber_setpoint_c",
    "chamber_temperature_c",
    "chamber_in_band",
    "chamber_stable",
    "reason",
)
RESULT_COLUMNS: tuple[str, ...] = (
    "ageing_job_id",
    "cell_id",
    "k_mv_per_day",
    "k_se_mv_per_day",
    "n_points",
    "window_start_s",
    "window_end_s",
    "temperature_c",
    "reference_c",
    "ocv_v",
    "acir_mohm",
    "reason",
    "computed_s",
)


class _Transactional(Protocol):
    """What these functions need of the store: one transaction with errors translated."""

    def _begin(self) -> AbstractContextManager[Connection]: ...


class AgeingJobRow(NamedTuple):
    """An ageing job as stored."""

    id: int
    lot_id: str
    rack: str
    tester: str | None
    chamber: str | None
    plan_name: str
    plan_sha256: str
    plan_json: str
    state: str
    started_s: float
    ended_s: float | None
    owner: str | None


def _t(model: Any) -> Any:
    return model.__table__


def create_ageing_job(
    self: _Transactional,
    *,
    lot_id: str,
    rack: str,
    plan_name: str,
    plan_sha256: str,
    plan_json: str,
    state: str,
    started_s: float,
    tester: str | None = None,
    chamber: str | None = None,
    owner: str | None = None,
) -> int:
    """Record an ageing job; its id."""
    if state not in AGEING_STATES:
        raise ValueError(f"ageing job state must be one of {AGEING_STATES}, got {state!r}")
    table = _t(AgeingJob)
    row: dict[str, Any] = {"lot_id": lot_id, "rack": rack, "tester": tester, "chamber": chamber, "plan_name": plan_name}
    row |= {"plan_sha256": plan_sha256, "plan_json": plan_json, "state": state, "started_s": started_s, "owner": owner}
    with self._begin() as conn:
        return int(conn.execute(insert(table).returning(table.c.id), row).scalar_one())


def ageing_jobs(
    self: _Transactional, *, rack: str | None = None, states: Sequence[str] = (), job_id: int | None = None
) -> list[AgeingJobRow]:
    """Ageing jobs (of a rack, in some states, or one by id), oldest first."""
    table = _t(AgeingJob)
    stmt = select(*(table.c[name] for name in AgeingJobRow._fields)).order_by(table.c.id)
    if rack is not None:
        stmt = stmt.where(table.c.rack == rack)
    if states:
        stmt = stmt.where(table.c.state.in_(list(states)))
    if job_id is not None:
        stmt = stmt.where(table.c.id == job_id)
    with self._begin() as conn:
        return [AgeingJobRow(*row) for row in conn.execute(stmt)]


def set_ageing_job_state(
    self: _Transactional,
    job_id: int,
    state: str,
    *,
    ended_s: float | None = None,
    owner: str | None = None,
    expect: Sequence[str] = (),
) -> bool:
    """Move a job to ``state`` (only from one of ``expect`` when given); whether it moved."""
    if state not in AGEING_STATES:
        raise ValueError(f"ageing job state must be one of {AGEING_STATES}, got {state!r}")
    table = _t(AgeingJob)
    values: dict[str, Any] = {"state": state, "owner": owner}
    if ended_s is not None:
        values["ended_s"] = ended_s
    stmt = update(table).where(table.c.id == job_id).values(**values)
    if expect:
        stmt = stmt.where(table.c.state.in_(list(expect)))
    with self._begin() as conn:
        return bool(conn.execute(stmt).rowcount)


def add_ageing_readings(self: _Transactional, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store one checkpoint's readings in one transaction; a (job, checkpoint, cell) already there is kept."""
    if not rows:
        return 0
    table = _t(AgeingReading)
    with self._begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=["ageing_job_id", "k", "cell_id"])
        return int(conn.execute(stmt, [dict(r) for r in rows]).rowcount or 0)


def ageing_readings(self: _Transactional, *, job_id: int | None = None, cells: Sequence[str] = ()) -> pd.DataFrame:
    """Readings (of a job, or of cells) as a DataFrame of READING_COLUMNS, by job, checkpoint and position."""
    table = _t(AgeingReading)
    stmt = select(*(table.c[c] for c in READING_COLUMNS))
    if job_id is not None:
        stmt = stmt.where(table.c.ageing_job_id == job_id)
    if cells:
        stmt = stmt.where(table.c.cell_id.in_(list(cells)))
    stmt = stmt.order_by(table.c.ageing_job_id, table.c.k, table.c.position)
    with self._begin() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(READING_COLUMNS))


def taken_checkpoints(self: _Transactional, job_id: int) -> set[int]:
    """The checkpoints of a job that have readings stored."""
    table = _t(AgeingReading)
    stmt = select(table.c.k).where(table.c.ageing_job_id == job_id).distinct()
    with self._begin() as conn:
        return {int(k) for k in conn.execute(stmt).scalars()}


def save_ageing_results(self: _Transactional, job_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace a job's K results in one transaction."""
    table = _t(AgeingResult)
    with self._begin() as conn:
        conn.execute(delete(table).where(table.c.ageing_job_id == job_id))
        if rows:
            conn.execute(insert(table), [dict(r) for r in rows])


def ageing_results(self: _Transactional, *, job_id: int | None = None) -> pd.DataFrame:
    """K results (of a job, or all) as a DataFrame of RESULT_COLUMNS."""
    table = _t(AgeingResult)
    stmt = select(*(table.c[c] for c in RESULT_COLUMNS)).order_by(table.c.ageing_job_id, table.c.cell_id)
    if job_id is not None:
        stmt = stmt.where(table.c.ageing_job_id == job_id)
    with self._begin() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(RESULT_COLUMNS))
