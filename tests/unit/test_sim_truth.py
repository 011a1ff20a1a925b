"""Simulator ground truth for DCIR and ageing: pulse response on a copy, K-value truth, leak defects, ambient."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.plant import CabinetSpec, build_cabinet
from formation.sim.scpi import Dispatcher
from formation.sim.wire import LOG_COL, CellState, StepMode

NCM = PRESETS["ncm21700-5ah"]
LFP = PRESETS["lfp-280ah"]
T0 = 1_700_000_000.0


def make_model(n: int = 8, *, soc: float = 0.5, seed: int = 5, preset: str = "ncm21700-5ah") -> CabinetModel:
    cells = CellPopulation(PRESETS[preset], n, seed=seed, formed=True, initial_soc=soc, defect_fraction=0.0)
    model = CabinetModel(n, cells, start_time_s=T0)
    for k in range(n):
        model.define_cell(1001 + k, 101 + k)
    return model


def rc_dcir_ohm(truth: dict[str, np.ndarray], t_s: float) -> np.ndarray:
    """R0 + R1(1 - e^-t/τ1) + R2(1 - e^-t/τ2): the circuit's ΔV/ΔI without the OCV drift."""
    return (
        truth["r0_ohm"]
        + truth["r1_ohm"] * (1.0 - np.exp(-t_s / truth["tau1_s"]))
        + truth["r2_ohm"] * (1.0 - np.exp(-t_s / truth["tau2_s"]))
    )


# --- DCIR truth --------------------------------------------------------------------------------------------


def test_short_pulse_truth_is_the_circuit_resistance() -> None:
    model = make_model()
    truth = model.cells.truth_arrays()
    for k, cell in enumerate(model.cell_id.tolist()):
        dcir_ohm = model.truth_dcir_ohm(cell, -5.0, [1.0, 2.0])
        np.testing.assert_allclose(dcir_ohm, [rc_dcir_ohm(truth, t)[k] for t in (1.0, 2.0)], rtol=0.03)


@pytest.mark.parametrize("current_a", [-5.0, 5.0])
def test_pulse_truth_includes_the_ocv_drift_of_the_pulse(current_a: float) -> None:
    """Up to 18 s the truth is the circuit plus the OCV the pulse itself moved (|ΔOCV| / |ΔI| = slope·t/cap)."""
    model = make_model(soc=0.45)
    truth = model.cells.truth_arrays()
    times_s = [1.0, 10.0, 18.0]
    for k, cell in enumerate(model.cell_id.tolist()):
        dcir_ohm = model.truth_dcir_ohm(cell, current_a, times_s)
        drift_ohm = truth["ocv_slope_v"][k] * np.array(times_s) / 3600.0 / truth["capacity_ah"][k]
        expected_ohm = [rc_dcir_ohm(truth, t)[k] for t in times_s] + drift_ohm
        # The pulse's own heat shifts the OCV and R a little: 0.5 % covers it.
        np.testing.assert_allclose(dcir_ohm, expected_ohm, rtol=0.005)
        assert dcir_ohm[2] > dcir_ohm[1] > dcir_ohm[0]  # DCIR grows with pulse length


def test_pulse_truth_changes_nothing_and_answers_in_the_order_asked() -> None:
    model = make_model()
    before = model.cells.truth_arrays()
    voltage_v = model.voltage_v.copy()
    forward = model.truth_dcir_ohm(1003, -5.0, [1.0, 10.0, 18.0])
    backward = model.truth_dcir_ohm(1003, -5.0, [18.0, 1.0, 10.0])
    np.testing.assert_array_equal(backward, forward[[2, 0, 1]])
    after = model.cells.truth_arrays()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    np.testing.assert_array_equal(model.voltage_v, voltage_v)


def test_pulse_truth_rises_at_low_soc() -> None:
    low = make_model(soc=0.05).truth_dcir_ohm(1001, -1.0, [10.0])[0]
    mid = make_model(soc=0.5).truth_dcir_ohm(1001, -1.0, [10.0])[0]
    assert low > 3.0 * mid


