"""The supervisor's parts on their own: run index, log drain, safety guard, checkpoints (no socket)."""

from __future__ import annotations

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.errors import InstrumentTimeout, ScpiError
from formation.instruments.program import LOG_COL, LOG_COLUMNS, CellState
from formation.orchestrator.cabinet import job_end_state
from formation.orchestrator.cabinet.checkpoints import CheckpointBook
from formation.orchestrator.cabinet.drain import LogDrain
from formation.orchestrator.cabinet.index import RunIndex
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.cabinet.safety import MAX_BAD_POLLS, SafetyGuard
from formation.orchestrator.compile import compile_step
from formation.orchestrator.run import ChannelRun
from formation.recipes import load_builtin
from formation.states import JobState, RunState, StartState
from formation.store import Store
from tests.unit.cabinet.double import CabinetDouble

RECIPE = load_builtin("ncm21700-formation")


def _runs(n: int, step: int = 0, state: RunState = RunState.RUNNING) -> list[ChannelRun]:
    runs = []
    for ch in range(1, n + 1):
        run = ChannelRun(100 + ch, f"C{ch}", "L", ch, 5.0, RECIPE)
        run.begin_step(step, compile_step(RECIPE.steps[step], RECIPE, 5.0))
        if state is not RunState.PENDING:
            run.transition(state)
        runs.append(run)
    return runs


def _rows(*rows: dict[str, float]) -> np.ndarray:
    out = np.zeros((len(rows), len(LOG_COLUMNS)))
    for i, values in enumerate(rows):
        for k, v in values.items():
            out[i, LOG_COL[k]] = v
    return out


def test_run_index_keeps_only_the_jobs_cells_and_tags_samples_with_run_and_step() -> None:
    index = RunIndex(n_channels=8)
    runs = _runs(2)
    index.set_runs(runs)
    records = _rows(
        {"rec": 1, "cell": 1001, "voltage_v": 3.6, "time_s": 10},
        {"rec": 2, "cell": 1005, "voltage_v": 3.0, "time_s": 10},  # another job's cell
        {"rec": 3, "cell": 1002, "voltage_v": 3.7, "time_s": 11},
        {"rec": 4, "cell": 1001, "voltage_v": 3.65, "time_s": 12},
    )
    mine, idx = index.locate(records)
    assert mine[:, LOG_COL["rec"]].tolist() == [1, 3, 4] and idx.tolist() == [0, 1, 0]
    runs[1].step_index = 3
    index.step_changed(runs[1])
    samples = index.samples(mine, idx)
    assert samples[:, 0].tolist() == [101, 102, 101]  # run ids
    assert samples[:, 3].tolist() == [0, 3, 0]  # step index
    index.note_latest(mine, idx)
    assert runs[0].last_voltage_v == pytest.approx(3.65) and runs[1].last_voltage_v == pytest.approx(3.7)


async def test_drain_reads_after_the_committed_record_and_never_hands_a_record_twice(
    store: Store, ledger: JobLedger
) -> None:
    cab = CabinetDouble()
    for t in range(5):
        cab.add_record(cell=1001, time_s=t)
    drain = LogDrain(cab, store, ledger, "cab")  # type: ignore[arg-type]
    drain.open(read_rec=2)  # records 1 and 2 belong to an earlier job
    records, last = await drain.read()
    assert records[:, LOG_COL["rec"]].tolist() == [3, 4, 5] and last == 5
    # Not handed off yet: a second read (e.g. after a failed poll) returns the same records again.
    again, _ = await drain.read()
    assert again[:, LOG_COL["rec"]].tolist() == [3, 4, 5]
    await drain.hand_off(np.empty((0, 9)), last)
    cab.add_record(cell=1001, time_s=6)
    records, last = await drain.read()
    # The writer has committed nothing of this job yet, so the instrument still returns 3-5: they are dropped.
    assert records[:, LOG_COL["rec"]].tolist() == [6] and last == 6
    assert drain.records_total == 7
    await drain.close(timeout_s=5.0)


async def test_safety_trips_a_cell_outside_the_recipe_limits(ledger: JobLedger) -> None:
    cab = CabinetDouble()
    guard = SafetyGuard("cab", cab, ledger, watchdog_s=30.0)  # type: ignore[arg-type]
    runs = _runs(3)
    v_max = RECIPE.limits.max_voltage_v
    records = _rows({"cell": 1001, "voltage_v": v_max + 0.05}, {"cell": 1002, "voltage_v": v_max - 0.1})
    await guard.host_checks(RECIPE, runs, records, np.array([0, 1]))
    assert [r.state for r in runs] == [RunState.FAULTED, RunState.RUNNING, RunState.RUNNING]
    assert runs[0].end_reason == "host_check" and cab.aborts[1] == 1 and cab.aborts[2] == 0
    assert ledger.alarms_raised == 1


