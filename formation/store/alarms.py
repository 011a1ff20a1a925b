"""Alarms in the store: one row each, oldest first. Bound to :class:`Store` as methods."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert

from formation.store.models import SEVERITIES, Alarm

if TYPE_CHECKING:
    from formation.store.store import Store


def add_alarm(
    self: Store,
    ts_s: float,
    severity: str,
    code: str,
    message: str,
    *,
    cabinet: str | None = None,
    channel: int | None = None,
    run_id: int | None = None,
    job_id: int | None = None,
) -> int:
    """Record an alarm; returns its id. ``severity`` is one of SEVERITIES."""
    if severity not in SEVERITIES:
        raise ValueError(f"alarm severity must be one of {SEVERITIES}, got {severity!r}")
    row = {
        "ts_s": ts_s,
        "severity": severity,
        "code": code,
        "message": message,
        "cabinet": cabinet,
        "channel": channel,
        "run_id": run_id,
        "job_id": job_id,
    }
    alarm_t = Alarm.__table__  # type: ignore[attr-defined]
    with self._begin() as conn:
        return int(conn.execute(insert(alarm_t).returning(alarm_t.c.id), row).scalar_one())


def alarms(self: Store, job_id: int | None = None) -> list[Alarm]:
    """Alarms (of one job, or all), oldest first."""
    where = [Alarm.job_id == job_id] if job_id is not None else []
    return self._all(Alarm, *where, order_by=[Alarm.ts_s, Alarm.id])
