"""SafetyGuard: host re-checks, aborts until confirmed, and the fault policy of one cabinet's job.

The policy (README "Faults and safety"): transport faults pause the runs and raise an alarm, and fault them only
once the link has been down for three watchdog periods; SCPI errors and garbage replies raise alarms, and after
MAX_BAD_POLLS in a row the job's channels are switched off; an abort the instrument does not confirm is re-sent
every poll; a run whose cell the instrument no longer knows is faulted; a cell outside the recipe's voltage or
temperature limits in any logged record is switched off, whatever the instrument's own FAIL tests did; a cell whose
records show an internal short (its voltage falling during a charge or a settled rest, see ``shorts``) is switched
off and faulted with an ``internal_short`` alarm while the others go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from formation.errors import InstrumentError, StoreError, TransportError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import LOG_COL, CellState
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.cabinet.shorts import ShortWatch
from formation.orchestrator.compile import LIMIT_MARGIN_V
from formation.orchestrator.run import ChannelRun
from formation.orchestrator.timebase import wall_s
from formation.recipes import Recipe
from formation.states import JobState, RunState, StartState
from formation.store import Store

#: Polls in a row answered with SCPI errors or garbage before the host switches the job's channels off.
MAX_BAD_POLLS = 5
#: How many times ``lost_fault_s`` the host waits for a lost link after faulting its runs, before it gives up.
LINGER_FACTOR = 10.0
#: Polls in a row whose step starts the instrument refused (an SCPI error, not a lost link) before the host
#: switches the waiting channels off and faults their runs, instead of retrying (and alarming) forever.
MAX_REFUSED_STARTS = 5


class SafetyGuard:
    """Switches channels off and faults runs when the host can no longer vouch for them."""

    def __init__(self, name: str, cycler: Bt2200Cycler, ledger: JobLedger, *, watchdog_s: float) -> None:
        self.name = name
        self.cycler = cycler
        self.ledger = ledger
        self.comm_ok = True
        self.bad_polls = 0
        #: Channels whose abort has not been confirmed yet: re-sent every poll until they are off.
        self.must_abort: set[int] = set()
        # A link down this long (wall time) means the host can no longer vouch for its cells.
        self.lost_fault_s = 3.0 * watchdog_s if watchdog_s > 0 else 120.0
        # After faulting them, the host keeps trying the link this much longer (wall time): should it come back,
        # the unconfirmed aborts go out and the records the instrument logged meanwhile are drained, not left on it.
        self.linger_s = LINGER_FACTOR * self.lost_fault_s
        self.abort_requested = False
        self._comm_lost_since: float | None = None
        self.shorts = ShortWatch()
        self.refused_starts = 0

    async def fault_runs(self, runs: list[ChannelRun], reason: str, *, switch_off: bool) -> None:
        """Fault runs for ``reason`` (switching their channels off first if asked) and journal them."""
        if not runs:
            return
        if switch_off:
            await self.abort_or_retry([r.channel for r in runs], reason)
        for run in runs:
            run.end_reason = reason
            run.transition(RunState.FAULTED)
        await self.ledger.journal(runs)

    async def abort_runs(self, targets: list[ChannelRun]) -> None:
        """Output off for ``targets`` at once; their runs go ABORTING (ABORTED if never on the instrument)."""
        if not targets:
            return
        # A run still PENDING never reached the instrument (its channel may be another job's): no abort there.
        on_instrument = [
            r.channel for r in targets if r.state is not RunState.PENDING or r.start is not StartState.AWAITING
        ]
        for run in targets:
            run.transition(RunState.ABORTED if run.state is RunState.PENDING else RunState.ABORTING)
        await self.abort_or_retry(on_instrument, "abort")
        await self.ledger.journal(targets)

    async def host_checks(self, recipe: Recipe, runs: list[ChannelRun], records: np.ndarray, idx: np.ndarray) -> None:
        """Re-check cell temperature and voltage of every record against the recipe limits; trip offenders."""
        lim = recipe.limits
        too_hot = (
            records[:, LOG_COL["temp_c"]] > lim.max_cell_temperature_c
            if lim.max_cell_temperature_c is not None
            else np.zeros(len(records), dtype=bool)
        )
        v = records[:, LOG_COL["voltage_v"]]
        bad_v = (v > lim.max_voltage_v + LIMIT_MARGIN_V) | (v < lim.min_voltage_v - LIMIT_MARGIN_V)
        offenders = np.unique(idx[too_hot | bad_v])
        trip = [runs[i] for i in offenders if runs[i].state in (RunState.RUNNING, RunState.PAUSED)]
        if trip:
            await self.fault_runs(trip, "host_check", switch_off=True)
            for run in trip:
                await self.ledger.alarm(
                    "critical",
                    "host_check",
                    f"{run.cell_id}: {run.last_voltage_v:.4f} V / {run.last_temperature_c:.1f} °C outside recipe "
                    "limits",
                    run=run,
                )
        shorted = [
            runs[i]
            for i in self.shorts.check(records, idx, len(runs))
            if runs[i].state in (RunState.RUNNING, RunState.PAUSED)
        ]
        if shorted:
            await self.fault_runs(shorted, "internal_short", switch_off=True)
            for run in shorted:
                await self.ledger.alarm(
                    "critical",
                    "internal_short",
                    f"{run.cell_id}: voltage falling at {run.last_voltage_v:.4f} V (internal short?); channel "
                    f"{run.channel} switched off",
                    run=run,
                )

    async def settle_aborting(self, active: list[ChannelRun], status: np.ndarray) -> None:
        """A run aborted between steps gets no end record: settle it from the instrument status."""
        for run, code in zip(active, status, strict=True):
            if run.state is RunState.ABORTING and int(code) not in (CellState.RUNNING, CellState.ENABLED):
                run.transition(RunState.ABORTED)
                await self.ledger.journal([run])

    # -- communication -------------------------------------------------------------------------------------
    async def comm_lost(self, exc: Exception, runs: list[ChannelRun]) -> None:
        """A transport fault: pause the runs; past ``lost_fault_s`` of wall time, fault them."""
        if self.comm_ok:
            self.comm_ok = False
            self._comm_lost_since = wall_s()  # the link, not the process, is measured
            await self.ledger.alarm("warning", "comm_lost", f"lost communication with cabinet {self.name}: {exc}")
            for run in runs:
                if run.state is RunState.RUNNING:
                    run.transition(RunState.PAUSED)
            return
        if self._comm_lost_since is None or wall_s() - self._comm_lost_since < self.lost_fault_s:
            return
        # Down for longer than the instrument's watchdog allows (three times over): the host can no longer
        # vouch for these cells. Fault them, and keep trying to switch them off should the link come back.
        targets = [r for r in runs if not r.terminal]
        self.must_abort.update(r.channel for r in targets)
        await self.fault_runs(targets, "comm_lost", switch_off=False)
        if targets:
            await self.ledger.alarm(
                "critical",
                "comm_lost_fault",
                f"cabinet {self.name} unreachable for {self.lost_fault_s:g} s: {len(targets)} run(s) faulted",
            )

    async def start_failed(self, exc: InstrumentError, runs: list[ChannelRun]) -> None:
        """A poll's step starts failed: alarm; when the instrument keeps refusing them, fault the waiting runs."""
        await self.ledger.alarm("warning", "start_failed", f"starting next steps failed: {exc}")
        if isinstance(exc, TransportError):  # the link: comm_lost and the watchdog deal with it
            return
        self.refused_starts += 1
        if self.refused_starts < MAX_REFUSED_STARTS:
            return
        self.refused_starts = 0
        waiting = [
            r
            for r in runs
            if not r.terminal
            and r.state is not RunState.ABORTING
            and r.start is not StartState.STARTED
            and not (r.compiled is not None and r.compiled.host_step)
        ]
        await self.fault_runs(waiting, "start_refused", switch_off=True)
        if waiting:
            await self.ledger.alarm(
                "critical",
                "start_refused",
                f"cabinet {self.name} refused {MAX_REFUSED_STARTS} starts in a row: {len(waiting)} run(s) switched "
                f"off and faulted; last: {exc}",
            )

    def link_given_up(self) -> bool:
        """The link is down and has been for ``lost_fault_s`` and ``linger_s`` since: stop waiting for it."""
        if self.comm_ok:
            return False
        since = self._comm_lost_since
        return since is None or wall_s() - since >= self.lost_fault_s + self.linger_s

    async def bad_reply(self, exc: InstrumentError, runs: list[ChannelRun]) -> None:
        """An SCPI error or garbage reply: alarm; when it persists, switch the job's channels off and fault them.

        The link works, so the instrument's watchdog would never trip: the host must make the channels safe.
        """
        self.bad_polls += 1
        await self.ledger.alarm("warning", "bad_reply", f"cabinet {self.name}: {exc}")
        if self.bad_polls < MAX_BAD_POLLS:
            return
        targets = [r for r in runs if not r.terminal]
        await self.fault_runs(targets, "instrument_unreadable", switch_off=True)
        await self.ledger.alarm(
            "critical",
            "instrument_unreadable",
            f"cabinet {self.name}: {self.bad_polls} polls in a row failed; {len(targets)} channel(s) switched off",
        )

    async def reply_ok(self, runs: list[ChannelRun]) -> None:
        """A poll was answered: count bad replies from zero, and resume paused runs after a lost link."""
        self.bad_polls = 0
        if self.comm_ok:
            return
        self.comm_ok = True
        self._comm_lost_since = None
        await self.ledger.alarm("info", "comm_restored", f"communication with cabinet {self.name} restored")
        for run in runs:
            if run.state is RunState.PAUSED:
                run.transition(RunState.RUNNING)

    # -- aborts ----------------------------------------------------------------------------------------------
    async def abort_or_retry(self, channels: list[int], why: str) -> None:
        """Switch channels off now; if the instrument does not take it, retry every poll until it does."""
        if not channels:
            return
        try:
            await self.cycler.abort(channels)
        except InstrumentError as exc:
            self.must_abort.update(channels)
            await self.ledger.alarm("critical", "abort_failed", f"abort ({why}) failed, retrying every poll: {exc}")

    async def retry_aborts(self, status_by_channel: dict[int, int]) -> None:
        """Re-send aborts that were not confirmed; forget a channel once the instrument shows it off."""
        still_on = [ch for ch, code in status_by_channel.items() if code in (CellState.RUNNING, CellState.ENABLED)]
        self.must_abort.difference_update(ch for ch in status_by_channel if ch not in still_on)
        if still_on:
            try:
                await self.cycler.abort(still_on)
            except InstrumentError as exc:
                await self.ledger.alarm("critical", "abort_failed", f"abort retry failed: {exc}")

    async def check_status(self, active: list[ChannelRun], status: np.ndarray) -> None:
        """A run on a cell the instrument no longer knows (reset, power loss) or that went idle under it."""
        undefined = status == CellState.UNDEFINED
        # Only the few channels idle or undefined need a look at their run: no Python loop over every channel.
        suspects = np.nonzero(undefined | (status == CellState.IDLE))[0]
        lost = [
            run
            for run, code in ((active[i], int(status[i])) for i in suspects.tolist())
            if run.state in (RunState.RUNNING, RunState.PAUSED)
            and (
                code == CellState.UNDEFINED  # cells are defined at launch: undefined means the instrument forgot
                or (run.start is StartState.STARTED and not _host_step(run))
            )
        ]
        if undefined.any():
            # A reset also cleared the sequences: download programs again when they are next needed.
            self.cycler.forget_programs()
        await self.fault_runs(lost, "instrument_lost_cell", switch_off=False)
        for run in lost:
            await self.ledger.alarm(
                "critical",
                "instrument_lost_cell",
                f"{run.cell_id}: cabinet {self.name} no longer runs channel {run.channel} (reset or power loss?)",
                run=run,
            )

    async def abort_requested_from_outside(self, store: Store, job_id: int | None) -> bool:
        """Whether `formation run abort` (another process) marked the job ``aborting`` since the last look.

        Needed because an instrument abort does not touch a cell resting between two steps, which this host
        would otherwise start on its next step.
        """
        if job_id is None or self.abort_requested:
            return False
        try:
            state = await asyncio.to_thread(store.job_state, job_id)
        except StoreError:
            return False
        if state != JobState.ABORTING:
            return False
        self.abort_requested = True
        await self.ledger.alarm("warning", "abort_requested", f"job {job_id}: abort requested from outside")
        return True


def _host_step(run: ChannelRun) -> bool:
    """A step the host runs (a chamber step): the cell rests, output off, and idle is its right state."""
    return run.compiled is not None and run.compiled.host_step


def runs_on(runs: Sequence[ChannelRun], channels: Sequence[int] | None) -> list[ChannelRun]:
    """The unfinished runs on ``channels`` (all unfinished runs when None)."""
    return [r for r in runs if not r.terminal and (channels is None or r.channel in channels)]
