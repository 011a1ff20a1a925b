"""The line's work queue and cabinet leases in the database, shared by every orchestrator on it.

`formation run launch` writes a job in state ``queued`` (its runs recorded, nothing started); a daemon (`formation
serve`) holding the cabinet's lease claims it when the cabinet is free and ``start_after_s`` has come. A lease row
per cabinet says which daemon drives it until when; the holder renews it, and a daemon that stops renewing (killed,
hung, cut off) loses the cabinet to another once it expires. Lease times are unix wall seconds: daemons on one
database may run different clock scales, but they share the wall.

Both work alike on SQLite and PostgreSQL: a claim selects the oldest due job ``FOR UPDATE SKIP LOCKED`` (PostgreSQL;
SQLite serialises writers instead) and moves it with a conditional UPDATE, so two claimers never get the same job;
a lease is taken by one conditional UPDATE (free, expired or already ours). Bound to :class:`Store` as methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, case, delete, or_, select, update

from formation.states import JobState
from formation.store.models import CabinetLease, Job

if TYPE_CHECKING:
    from formation.store.store import Store

_JOB = Job.__table__  # type: ignore[attr-defined]
_LEASE = CabinetLease.__table__  # type: ignore[attr-defined]


def hold_lease(self: Store, cabinet: str, owner: str, ttl_s: float, now_unix_s: float) -> bool:
    """Take ``cabinet`` for ``owner`` (free, expired, or already ``owner``'s) until ``now + ttl_s``, or renew it.

    True while ``owner`` holds it; False when another live daemon does.
    """
    with self._begin() as conn:
        conn.execute(
            self._insert_ignore(conn, CabinetLease, ["cabinet"]).values(
                cabinet=cabinet, owner=owner, expires_unix_s=now_unix_s + ttl_s, acquired_unix_s=now_unix_s
            )
        )
        mine = _LEASE.c.owner == owner
        taken = conn.execute(
            update(_LEASE)
            .where(_LEASE.c.cabinet == cabinet, or_(mine, _LEASE.c.expires_unix_s < now_unix_s))
            .values(
                owner=owner,
                expires_unix_s=now_unix_s + ttl_s,
                acquired_unix_s=case((mine, _LEASE.c.acquired_unix_s), else_=now_unix_s),
            )
        )
        return bool(taken.rowcount)


def take_over_lease(self: Store, cabinet: str, owner: str, dead_owner: str, ttl_s: float, now_unix_s: float) -> bool:
    """Take ``cabinet`` from ``dead_owner`` (a process known to be gone) before its lease expires."""
    with self._begin() as conn:
        taken = conn.execute(
            update(_LEASE)
            .where(_LEASE.c.cabinet == cabinet, _LEASE.c.owner == dead_owner)
            .values(owner=owner, expires_unix_s=now_unix_s + ttl_s, acquired_unix_s=now_unix_s)
        )
        return bool(taken.rowcount)


def release_lease(self: Store, cabinet: str, owner: str) -> None:
    """Give ``cabinet`` up (only if ``owner`` holds it): another daemon may take it at once."""
    with self._begin() as conn:
        conn.execute(delete(_LEASE).where(_LEASE.c.cabinet == cabinet, _LEASE.c.owner == owner))


def leases(self: Store) -> list[CabinetLease]:
    """Every lease row (expired ones included), by cabinet."""
    return self._all(CabinetLease, order_by=[CabinetLease.cabinet])


def claim_job(self: Store, cabinet: str, owner: str, now_s: float) -> int | None:
    """Move the oldest queued job of ``cabinet`` whose start time has come to ``running`` for ``owner``.

    Returns its id, or None when none is due (or another claimer took it first).
    """
    due = or_(_JOB.c.start_after_s.is_(None), _JOB.c.start_after_s <= now_s)
    queued = _JOB.c.state == JobState.QUEUED.value
    with self._begin() as conn:
        job_id = conn.execute(
            select(_JOB.c.id)
            .where(_JOB.c.cabinet == cabinet, queued, due)
            .order_by(_JOB.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if job_id is None:
            return None
        moved = conn.execute(
            update(_JOB)
            .where(_JOB.c.id == job_id, queued)
            .values(state=JobState.RUNNING.value, owner=owner, started_s=now_s)
        )
        return int(job_id) if moved.rowcount else None


def queue_job_start(self: Store, job_id: int, start_after_s: float | None) -> None:
    """Set when a queued job may start (None: at once)."""
    with self._begin() as conn:
        conn.execute(update(_JOB).where(_JOB.c.id == job_id).values(start_after_s=start_after_s))


def jobs_in_states(self: Store, cabinet: str, states: frozenset[JobState]) -> list[Job]:
    """The cabinet's jobs in one of ``states``, oldest first."""
    return self._all(Job, Job.cabinet == cabinet, Job.state.in_(sorted(s.value for s in states)), order_by=[Job.id])  # type: ignore[attr-defined]


#: The one column a supervisor reads every poll (an abort requested from another process): a Core statement,
#: compiled once, instead of loading the whole row through the ORM (measured in bench/bench_scale.py).
_JOB_STATE = select(_JOB.c.state).where(_JOB.c.id == bindparam("job_id"))


def job_state(self: Store, job_id: int) -> str | None:
    """The state of job ``job_id`` (None when there is no such job): one column, read every poll."""
    with self._begin() as conn:
        state: str | None = conn.execute(_JOB_STATE, {"job_id": job_id}).scalar_one_or_none()
    return state
