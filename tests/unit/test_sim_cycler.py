"""The simulated cabinet model driven directly: CC-CV, step ends, tests, FAIL, abort, records, data log."""

from __future__ import annotations

import numpy as np
import pytest

from formation.errors import ScpiError
from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.cycler import CabinetModel
from formation.sim.datalog import DataLog, format_records
from formation.sim.wire import (
    LOG_COL,
    CellState,
    EndCode,
    StepMode,
    StepTest,
    TestAction,
    TestType,
    TestWhen,
)

T0 = 1_700_000_000.0
N = 8
IDS = [1001 + k for k in range(N)]


def make_model(*, initial_soc: float = 0.2, formed: bool = True, n: int = N, **kw: object) -> CabinetModel:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], n, seed=7, formed=formed, initial_soc=initial_soc)
    model = CabinetModel(n, cells, start_time_s=T0, **kw)  # type: ignore[arg-type]
    for k in range(n):
        model.define_cell(1001 + k, 101 + k)
    return model


def start(model: CabinetModel, seq: int = 1, ids: list[int] = IDS) -> None:
    model.enable(ids, seq)
    model.init(ids)


def col(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[:, LOG_COL[name]]


def step_rows(model: CabinetModel, cell: int, step: int) -> np.ndarray:
    rows = model.log.read(0, 10**7)
    return rows[(col(rows, "cell") == cell) & (col(rows, "step") == step)]


def trapezoid_ah(rows: np.ndarray) -> float:
    t, i = col(rows, "step_time_s"), col(rows, "current_a")
    return float(np.sum((i[1:] + i[:-1]) * np.diff(t)) / 2 / 3600)


def test_cc_cv_charge_never_exceeds_clamp_and_tapers() -> None:
    model = make_model(initial_soc=0.5)
    model.define_step(1, 1, StepMode.CHARGE, 4 * 3600, 5.0, 4.2)
    model.define_test(1, 1, 1, StepTest(TestType.CURR_LE, 0.25))
    start(model)
    peak_v = 0.0
    currents = []
    for _ in range(200):
        model.advance_to(model.time_s + 60.0)
        peak_v = max(peak_v, float(model.voltage_v.max()))
        currents.append(model.current_a.copy())
    rows = model.log.read(0, 10**7)
    assert peak_v <= 4.2
    assert col(rows, "voltage_v").max() <= 4.2
    assert np.all(model.state == CellState.DONE)
    assert np.all(model.last_end == EndCode.NEXT_BASE + 1)
    cv = step_rows(model, 1001, 1)
    i = col(cv, "current_a")
    assert i[0] == pytest.approx(5.0)
    tapered = i[col(cv, "voltage_v") > 4.1999]
    assert tapered.size > 3 and np.all(np.diff(tapered[:-1]) <= 1e-9)
    assert i[-1] <= 0.25


def test_cc_discharge_clamps_from_below() -> None:
    model = make_model(initial_soc=0.3)
    model.define_step(1, 1, StepMode.DISCHARGE, 2 * 3600, 10.0, 3.3)
    start(model)
    lowest = 10.0
    for _ in range(120):
        model.advance_to(model.time_s + 30.0)
        lowest = min(lowest, float(model.voltage_v[model.state == CellState.RUNNING].min(initial=10.0)))
    assert lowest >= 3.3
    assert np.all(model.current_a[model.state == CellState.RUNNING] <= 0.0)


def test_step_ends_by_duration_exactly_and_sequence_completes() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.CHARGE, 97.0, 1.0, 4.2)
    model.define_step(1, 2, StepMode.REST, 41.5, 0.0, 0.0)
    start(model)
    model.advance_to(T0 + 1000.0)  # one big call: substeps land on both step ends
    assert np.all(model.state == CellState.DONE)
    assert np.all(model.current_a == 0.0)
    rows = model.log.read(0, 10**7)
    ends = rows[col(rows, "end") != 0]
    assert set(col(ends, "end")) == {EndCode.TIME}
    first = ends[col(ends, "step") == 1]
    assert col(first, "step_time_s") == pytest.approx(97.0, abs=1e-6)
    assert col(first, "time_s") == pytest.approx(T0 + 97.0, abs=1e-6)
    second = ends[col(ends, "step") == 2]
    assert col(second, "time_s") == pytest.approx(T0 + 138.5, abs=1e-6)
    starts = rows[(col(rows, "step") == 2) & (col(rows, "step_time_s") == 0.0)]
    assert col(starts, "time_s") == pytest.approx(T0 + 97.0, abs=1e-6)


