"""Long-horizon timers (age checkpoints): a plain table of what is due in the line's database, an in-memory
APScheduler to fire them.

The database keeps no executable state (``docs/decisions/0005-timers-keep-no-code-in-the-database.md``): a row
of ``line_timers`` is data only — a kind from a fixed set, the keys it is about (cabinet, job, run, step, k) and
its due time. What a kind does is code, looked up here; a row with an unknown kind or keys of the wrong type is
skipped with a warning, never run. Rows are rebuilt into an in-memory ``AsyncIOScheduler`` when the timers start,
so a restarted line that opens the same database fires each checkpoint once (late ones too, up to a week), and a
row is deleted when its timer fires. APScheduler's old SQLAlchemy job store (pickles in ``apscheduler_jobs``) is
never read.

A fired checkpoint finds its live target (the cabinet supervisor) through a process-wide registry keyed by cabinet
name, or waits there until one registers. Due times are wall time (APScheduler's); a checkpoint given in clock
seconds is converted with the clock scale.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Table, delete, insert, select

from formation.clock import Clock
from formation.store import Store
from formation.store.models import LineTimer

log = logging.getLogger(__name__)

#: A checkpoint that fires this late (wall seconds, e.g. the host was down) still fires once, not never.
MISFIRE_GRACE_S = 7 * 24 * 3600
TIMER_TABLE = "line_timers"
#: The one kind of timer so far: an age step's OCV checkpoint.
OCV_CHECKPOINT = "ocv_checkpoint"
KINDS = frozenset({OCV_CHECKPOINT})

#: What is due, as plain data: the store's ``line_timers`` table, made and migrated with the rest of the schema.
TIMERS: Table = LineTimer.__table__  # type: ignore[attr-defined]


class CheckpointTarget(Protocol):
    """What a fired checkpoint calls: the supervisor of the cabinet the run is on."""

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None: ...


_TARGETS: dict[str, CheckpointTarget] = {}
#: Checkpoints that fired with no live target yet (a restarted host before it re-attached), delivered on register.
_UNDELIVERED: dict[str, list[tuple[int, int, int, int]]] = {}


def deliver_checkpoint(cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> None:
    """Hand a fired checkpoint to the cabinet's live supervisor, or keep it for the next one that registers."""
    target = _TARGETS.get(cabinet)
    if target is None:
        log.warning("checkpoint %s/run %s/k %s fired with no supervisor attached; kept for it", cabinet, run_id, k)
        _UNDELIVERED.setdefault(cabinet, []).append((job_id, run_id, step_index, k))
        return
    target.on_checkpoint(job_id, run_id, step_index, k)


def checkpoint_job_id(cabinet: str, run_id: int, step_index: int, k: int) -> str:
    """The explicit id of one checkpoint timer (scheduling it again replaces it)."""
    return f"ocv:{cabinet}:{run_id}:{step_index}:{k}"


def _row_problem(row: Any) -> str | None:
    """Why a stored row cannot be a timer, or None: it is data from the database, checked like any input."""
    if row.kind not in KINDS:
        return f"unknown kind {str(row.kind)[:40]!r}"
    ints = (row.job_id, row.run_id, row.step_index, row.k)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not isinstance(row.cabinet, str):
        return "keys of the wrong type"
    if not isinstance(row.due_unix_s, float | int) or row.due_unix_s != row.due_unix_s:
        return "no due time"
    if row.id != checkpoint_job_id(row.cabinet, row.run_id, row.step_index, row.k):
        return "an id that does not match its keys"
    return None


class LineTimers:
    """The line's timers: rows in the store's database, fired by an in-memory scheduler; an async context manager."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.clock = clock
        self.engine = store.engine
        self.scheduler = AsyncIOScheduler(
            job_defaults={"coalesce": True, "misfire_grace_time": MISFIRE_GRACE_S, "max_instances": 1},
            timezone=UTC,
        )

    async def __aenter__(self) -> LineTimers:
        self.scheduler.start()
        with self.engine.connect() as conn:
            rows = conn.execute(select(TIMERS)).all()
        for row in rows:
            problem = _row_problem(row)
            if problem is not None:
                log.warning("timer row %.80r skipped: %s", row.id, problem)
                continue
            self._add(row.id, row.cabinet, row.job_id, row.run_id, row.step_index, row.k, row.due_unix_s)
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
        """Schedule (or reschedule) one OCV checkpoint: its row first, then its in-memory timer; returns its id."""
        timer_id = checkpoint_job_id(cabinet, run_id, step_index, k)
        due_unix_s = self.wall_time(at_clock_s).timestamp()
        row = {"id": timer_id, "kind": OCV_CHECKPOINT, "cabinet": cabinet, "job_id": job_id, "run_id": run_id}
        row |= {"step_index": step_index, "k": k, "due_unix_s": due_unix_s}
        with self.engine.begin() as conn:
            conn.execute(delete(TIMERS).where(TIMERS.c.id == timer_id))
            conn.execute(insert(TIMERS).values(**row))
        self._add(timer_id, cabinet, job_id, run_id, step_index, k, due_unix_s)
        return timer_id

    def pending(self) -> list[str]:
        """Ids of the timers still to fire."""
        return [j.id for j in self.scheduler.get_jobs()]

    def _add(self, timer_id: str, cabinet: str, job_id: int, run_id: int, step_index: int, k: int, due: float) -> None:
        self.scheduler.add_job(
            self._fire,
            "date",
            run_date=datetime.fromtimestamp(due, UTC),
            args=[timer_id, cabinet, job_id, run_id, step_index, k],
            id=timer_id,
            name=f"OCV checkpoint {k} of run {run_id}",
            replace_existing=True,
        )

    async def _fire(self, timer_id: str, cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(TIMERS).where(TIMERS.c.id == timer_id))
        except Exception:  # a database that refuses the delete fires the checkpoint anyway (it may fire again)
            log.exception("timer %s: its row could not be deleted", timer_id)
        deliver_checkpoint(cabinet, job_id, run_id, step_index, k)
