"""Steps the host ends or releases: a rest's dV/dt end and a wait's temperature end (judged from the data log),
and operator holds (released by ``formation run continue`` through the database, or timed out).

The instrument keeps its own end on every judged step (the rest's duration, the wait's timeout), so a host that
stalls or dies leaves the cell resting, output off, until that backstop. When the host judges the step over, it
aborts the channel: the cell rests either way, and the abort's end record closes the step with the host's reason
(``ChannelRun.host_end``, journalled, so a restarted host reads the record the same way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from formation.clock import Clock
from formation.errors import StoreError
from formation.instruments.program import LOG_COL, CellState
from formation.orchestrator.run import ChannelRun
from formation.states import RunState, StartState
from formation.store import Store

#: Fewest records a dV/dt window must hold before the host judges it.
MIN_WINDOW_RECORDS = 3


def dvdt_mv_per_h(time_s: np.ndarray, voltage_v: np.ndarray) -> float:
    """|dV/dt| in mV/h: the least-squares slope of the voltage over the records given (NaN with fewer than 2)."""
    ok = np.isfinite(time_s) & np.isfinite(voltage_v)
    t, v = time_s[ok], voltage_v[ok]
    if len(t) < 2 or np.ptp(t) <= 0:
        return float("nan")
    dt = t - t.mean()
    slope_v_per_s = float(np.dot(dt, v - v.mean()) / np.dot(dt, dt))
    return abs(slope_v_per_s) * 1000.0 * 3600.0


def _step_rows(run: ChannelRun) -> np.ndarray:
    """The current step's records held by the run (records of the step before are dropped by time)."""
    if not run.captured:
        return np.empty((0, len(LOG_COL)))
    rows = np.concatenate(run.captured)
    started = run.account.started_s
    return rows if started is None else rows[rows[:, LOG_COL["time_s"]] >= started]


def judge(run: ChannelRun) -> str | None:
    """The reason to end the run's judged step now (``dvdt``, ``temperature``), or None to let it run."""
    step = run.step
    rows = _step_rows(run)
    if step is None or not len(rows):
        return None
    if step.kind == "wait":
        temp_c = rows[:, LOG_COL["temp_c"]]
        temp_c = temp_c[np.isfinite(temp_c)]
        return "temperature" if len(temp_c) and temp_c[-1] < step.below_c else None
    until = step.until
    if step.kind != "rest" or until.dvdt_mv_per_h is None or until.dvdt_window_s is None:
        return None
    t = rows[:, LOG_COL["time_s"]]
    if run.account.started_s is None or t[-1] - run.account.started_s < until.dvdt_window_s:
        return None  # not a whole window of this rest yet
    window = t >= t[-1] - until.dvdt_window_s
    if window.sum() < MIN_WINDOW_RECORDS:
        return None
    rate = dvdt_mv_per_h(t[window], rows[window, LOG_COL["voltage_v"]])
    return "dvdt" if rate < until.dvdt_mv_per_h else None


def host_ends_due(active: Sequence[ChannelRun], status: np.ndarray) -> list[ChannelRun]:
    """Runs whose judged step the host ends now, and those whose earlier end the instrument has not taken yet."""
    due: list[ChannelRun] = []
    for run, code in zip(active, status.tolist(), strict=True):
        if run.compiled is None or not run.compiled.host_judged or run.state is not RunState.RUNNING:
            continue
        if run.start is not StartState.STARTED:
            continue
        if run.host_end is None:
            run.host_end = judge(run)
            if run.host_end is not None:
                due.append(run)
        elif code == CellState.RUNNING:
            due.append(run)  # the abort did not reach the instrument: send it again
    return due


class _Journal(Protocol):
    async def journal(self, runs: Sequence[ChannelRun]) -> None: ...


class HoldDesk:
    """Hold steps: started on the host (output off), released when the job's continue count moves past the one
    seen when the hold started, faulted after the step's timeout."""

    def __init__(self, store: Store, clock: Clock, ledger: _Journal) -> None:
        self.store = store
        self.clock = clock
        self.ledger = ledger

    async def due(self, runs: Sequence[ChannelRun], job_id: int | None) -> list[tuple[ChannelRun, str]]:
        """Hold steps that are over now, with their end reason (``continued`` or ``timeout``)."""
        holding = [
            r
            for r in runs
            if not r.terminal and r.compiled is not None and r.compiled.host_step and r.step.kind == "hold"
        ]
        if not holding or job_id is None:
            return []
        try:
            count = await asyncio.to_thread(self.store.continue_count, job_id)
        except StoreError:
            return []  # the database is down: the holds wait (output off) and the timeout still counts
        now = self.clock.now()
        out: list[tuple[ChannelRun, str]] = []
        started: list[ChannelRun] = []
        for run in holding:
            if run.start is not StartState.STARTED:
                started.append(run)
                started_s = run.account.started_s  # restored from the journal after a host restart
                run.start_host_step(now)
                if started_s is not None:
                    run.account.started_s = started_s
                if run.hold_seen is None:
                    run.hold_seen = count
            assert run.hold_seen is not None and run.account.started_s is not None
            if count > run.hold_seen:
                out.append((run, "continued"))
            elif now - run.account.started_s >= run.step.timeout_s:
                out.append((run, "timeout"))
        # Journal the start and the count seen at once: a host that dies in the hold resumes into it, and a
        # continue sent while no host runs still releases it.
        await self.ledger.journal(started)
        return out


class _Alarms(Protocol):
    async def alarm(self, severity: str, code: str, message: str, run: ChannelRun | None = None) -> None: ...


async def judged_stop(run: ChannelRun, ledger: _Alarms) -> bool:
    """After a step ended normally: stop the run when the step judged the cell unfit to go on. A pre-check that
    rejected the cell faults the run with the reason (its channel is then free); a wait whose cell never cooled
    faults it. Returns whether the run stopped."""
    step = run.step
    if run.rejected is not None:
        run.end_reason = f"precheck: {run.rejected}"
        run.transition(RunState.FAULTED)
        await ledger.alarm("warning", "precheck_rejected", f"{run.cell_id}: rejected by {step.id}: {run.rejected}", run)
        return True
    if step is not None and step.kind == "wait" and run.end_reason == "timeout":
        run.end_reason = f"wait: still at or above {step.below_c:g} °C after {step.timeout_s:g} s"
        run.transition(RunState.FAULTED)
        await ledger.alarm("critical", "wait_timeout", f"{run.cell_id}: {run.end_reason} in step {step.id}", run)
        return True
    return False


async def fault_host_step_timeout(run: ChannelRun, ledger: _Alarms) -> None:
    """A hold nobody continued, or a chamber step whose chamber never settled, in time: fault the run and say why."""
    run.transition(RunState.FAULTED)
    step = run.step
    if step.kind == "hold":
        code, text = "hold_timeout", f"nobody continued hold step {step.id} in {step.timeout_s:g} s"
    else:
        code, text = "chamber_not_stable", f"the chamber did not settle at {step.setpoint_c:g} °C in step {step.id}"
    await ledger.alarm("critical", code, f"{run.cell_id}: {text}", run=run)