def test_done_cells_keep_relaxing_at_zero_current() -> None:
    model = make_model(initial_soc=0.5)
    model.define_step(1, 1, StepMode.CHARGE, 600.0, 5.0, 4.2)
    start(model)
    model.advance_to(T0 + 600.0)
    assert np.all(model.state == CellState.DONE)
    v_done = model.voltage_v.copy()
    model.advance_to(T0 + 4000.0)
    assert np.all(model.current_a == 0.0)
    assert np.all(model.voltage_v < v_done - 1e-3)  # polarisation relaxes after a charge


def test_fail_tests_win_over_next_tests() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.CHARGE, 3600.0, 2.0, 4.2)
    model.define_test(1, 1, 1, StepTest(TestType.STEPTIME_GE, 100.0))
    model.define_test(1, 1, 2, StepTest(TestType.STEPTIME_GE, 100.0, TestAction.FAIL))
    model.define_step(1, 2, StepMode.REST, 60.0, 0.0, 0.0)
    start(model)
    model.advance_to(T0 + 500.0)
    assert np.all(model.state == CellState.FAIL)
    assert np.all(model.last_end == EndCode.FAIL_BASE + 2)
    assert np.all(model.step == 1) and np.all(model.current_a == 0.0)
    end = step_rows(model, 1001, 1)[-1]
    assert end[LOG_COL["step_time_s"]] == pytest.approx(100.0, abs=1e-6)


def test_at_test_is_evaluated_once_at_its_time() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.REST, 600.0, 0.0, 0.0)
    # Holds at 30 s only if evaluated there (step time ≤ 30.001); never again afterwards.
    model.define_test(1, 1, 1, StepTest(TestType.STEPTIME_GE, 30.0, when=TestWhen.AT, at_s=30.0))
    model.define_test(1, 1, 2, StepTest(TestType.STEPTIME_GE, 1.0, when=TestWhen.BEFORE, at_s=0.5))
    start(model)
    model.advance_to(T0 + 100.0)
    assert np.all(model.last_end == EndCode.NEXT_BASE + 1)
    end = step_rows(model, 1001, 1)[-1]
    assert end[LOG_COL["step_time_s"]] == pytest.approx(30.0, abs=1e-6)

    model2 = make_model()
    model2.define_step(1, 1, StepMode.REST, 600.0, 0.0, 0.0)
    model2.define_test(1, 1, 1, StepTest(TestType.STEPTIME_GE, 45.0, when=TestWhen.AT, at_s=30.0))
    start(model2)
    model2.advance_to(T0 + 100.0)
    assert np.all(model2.state == CellState.RUNNING)  # false at 30 s, and not looked at again


def test_abort_and_watchdog_write_end_records() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.CHARGE, 3600.0, 2.0, 4.2)
    start(model)
    model.advance_to(T0 + 100.0)
    model.abort(IDS[:2])
    assert list(model.state[:2]) == [CellState.ABORTED] * 2
    assert np.all(model.current_a[:2] == 0.0)
    assert model.watchdog_abort() == N - 2
    assert np.all(model.state[2:] == CellState.ABORTED)
    rows = model.log.read(0, 10**7)
    ends = rows[col(rows, "end") != 0]
    assert sorted(col(ends, "end").tolist()) == [EndCode.ABORT] * 2 + [EndCode.WATCHDOG] * (N - 2)
    assert np.all(col(ends, "step_ah") > 0)
    assert model.watchdog_abort() == 0


def test_sequence_in_use_cannot_change() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.REST, 600.0, 0.0, 0.0)
    start(model)
    for action in (
        lambda: model.define_step(1, 1, StepMode.REST, 60.0, 0.0, 0.0),
        lambda: model.clear_sequence(1),
        lambda: model.define_cell(1001, 101),
        lambda: model.enable([1001], 1),
        lambda: model.init([1001]),
    ):
        with pytest.raises(ScpiError) as info:
            action()
        assert info.value.code == -221


