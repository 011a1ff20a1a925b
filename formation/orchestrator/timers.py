"""Long-horizon timers (age checkpoints) held by APScheduler with a persistent job store in the line's database.

Jobs are stored by reference (`formation.orchestrator.timers:fire_checkpoint`) with plain arguments, so they
survive a restart of the process: a restarted line that opens the same database finds them and fires each once.
A job finds its live target (the cabinet supervisor) through a process-wide registry keyed by cabinet name.
Run dates are wall time (APScheduler's); a checkpoint given in clock seconds is converted with the clock scale.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from formation.clock import Clock
from formation.store import Store

log = logging.getLogger(__name__)

#: A checkpoint that fires this late (wall seconds, e.g. the host was down) still fires once, not never.
MISFIRE_GRACE_S = 7 * 24 * 3600
JOB_TABLE = "apscheduler_jobs"


class CheckpointTarget(Protocol):
    """What a fired checkpoint calls: the supervisor of the cabinet the run is on."""

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None: ...


_TARGETS: dict[str, CheckpointTarget] = {}
#: Checkpoints that fired with no live target yet (a restarted host before it re-attached), delivered on register.
_UNDELIVERED: dict[str, list[tuple[int, int, int, int]]] = {}


async def fire_checkpoint(cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> None:
    """The stored job: hand the checkpoint to the cabinet's live supervisor."""
    target = _TARGETS.get(cabinet)
    if target is None:
        log.warning("checkpoint %s/run %s/k %s fired with no supervisor attached; kept for it", cabinet, run_id, k)
        _UNDELIVERED.setdefault(cabinet, []).append((job_id, run_id, step_index, k))
        return
    target.on_checkpoint(job_id, run_id, step_index, k)


def checkpoint_job_id(cabinet: str, run_id: int, step_index: int, k: int) -> str:
    """The explicit id of one checkpoint job (scheduling it again replaces it)."""
    return f"ocv:{cabinet}:{run_id}:{step_index}:{k}"


class LineTimers:
    """An AsyncIOScheduler over the store's database; an async context manager."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.clock = clock
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=store.engine, tablename=JOB_TABLE)},
            job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE_S, "max_instances": 1},
            timezone=UTC,
        )

    async def __aenter__(self) -> LineTimers:
        self.scheduler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # wait=False: a job still running is a coroutine on this loop; the scheduler just stops scheduling.
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)

    def register(self, cabinet: str, target: CheckpointTarget) -> None:
        """Route this cabinet's checkpoints to ``target``, delivering any that fired while none was attached."""
        _TARGETS[cabinet] = target
        for args in _UNDELIVERED.pop(cabinet, []):
            target.on_checkpoint(*args)

    def unregister(self, cabinet: str, target: CheckpointTarget) -> None:
        """Stop routing to ``target`` (only if it is still the registered one)."""
        if _TARGETS.get(cabinet) is target:
            del _TARGETS[cabinet]

    def wall_time(self, at_clock_s: float) -> datetime:
        """The wall datetime at which the clock reads ``at_clock_s``."""
        delay_s = (at_clock_s - self.clock.now()) / self.clock.scale
        return datetime.now(UTC) + timedelta(seconds=delay_s)

    def schedule_checkpoint(
        self, cabinet: str, job_id: int, run_id: int, step_index: int, k: int, at_clock_s: float
    ) -> str:
        """Schedule (or reschedule) one OCV checkpoint; returns its job id."""
        job = checkpoint_job_id(cabinet, run_id, step_index, k)
        self.scheduler.add_job(
            "formation.orchestrator.timers:fire_checkpoint",
            "date",
            run_date=self.wall_time(at_clock_s),
            args=[cabinet, job_id, run_id, step_index, k],
            id=job,
            name=f"OCV checkpoint {k} of run {run_id}",
            replace_existing=True,
        )
        return job

    def pending(self) -> list[str]:
        """Ids of the jobs still to fire."""
        return [j.id for j in self.scheduler.get_jobs()]
