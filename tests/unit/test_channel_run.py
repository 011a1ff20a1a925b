"""ChannelRun: the transition table and per-step accounting from instrument records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from formation.errors import StateError
from formation.instruments.program import LOG_COLUMNS, EndCode
from formation.orchestrator.compile import compile_step
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ALLOWED_TRANSITIONS, ChannelRun, RunState
from formation.recipes import load_builtin
from formation.store.records import StepDetails


def _row(**values: float) -> np.ndarray:
    row = np.zeros(len(LOG_COLUMNS))
    for k, v in values.items():
        row[LOG_COLUMNS.index(k)] = v
    return row


def _end(**values: float) -> EndRecord:
    return EndRecord.from_log_row(_row(**values))


@pytest.fixture
def run() -> ChannelRun:
    recipe = load_builtin("ncm21700-capacity")
    r = ChannelRun(7, "C1", "L1", 3, 5.0, recipe)
    r.begin_step(0, compile_step(recipe.steps[0], recipe, 5.0))
    return r


def test_terminal_states_allow_nothing() -> None:
    for state in (RunState.DONE, RunState.FAULTED, RunState.ABORTED):
        assert ALLOWED_TRANSITIONS[state] == frozenset()


def test_illegal_transition_raises(run: ChannelRun) -> None:
    with pytest.raises(StateError, match="illegal transition pending -> done"):
        run.transition(RunState.DONE)
    run.transition(RunState.RUNNING)
    run.transition(RunState.DONE)
    with pytest.raises(StateError):
        run.transition(RunState.RUNNING)


def test_step_accounting_from_start_and_end_records(run: ChannelRun) -> None:
    run.transition(RunState.RUNNING)
    run.seq_id = 4
    run.note_start(1000.0, 3.61)
    # A later record with step time 0 must not move the start.
    run.note_start(1500.0, 3.9)
    test_n = next(n for n, name in run.compiled.end_reasons.items() if name == "current")  # type: ignore[union-attr]
    result = run.note_end(
        _end(time_s=4600.0, step=1, step_time_s=3600.0, voltage_v=4.2, step_ah=2.4, step_wh=9.8, end=test_n)
    )
    assert result is not None
    assert result.step_id == "charge" and result.kind == "charge"
    assert result.ah == pytest.approx(2.4) and result.wh == pytest.approx(9.8)
    assert result.started_s == 1000.0 and result.ended_s == 4600.0
    assert result.start_voltage_v == pytest.approx(3.61) and result.end_voltage_v == pytest.approx(4.2)
    assert result.end_reason == "current"
    # The store keeps the details as JSON; the typed record is what crosses modules.
    assert result.details == StepDetails(end_code=test_n, seq_id=4, soc_start=0.0, soc_end=pytest.approx(0.48))
    assert json.loads(result.to_row()["details"]) == {
        "end_code": test_n,
        "seq_id": 4,
        "soc_start": 0.0,
        "soc_end": 0.48,
    }
    assert StepDetails.from_json(result.to_row()["details"]) == result.details
    assert run.steps_done == 1
    journal = json.loads(run.journal())
    assert journal["step_index"] == 0 and journal["ah"] == pytest.approx(2.4)


def test_soc_counts_from_the_last_full_discharge() -> None:
    recipe = load_builtin("ncm21700-formation")
    r = ChannelRun(1, "C", "L", 1, 5.0, recipe)
    r.transition(RunState.RUNNING)
    capacity = next(i for i, s in enumerate(recipe.steps) if s.id == "capacity")
    r.begin_step(capacity, compile_step(recipe.steps[capacity], recipe, 5.0))
    code = next(n for n, name in r.compiled.end_reasons.items() if name == "voltage")  # type: ignore[union-attr]
    r.soc_ah = 5.3
    r.note_end(_end(time_s=10.0, step=1, step_time_s=10.0, step_ah=-4.9, end=code))
    assert (r.soc_ah, r.capacity_ref_ah) == (0.0, pytest.approx(4.9))
    r.soc_ah = 2.45
    assert r.soc == pytest.approx(0.5)


def test_watchdog_end_is_reported_as_such(run: ChannelRun) -> None:
    run.transition(RunState.RUNNING)
    result = run.note_end(_end(time_s=10.0, step=1, step_time_s=10.0, end=EndCode.WATCHDOG))
    assert result is not None and result.end_reason == "watchdog"


def test_an_age_step_without_any_record_reports_an_error_instead_of_crashing() -> None:
    recipe = load_builtin("ncm21700-formation")
    r = ChannelRun(1, "C", "L", 1, 5.0, recipe)
    r.transition(RunState.RUNNING)
    age = next(i for i, s in enumerate(recipe.steps) if s.kind == "age")
    r.begin_step(age, compile_step(recipe.steps[age], recipe, 5.0))
    result = r.note_end(_end(time_s=10.0, step=1, step_time_s=recipe.steps[age].duration_s, end=EndCode.TIME))
    assert result is not None and result.details.measurement is None
    assert result.details.error is not None and "no record" in result.details.error