async def test_a_lost_link_pauses_then_faults_and_aborts_are_retried_until_confirmed(ledger: JobLedger) -> None:
    cab = CabinetDouble()
    guard = SafetyGuard("cab", cab, ledger, watchdog_s=30.0)  # type: ignore[arg-type]
    runs = _runs(2)
    await guard.comm_lost(InstrumentTimeout("gone"), runs)
    assert [r.state for r in runs] == [RunState.PAUSED] * 2 and not guard.comm_ok
    await guard.comm_lost(InstrumentTimeout("gone"), runs)  # still within 3 watchdog periods
    assert [r.state for r in runs] == [RunState.PAUSED] * 2
    guard.lost_fault_s = 0.0  # the link has now been down longer than the instrument's watchdog allows
    await guard.comm_lost(InstrumentTimeout("gone"), runs)
    assert [r.state for r in runs] == [RunState.FAULTED] * 2 and guard.must_abort == {1, 2}
    # The link comes back: channels still on are switched off, those already off are forgotten.
    cab.state[1], cab.state[2] = CellState.RUNNING, CellState.ABORTED
    await guard.retry_aborts({1: int(CellState.RUNNING), 2: int(CellState.ABORTED)})
    assert cab.aborts[1] == 1 and cab.aborts[2] == 0 and guard.must_abort == {1}
    await guard.retry_aborts({1: int(CellState.ABORTED)})
    assert guard.must_abort == set()


async def test_persistent_bad_replies_switch_the_job_off(ledger: JobLedger) -> None:
    cab = CabinetDouble()
    guard = SafetyGuard("cab", cab, ledger, watchdog_s=30.0)  # type: ignore[arg-type]
    runs = _runs(2)
    for _ in range(MAX_BAD_POLLS - 1):
        await guard.bad_reply(ScpiError(-224, "Illegal parameter value"), runs)
    assert all(r.state is RunState.RUNNING for r in runs)
    await guard.bad_reply(ScpiError(-224, "Illegal parameter value"), runs)
    assert all(r.state is RunState.FAULTED and r.end_reason == "instrument_unreadable" for r in runs)
    assert cab.aborts[1] == cab.aborts[2] == 1


async def test_an_abort_the_instrument_refuses_is_kept_for_the_next_poll(ledger: JobLedger) -> None:
    cab = CabinetDouble()
    guard = SafetyGuard("cab", cab, ledger, watchdog_s=30.0)  # type: ignore[arg-type]
    runs = _runs(2)
    runs[1].state = RunState.PENDING  # never started: its channel may be another job's
    cab.fail_aborts = 1
    await guard.abort_runs(runs)
    assert runs[0].state is RunState.ABORTING and runs[1].state is RunState.ABORTED
    assert guard.must_abort == {1}


async def test_a_cell_the_instrument_forgot_faults_its_run(ledger: JobLedger) -> None:
    cab = CabinetDouble()
    guard = SafetyGuard("cab", cab, ledger, watchdog_s=30.0)  # type: ignore[arg-type]
    runs = _runs(3)
    runs[0].start = runs[1].start = StartState.STARTED
    status = np.array([int(CellState.UNDEFINED), int(CellState.IDLE), int(CellState.IDLE)])
    await guard.check_status(runs, status)
    # Idle is only suspicious for a started step; a step not yet started is idle by right.
    assert [r.state for r in runs] == [RunState.FAULTED, RunState.FAULTED, RunState.RUNNING]
    assert cab.forgot_programs == 1


async def test_checkpoints_are_measured_in_one_query_for_runs_still_in_that_step() -> None:
    cab = CabinetDouble()
    clock = ScaledClock(1.0, start=1_000.0)
    book = CheckpointBook("cab", cab, clock, timers=None)  # type: ignore[arg-type]
    book.attach(job_id=7)
    index = RunIndex(8)
    runs = _runs(3)
    for r in runs:
        r.start = StartState.STARTED
    index.set_runs(runs)
    book.on_checkpoint(7, 101, 0, 0)
    book.on_checkpoint(7, 102, 5, 0)  # fired for a step the run has left
    book.on_checkpoint(8, 103, 0, 0)  # another job's
    assert book.any_due
    await book.measure_due(index)
    assert not book.any_due
    assert set(runs[0].checkpoints) == {0} and runs[0].checkpoints[0][1] == pytest.approx(3.7)
    assert runs[1].checkpoints == {} and runs[2].checkpoints == {}


def test_job_end_state_from_run_states() -> None:
    done = _runs(2)
    for r in done:
        r.transition(RunState.DONE)
    assert job_end_state(done) is JobState.DONE
    mixed = _runs(2)
    mixed[0].transition(RunState.DONE)
    mixed[1].transition(RunState.FAULTED)
    assert job_end_state(mixed) is JobState.FAULTED
    mixed[1].state = RunState.ABORTED
    assert job_end_state(mixed) is JobState.ABORTED
    assert job_end_state(_runs(1)) is JobState.INTERRUPTED


HELD = """
name = "held"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
id = "degas"
kind = "hold"
timeout = "2h"
"""


class AlarmBook:
    """Records the alarms it is given (the ledger's ``alarm``, without a database)."""

    def __init__(self) -> None:
        self.raised: list[tuple[str, str, str, ChannelRun | None]] = []

    async def alarm(self, severity: str, code: str, message: str, run: ChannelRun | None = None) -> None:
        self.raised.append((severity, code, message, run))


async def test_a_hold_nobody_continued_faults_its_run_with_a_critical_alarm() -> None:
    from formation.orchestrator.cabinet.hostends import fault_host_step_timeout
    from formation.recipes import loads_recipe

    recipe = loads_recipe(HELD, "toml", source="held.toml")
    run = ChannelRun(7, "C7", "L", 3, 5.0, recipe)
    run.begin_step(0, compile_step(recipe.steps[0], recipe, 5.0))
    run.transition(RunState.RUNNING)
    book = AlarmBook()
    await fault_host_step_timeout(run, book)
    assert run.state is RunState.FAULTED
    assert book.raised == [("critical", "hold_timeout", "C7: nobody continued hold step degas in 7200 s", run)]