def test_measured_pulse_on_the_cycler_matches_the_truth() -> None:
    """What the host measures from 1 s records of an 18 s pulse after a rest is the truth queried at its start."""
    model = make_model(soc=0.5)
    ids = model.cell_id.tolist()
    model.define_step(1, 1, StepMode.REST, 600.0, 0.0, 0.0)
    model.define_step(1, 2, StepMode.DISCHARGE, 18.0, 5.0, 2.5)
    model.set_step_log(1, 2, 1.0, 0.0)
    model.enable(ids, 1)
    model.init(ids)
    model.advance_to(T0 + 600.0)  # the rest ends here; the pulse starts with the next substep
    baseline_v = model.voltage_v.copy()
    truth_ohm = np.array([model.truth_dcir_ohm(cell, -5.0, [1.0, 10.0, 18.0]) for cell in ids])
    rng = np.random.default_rng(1)
    while model.time_s < T0 + 640.0:  # uneven host polls: records must not care
        model.advance_to(model.time_s + float(rng.uniform(0.03, 0.9)))
    assert np.all(model.state == CellState.DONE)
    rows = model.log.read(0, 10**6)
    pulse = rows[rows[:, LOG_COL["step"]] == 2]
    for k, cell in enumerate(ids):
        mine = pulse[pulse[:, LOG_COL["cell"]] == cell]
        step_time_s, voltage_v = mine[:, LOG_COL["step_time_s"]], mine[:, LOG_COL["voltage_v"]]
        at_v = voltage_v[[int(np.flatnonzero(np.isclose(step_time_s, t, atol=1e-6))[0]) for t in (1.0, 10.0, 18.0)]]
        measured_ohm = (at_v - baseline_v[k]) / -5.0
        np.testing.assert_allclose(measured_ohm, truth_ohm[k], rtol=0.005)


# --- K-value truth -----------------------------------------------------------------------------------------


def test_k_truth_is_the_ocv_drift_over_a_day_at_rest() -> None:
    model = make_model(16, soc=0.45, seed=12)
    model.cells.add_leak_a(np.arange(3), 300e-6)  # three micro-shorts
    ids = model.cell_id.tolist()
    model.define_step(1, 1, StepMode.REST, 3 * 86400.0, 0.0, 0.0)
    model.set_step_log(1, 1, 3600.0, 1.0)
    model.enable(ids, 1)
    model.init(ids)
    model.advance_to(T0 + 3600.0)
    k_start = np.array([model.truth(cell)["k_mv_per_day"] for cell in ids])
    slope_v = np.array([model.truth(cell)["ocv_slope_v"] for cell in ids])
    start_v = model.voltage_v.copy()
    model.advance_to(T0 + 3600.0 + 86400.0)
    drift_mv_per_day = (start_v - model.voltage_v) * 1e3
    # The SEI growth falls over the day: the drift is the mean of the instantaneous K at both ends.
    k_truth = 0.5 * (k_start + np.array([model.truth(cell)["k_mv_per_day"] for cell in ids]))
    np.testing.assert_allclose(drift_mv_per_day, k_truth, rtol=0.02)
    assert np.all(k_truth[:3] > 2.0 * np.median(k_truth[3:]))  # 300 µA on top of the ~1 mV/day of a good cell
    np.testing.assert_allclose(slope_v, (3.741 - 3.610) / 0.1, rtol=1e-9)  # the 40–50 % segment of the table


def test_k_truth_at_a_table_node_uses_the_segment_the_leak_moves_into() -> None:
    pop = CellPopulation(NCM, 1, formed=True, initial_soc=0.3, defect_fraction=0.0)
    assert pop.truth(0)["ocv_slope_v"] == pytest.approx((3.479 - 3.347) / 0.1)


def test_k_truth_of_lfp_is_tiny_on_the_plateau_and_visible_at_low_soc() -> None:
    pop = CellPopulation(LFP, 2, formed=True, initial_soc=np.array([0.6, 0.03]), defect_fraction=0.0)
    truth = pop.truth_arrays()
    k_mv_per_day = truth["k_mv_per_day"]
    assert k_mv_per_day[0] < 0.1  # ~4.5 mA of leak and SEI growth on 280 Ah
    per_ma = k_mv_per_day / (truth["self_discharge_a"] * 1e3)  # per mA: ≈ 0.01 mV/day on the plateau (docs/domain.md)
    assert per_ma[0] == pytest.approx(0.01, rel=0.5)
    assert per_ma[1] > 20.0 * per_ma[0]


