"""JobLedger: what a supervisor writes to the store besides samples — run journal, step results, alarms.

A database that is locked or down must not stop supervision: whatever it refuses is kept and retried on the
next poll, and an alarm that cannot be stored is logged at once and stored later with the time it was raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from formation.clock import Clock
from formation.errors import StoreError
from formation.instruments.program import channel_to_cell_id
from formation.orchestrator.inputs import CellEntry, format_channel_list
from formation.orchestrator.run import ChannelRun
from formation.recipes import Recipe
from formation.states import JobState, RunState
from formation.store import Store
from formation.store.records import StepResultRecord

if TYPE_CHECKING:
    from formation.orchestrator.feed_hooks import CabinetFeed

log = logging.getLogger(__name__)

#: Alarms kept for a database that is away; past this many the oldest are dropped (they are in the log).
MAX_UNSTORED_ALARMS = 10_000


class JobLedger:
    """The store bookkeeping of one job on one cabinet, tolerant of a database that refuses writes."""

    def __init__(self, store: Store, clock: Clock, cabinet: str, *, committed_rec: Callable[[], int]) -> None:
        self.store = store
        self.clock = clock
        self.cabinet = cabinet
        self.job_id: int | None = None
        self.alarms_raised = 0
        self._committed_rec = committed_rec
        self._unsaved_results: list[StepResultRecord] = []
        self._unjournalled: dict[int, ChannelRun] = {}
        self._unstored_alarms: list[dict[str, Any]] = []
        #: Where alarms are published besides the store (None: nowhere).
        self.feed: CabinetFeed | None = None

    @property
    def pending(self) -> int:
        """Step results, journal entries and alarms waiting for the database."""
        return len(self._unsaved_results) + len(self._unjournalled) + len(self._unstored_alarms)

    async def retry(self) -> None:
        """Write step results, journal entries and alarms that the database refused earlier."""
        if self._unsaved_results:
            await self.save_results([])
        if self._unjournalled:
            await self.journal(list(self._unjournalled.values()))
        while self._unstored_alarms:
            try:
                await asyncio.to_thread(self._store_alarm, self._unstored_alarms[0])
            except StoreError:
                return
            self._unstored_alarms.pop(0)

    async def save_results(self, results: list[StepResultRecord]) -> None:
        """Store step results (insert-or-ignore per run and step), keeping them for a retry if refused."""
        self._unsaved_results.extend(results)
        if not self._unsaved_results:
            return
        try:
            await asyncio.to_thread(self.store.add_step_results, [r.to_row() for r in self._unsaved_results])
        except StoreError as exc:
            log.warning("step results not saved yet (%d pending): %s", len(self._unsaved_results), exc)
            if len(self._unsaved_results) > 1:
                await self._save_one_by_one()
            return
        self._unsaved_results = []

    async def _save_one_by_one(self) -> None:
        """One row the database refuses for good must not hold back the others."""
        still: list[StepResultRecord] = []
        for row in self._unsaved_results:
            try:
                await asyncio.to_thread(self.store.add_step_results, [row.to_row()])
            except StoreError:
                still.append(row)
        self._unsaved_results = still

    async def journal(self, runs: Sequence[ChannelRun]) -> None:
        """Write the runs' state and resume points; kept and retried next poll if the database refuses."""
        if not runs:
            return
        now = self.clock.now()
        committed = self._committed_rec()
        updates = [
            {
                "id": r.run_id,
                "state": r.state.value,
                "step_index": r.step_index,
                "step_id": r.step.id if r.step is not None else None,
                "seq_id": r.seq_id,
                "step_started_s": r.account.started_s,
                "journal": r.journal(),
                "last_rec": committed,
                "ended_s": now if r.terminal else None,
                "end_reason": r.end_reason,
            }
            for r in runs
        ]
        try:
            await asyncio.to_thread(self.store.update_runs, updates)
        except StoreError as exc:
            log.warning("run journal not saved yet: %s", exc)
            self._unjournalled.update({r.run_id: r for r in runs})
            return
        for r in runs:
            self._unjournalled.pop(r.run_id, None)

    async def alarm(self, severity: str, code: str, message: str, run: ChannelRun | None = None) -> None:
        """Log and store an alarm; control goes on without the database if it refuses."""
        self.alarms_raised += 1
        log.log(logging.WARNING if severity != "info" else logging.INFO, "%s: %s", code, message)
        if self.feed is not None:  # first: a database that hangs must not hold the alarm back from the displays
            self.feed.alarm(severity, code, message, run, self.job_id)
        row: dict[str, Any] = {
            "ts_s": self.clock.now(),
            "severity": severity,
            "code": code,
            "message": message,
            "cabinet": self.cabinet,
            "channel": run.channel if run else None,
            "run_id": run.run_id if run else None,
            "job_id": self.job_id,
        }
        try:
            await asyncio.to_thread(self._store_alarm, row)
        except StoreError as exc:
            log.error("alarm not stored yet (%d waiting): %s", len(self._unstored_alarms) + 1, exc)
            self._unstored_alarms.append(row)
            del self._unstored_alarms[:-MAX_UNSTORED_ALARMS]

    def _store_alarm(self, row: dict[str, Any]) -> None:
        self.store.add_alarm(**row)

    def record_launch(
        self,
        recipe: Recipe,
        assignments: Sequence[tuple[int, CellEntry]],
        note: str | None,
        state: JobState = JobState.RUNNING,
    ) -> tuple[int, list[int]]:
        """Store the lot, cells, recipe, job (``state``: running, or queued for a daemon) and its pending runs."""
        now = self.clock.now()
        self.store.upsert_lot_and_cells((c.cell_id, c.lot, c.nominal_capacity_ah) for _, c in assignments)
        self.store.save_recipe(
            recipe.sha256,
            recipe.name,
            recipe.version,
            recipe.chemistry,
            recipe.nominal_capacity_ah,
            recipe.canonical_json(),
            recipe.source_text,
        )
        channels = format_channel_list([ch for ch, _ in assignments])
        job_id = self.store.create_job(
            recipe.sha256, self.cabinet, channels, self.clock.scale, now, note=note, state=state
        )
        run_ids = self.store.create_runs(
            job_id,
            [
                {
                    "cell_id": cell.cell_id,
                    "cabinet": self.cabinet,
                    "channel": ch,
                    "instrument_cell": channel_to_cell_id(ch),
                    "state": RunState.PENDING.value,
                    "step_index": 0,
                    "journal": "{}",
                    "last_rec": 0,
                    "started_s": now,
                }
                for ch, cell in assignments
            ],
        )
        return job_id, run_ids

    async def finish_job(self, state: JobState) -> None:
        """Write the job's final state and end time."""
        if self.job_id is None:
            return
        try:
            await asyncio.to_thread(self.store.finish_job, self.job_id, state, self.clock.now())
        except StoreError as exc:
            log.error("could not record the end of job %s: %s", self.job_id, exc)
