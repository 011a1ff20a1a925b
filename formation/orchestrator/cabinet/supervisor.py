"""CabinetSupervisor: runs one recipe on a set of channels of one cabinet, polling it in batch.

One poll cycle is a status query over the whole channel list, a data-log drain (one block per 100 000 records),
one batched sample write, and per-run work only for the few records that start or end a step. Runs advance on
their own: cells finish steps at different times, and each next step is started in groups of identical programs.

The supervisor composes small parts, each testable alone: :class:`RunIndex` (runs and the hot path's arrays),
:class:`LogDrain` (the data-log cursor and the sample writer), :class:`StepStarter` (starts and their
confirmation), :class:`SafetyGuard` (host checks, aborts, fault policy), :class:`CheckpointBook` (age-step OCV
checkpoints) and :class:`JobLedger` (journal, step results, alarms), plus the resume helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from formation.clock import Clock
from formation.errors import InputError, InstrumentError, TransportError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import LOG_COL, CellState, EndCode
from formation.orchestrator.cabinet import resume
from formation.orchestrator.cabinet.checkpoints import CheckpointBook
from formation.orchestrator.cabinet.clocksync import measure_offset_s
from formation.orchestrator.cabinet.drain import LogDrain
from formation.orchestrator.cabinet.hostends import HoldDesk, fault_host_step_timeout, host_ends_due
from formation.orchestrator.cabinet.index import RunIndex
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.cabinet.outcome import job_end_state, next_step
from formation.orchestrator.cabinet.pacing import PollPacer
from formation.orchestrator.cabinet.safety import SafetyGuard, runs_on
from formation.orchestrator.cabinet.starts import StepStarter
from formation.orchestrator.cabinet.temperature import ChamberGate, ChamberPort
from formation.orchestrator.cabinet.watchdog import resume_after_watchdog
from formation.orchestrator.compile import CompiledStep, compile_step
from formation.orchestrator.feed_hooks import CabinetFeed
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ChannelRun
from formation.orchestrator.timebase import event_anchor_s
from formation.orchestrator.timers import LineTimers
from formation.orchestrator.writer import SampleWriter
from formation.recipes import Recipe
from formation.states import JobState, RunState
from formation.store import Store
from formation.store.records import StepResultRecord

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink

log = logging.getLogger(__name__)

#: Wall seconds the end of a job waits for the sample writer before leaving the rest on the instrument.
FLUSH_TIMEOUT_S = 60.0
#: The poll period never drops below this much wall time, whatever the clock scale.
MIN_POLL_WALL_S = 0.05


@dataclass(frozen=True)
class PollStats:
    """What one poll cycle did (for progress displays and benchmarks)."""

    records: int
    step_ends: int
    wall_s: float
    #: Wall seconds the poll started after its due time in ``run_until_done`` (0 for a poll called directly).
    late_s: float = 0.0


class CabinetSupervisor:
    """Supervises one job (one recipe on many channels) on one cabinet; an async context manager."""

    def __init__(
        self,
        name: str,
        cycler: Bt2200Cycler,
        store: Store,
        clock: Clock,
        *,
        poll_interval_s: float = 2.0,
        watchdog_s: float = 30.0,
        n_channels: int = 256,
        timers: LineTimers | None = None,
        chamber: ChamberPort | None = None,
        feed: FeedSink | None = None,
    ) -> None:
        self.name = name
        self.cycler = cycler
        self.store = store
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.watchdog_s = watchdog_s
        self.job_id: int | None = None
        self.recipe: Recipe | None = None
        self.index = RunIndex(n_channels)
        self.ledger = JobLedger(store, clock, name, committed_rec=lambda: self.drain.committed_rec)
        self.drain = LogDrain(cycler, store, self.ledger, name)
        self.starter = StepStarter(cycler)
        self.safety = SafetyGuard(name, cycler, self.ledger, watchdog_s=watchdog_s)
        self.checkpoints = CheckpointBook(name, cycler, clock, timers)
        self.gate = ChamberGate(chamber, clock)
        self.holds = HoldDesk(store, clock, self.ledger)
        #: The status feed of this cabinet (None: no feed, every hook a no-op).
        self.feed = CabinetFeed(feed, name, n_channels) if feed is not None else None
        self.ledger.feed = self.feed
        #: Instrument clock − host clock, measured at connect (None: the instrument does not tell its time).
        self.clock_offset_s: float | None = None
        #: The pace of ``run_until_done`` (its ``missed`` polls started more than one interval late); None before.
        self.pacer: PollPacer | None = None
        self._compiled: dict[tuple[int, float], CompiledStep] = {}  # of self.recipe, emptied when it is set
        self._stop = asyncio.Event()

    # -- what displays and callers read ------------------------------------------------------------------
    @property
    def runs(self) -> list[ChannelRun]:
        """The job's runs, in launch order."""
        return self.index.runs

    @property
    def comm_ok(self) -> bool:
        """Whether the last poll reached the cabinet."""
        return self.safety.comm_ok

    @property
    def records_total(self) -> int:
        """Data-log records drained so far."""
        return self.drain.records_total

    @property
    def writer(self) -> SampleWriter | None:
        """The sample writer (None before launch or re-attach)."""
        return self.drain.writer

    @property
    def finished(self) -> bool:
        """True when every run has reached a terminal state."""
        # Unconfirmed aborts keep the job open while the instrument answers, and for a while after the link went
        # (should it come back, the aborts go out and the log is drained); with the link gone for good the job
        # closes (faulted, with the alarm naming it) instead of polling forever.
        return (
            bool(self.runs)
            and all(r.terminal for r in self.runs)
            and (not self.safety.must_abort or self.safety.link_given_up())
        )

    async def __aenter__(self) -> CabinetSupervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self.checkpoints.detach()
        await self.drain.close(timeout_s=FLUSH_TIMEOUT_S)

    # -- launch and re-attach -----------------------------------------------------------------------------
    async def launch(
        self, recipe: Recipe, assignments: Sequence[tuple[int, CellEntry]], note: str | None = None
    ) -> int:
        """Record the job and its runs, define the cells and start every channel on the recipe's first step."""
        job_id, run_ids = await asyncio.to_thread(self.ledger.record_launch, recipe, assignments, note)
        runs = [
            ChannelRun(rid, cell.cell_id, cell.lot, ch, cell.nominal_capacity_ah, recipe)
            for rid, (ch, cell) in zip(run_ids, assignments, strict=True)
        ]
        return await self._start(job_id, recipe, runs)

    async def start_queued(self, job_id: int) -> int:
        """Start a job that `formation run launch` recorded and a daemon claimed: runs stored, nothing started."""
        restored = await asyncio.to_thread(resume.restore_job, self.store, job_id)
        if restored.cabinet != self.name:
            raise InputError("job", f"job {job_id} is for cabinet {restored.cabinet}, not {self.name}")
        return await self._start(job_id, restored.recipe, restored.runs)

    async def _start(self, job_id: int, recipe: Recipe, runs: list[ChannelRun]) -> int:
        channels = [run.channel for run in runs]
        self.recipe = recipe
        self._compiled.clear()
        self.job_id = self.ledger.job_id = job_id
        self.index.set_runs(runs)
        self.checkpoints.attach(job_id)
        self.clock_offset_s = await measure_offset_s(self.cycler, self.clock, self.name)
        await self.cycler.clear_status()
        await self.cycler.set_watchdog(self.watchdog_s)
        await self.cycler.define_cells(channels)
        # Records from before this job are not ours: start draining at the instrument's next record.
        self.drain.open(await self.cycler.log_next_rec() - 1)
        for run in self.runs:
            self._begin_step(run, 0)
        # A failed first start propagates: the launcher switches off whatever may have started and gives up.
        await self.ledger.journal(await self.starter.start_pending(self.runs, may_start=self.gate.may_start))
        if self.feed is not None:
            self.feed.observe(self.runs, job_id, force=True)
        return job_id

    async def reattach(self, job_id: int) -> int:
        """Take over a job a previous host process left running: its cells kept running on the instrument.

        Draining resumes after the last record in the store (nothing lost, nothing stored twice); a step whose
        start is not proven by its records is UNSURE and checked against the instrument before it is started, so
        no charge is repeated; the sequences the old process downloaded are never overwritten.
        """
        restored = await asyncio.to_thread(resume.restore_job, self.store, job_id)
        if restored.cabinet != self.name:
            raise InputError("job", f"job {job_id} ran on cabinet {restored.cabinet}, not {self.name}")
        self.job_id = self.ledger.job_id = job_id
        self.recipe = restored.recipe
        self._compiled.clear()
        self.index.set_runs(restored.runs)
        self.checkpoints.attach(job_id)  # checkpoints that fired meanwhile are delivered now
        self.clock_offset_s = await measure_offset_s(self.cycler, self.clock, self.name)
        resume.anchor_started_steps(self.runs, self.clock_offset_s)  # before any late checkpoint is read
        channels = [r.channel for r in self.runs]
        seqs, _ = await self.cycler.step_positions(channels)
        self.cycler.reserve_sequences(sorted({int(s) for s in seqs.tolist()}))
        await self.cycler.set_watchdog(self.watchdog_s)
        pending = [r.channel for r in self.runs if r.state is RunState.PENDING]
        if pending:
            await self.cycler.define_cells(pending)  # the old host may have died before defining them
        if restored.committed_rec is None:
            # No sample stored yet: the journal's cursor (set at launch), else nothing was started.
            self.drain.open(restored.journal_rec or await self.cycler.log_next_rec() - 1)
        else:
            self.drain.open(restored.committed_rec)
        # Status before the drain: a step the instrument shows ended then has its end record either still on the
        # instrument (the drain processes it) or stored by the old host but never processed (settled here).
        status = await self.cycler.status(channels)
        before = {r.run_id: (r.step_index, r.start) for r in self.runs}
        records, last_read = await self.drain.read()
        await self._ingest(records, last_read)
        unchanged = np.array([before[r.run_id] == (r.step_index, r.start) for r in self.runs])
        # Steps that ended while no host processed their end (the old host stored the end record, then died).
        ended, results = await resume.settle_unprocessed_ends(
            self.runs, np.where(unchanged, status, CellState.RUNNING), self.store, self.cycler, self._apply_end
        )
        if results:
            await self.ledger.save_results(results)
            await self.ledger.journal(ended)
        await asyncio.to_thread(self.store.set_job_state, job_id, JobState.RUNNING)
        await self.ledger.alarm("info", "reattached", f"job {job_id} re-attached on cabinet {self.name}")
        await self.ledger.journal([r for r in self.runs if not r.terminal])
        if self.feed is not None:
            self.feed.observe(self.runs, job_id, force=True)
        return job_id

    # -- poll cycle ----------------------------------------------------------------------------------------
    async def poll_once(self) -> PollStats:
        """One cycle: status, data-log drain, sample write, step transitions, host checks, next starts."""
        t0 = time.perf_counter()
        await self.ledger.retry()
        active = [r for r in self.runs if not r.terminal]
        pending_aborts = sorted(self.safety.must_abort)
        if not active and not pending_aborts:
            return PollStats(0, 0, 0.0)
        try:
            status_all = await self.cycler.status([r.channel for r in active] + pending_aborts)
            records, last_read = await self.drain.read()
        except InstrumentError as exc:
            if isinstance(exc, TransportError):
                await self.safety.comm_lost(exc, self.runs)
            else:
                await self.safety.bad_reply(exc, self.runs)
            return PollStats(0, 0, time.perf_counter() - t0)
        await self.safety.reply_ok(self.runs)
        status = status_all[: len(active)]
        await self.safety.retry_aborts(dict(zip(pending_aborts, status_all[len(active) :].tolist(), strict=True)))
        step_ends = await self._ingest(records, last_read)
        await self.safety.check_status(active, status)
        if self.checkpoints.any_due:
            try:
                await self.checkpoints.measure_due(self.index)
            except InstrumentError as exc:
                # The age step's K falls back to the logged OCV for a checkpoint that could not be read.
                await self.ledger.alarm("warning", "checkpoint_failed", f"OCV checkpoint not measured: {exc}")
        await self.safety.settle_aborting(active, status)
        self.gate.pause_k_clocks(self.runs)
        await self._host_ends(active, status)
        await self._run_host_steps()
        await self._start_pending()
        if self.feed is not None:
            self.feed.observe(self.runs, self.job_id)
        return PollStats(len(records), step_ends, time.perf_counter() - t0)

    async def _host_ends(self, active: list[ChannelRun], status: np.ndarray) -> None:
        """End the steps the host judges over from the log (a rest's dV/dt, a wait's temperature): abort the
        resting channel; its abort record then ends the step with the host's reason."""
        due = host_ends_due(active, status)
        if not due:
            return
        try:
            await self.cycler.abort([r.channel for r in due])
        except InstrumentError as exc:
            await self.ledger.alarm("warning", "host_end_failed", f"ending judged steps failed (retried): {exc}")
        await self.ledger.journal(due)

    async def _run_host_steps(self) -> None:
        """Finish the chamber and hold steps that are over; a chamber that never settled, or a hold nobody
        continued, faults its runs."""
        live = [r for r in self.runs if r.state is not RunState.ABORTING]
        due = self.gate.host_steps_due(live) + await self.holds.due(live, self.job_id)
        if not due:
            return
        results = [run.finish_host_step(self.clock.now(), reason) for run, reason in due]
        for run, reason in due:
            if reason == "timeout":
                await fault_host_step_timeout(run, self.ledger)
            else:
                await self._advance(run, EndCode.TIME)
        await self.ledger.save_results(results)
        await self.ledger.journal([run for run, _ in due])

    async def _start_pending(self) -> None:
        """Start the steps that are due; a failed start is resolved (never blindly repeated) next poll."""
        try:
            touched = await self.starter.start_pending(
                self.runs, drained=self.drain.read_to_end, may_start=self.gate.may_start
            )
        except InstrumentError as exc:
            await self.safety.start_failed(exc, self.runs)
            return
        self.safety.refused_starts = 0
        await self.ledger.journal(touched)

    async def _ingest(self, records: np.ndarray, last_read: int) -> int:
        """Store the records as samples, then apply their step starts and ends, then the host checks."""
        if not len(records):
            return 0
        records, idx = self.index.locate(records)
        await self.drain.hand_off(self.index.samples(records, idx), last_read)
        if not len(records):
            return 0
        self.index.note_latest(records, idx)
        self.index.capture(records, idx)
        self._apply_starts(records, idx)
        ends = np.nonzero(records[:, LOG_COL["end"]] != 0)[0]
        results: list[StepResultRecord] = []
        changed: list[ChannelRun] = []
        for pos in ends:
            run = self.runs[idx[pos]]
            if run.terminal:
                # e.g. the abort record of a channel the host check already faulted: data kept, state final.
                continue
            result = await self._apply_end(run, EndRecord.from_log_row(records[pos]))
            if result is not None:
                results.append(result)
                changed.append(run)
        if results:
            # Samples, then results, then journal: a host that dies in between never leaves a journal ahead of
            # the stored records (a re-attached host would tag them with the wrong step).
            await self.drain.flush()
            await self.ledger.save_results(results)
        assert self.recipe is not None
        await self.safety.host_checks(self.recipe, self.runs, records, idx)
        if changed:
            await self.ledger.journal(changed)
        return len(ends)

    def _apply_starts(self, records: np.ndarray, idx: np.ndarray) -> None:
        """Start records (step time 0 on a sequence's first step): account, confirm, anchor, schedule.

        Steps that started under a previous host (re-attach) are anchored at the first records drained after it,
        the same way: the newest drained record stands for the instrument's "now".
        """
        latest_s = float(records[:, LOG_COL["time_s"]].max())
        now = self.clock.now()
        starts = np.nonzero((records[:, LOG_COL["step_time_s"]] == 0) & (records[:, LOG_COL["step"]] == 1))[0]
        for pos in starts:
            run = self.runs[idx[pos]]
            event_s = float(records[pos, LOG_COL["time_s"]])
            first = run.note_start(event_s, float(records[pos, LOG_COL["voltage_v"]]))
            self.starter.start_record(run, int(records[pos, LOG_COL["seq"]]))
            if not first:
                continue  # what is left of a step restarted after the watchdog: anchored at the step's start
            run.step_t0_host_s = event_anchor_s(self.clock_offset_s, now, latest_s, event_s)
            if run.step is not None and run.step.kind == "age":
                self.checkpoints.schedule(run)
        for i in np.unique(idx):
            run = self.runs[i]
            if run.step_t0_host_s is None and run.account.started_s is not None and not run.terminal:
                run.step_t0_host_s = event_anchor_s(self.clock_offset_s, now, latest_s, run.account.started_s)

    async def _apply_end(self, run: ChannelRun, end: EndRecord) -> StepResultRecord | None:
        """Account an end record; when the recipe step is over, move the run on. Returns its step result."""
        if await resume_after_watchdog(run, end, self.ledger, self.drain.flush):
            return None  # the recipe asks for the rest of the step after a watchdog stop: started next poll
        result = run.note_end(end)
        if result is not None:
            await self._advance(run, end.end_code)
        return result

    def _begin_step(self, run: ChannelRun, index: int) -> None:
        """Point a run at step ``index`` and keep the per-run arrays the hot path reads in step."""
        assert self.recipe is not None
        # A compiled step depends only on the step and the cell's nominal capacity: compiled once per job for the
        # channels that end a step together (256 at a time on a cabinet), not once per channel.
        key = (index, run.nominal_capacity_ah)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_step(
                self.recipe.steps[index], self.recipe, run.nominal_capacity_ah
            )
        run.begin_step(index, compiled)
        self.index.step_changed(run)

    async def _advance(self, run: ChannelRun, code: int) -> None:
        """After a recipe step ended: next step, done, or the fault/abort it ended with."""
        assert self.recipe is not None
        nxt = await next_step(run, code, len(self.recipe.steps), self.ledger)
        if nxt is not None:
            self._begin_step(run, nxt)

    # -- control ---------------------------------------------------------------------------------------------
    async def abort(self, channels: Sequence[int] | None = None) -> None:
        """Abort the given channels (all of the job's by default): output off on the instrument at once."""
        await self.safety.abort_runs(runs_on(self.runs, channels))

    async def run_until_done(
        self, on_cycle: Callable[[PollStats], None] | None = None, *, phase: float | None = None
    ) -> None:
        """Poll until every run is terminal (or ``stop()``), then close the job in the store.

        ``phase`` (0-1) puts the polls at that fraction of the interval on a grid shared by every supervisor of the
        event loop, so the cabinets of one process take turns instead of polling together; None polls at once.
        """
        loop_wall = max(self.poll_interval_s / self.clock.scale, MIN_POLL_WALL_S)
        # A fixed rate: a 1 s poll stays 1 s however long a poll takes (wall time, the event loop's clock).
        loop = asyncio.get_running_loop()
        self.pacer = pacer = PollPacer.starting(loop.time(), loop_wall, phase)
        while not self.finished and not self._stop.is_set():
            wait_s = pacer.wait_s(loop.time())
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=wait_s)
                if self._stop.is_set():
                    break
            late_s = pacer.begin(loop.time())
            if await self.safety.abort_requested_from_outside(self.store, self.job_id):
                try:
                    await self.abort()
                except InstrumentError as exc:
                    await self.ledger.alarm("critical", "abort_failed", f"requested abort failed: {exc}")
            stats = replace(await self.poll_once(), late_s=late_s)
            if on_cycle is not None:
                on_cycle(stats)
            if self.finished:
                break
            pacer.done()
        await self._final_drain()
        await self.close_job()

    async def _final_drain(self) -> None:
        """Store what the instrument logged after the last step ended (e.g. the end records of aborted cells)."""
        if self.drain.writer is None:
            return
        try:
            records, last_read = await self.drain.read()
        except InstrumentError as exc:
            await self.ledger.alarm("warning", "final_drain_failed", f"last records left on the instrument: {exc}")
            return
        await self.safety.reply_ok(self.runs)
        await self._ingest(records, last_read)

    def stop(self) -> None:
        """Ask ``run_until_done`` to return after the current cycle."""
        self._stop.set()

    async def close_job(self) -> None:
        """Write the job's final state."""
        if self.job_id is None:
            return
        try:
            await asyncio.wait_for(self.drain.flush(), FLUSH_TIMEOUT_S)
        except TimeoutError:
            # The database is down: what is not committed stays on the instrument, unacknowledged.
            log.error(
                "sample writer did not finish within %s s; uncommitted records stay on the instrument", FLUSH_TIMEOUT_S
            )
        await self.ledger.retry()
        state = job_end_state(self.runs)
        await self.ledger.finish_job(state)
        if self.feed is not None:
            self.feed.job_end(self.job_id, state, self.runs)