def test_ncm_k_screening_is_no_longer_easy_at_30pct_soc() -> None:
    """The SEI growth and its spread put good cells at 0.5-2 mV/day: big leaks stand out, micro-shorts mostly not."""
    pop = CellPopulation(
        NCM, 2000, seed=21, formed=True, initial_soc=0.3, defect_fraction=0.06, microshort_fraction=0.05
    )
    truth = pop.truth_arrays()
    k = truth["k_mv_per_day"]
    leaky, shorted = pop.defect == "leak", pop.defect == "microshort"
    assert leaky.sum() > 20 and shorted.sum() == 100
    assert {"resistance", "capacity"} <= set(pop.defect[pop.is_defective])
    baseline_a = np.median(truth["leak_a"][~pop.is_defective])
    extra_a = truth["leak_a"] - baseline_a
    assert np.all((extra_a[leaky] > 40e-6) & (extra_a[leaky] < 1100e-6))
    assert np.all((extra_a[shorted] > 0.0) & (extra_a[shorted] < 80e-6))
    good = k[~pop.is_defective]
    assert 0.5 < float(np.median(good)) < 2.0  # docs/domain.md: a fresh good NCM cell, 3 days after formation
    sigma = 1.4826 * float(np.median(np.abs(good - np.median(good))))
    cull = float(np.median(good)) + 4.5 * sigma
    assert np.all(k[leaky & (extra_a > 500e-6)] > cull)  # a big leak is caught by a lot-relative cull
    assert np.mean(k[shorted] > cull) < 0.2  # a 10-50 µA micro-short mostly hides in the spread


def test_lfp_leak_defects_are_unchanged() -> None:
    assert (LFP.defect_leak_min_a, LFP.defect_leak_max_a) == (0.2e-3, 5e-3)


# --- ambient -----------------------------------------------------------------------------------------------


def test_cells_follow_the_cabinet_ambient() -> None:
    model = build_cabinet(CabinetSpec("warm", channels=4, formed=True, initial_soc=0.2, ambient_c=35.0), T0)
    np.testing.assert_allclose(model.cells.temperature_c, 35.0)
    ids = [1001 + k for k in range(4)]
    for k, cell in enumerate(ids):
        model.define_cell(cell, 101 + k)
    model.define_step(1, 1, StepMode.CHARGE, 1800.0, 5.0, 4.2)
    model.define_step(1, 2, StepMode.REST, 6 * 3600.0, 0.0, 0.0)
    model.enable(ids, 1)
    model.init(ids)
    model.advance_to(T0 + 1800.0)
    assert np.all(model.cells.temperature_c > 35.5)  # 1C heats
    model.advance_to(T0 + 1800.0 + 6 * 3600.0)
    np.testing.assert_allclose(model.cells.temperature_c, 35.0, atol=0.01)
    assert math.isclose(model.truth(ids[0])["temperature_c"], 35.0, abs_tol=0.01)  # type: ignore[arg-type]


# --- over SCPI ---------------------------------------------------------------------------------------------


@pytest.fixture
def scpi() -> Dispatcher:
    return Dispatcher(COMMAND_TABLE, CabinetCommands(make_model()))


def test_truth_json_has_k_and_slope(scpi: Dispatcher) -> None:
    truth = json.loads(scpi.execute("SIM:CELL:TRUTH? 1002") or "")
    assert truth["self_discharge_a"] == pytest.approx(truth["leak_a"] + truth["sei_growth_a"], rel=1e-12)
    expected = truth["self_discharge_a"] * 24.0 / truth["capacity_ah"] * truth["ocv_slope_v"] * 1000.0
    assert truth["k_mv_per_day"] == pytest.approx(expected, rel=1e-12)
    assert truth["ocv_slope_v"] > 0.0


def test_dcir_query_replies_one_value_per_time(scpi: Dispatcher) -> None:
    reply = scpi.execute("SIM:CELL:DCIR? 1001,-5,1,10,18") or ""
    values = [float(v) for v in reply.split(",")]
    assert len(values) == 3 and 0.015 < values[0] < values[1] < values[2] < 0.03
    assert scpi.execute("sim:cell:dcir? 1001,2.5,10") is not None
    assert scpi.execute("SYST:ERR?") == '+0,"No error"'


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("SIM:CELL:DCIR? 1001,-5", "-109"),  # no time
        ("SIM:CELL:DCIR? 1001,0,10", "-224"),  # no current step from a resting cell
        ("SIM:CELL:DCIR? 1001,-5,0", "-222"),
        ("SIM:CELL:DCIR? 1001,-5,4000", "-222"),
        ("SIM:CELL:DCIR? 1999,-5,10", "-224"),  # not defined
        ("SIM:CELL:DCIR? 1001,-5," + ",".join(["1"] * 33), "-108"),
    ],
)
def test_dcir_query_rejects_bad_parameters(scpi: Dispatcher, line: str, error: str) -> None:
    assert scpi.execute(line) is None
    assert (scpi.execute("SYST:ERR?") or "").startswith(error)