@pytest.mark.parametrize(
    ("mode", "current_a", "clamp_v", "soc"),
    [
        (StepMode.CHARGE, 5.0, 4.5, 0.3),  # CC only
        (StepMode.CHARGE, 5.0, 4.2, 0.85),  # CC then CV
        (StepMode.DISCHARGE, 5.0, 2.5, 0.6),  # CC discharge
        (StepMode.REST, 0.0, 0.0, 0.5),
    ],
)
def test_end_record_ah_matches_trapezoid_of_logged_current(
    mode: StepMode, current_a: float, clamp_v: float, soc: float
) -> None:
    model = make_model(initial_soc=soc)
    model.define_step(1, 1, mode, 1800.0, current_a, clamp_v)
    model.set_step_log(1, 1, 30.0, 5.0)
    start(model)
    model.advance_to(T0 + 2000.0)
    for cell in IDS:
        rows = step_rows(model, cell, 1)
        assert col(rows, "step_time_s")[0] == 0.0
        end = rows[-1]
        assert end[LOG_COL["end"]] == EndCode.TIME
        assert end[LOG_COL["step_ah"]] == pytest.approx(trapezoid_ah(rows), rel=0.005, abs=1e-9)
    start_row = step_rows(model, 1001, 1)[0]
    assert start_row[LOG_COL["current_a"]] == pytest.approx({"CHARGE": 1, "DISCHARGE": -1, "REST": 0}[mode] * current_a)


def test_start_record_uses_the_applied_current() -> None:
    model = make_model(initial_soc=0.99)  # already near the clamp: CV from the first substep
    model.define_step(1, 1, StepMode.CHARGE, 600.0, 5.0, 4.19)
    start(model)
    model.advance_to(T0 + 10.0)
    row = step_rows(model, 1001, 1)[0]
    assert 0.0 <= row[LOG_COL["current_a"]] < 5.0
    assert row[LOG_COL["voltage_v"]] <= 4.19


def test_record_rule_every_s_and_every_mv() -> None:
    model = make_model(initial_soc=0.5)
    model.define_step(1, 1, StepMode.REST, 3600.0, 0.0, 0.0)
    model.set_step_log(1, 1, 300.0, 0.0)
    model.define_step(1, 2, StepMode.CHARGE, 600.0, 5.0, 4.2)
    model.set_step_log(1, 2, 0.0, 2.0)
    start(model, ids=[1001])
    model.advance_to(T0 + 4200.0)
    rest = step_rows(model, 1001, 1)
    assert np.allclose(np.diff(col(rest, "step_time_s")), 300.0)
    charge = step_rows(model, 1001, 2)
    dv_mv = np.abs(np.diff(col(charge, "voltage_v")[1:-1])) * 1000
    assert charge.shape[0] > 10 and np.all(dv_mv >= 2.0 - 1e-6)


def test_log_read_acknowledges_only_below_from_rec() -> None:
    log = DataLog()
    log.append(np.zeros((5, 12)))
    assert col(log.read(1, 2), "rec").tolist() == [1.0, 2.0]
    assert col(log.read(1, 10), "rec").tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # lost reply: ask again
    assert col(log.read(4, 10), "rec").tolist() == [4.0, 5.0]
    assert col(log.read(1, 10), "rec").tolist() == [4.0, 5.0]  # 1..3 are gone
    assert log.read(6, 10).shape == (0, 12)
    assert len(log) == 0 and log.next_rec == 6
    log.append(np.zeros((1, 12)))
    assert col(log.read(0, 10), "rec").tolist() == [6.0]


def test_log_is_bounded_and_counts_lost_records() -> None:
    log = DataLog(max_rows=10)
    for _ in range(7):
        log.append(np.zeros((3, 12)))
    rows = log.read(0, 100)
    assert len(rows) == 10 and log.lost == 11
    assert col(rows, "rec").tolist() == list(range(12, 22))
    log.append(np.zeros((25, 12)))
    assert col(log.read(0, 100), "rec").tolist() == list(range(37, 47))
    assert log.lost == 36


def test_model_log_bound_applies() -> None:
    model = make_model(max_log_rows=50)
    model.define_step(1, 1, StepMode.REST, 3600.0, 0.0, 0.0)
    model.set_step_log(1, 1, 10.0, 0.0)
    start(model)
    model.advance_to(T0 + 3600.0)
    assert len(model.log) == 50
    assert model.log.lost == model.log.next_rec - 1 - 50


def test_format_records_fixed_formats() -> None:
    row = np.array([[7, 1001, 2, 3, T0 + 0.1234, 12.5, 3.4123456, -2.5, 0.0123456789012, 1e-12, 25.04, 11]])
    text = format_records(row)
    assert text == "7,1001,2,3,1700000000.123,12.500,3.412346,-2.500000,0.0123456789,1e-12,25.040,11\n"
    assert format_records(np.empty((0, 12))) == ""
