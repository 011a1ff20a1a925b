"""Operator holds in the store: `formation run continue` counts up a job's ``continue_count``; the supervising
host (another process) reads it every poll while a run is at a hold step. Bound to :class:`Store` as methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update

from formation.errors import StoreError
from formation.store.models import Job

if TYPE_CHECKING:
    from formation.store.store import Store


def request_continue(self: Store, job_id: int) -> int:
    """Release the job's current holds: add one to its continue count (atomically); returns the new count."""
    job_t = Job.__table__  # type: ignore[attr-defined]
    with self._begin() as conn:
        stmt = update(job_t).where(job_t.c.id == job_id).values(continue_count=job_t.c.continue_count + 1)
        value = conn.execute(stmt.returning(job_t.c.continue_count)).scalar_one_or_none()
    if value is None:
        raise StoreError(f"no job {job_id}")
    return int(value)


def continue_count(self: Store, job_id: int) -> int:
    """How many times the job's holds were released so far."""
    job_t = Job.__table__  # type: ignore[attr-defined]
    with self._begin() as conn:
        value = conn.execute(select(job_t.c.continue_count).where(job_t.c.id == job_id)).scalar_one_or_none()
    if value is None:
        raise StoreError(f"no job {job_id}")
    return int(value)
