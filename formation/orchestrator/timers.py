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
#: The kinds of timer: an age step's OCV checkpoint (a cabinet's run), and an ageing plan's checkpoint (a rack:
#: ``cabinet`` holds the rack, ``job_id`` the ageing job, ``step_index`` the stage, ``k`` the checkpoint).
OCV_CHECKPOINT = "ocv_checkpoint"
AGEING_CHECKPOINT = "ageing_checkpoint"
KINDS = frozenset({OCV_CHECKPOINT, AGEING_CHECKPOINT})

#: What is due, as plain data: the store's ``line_timers`` table, made and migrated with the rest of the schema.
TIMERS: Table = LineTimer.__table__  # type: ignore[attr-defined]


class CheckpointTarget(Protocol):
    """What a fired checkpoint calls: the supervisor of the cabinet the run is on."""

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None: ...


class AgeingTarget(Protocol):
    """What a fired ageing checkpoint calls: the runner of the rack's ageing job."""

    def on_ageing_checkpoint(self, job_id: int, stage: int, k: int) -> None: ...


_TARGETS: dict[str, CheckpointTarget] = {}
#: Checkpoints that fired with no live target yet (a restarted host before it re-attached), delivered on register.
_UNDELIVERED: dict[str, list[tuple[int, int, int, int]]] = {}
_AGEING_TARGETS: dict[str, AgeingTarget] = {}
_AGEING_UNDELIVERED: dict[str, list[tuple[int, int, int]]] = {}


