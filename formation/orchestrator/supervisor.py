"""CabinetSupervisor: runs one recipe on a set of channels of one cabinet, polling it in batch.

One poll cycle is a status query over the whole channel list, a data-log drain (one block per 100 000 records),
one batched sample write, and per-run work only for the few records that end a step. Runs advance on their own:
cells finish steps at different times, and each next step is started in groups of identical programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from formation.clock import Clock
from formation.errors import InputError, InstrumentError, TransportError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import (
    LOG_COL,
    CellState,
    EndCode,
    StepProgram,
    channel_to_cell_id,
)
from formation.orchestrator.compile import LIMIT_MARGIN_V, compile_step
from formation.orchestrator.faults import FaultHandling
from formation.orchestrator.inputs import CellEntry, format_channel_list
from formation.orchestrator.ledger import JobLedger
from formation.orchestrator.reattach import restore_job
from formation.orchestrator.run import ChannelRun, RunState
from formation.orchestrator.timers import LineTimers
from formation.orchestrator.writer import QUEUE_BLOCKS, SampleWriter
from formation.recipes import Recipe
from formation.store import Store

log = logging.getLogger(__name__)

#: Records drained per DATA:LOG? query; a backlog is drained in several queries within one cycle.
LOG_BLOCK_ROWS = 100_000
#: Wall seconds the end of a job waits for the sample writer before leaving the rest on the instrument.
FLUSH_TIMEOUT_S = 60.0
#: The poll period never drops below this much wall time, whatever the clock scale.
MIN_POLL_WALL_S = 0.05

_SAMPLE_SOURCE = ("rec", "time_s", "step_time_s", "voltage_v", "current_a", "step_ah", "temp_c")


@dataclass(frozen=True)
class PollStats:
    """What one poll cycle did (for progress displays and benchmarks)."""

    records: int
    step_ends: int
    wall_s: float


class CabinetSupervisor(FaultHandling):
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
    ) -> None:
        self.name = name
        self.cycler = cycler
        self.store = store
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.watchdog_s = watchdog_s
        self.n_channels = n_channels
        self.job_id: int | None = None
        self.recipe: Recipe | None = None
        self.runs: list[ChannelRun] = []
        self.read_rec = 0
        self.writer: SampleWriter | None = None
        self.comm_ok = True
        self.bad_polls = 0
        self.records_total = 0
        self._run_by_cell = np.full(n_channels + 1001, -1, dtype=np.int64)
        # Per-run arrays read by the hot path, kept in step by _begin_step (no per-poll Python loop over runs).
        self._index_of: dict[int, int] = {}
        self._run_ids = np.empty(0)
        self._step_idx = np.empty(0)
        self._needs_records = np.empty(0, dtype=bool)
        self._stop = asyncio.Event()
        #: Channels whose safety abort has not been confirmed yet: re-sent every poll until they are off.
        self._must_abort: set[int] = set()
        self.ledger = JobLedger(store, clock, name, committed_rec=self._committed_rec)
        self._comm_lost_since: float | None = None
        self._backlog_alarmed = False
        self._abort_requested = False
        self._start_waited: set[int] = set()
        # A link down this long (wall time) means the host can no longer vouch for its cells.
        self.lost_fault_s = 3.0 * watchdog_s if watchdog_s > 0 else 120.0
        self.timers = timers
        self._due_checkpoints: list[tuple[int, int, int]] = []

    def _committed_rec(self) -> int:
        """The last data-log record committed to the store (the resume point written with the journal)."""
        return self.writer.committed_rec if self.writer is not None else self.read_rec

    async def __aenter__(self) -> CabinetSupervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self.timers is not None:
            self.timers.unregister(self.name, self)
        if self.writer is not None:
            await self.writer.close(timeout_s=FLUSH_TIMEOUT_S)

    # -- launch --------------------------------------------------------------------------------------------
    async def launch(
        self, recipe: Recipe, assignments: Sequence[tuple[int, CellEntry]], note: str | None = None
    ) -> int:
        """Record the job and its runs, define the cells and start every channel on the recipe's first step."""
        channels = [ch for ch, _ in assignments]
        self.recipe = recipe
        now = self.clock.now()

        def _record() -> tuple[int, list[int]]:
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
            job_id = self.store.create_job(
                recipe.sha256, self.name, format_channel_list(channels), self.clock.scale, now, note=note
            )
            run_ids = self.store.create_runs(
                job_id,
                [
                    {
                        "cell_id": cell.cell_id,
                        "cabinet": self.name,
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

        self.job_id, run_ids = await asyncio.to_thread(_record)
        self.ledger.job_id = self.job_id
        self.runs = [
            ChannelRun(rid, cell.cell_id, cell.lot, ch, cell.nominal_capacity_ah, recipe)
            for rid, (ch, cell) in zip(run_ids, assignments, strict=True)
        ]
        self._index_runs()
        if self.timers is not None:
            self.timers.register(self.name, self)
        await self.cycler.clear_status()
        await self.cycler.set_watchdog(self.watchdog_s)
        await self.cycler.define_cells(channels)
        # Records from before this job are not ours: start draining at the instrument's next record.
        self.read_rec = await self.cycler.log_next_rec() - 1
        if self.writer is None:
            self.writer = SampleWriter(self.store, self.read_rec, name=f"{self.name}-samples")
            self.writer.start()
        for run in self.runs:
            self._begin_step(run, 0)
        await self._start_pending()
        assert self.job_id is not None
        return self.job_id

    async def _start_pending(self) -> None:
        """Start every run whose cursor points at a step not yet running, grouped by identical program."""
        groups: dict[StepProgram, list[ChannelRun]] = {}
        for run in self.runs:
            if run.awaiting_start and not run.terminal and run.state is not RunState.ABORTING:
                assert run.compiled is not None
                groups.setdefault(run.compiled.program, []).append(run)
        if not groups:
            return
        for program, runs in groups.items():
            # The driver caches downloaded programs (and may reuse an old sequence id), so always ask it.
            seq_id = await self.cycler.load_program(program)
            runs = await self._not_started_yet(runs, seq_id)
            for run in runs:
                run.start_attempted = True
            if runs:
                await self.cycler.start([r.channel for r in runs], seq_id)
            for run in runs:
                run.seq_id = seq_id
                run.awaiting_start = False
                run.start_attempted = False
                if run.state is RunState.PENDING:
                    run.transition(RunState.RUNNING)
        await self.ledger.journal([r for rs in groups.values() for r in rs])

    async def _not_started_yet(self, runs: list[ChannelRun], seq_id: int) -> list[ChannelRun]:
        """Of runs whose start may have reached the instrument before a lost reply, those still to start."""
        unsure = [r for r in runs if r.start_attempted]
        if not unsure:
            return runs
        channels = [r.channel for r in unsure]
        seqs, _ = await self.cycler.step_positions(channels)
        status = await self.cycler.status(channels)
        started: set[int] = set()
        wait: set[int] = set()
        for r, seq, code in zip(unsure, seqs.tolist(), status.tolist(), strict=True):
            # The previous step ended before this one is started, so a running cell runs this step, whatever
            # sequence id it has (a re-attached host does not know the ids the old process allocated).
            if r.account.started_s is not None or code == CellState.RUNNING:
                started.add(r.run_id)
            elif code in (CellState.DONE, CellState.FAIL) and seq != 0 and r.run_id not in self._start_waited:
                # The same program may have run in the previous step: the next drain shows whether a start
                # record of this step exists. Starting again now could repeat a charge.
                wait.add(r.run_id)
        # Waited one drain and still no start record: the start never reached the instrument.
        self._start_waited = (self._start_waited - {r.run_id for r in unsure}) | wait
        for run, seq in zip(unsure, seqs.tolist(), strict=True):
            if run.run_id in started:
                run.seq_id = int(seq) or seq_id
                run.awaiting_start = False
                run.start_attempted = False
                if run.state is RunState.PENDING:
                    run.transition(RunState.RUNNING)
        return [r for r in runs if r.run_id not in started and r.run_id not in wait]

    # -- poll cycle ----------------------------------------------------------------------------------------
    async def poll_once(self) -> PollStats:
        """One cycle: status, data-log drain, sample write, step transitions, host checks, next starts."""
        t0 = time.perf_counter()
        await self.ledger.retry()
        active = [r for r in self.runs if not r.terminal]
        pending_aborts = sorted(self._must_abort)
        if not active and not pending_aborts:
            return PollStats(0, 0, 0.0)
        channels = [r.channel for r in active] + pending_aborts
        try:
            status_all = await self.cycler.status(channels)
            records, last_read = await self._drain()
        except InstrumentError as exc:
            if isinstance(exc, TransportError):
                await self._comm_lost(exc)
            else:
                await self._bad_reply(exc)
            return PollStats(0, 0, time.perf_counter() - t0)
        self.bad_polls = 0
        if not self.comm_ok:
            await self._comm_restored()
        status = status_all[: len(active)]
        await self._retry_aborts(dict(zip(pending_aborts, status_all[len(active) :].tolist(), strict=True)))
        step_ends = await self._ingest(records, last_read)
        await self._check_status(active, status)
        if self._due_checkpoints:
            try:
                await self._measure_checkpoints()
            except InstrumentError as exc:
                # The age step's K falls back to the logged OCV for a checkpoint that could not be read.
                await self.ledger.alarm("warning", "checkpoint_failed", f"OCV checkpoint not measured: {exc}")
        await self._settle_aborting(active, status)
        try:
            await self._start_pending()
        except InstrumentError as exc:
            # The runs keep awaiting_start and are started on a later cycle.
            await self.ledger.alarm("warning", "start_failed", f"starting next steps failed: {exc}")
        return PollStats(len(records), step_ends, time.perf_counter() - t0)

    async def _drain(self) -> tuple[np.ndarray, int]:
        """Read the data log from just after the last committed record; return the new records and the last rec.

        The log is acknowledged only up to what the writer committed; records read but not yet committed come
        again and are dropped here, so nothing is stored twice and nothing is lost if the host dies.
        ``self.read_rec`` moves only once the records are handed to the writer.
        """
        assert self.writer is not None
        last_read = self.read_rec
        if self.writer.pending >= QUEUE_BLOCKS - 1:
            # The database is behind: leave the records on the instrument (it keeps them) and keep supervising.
            if not self._backlog_alarmed:
                self._backlog_alarmed = True
                await self.ledger.alarm(
                    "warning", "store_backlog", f"sample writes are behind ({self.writer.pending} blocks)"
                )
            return np.empty((0, len(LOG_COL))), last_read
        self._backlog_alarmed = False
        cursor = self.writer.committed_rec + 1
        blocks = []
        while True:
            block = await self.cycler.read_log(cursor, LOG_BLOCK_ROWS)
            if len(block):
                cursor = int(block[-1, LOG_COL["rec"]]) + 1
                fresh = block[block[:, LOG_COL["rec"]] > last_read]
                if len(fresh):
                    blocks.append(fresh)
                    last_read = int(fresh[-1, LOG_COL["rec"]])
            if len(block) < LOG_BLOCK_ROWS:
                break
        return (np.concatenate(blocks) if blocks else np.empty((0, len(LOG_COL)))), last_read

    async def _ingest(self, records: np.ndarray, last_read: int) -> int:
        """Store the records as samples, then apply their step starts and ends, then the host checks."""
        if not len(records):
            return 0
        assert self.writer is not None
        self.records_total += len(records)
        cells = records[:, LOG_COL["cell"]].astype(np.int64)
        in_range = (cells >= 0) & (cells < len(self._run_by_cell))
        idx = np.where(in_range, self._run_by_cell[np.clip(cells, 0, len(self._run_by_cell) - 1)], -1)
        mine = idx >= 0
        records, idx = records[mine], idx[mine]
        if not len(records):
            await self.writer.submit(np.empty((0, len(_SAMPLE_SOURCE) + 2)), last_read)
            self.read_rec = last_read
            return 0
        cols = [LOG_COL[c] for c in _SAMPLE_SOURCE]
        samples = np.column_stack(
            [self._run_ids[idx], records[:, cols[0]], records[:, cols[1]], self._step_idx[idx], records[:, cols[2:]]]
        )
        await self.writer.submit(samples, last_read)
        self.read_rec = last_read

        # Latest reading per run, for displays and the host checks.
        last_pos = len(idx) - 1 - np.unique(idx[::-1], return_index=True)[1]
        for pos in last_pos:
            run = self.runs[idx[pos]]
            row = records[pos]
            run.last_voltage_v = float(row[LOG_COL["voltage_v"]])
            run.last_current_a = float(row[LOG_COL["current_a"]])
            run.last_temperature_c = float(row[LOG_COL["temp_c"]])
            run.last_ts_s = float(row[LOG_COL["time_s"]])

        self._capture(records, idx)
        starts = np.nonzero((records[:, LOG_COL["step_time_s"]] == 0) & (records[:, LOG_COL["step"]] == 1))[0]
        latest_s = float(records[:, LOG_COL["time_s"]].max())
        for pos in starts:
            run = self.runs[idx[pos]]
            run.note_start_record(records[pos])
            # The host clock may be offset from the instrument's: anchor the step start on the host's.
            run.step_t0_host_s = self.clock.now() - (latest_s - float(records[pos, LOG_COL["time_s"]]))
            if run.step is not None and run.step.kind == "age":
                self._schedule_checkpoints(run)
        ends = np.nonzero(records[:, LOG_COL["end"]] != 0)[0]
        results: list[dict[str, Any]] = []
        changed: list[ChannelRun] = []
        for pos in ends:
            run = self.runs[idx[pos]]
            if run.terminal:
                # e.g. the abort record of a channel the host check already faulted: data kept, state final.
                continue
            result = run.note_end_record(records[pos])
            if result is not None:
                results.append(result)
                changed.append(run)
                await self._advance(run, int(records[pos, LOG_COL["end"]]))
        if results:
            # Samples, then results, then journal: a host that dies in between never leaves a journal ahead of
            # the stored records (a re-attached host would tag them with the wrong step).
            await self.writer.flush()
            await self.ledger.save_results(results)
        await self._host_checks(records, idx)
        if changed:
            await self.ledger.journal(changed)
        return len(ends)

    def _index_runs(self) -> None:
        """Lookup tables from instrument cell id and run id to the run, and the per-run arrays."""
        for i, run in enumerate(self.runs):
            self._run_by_cell[channel_to_cell_id(run.channel)] = i
        self._index_of = {r.run_id: i for i, r in enumerate(self.runs)}
        self._run_ids = np.array([r.run_id for r in self.runs], dtype=np.float64)
        self._step_idx = np.array([max(r.step_index, 0) for r in self.runs], dtype=np.float64)
        self._needs_records = np.array([r.needs_records for r in self.runs], dtype=bool)

    async def reattach(self, job_id: int) -> int:
        """Take over a job a previous host process left running: its cells kept running on the instrument.

        Draining resumes after the last record in the store (nothing lost, nothing stored twice); a step whose
        start is not proven by its records is checked against the instrument before it is started, so no charge
        is repeated; the sequences the old process downloaded are never overwritten.
        """
        restored = await asyncio.to_thread(restore_job, self.store, job_id)
        if restored.cabinet != self.name:
            raise InputError("job", f"job {job_id} ran on cabinet {restored.cabinet}, not {self.name}")
        self.job_id = self.ledger.job_id = job_id
        self.recipe = restored.recipe
        self.runs = restored.runs
        self._index_runs()
        if self.timers is not None:
            self.timers.register(self.name, self)  # checkpoints that fired meanwhile are delivered now
        channels = [r.channel for r in self.runs]
        seqs, _ = await self.cycler.step_positions(channels)
        self.cycler.reserve_sequences(sorted({int(s) for s in seqs.tolist()}))
        await self.cycler.set_watchdog(self.watchdog_s)
        pending = [r.channel for r in self.runs if r.state is RunState.PENDING]
        if pending:
            await self.cycler.define_cells(pending)  # the old host may have died before defining them
        if restored.committed_rec is None:
            # No sample stored yet: the journal's cursor (set at launch), else nothing was started.
            self.read_rec = restored.journal_rec or await self.cycler.log_next_rec() - 1
        else:
            self.read_rec = restored.committed_rec
        if self.writer is None:
            self.writer = SampleWriter(self.store, self.read_rec, name=f"{self.name}-samples")
            self.writer.start()
        # Status before the drain: a step the instrument shows ended then has its end record either still on the
        # instrument (the drain processes it) or stored by the old host but never processed (settled here).
        status = await self.cycler.status(channels)
        before = {r.run_id: (r.step_index, r.awaiting_start) for r in self.runs}
        records, last_read = await self._drain()
        await self._ingest(records, last_read)
        unchanged = np.array([before[r.run_id] == (r.step_index, r.awaiting_start) for r in self.runs])
        await self._settle_unprocessed_ends(np.where(unchanged, status, CellState.RUNNING))
        await asyncio.to_thread(self.store.set_job_state, job_id, "running", only_from=("interrupted",))
        await self.ledger.alarm("info", "reattached", f"job {job_id} re-attached on cabinet {self.name}")
        await self.ledger.journal([r for r in self.runs if not r.terminal])
        return job_id

    async def _settle_unprocessed_ends(self, status: np.ndarray) -> None:
        """Steps that ended while no host processed their end: the old host may have stored the end record and
        died before writing the step result, so it will never be drained again. Finish them from the stored
        samples and the instrument's last end code."""
        ended = [
            run
            for run, code in zip(self.runs, status.tolist(), strict=True)
            if not run.terminal
            and not run.awaiting_start
            and run.account.started_s is not None
            and code in (CellState.DONE, CellState.FAIL, CellState.ABORTED)
        ]
        results = []
        for run in ended:
            samples = await asyncio.to_thread(self.store.samples, run.run_id)
            step = samples[samples["step_index"] == run.step_index]
            if step.empty:
                continue
            code = await self.cycler.last_end(run.channel)
            last = step.iloc[-1]
            row = np.zeros(len(LOG_COL))
            row[LOG_COL["time_s"]] = last["ts_s"]
            row[LOG_COL["voltage_v"]] = last["voltage_v"]
            row[LOG_COL["step_ah"]] = last["ah"]
            # Wh is not in the stored samples: integrate V·I over them (exact for the logged curve).
            t, v, i = step["ts_s"].to_numpy(), step["voltage_v"].to_numpy(), step["current_a"].to_numpy()
            p = v * i
            row[LOG_COL["step_wh"]] = float(np.sum((p[1:] + p[:-1]) * np.diff(t)) / 2.0 / 3600.0)
            row[LOG_COL["step_time_s"]] = last["step_time_s"]
            row[LOG_COL["step"]] = len(run.compiled.program.steps) if run.compiled is not None else 1
            row[LOG_COL["end"]] = code
            result = run.note_end_record(row)
            if result is not None:
                results.append(result)
                await self._advance(run, code)
        if results:
            await self.ledger.save_results(results)
            await self.ledger.journal(ended)

    def _begin_step(self, run: ChannelRun, index: int) -> None:
        """Point a run at step ``index`` and keep the per-run arrays the hot path reads in step."""
        assert self.recipe is not None
        run.begin_step(index, compile_step(self.recipe.steps[index], self.recipe, run.nominal_capacity_ah))
        i = self._index_of[run.run_id]
        self._step_idx[i] = index
        self._needs_records[i] = run.needs_records

    def _capture(self, records: np.ndarray, idx: np.ndarray) -> None:
        """Keep the records of runs whose current step is computed from them (dcir pulses, age OCV)."""
        mask = self._needs_records[idx]
        if not mask.any():
            return
        sel_idx, sel_rows = idx[mask], records[mask]
        for i in np.unique(sel_idx):
            self.runs[i].captured.append(sel_rows[sel_idx == i])

    def _schedule_checkpoints(self, run: ChannelRun) -> None:
        if self.timers is None or self.job_id is None or run.step_t0_host_s is None:
            return
        for k, at_s in enumerate(run.step.ocv_at_s):
            self.timers.schedule_checkpoint(
                self.name, self.job_id, run.run_id, run.step_index, k, run.step_t0_host_s + at_s
            )

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None:
        """A checkpoint timer fired: measure that cell's OCV in the next poll (batched with any others due)."""
        if job_id == self.job_id:
            self._due_checkpoints.append((run_id, step_index, k))

    async def _measure_checkpoints(self) -> None:
        """One batched voltage query for every run whose checkpoint is due and which is still in that step."""
        due, self._due_checkpoints = self._due_checkpoints, []
        by_id = {r.run_id: r for r in self.runs}
        targets = [
            (by_id[rid], k)
            for rid, step_index, k in due
            if rid in by_id
            and by_id[rid].step_index == step_index
            and not by_id[rid].terminal
            and not by_id[rid].awaiting_start
        ]
        if not targets:
            return
        measured = await self.cycler.measure([r.channel for r, _ in targets])
        now = self.clock.now()
        for (run, k), volts in zip(targets, measured.voltage_v, strict=True):
            run.checkpoints[k] = (now, float(volts))

    async def _advance(self, run: ChannelRun, code: int) -> None:
        """After a recipe step ended: next step, done, or the fault/abort it ended with."""
        assert self.recipe is not None
        if code == EndCode.ABORT:
            if run.state is not RunState.ABORTING:
                run.transition(RunState.ABORTING)
            run.transition(RunState.ABORTED)
            return
        if code == EndCode.WATCHDOG or code == EndCode.FAULT or EndCode.FAIL_BASE < code < EndCode.ABORT:
            reason = run.end_reason or EndCode.describe(code)
            run.transition(RunState.FAULTED)
            await self.ledger.alarm(
                "critical",
                "instrument_stop",
                f"{run.cell_id}: cell stopped by the instrument ({reason}) in step {run.step.id}",
                run=run,
            )
            return
        if run.state is RunState.ABORTING:
            run.transition(RunState.ABORTED)
            return
        if run.end_reason == "backstop":
            await self.ledger.alarm(
                "warning",
                "backstop",
                f"{run.cell_id}: step {run.step.id} ended on its time backstop",
                run=run,
            )
        nxt = run.step_index + 1
        if nxt >= len(self.recipe.steps):
            run.step_index = nxt
            run.transition(RunState.DONE)
            return
        self._begin_step(run, nxt)

    async def _host_checks(self, records: np.ndarray, idx: np.ndarray) -> None:
        """Re-check cell temperature and voltage against the recipe limits; trip offending channels."""
        assert self.recipe is not None
        lim = self.recipe.limits
        too_hot = (
            records[:, LOG_COL["temp_c"]] > lim.max_cell_temperature_c
            if lim.max_cell_temperature_c is not None
            else np.zeros(len(records), dtype=bool)
        )
        v = records[:, LOG_COL["voltage_v"]]
        bad_v = (v > lim.max_voltage_v + LIMIT_MARGIN_V) | (v < lim.min_voltage_v - LIMIT_MARGIN_V)
        offenders = np.unique(idx[too_hot | bad_v])
        trip = [self.runs[i] for i in offenders if self.runs[i].state in (RunState.RUNNING, RunState.PAUSED)]
        if not trip:
            return
        await self._fault_runs(trip, "host_check", switch_off=True)
        for run in trip:
            await self.ledger.alarm(
                "critical",
                "host_check",
                f"{run.cell_id}: {run.last_voltage_v:.4f} V / {run.last_temperature_c:.1f} °C outside recipe limits",
                run=run,
            )

    async def abort(self, channels: Sequence[int] | None = None) -> None:
        """Abort the given channels (all of the job's by default): output off on the instrument at once."""
        targets = [r for r in self.runs if not r.terminal and (channels is None or r.channel in channels)]
        if not targets:
            return
        # A run still PENDING never reached the instrument (its channel may be another job's): no abort there.
        on_instrument = [r.channel for r in targets if r.state is not RunState.PENDING or r.start_attempted]
        for run in targets:
            if run.state is RunState.PENDING:
                run.transition(RunState.ABORTED)
            else:
                run.transition(RunState.ABORTING)
        await self._abort_or_retry(on_instrument, "abort")
        await self.ledger.journal(targets)

    @property
    def finished(self) -> bool:
        """True when every run has reached a terminal state."""
        # Unconfirmed aborts keep the job open while the instrument answers; with the link gone for good the job
        # closes (faulted, with the alarm naming it) instead of polling forever.
        return bool(self.runs) and all(r.terminal for r in self.runs) and (not self._must_abort or not self.comm_ok)

    async def run_until_done(self, on_cycle: Callable[[PollStats], None] | None = None) -> None:
        """Poll until every run is terminal (or ``stop()``), then close the job in the store."""
        loop_wall = max(self.poll_interval_s / self.clock.scale, MIN_POLL_WALL_S)
        while not self.finished and not self._stop.is_set():
            await self._honour_abort_request()
            stats = await self.poll_once()
            if on_cycle is not None:
                on_cycle(stats)
            if self.finished:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=loop_wall)
        await self._final_drain()
        await self.close_job()

    async def _final_drain(self) -> None:
        """Store what the instrument logged after the last step ended (e.g. the end records of aborted cells)."""
        if self.writer is None:
            return
        try:
            records, last_read = await self._drain()
        except InstrumentError as exc:
            await self.ledger.alarm("warning", "final_drain_failed", f"last records left on the instrument: {exc}")
            return
        if not self.comm_ok:
            await self._comm_restored()
        await self._ingest(records, last_read)

    def stop(self) -> None:
        """Ask ``run_until_done`` to return after the current cycle."""
        self._stop.set()

    async def close_job(self) -> None:
        """Write the job's final state."""
        if self.job_id is None:
            return
        if self.writer is not None:
            try:
                await asyncio.wait_for(self.writer.flush(), FLUSH_TIMEOUT_S)
            except TimeoutError:
                # The database is down: what is not committed stays on the instrument, unacknowledged.
                log.error(
                    "sample writer did not finish within %s s; uncommitted records stay on the instrument",
                    FLUSH_TIMEOUT_S,
                )
        await self.ledger.retry()
        states = {r.state for r in self.runs}
        if states <= {RunState.DONE}:
            state = "done"
        elif all(r.terminal for r in self.runs):
            state = "aborted" if RunState.ABORTED in states else "faulted"
        else:
            state = "interrupted"
        await self.ledger.finish_job(state)
