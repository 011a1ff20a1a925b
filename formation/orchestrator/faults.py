"""Fault handling of a cabinet supervisor: lost links, bad replies, unconfirmed aborts, forgotten cells.

The policy (README "Faults and safety"): transport faults pause the runs and raise an alarm, and fault them only
once the link has been down for three watchdog periods; SCPI errors and garbage replies raise alarms, and after
MAX_BAD_POLLS in a row the job's channels are switched off; an abort the instrument does not confirm is re-sent
every poll; a run whose cell the instrument no longer knows is faulted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from formation.errors import InstrumentError, StoreError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import CellState
from formation.orchestrator.ledger import JobLedger
from formation.orchestrator.run import ChannelRun, RunState
from formation.store import Store

#: Polls in a row answered with SCPI errors or garbage before the host switches the job's channels off.
MAX_BAD_POLLS = 5


class FaultHandling:
    """Mixin of CabinetSupervisor: the fault policy, over the supervisor's runs, cycler and ledger."""

    name: str
    cycler: Bt2200Cycler
    store: Store
    ledger: JobLedger
    runs: list[ChannelRun]
    job_id: int | None
    comm_ok: bool
    bad_polls: int
    lost_fault_s: float
    _must_abort: set[int]
    _comm_lost_since: float | None
    _abort_requested: bool

    async def abort(self, channels: Sequence[int] | None = None) -> None:  # provided by the supervisor
        raise NotImplementedError

    async def _fault_runs(self, runs: list[ChannelRun], reason: str, *, switch_off: bool) -> None:
        """Fault runs for ``reason`` (switching their channels off first if asked) and journal them."""
        if not runs:
            return
        if switch_off:
            await self._abort_or_retry([r.channel for r in runs], reason)
        for run in runs:
            run.end_reason = reason
            run.transition(RunState.FAULTED)
        await self.ledger.journal(runs)

    async def _settle_aborting(self, active: list[ChannelRun], status: np.ndarray) -> None:
        """A run aborted between steps gets no end record: settle it from the instrument status."""
        for run, code in zip(active, status, strict=True):
            if run.state is RunState.ABORTING and int(code) not in (CellState.RUNNING, CellState.ENABLED):
                run.transition(RunState.ABORTED)
                await self.ledger.journal([run])

    # -- communication -------------------------------------------------------------------------------------
    async def _comm_lost(self, exc: Exception) -> None:
        if self.comm_ok:
            self.comm_ok = False
            self._comm_lost_since = time.monotonic()  # wall time: the link, not the process, is measured
            await self.ledger.alarm("warning", "comm_lost", f"lost communication with cabinet {self.name}: {exc}")
            for run in self.runs:
                if run.state is RunState.RUNNING:
                    run.transition(RunState.PAUSED)
            return
        if self._comm_lost_since is None or time.monotonic() - self._comm_lost_since < self.lost_fault_s:
            return
        # Down for longer than the instrument's watchdog allows (three times over): the host can no longer
        # vouch for these cells. Fault them, and keep trying to switch them off should the link come back.
        targets = [r for r in self.runs if not r.terminal]
        self._must_abort.update(r.channel for r in targets)
        await self._fault_runs(targets, "comm_lost", switch_off=False)
        if targets:
            await self.ledger.alarm(
                "critical",
                "comm_lost_fault",
                f"cabinet {self.name} unreachable for {self.lost_fault_s:g} s: {len(targets)} run(s) faulted",
            )

    async def _bad_reply(self, exc: InstrumentError) -> None:
        """An SCPI error or garbage reply: alarm; when it persists, switch the job's channels off and fault them.

        The link works, so the instrument's watchdog would never trip: the host must make the channels safe.
        """
        self.bad_polls += 1
        await self.ledger.alarm("warning", "bad_reply", f"cabinet {self.name}: {exc}")
        if self.bad_polls < MAX_BAD_POLLS:
            return
        targets = [r for r in self.runs if not r.terminal]
        await self._fault_runs(targets, "instrument_unreadable", switch_off=True)
        await self.ledger.alarm(
            "critical",
            "instrument_unreadable",
            f"cabinet {self.name}: {self.bad_polls} polls in a row failed; {len(targets)} channel(s) switched off",
        )

    async def _comm_restored(self) -> None:
        self.comm_ok = True
        self._comm_lost_since = None
        await self.ledger.alarm("info", "comm_restored", f"communication with cabinet {self.name} restored")
        for run in self.runs:
            if run.state is RunState.PAUSED:
                run.transition(RunState.RUNNING)

    async def _abort_or_retry(self, channels: list[int], why: str) -> None:
        """Switch channels off now; if the instrument does not take it, retry every poll until it does."""
        if not channels:
            return
        try:
            await self.cycler.abort(channels)
        except InstrumentError as exc:
            self._must_abort.update(channels)
            await self.ledger.alarm("critical", "abort_failed", f"abort ({why}) failed, retrying every poll: {exc}")

    async def _retry_aborts(self, status_by_channel: dict[int, int]) -> None:
        """Re-send aborts that were not confirmed; forget a channel once the instrument shows it off."""
        still_on = [ch for ch, code in status_by_channel.items() if code in (CellState.RUNNING, CellState.ENABLED)]
        self._must_abort.difference_update(ch for ch in status_by_channel if ch not in still_on)
        if still_on:
            try:
                await self.cycler.abort(still_on)
            except InstrumentError as exc:
                await self.ledger.alarm("critical", "abort_failed", f"abort retry failed: {exc}")

    async def _check_status(self, active: list[ChannelRun], status: np.ndarray) -> None:
        """A run on a cell the instrument no longer knows (reset, power loss) or that went idle under it."""
        codes = status.tolist()
        lost = [
            run
            for run, code in zip(active, codes, strict=True)
            if run.state in (RunState.RUNNING, RunState.PAUSED)
            and (
                code == CellState.UNDEFINED  # cells are defined at launch: undefined means the instrument forgot
                or (code == CellState.IDLE and not run.awaiting_start and not run.start_attempted)
            )
        ]
        if any(code == CellState.UNDEFINED for code in codes):
            # A reset also cleared the sequences: download programs again when they are next needed.
            self.cycler.forget_programs()
        await self._fault_runs(lost, "instrument_lost_cell", switch_off=False)
        for run in lost:
            await self.ledger.alarm(
                "critical",
                "instrument_lost_cell",
                f"{run.cell_id}: cabinet {self.name} no longer runs channel {run.channel} (reset or power loss?)",
                run=run,
            )

    # -- control -------------------------------------------------------------------------------------------
    async def _honour_abort_request(self) -> None:
        """`formation run abort` from another process marks the job ``aborting``: abort every channel here too.

        Needed because an instrument abort does not touch a cell resting between two steps, which this host
        would otherwise start on its next step.
        """
        if self.job_id is None or self._abort_requested:
            return
        try:
            job = await asyncio.to_thread(self.store.get_job, self.job_id)
        except StoreError:
            return
        if job is not None and job.state == "aborting":
            self._abort_requested = True
            await self.ledger.alarm("warning", "abort_requested", f"job {self.job_id}: abort requested from outside")
            try:
                await self.abort()
            except InstrumentError as exc:
                await self.ledger.alarm("critical", "abort_failed", f"requested abort failed: {exc}")