def deliver_checkpoint(cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> None:
    """Hand a fired checkpoint to the cabinet's live supervisor, or keep it for the next one that registers."""
    target = _TARGETS.get(cabinet)
    if target is None:
        log.info("checkpoint %s/run %s/k %s fired with no supervisor attached; kept for it", cabinet, run_id, k)
        _UNDELIVERED.setdefault(cabinet, []).append((job_id, run_id, step_index, k))
        return
    target.on_checkpoint(job_id, run_id, step_index, k)


def deliver_ageing_checkpoint(rack: str, job_id: int, stage: int, k: int) -> None:
    """Hand a fired ageing checkpoint to the rack's live runner, or keep it for the next one that registers."""
    target = _AGEING_TARGETS.get(rack)
    if target is None:
        log.info("ageing checkpoint %s/job %s/k %s fired with no runner attached; kept for it", rack, job_id, k)
        _AGEING_UNDELIVERED.setdefault(rack, []).append((job_id, stage, k))
        return
    target.on_ageing_checkpoint(job_id, stage, k)


def checkpoint_job_id(cabinet: str, run_id: int, step_index: int, k: int) -> str:
    """The explicit id of one checkpoint timer (scheduling it again replaces it)."""
    return f"ocv:{cabinet}:{run_id}:{step_index}:{k}"


def ageing_timer_id(rack: str, job_id: int, k: int) -> str:
    """The explicit id of one ageing checkpoint timer."""
    return f"age:{rack}:{job_id}:{k}"


def _timer_id(kind: str, cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> str:
    if kind == AGEING_CHECKPOINT:
        return ageing_timer_id(cabinet, job_id, k)
    return checkpoint_job_id(cabinet, run_id, step_index, k)


def _row_problem(row: Any) -> str | None:
    """Why a stored row cannot be a timer, or None: it is data from the database, checked like any input."""
    if row.kind not in KINDS:
        return f"unknown kind {str(row.kind)[:40]!r}"
    ints = (row.job_id, row.run_id, row.step_index, row.k)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not isinstance(row.cabinet, str):
        return "keys of the wrong type"
    if not isinstance(row.due_unix_s, float | int) or row.due_unix_s != row.due_unix_s:
        return "no due time"
    if row.id != _timer_id(row.kind, row.cabinet, row.job_id, row.run_id, row.step_index, row.k):
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
            if row.kind == AGEING_CHECKPOINT:
                self._add_ageing(row.id, row.cabinet, row.job_id, row.step_index, row.k, row.due_unix_s)
            else:
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

    def register_ageing(self, rack: str, target: AgeingTarget) -> None:
        """Route this rack's ageing checkpoints to ``target``, delivering any that fired while none was attached."""
        _AGEING_TARGETS[rack] = target
        for args in _AGEING_UNDELIVERED.pop(rack, []):
            target.on_ageing_checkpoint(*args)

    def unregister_ageing(self, rack: str, target: AgeingTarget) -> None:
        """Stop routing the rack's ageing checkpoints to ``target`` (only if it is still the registered one)."""
        if _AGEING_TARGETS.get(rack) is target:
            del _AGEING_TARGETS[rack]

    def schedule_ageing_checkpoints(self, rack: str, job_id: int, due: list[tuple[int, int, float]]) -> list[str]:
        """Schedule an ageing job's checkpoints ((stage, k, clock seconds) each): rows first, then timers."""
        rows = store_ageing_timers(self.engine, self.clock, rack, job_id, due)
        for row in rows:
            self._add_ageing(row["id"], rack, job_id, row["step_index"], row["k"], row["due_unix_s"])
        return [row["id"] for row in rows]

    def cancel_ageing(self, rack: str, job_id: int) -> None:
        """Drop every pending timer of an ageing job (rows and in-memory timers): it was aborted."""
        prefix = ageing_timer_id(rack, job_id, 0)[:-1]
        with self.engine.begin() as conn:
            conn.execute(
                delete(TIMERS).where(
                    TIMERS.c.kind == AGEING_CHECKPOINT, TIMERS.c.id.startswith(prefix, autoescape=True)
                )
            )
        for job in self.scheduler.get_jobs():
            if job.id.startswith(prefix):
                job.remove()

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

    def _add_ageing(self, timer_id: str, rack: str, job_id: int, stage: int, k: int, due: float) -> None:
        self.scheduler.add_job(
            self._fire_ageing,
            "date",
            run_date=datetime.fromtimestamp(due, UTC),
            args=[timer_id, rack, job_id, stage, k],
            id=timer_id,
            name=f"ageing checkpoint {k} of job {job_id}",
            replace_existing=True,
        )

    async def _fire_ageing(self, timer_id: str, rack: str, job_id: int, stage: int, k: int) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(TIMERS).where(TIMERS.c.id == timer_id))
        except Exception:  # as for OCV checkpoints: it fires anyway (and may fire again after a restart)
            log.exception("timer %s: its row could not be deleted", timer_id)
        deliver_ageing_checkpoint(rack, job_id, stage, k)

    async def _fire(self, timer_id: str, cabinet: str, job_id: int, run_id: int, step_index: int, k: int) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(TIMERS).where(TIMERS.c.id == timer_id))
        except Exception:  # a database that refuses the delete fires the checkpoint anyway (it may fire again)
            log.exception("timer %s: its row could not be deleted", timer_id)
        deliver_checkpoint(cabinet, job_id, run_id, step_index, k)


def store_ageing_timers(
    engine: Any, clock: Clock, rack: str, job_id: int, due: list[tuple[int, int, float]]
) -> list[dict[str, Any]]:
    """Write the rows of an ageing job's checkpoints ((stage, k, clock seconds) each) in one transaction, without a
    scheduler (``formation age start`` queueing a job for the daemon); the rows written."""
    now_clock_s, now_wall = clock.now(), datetime.now(UTC)
    rows = [
        {
            "id": ageing_timer_id(rack, job_id, k),
            "kind": AGEING_CHECKPOINT,
            "cabinet": rack,
            "job_id": job_id,
            "run_id": 0,
            "step_index": stage,
            "k": k,
            "due_unix_s": (now_wall + timedelta(seconds=(at_s - now_clock_s) / clock.scale)).timestamp(),
        }
        for stage, k, at_s in due
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(delete(TIMERS).where(TIMERS.c.id.in_([r["id"] for r in rows])))
            conn.execute(insert(TIMERS), rows)
    return rows
