"""Record timing of the simulated cabinet: records on each step's grid, and long open-circuit substeps in rests."""

from __future__ import annotations

import time

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.cycler import CabinetModel
from formation.sim.wire import LOG_COL, CellState, EndCode, StepMode

T0 = 1_700_000_000.0


def make_model(n: int = 4, *, soc: float = 0.5, seed: int = 2, **kw: float) -> CabinetModel:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], n, seed=seed, formed=True, initial_soc=soc, defect_fraction=0.1)
    model = CabinetModel(n, cells, start_time_s=T0, **kw)
    for k in range(n):
        model.define_cell(1001 + k, (k // 32 + 1) * 100 + k % 32 + 1)
    return model


def ids_of(model: CabinetModel) -> list[int]:
    return [1001 + k for k in range(model.n)]


def start(model: CabinetModel) -> None:
    model.enable(ids_of(model), 1)
    model.init(ids_of(model))


def poll_unevenly(model: CabinetModel, until_s: float, seed: int = 0, max_chunk_s: float = 0.9) -> None:
    """Advance like a server ticking at uneven clock intervals."""
    rng = np.random.default_rng(seed)
    while model.time_s < until_s:
        model.advance_to(min(until_s, model.time_s + float(rng.uniform(0.01, max_chunk_s))))


def rows_of(model: CabinetModel, cell: int, step: int) -> np.ndarray:
    rows = model.log.read(0, 10**7)
    return rows[(rows[:, LOG_COL["cell"]] == cell) & (rows[:, LOG_COL["step"]] == step)]


# --- records on the step's grid ----------------------------------------------------------------------------


def test_pulse_records_land_on_whole_seconds_of_step_time() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.REST, 37.3, 0.0, 0.0)  # the pulse starts off any whole second
    model.define_step(1, 2, StepMode.DISCHARGE, 18.0, 5.0, 2.5)
    model.set_step_log(1, 2, 1.0, 0.0)
    start(model)
    poll_unevenly(model, T0 + 80.0)
    for cell in ids_of(model):
        rows = rows_of(model, cell, 2)
        step_time_s = rows[:, LOG_COL["step_time_s"]]
        np.testing.assert_allclose(step_time_s, np.arange(19.0), atol=1e-6)
        np.testing.assert_allclose(rows[:, LOG_COL["time_s"]], T0 + 37.3 + step_time_s, atol=1e-6)
        assert rows[-1, LOG_COL["end"]] == EndCode.TIME and np.all(rows[:-1, LOG_COL["end"]] == 0)
        assert np.all(np.diff(rows[:, LOG_COL["voltage_v"]]) < 0.0)  # a discharge pulse only falls
        np.testing.assert_allclose(rows[1:, LOG_COL["step_ah"]], -5.0 * step_time_s[1:] / 3600.0, rtol=1e-9)


def test_sub_second_records() -> None:
    model = make_model()
    model.define_step(1, 1, StepMode.CHARGE, 2.0, 2.5, 4.2)
    model.set_step_log(1, 1, 0.1, 0.0)
    start(model)
    poll_unevenly(model, T0 + 5.0, max_chunk_s=0.37)
    rows = rows_of(model, 1002, 1)
    np.testing.assert_allclose(rows[:, LOG_COL["step_time_s"]], np.arange(21) * 0.1, atol=1e-6)


def test_grid_records_inside_a_substep_are_the_exact_state_there() -> None:
    """Out-of-phase channels: a record between two substeps equals the state of a cell stepped exactly to it."""
    model = make_model(2, soc=0.4)
    model.define_step(1, 1, StepMode.DISCHARGE, 120.0, 5.0, 2.5)
    model.set_step_log(1, 1, 7.0, 0.0)
    model.enable([1001], 1)
    model.init([1001])
    model.advance_to(T0 + 2.5)
    model.enable([1002], 1)
    model.init([1002])  # 2.5 s behind: its grid points fall inside 1001's substeps and vice versa
    poll_unevenly(model, T0 + 130.0, seed=3, max_chunk_s=4.0)
    twin = make_model(2, soc=0.4)
    twin.define_step(1, 1, StepMode.DISCHARGE, 120.0, 5.0, 2.5)
    twin.set_step_log(1, 1, 7.0, 0.0)
    start(twin)  # both in phase, polled on the grid itself: every record ends a substep
    for t in np.arange(1.0, 131.0):
        twin.advance_to(T0 + float(t))
    late, reference = rows_of(model, 1002, 1), rows_of(twin, 1002, 1)
    np.testing.assert_allclose(late[:, LOG_COL["step_time_s"]], reference[:, LOG_COL["step_time_s"]], atol=1e-6)
    for name in ("voltage_v", "step_ah"):
        np.testing.assert_allclose(late[:, LOG_COL[name]], reference[:, LOG_COL[name]], rtol=2e-5, atol=2e-5)
    # Joule heat is taken per substep, and the two ran different substeps: a few mK apart.
    np.testing.assert_allclose(late[:, LOG_COL["temp_c"]], reference[:, LOG_COL["temp_c"]], atol=5e-3)
    np.testing.assert_allclose(late[:, LOG_COL["time_s"]] - T0 - 2.5, reference[:, LOG_COL["time_s"]] - T0, atol=1e-6)


def test_voltage_records_do_not_shift_the_time_grid() -> None:
    model = make_model(1)
    model.define_step(1, 1, StepMode.CHARGE, 300.0, 5.0, 4.2)
    model.set_step_log(1, 1, 30.0, 2.0)
    start(model)
    poll_unevenly(model, T0 + 310.0, max_chunk_s=3.0)
    step_time_s = rows_of(model, 1001, 1)[:, LOG_COL["step_time_s"]]
    on_grid = step_time_s[np.isclose(step_time_s % 30.0, 0.0, atol=1e-6) | np.isclose(step_time_s % 30.0, 30.0)]
    np.testing.assert_allclose(on_grid, np.arange(0.0, 301.0, 30.0), atol=1e-6)
    assert step_time_s.size > on_grid.size  # the mV rule added records between


# --- long rests --------------------------------------------------------------------------------------------


def charge_then_rest(max_rest_dt_s: float, n: int = 8, rest_s: float = 12 * 3600.0) -> CabinetModel:
    model = make_model(n, soc=0.45, max_rest_dt_s=max_rest_dt_s)
    model.cells.add_leak_a(0, 400e-6)
    model.define_step(1, 1, StepMode.CHARGE, 600.0, 5.0, 4.2)
    model.set_step_log(1, 1, 60.0, 5.0)
    model.define_step(1, 2, StepMode.REST, rest_s, 0.0, 0.0)
    model.set_step_log(1, 2, 300.0, 0.0)
    start(model)
    poll_unevenly(model, T0 + 600.0 + rest_s + 10.0, max_chunk_s=500.0)
    return model


def test_long_rest_substeps_leave_relaxation_and_leak_drift_unchanged() -> None:
    fine = charge_then_rest(max_rest_dt_s=5.0)  # the ordinary substep throughout
    coarse = charge_then_rest(max_rest_dt_s=60.0)
    assert coarse.substeps * 5 < fine.substeps
    for cell in ids_of(fine):
        a, b = rows_of(fine, cell, 2), rows_of(coarse, cell, 2)
        np.testing.assert_allclose(b[:, LOG_COL["step_time_s"]], a[:, LOG_COL["step_time_s"]], atol=1e-6)
        # Relaxation (first hours) and the leak drift (then on) agree to a few µV.
        np.testing.assert_allclose(b[:, LOG_COL["voltage_v"]], a[:, LOG_COL["voltage_v"]], atol=5e-6)
        np.testing.assert_allclose(b[:, LOG_COL["temp_c"]], a[:, LOG_COL["temp_c"]], atol=1e-3)
    relax_v = rows_of(coarse, 1002, 2)[:, LOG_COL["voltage_v"]]
    assert relax_v[0] - relax_v[12] > 0.01  # there was a relaxation curve to get right (> 10 mV in 1 h)
    # The leak is taken at each substep's start temperature: cooling after the charge differs by < 1 µV.
    np.testing.assert_allclose(coarse.cells.soc, fine.cells.soc, rtol=0, atol=1e-6)


def test_millivolt_rule_keeps_its_resolution_in_a_long_rest() -> None:
    model = make_model(4, soc=0.45, seed=4)
    model.define_step(1, 1, StepMode.CHARGE, 600.0, 5.0, 4.2)
    model.define_step(1, 2, StepMode.REST, 86400.0, 0.0, 0.0)
    model.set_step_log(1, 2, 3600.0, 1.0)
    start(model)
    poll_unevenly(model, T0 + 600.0 + 86400.0 + 10.0, max_chunk_s=500.0)
    rows = rows_of(model, 1001, 2)
    late = rows[rows[:, LOG_COL["step_time_s"]] >= 60.0]  # the first seconds move faster than any substep
    dv_mv = np.abs(np.diff(late[:, LOG_COL["voltage_v"]])) * 1e3
    assert late.shape[0] > 20  # the relaxation after the charge is logged per mV
    assert float(dv_mv.max()) < 2.0  # under two steps of the rule between records
    assert model.substeps < 86400 / 5 / 5  # and still long substeps once relaxation has died out


def test_long_substeps_only_while_every_running_cell_rests() -> None:
    model = make_model(2)
    model.define_step(1, 1, StepMode.REST, 3600.0, 0.0, 0.0)
    model.set_step_log(1, 1, 0.0, 0.0)
    model.define_step(2, 1, StepMode.CHARGE, 3600.0, 0.5, 4.2)
    model.set_step_log(2, 1, 0.0, 0.0)
    model.enable([1001], 1)
    model.enable([1002], 2)
    model.init([1001, 1002])
    model.advance_to(T0 + 600.0)
    assert model.substeps == 120  # 5 s: one channel charges
    model.abort([1002])
    model.advance_to(T0 + 1200.0)
    assert model.substeps == 130  # 60 s: all that runs rests
    assert model.state[0] == CellState.RUNNING


def test_max_rest_dt_must_not_be_below_max_dt() -> None:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], 1)
    with pytest.raises(ValueError, match="max_rest_dt_s"):
        CabinetModel(1, cells, start_time_s=T0, max_dt_s=5.0, max_rest_dt_s=1.0)


def test_seven_day_age_step_speed() -> None:
    """Not timed: prints how long a 7-day age rest of 64 cells takes to simulate (substep count asserted; the
    count does not depend on the number of cells, bench/bench_sim_speed.py measures 256)."""
    n = 64
    model = make_model(n, soc=0.3)
    model.define_step(1, 1, StepMode.REST, 7 * 86400.0, 0.0, 0.0)
    model.set_step_log(1, 1, 3600.0, 1.0)
    start(model)
    started = time.perf_counter()
    poll_unevenly(model, T0 + 7 * 86400.0 + 60.0, max_chunk_s=2000.0)
    elapsed = time.perf_counter() - started
    print(f"\n7-day age step, {n} cells: {model.substeps} substeps, {elapsed:.2f} s")
    assert np.all(model.state == CellState.DONE)
    assert model.substeps <= 7 * 86400 / 60 + 400
    assert rows_of(model, 1001, 1).shape[0] == 7 * 24 + 1
