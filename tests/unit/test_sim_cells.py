"""Simulated cell physics: OCV tables, resistance, SEI, leak, thermal node, CV inversion, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from formation.sim.cells import DEFECT_KINDS, PRESETS, CellPopulation
from formation.sim.ocv import OCV_POINTS_V, SOC_POINTS, ocv_curve

NCM = PRESETS["ncm21700-5ah"]
LFP = PRESETS["lfp-280ah"]
DT_S = 10.0


def cccv_charge(
    pop: CellPopulation, current_a: float, cv_v: float, taper_a: float, dt_s: float = DT_S
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """CC-CV charge of every cell (a miniature cycler clamp); Ah in, and (voltage, in-CV mask) per step."""
    ah = np.zeros(pop.n)
    active = np.ones(pop.n, dtype=bool)
    trace = []
    for _ in range(int(48 * 3600 / dt_s)):
        cv_current_a = pop.current_for_voltage_a(cv_v, dt_s)
        in_cv = active & (cv_current_a < current_a)
        applied_a = np.where(active, np.minimum(current_a, cv_current_a), 0.0)
        voltage_v = pop.step(dt_s, applied_a, 25.0)
        ah += applied_a * dt_s / 3600.0
        trace.append((voltage_v, in_cv))
        active &= ~(in_cv & (applied_a <= taper_a))
        if not active.any():
            return ah, trace
    raise AssertionError("CC-CV charge did not reach its taper")


def cc_discharge(pop: CellPopulation, current_a: float, cutoff_v: float, dt_s: float = DT_S) -> np.ndarray:
    """CC discharge of every cell to ``cutoff_v``; Ah out per cell."""
    ah = np.zeros(pop.n)
    active = np.ones(pop.n, dtype=bool)
    for _ in range(int(48 * 3600 / dt_s)):
        applied_a = np.where(active, -current_a, 0.0)
        voltage_v = pop.step(dt_s, applied_a, 25.0)
        ah -= applied_a * dt_s / 3600.0
        active &= voltage_v > cutoff_v
        if not active.any():
            return ah
    raise AssertionError("CC discharge did not reach its cut-off")


def rest(pop: CellPopulation, duration_s: float, dt_s: float = 600.0) -> None:
    for _ in range(round(duration_s / dt_s)):
        pop.step(dt_s, 0.0, 25.0)


# --- OCV ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chemistry", ["NCM", "LFP"])
def test_ocv_curve_matches_domain_table(chemistry: str) -> None:
    curve = ocv_curve(chemistry)
    np.testing.assert_allclose(curve(SOC_POINTS), OCV_POINTS_V[chemistry], atol=1e-12)


def test_ncm_cell_ocv_endpoints_and_midpoint() -> None:
    pop = CellPopulation(NCM, 3, formed=True, initial_soc=np.array([0.0, 0.5, 1.0]), defect_fraction=0.0)
    np.testing.assert_allclose(pop.ocv_v(), [2.509, 3.741, 4.200], atol=1e-9)


def test_lfp_280ah_window_starts_above_the_reference_tail() -> None:
    pop = CellPopulation(LFP, 2, formed=True, initial_soc=np.array([0.0, 1.0]), defect_fraction=0.0)
    empty_v, full_v = pop.ocv_curve(pop.soc)  # the table is the mean of the two hysteresis branches
    assert 2.45 < empty_v < 2.6
    assert full_v == pytest.approx(3.600, abs=1e-9)


def test_ocv_is_clamped_and_finite_in_abuse() -> None:
    curve = ocv_curve("NCM")
    soc = np.array([-5.0, -0.2, -0.05, -0.01, 0.0, 1.0, 1.01, 1.05, 3.0])
    ocv_v = curve(soc)
    assert np.all(np.isfinite(ocv_v))
    assert np.all(np.diff(ocv_v) >= 0.0)
    assert ocv_v[3] < 2.509 < 4.2 < ocv_v[6]  # keeps moving just outside 0–100 %
    assert ocv_v[0] == ocv_v[2] and ocv_v[-1] == ocv_v[-2]  # clamped further out
    np.testing.assert_allclose(curve.soc_at(curve(np.array([0.1, 0.55, 0.97]))), [0.1, 0.55, 0.97])


def test_over_discharge_gives_finite_low_voltage() -> None:
    pop = CellPopulation(NCM, 4, formed=True, initial_soc=0.02, defect_fraction=0.0)
    for _ in range(200):
        voltage_v = pop.step(DT_S, -5.0, 25.0)
    assert np.all(pop.soc < 0.0)
    assert np.all(np.isfinite(voltage_v)) and np.all(voltage_v < 2.5)
    assert np.all(np.isfinite(pop.temperature_c))


# --- resistance --------------------------------------------------------------------------------------------


def test_resistance_rises_steeply_at_low_soc() -> None:
    pop = CellPopulation(NCM, 1, formed=True, initial_soc=0.5, defect_fraction=0.0)
    r_mid = pop.truth(0)["r0_ohm"]
    pop.soc[:] = 0.05
    r_low = pop.truth(0)["r0_ohm"]
    assert r_low / r_mid == pytest.approx(NCM.r_low_soc_ratio, rel=1e-6)
    pop.soc[:] = 0.3
    assert r_mid < pop.truth(0)["r0_ohm"] < 1.5 * r_mid
    pop.soc[:] = 0.0
    assert pop.truth(0)["r0_ohm"] > r_low


def test_ncm_dcir_10s_near_21_mohm_at_50pct_25c() -> None:
    pop = CellPopulation(NCM, 200, seed=4, formed=True, initial_soc=0.5, defect_fraction=0.0)
    dcir_mohm = pop.truth_arrays()["dcir_10s_ohm"] * 1e3
    assert 20.0 <= float(np.mean(dcir_mohm)) <= 22.0


def test_dcir_pulse_matches_truth() -> None:
    """A 10 s 1C pulse from rest: ΔV/ΔI is the reported 10 s DCIR plus the OCV the pulse itself moved."""
    pop = CellPopulation(NCM, 8, seed=5, formed=True, initial_soc=0.45, defect_fraction=0.0)
    expected_ohm = pop.truth_arrays()["dcir_10s_ohm"]
    rest_v = pop.terminal_voltage_v(0.0)
    ocv_before_v = pop.ocv_v()
    pulse_v = pop.step(10.0, -5.0, 25.0)
    ocv_drop_v = ocv_before_v - pop.ocv_v()
    assert np.all(ocv_drop_v > 0.0)
    # rtol covers the OCV's small temperature shift from the pulse's own heat.
    np.testing.assert_allclose((rest_v - pulse_v - ocv_drop_v) / 5.0, expected_ohm, rtol=1e-3)


def test_lfp_r0_in_quarter_milliohm_range() -> None:
    pop = CellPopulation(LFP, 50, seed=1, formed=True, initial_soc=0.5, defect_fraction=0.0)
    r0_mohm = pop.truth_arrays()["r0_ohm"] * 1e3
    assert 0.2 <= float(np.mean(r0_mohm)) <= 0.3


def test_resistance_rises_at_low_temperature() -> None:
    pop = CellPopulation(NCM, 1, formed=True, initial_soc=0.5, ambient_c=25.0, defect_fraction=0.0)
    warm = pop.truth(0)["r0_ohm"]
    pop.temperature_c[:] = 0.0
    cold = pop.truth(0)["r0_ohm"]
    assert cold / warm == pytest.approx(math.exp(NCM.r_activation_k * (1 / 273.15 - 1 / 298.15)))
    assert cold > 2.0 * warm


# --- population: determinism, spread, defects --------------------------------------------------------------


def test_same_seed_same_population_and_trajectory() -> None:
    a = CellPopulation(NCM, 64, seed=7, initial_soc=0.3)
    b = CellPopulation(NCM, 64, seed=7, initial_soc=0.3)
    truth_a, truth_b = a.truth_arrays(), b.truth_arrays()
    for key in truth_a:
        np.testing.assert_array_equal(truth_a[key], truth_b[key])
    for _ in range(50):
        np.testing.assert_array_equal(a.step(DT_S, 2.5, 25.0), b.step(DT_S, 2.5, 25.0))
    other = CellPopulation(NCM, 64, seed=8, initial_soc=0.3)
    assert not np.array_equal(other.capacity_ah, CellPopulation(NCM, 64, seed=7).capacity_ah)


def test_cell_to_cell_spread() -> None:
    pop = CellPopulation(NCM, 4000, seed=2, formed=True, initial_soc=0.5, defect_fraction=0.0)
    truth = pop.truth_arrays()
    capacity_cv = np.std(truth["capacity_ah"]) / np.mean(truth["capacity_ah"])
    r0_cv = np.std(truth["r0_ohm"]) / np.mean(truth["r0_ohm"])
    assert 0.006 < capacity_cv < 0.009
    assert 0.025 < r0_cv < 0.033
    leak_a = truth["leak_a"]
    assert 5e-6 < float(np.median(leak_a)) < 50e-6  # microamps for a 21700
    assert np.all(leak_a > 0.0)


def test_defects_are_seeded_and_each_kind_does_what_it_says() -> None:
    n = 400
    good = CellPopulation(NCM, n, seed=11, formed=True, initial_soc=0.5, defect_fraction=0.0)
    bad = CellPopulation(NCM, n, seed=11, formed=True, initial_soc=0.5, defect_fraction=0.1)
    assert int(bad.is_defective.sum()) == 40
    assert set(bad.defect[bad.is_defective]) <= set(DEFECT_KINDS)
    assert np.all(bad.defect[~bad.is_defective] == "")
    np.testing.assert_array_equal(
        CellPopulation(NCM, n, seed=11, defect_fraction=0.1).defect, bad.defect
    )  # the same seed marks the same cells
    median_capacity_ah = np.median(good.capacity_ah)
    median_r0 = np.median(good.truth_arrays()["r0_ohm"])
    truth = bad.truth_arrays()
    for index in np.flatnonzero(bad.is_defective):
        kind = bad.defect[index]
        if kind == "leak":
            assert truth["leak_a"][index] >= NCM.defect_leak_min_a
        elif kind == "resistance":
            assert truth["r0_ohm"][index] > 1.2 * median_r0
        else:
            assert truth["capacity_ah"][index] < 0.96 * median_capacity_ah


def test_truth_of_one_cell_has_every_field() -> None:
    pop = CellPopulation(NCM, 3, seed=1, initial_soc=0.4, defect_fraction=0.0)
    truth = pop.truth(2)
    for key in ("capacity_ah", "soc", "r0_ohm", "r1_ohm", "tau1_s", "r2_ohm", "tau2_s", "leak_a"):
        assert isinstance(truth[key], float) and truth[key] > 0.0
    assert truth["sei_remaining_ah"] == pytest.approx(float(pop.sei_budget_ah[2]))
    assert truth["defect"] == ""
    with pytest.raises(IndexError):
        pop.truth(3)


# --- capacity and first cycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset_name", ["ncm21700-5ah", "lfp-280ah"])
def test_formed_capacity_check_delivers_nominal(preset_name: str) -> None:
    preset = PRESETS[preset_name]
    nominal_ah = preset.nominal_capacity_ah
    pop = CellPopulation(preset, 64, seed=3, formed=True, initial_soc=0.0, defect_fraction=0.05)
    cccv_charge(pop, nominal_ah / 5, preset.max_voltage_v, nominal_ah / 20)
    rest(pop, 1800.0)
    delivered_ah = cc_discharge(pop, nominal_ah / 5, preset.min_voltage_v)
    good = ~pop.is_defective
    assert np.all(np.abs(delivered_ah[good] / nominal_ah - 1.0) <= 0.03)
    assert abs(float(np.mean(delivered_ah[good])) / nominal_ah - 1.0) < 0.01
    low_capacity = pop.defect == "capacity"
    assert low_capacity.any()
    assert np.all(delivered_ah[low_capacity] < 0.96 * nominal_ah)


@pytest.mark.parametrize("preset_name", ["ncm21700-5ah", "lfp-280ah"])
def test_fresh_cell_first_cycle_efficiency(preset_name: str) -> None:
    preset = PRESETS[preset_name]
    nominal_ah = preset.nominal_capacity_ah
    pop = CellPopulation(preset, 16, seed=9, formed=False, initial_soc=0.0, defect_fraction=0.0)
    # 30 s steps: a C/10 charge and a C/5 discharge move 0.08 % and 0.17 % of the charge a step (the suite's time).
    charge_ah, _ = cccv_charge(pop, nominal_ah / 10, preset.max_voltage_v, nominal_ah / 20, dt_s=30.0)
    discharge_ah = cc_discharge(pop, nominal_ah / 5, preset.min_voltage_v, dt_s=30.0)
    fce = discharge_ah / charge_ah
    assert np.all((fce >= 0.85) & (fce <= 0.92))
    assert np.all(pop.sei_remaining_ah < 1e-6 * pop.sei_budget_ah)
    # Formed now: the second charge puts back what the discharge took out, no more.
    charge2_ah, _ = cccv_charge(pop, nominal_ah / 10, preset.max_voltage_v, nominal_ah / 20, dt_s=30.0)
    np.testing.assert_allclose(charge2_ah, discharge_ah, rtol=0.01)


def test_sei_is_consumed_mostly_in_the_first_fifth_of_soc() -> None:
    pop = CellPopulation(NCM, 8, seed=6, formed=False, initial_soc=0.0, defect_fraction=0.0)
    while np.any(pop.soc < 0.2):
        pop.step(DT_S, np.where(pop.soc < 0.2, 0.5, 0.0), 25.0)
    consumed = 1.0 - pop.sei_remaining_ah / pop.sei_budget_ah
    assert np.all(consumed > 0.9)
    formed = CellPopulation(NCM, 8, seed=6, formed=True, initial_soc=0.0, defect_fraction=0.0)
    assert np.all(formed.sei_remaining_ah == 0.0)


# --- CV inversion ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset_name", "c_rate", "dt_s"), [("ncm21700-5ah", 2.0, 10.0), ("lfp-280ah", 1.0, 10.0)])
def test_cv_hold_sits_on_target(preset_name: str, c_rate: float, dt_s: float) -> None:
    preset = PRESETS[preset_name]
    capacity_ah = preset.nominal_capacity_ah
    pop = CellPopulation(preset, 16, seed=2, formed=False, initial_soc=0.1, defect_fraction=0.1)
    _, trace = cccv_charge(pop, c_rate * capacity_ah, preset.max_voltage_v, capacity_ah / 20, dt_s)
    error_v = np.concatenate([(v - preset.max_voltage_v)[in_cv] for v, in_cv in trace])
    all_v = np.concatenate([v for v, _ in trace])
    assert error_v.size > 100
    assert np.max(np.abs(error_v)) < 1e-3
    assert np.max(all_v) < preset.max_voltage_v + 0.5e-3


def test_current_for_voltage_works_both_ways_and_across_table_nodes() -> None:
    pop = CellPopulation(NCM, 64, seed=1, formed=True, initial_soc=np.linspace(0.03, 0.97, 64))
    pop.step(30.0, np.linspace(-10.0, 10.0, 64), 25.0)  # uneven RC states
    for target_v in (3.0, 3.5, 3.741, 4.0, 4.19):
        current_a = pop.current_for_voltage_a(target_v, DT_S)
        trial = CellPopulation(NCM, 64, seed=1, formed=True)
        trial.soc[:] = pop.soc
        trial.v1_v[:] = pop.v1_v
        trial.v2_v[:] = pop.v2_v
        trial.v3_v[:] = pop.v3_v
        trial.temperature_c[:] = pop.temperature_c
        np.testing.assert_allclose(trial.step(DT_S, current_a, 25.0), target_v, atol=1e-4)
    assert np.all(pop.current_for_voltage_a(2.0, DT_S) < 0.0)
    assert np.all(pop.current_for_voltage_a(4.5, DT_S) > 0.0)


# --- thermal -----------------------------------------------------------------------------------------------


def test_1c_discharge_heating_is_plausible_and_cools_with_its_time_constant() -> None:
    pop = CellPopulation(NCM, 8, seed=4, formed=True, initial_soc=1.0, defect_fraction=0.0)
    peak_c = pop.temperature_c.copy()
    active = np.ones(pop.n, dtype=bool)
    while active.any():
        voltage_v = pop.step(DT_S, np.where(active, -5.0, 0.0), 25.0)
        peak_c = np.maximum(peak_c, pop.temperature_c)
        active &= voltage_v > 2.5
    assert np.all((peak_c > 30.0) & (peak_c < 45.0))
    excess_c = pop.temperature_c - 25.0
    pop.step(NCM.thermal_tau_s, 0.0, 25.0)
    np.testing.assert_allclose(pop.temperature_c - 25.0, excess_c * math.exp(-1.0), rtol=1e-9)


def test_heat_goes_to_a_warmer_ambient() -> None:
    pop = CellPopulation(LFP, 4, formed=True, initial_soc=0.5, ambient_c=25.0, defect_fraction=0.0)
    pop.step(LFP.thermal_tau_s, 0.0, 45.0)
    np.testing.assert_allclose(pop.temperature_c, 45.0 - 20.0 * math.exp(-1.0))
    assert np.all(pop.heat_w == 0.0)


# --- self-discharge ----------------------------------------------------------------------------------------


def test_leak_moves_ocv_as_predicted_over_a_day() -> None:
    pop = CellPopulation(NCM, 32, seed=12, formed=True, initial_soc=0.45, defect_fraction=0.0)
    pop.add_leak_a(np.arange(4), 500e-6)  # an internal short on four cells
    truth = pop.truth_arrays()
    ocv_start_v = pop.ocv_v()
    rest(pop, 86400.0)
    drop_v = ocv_start_v - pop.ocv_v()
    slope_v = pop.ocv_curve.slope_v(truth["soc"])
    # Leak plus SEI growth; the growth falls over the day, so take the mean of its start and end currents.
    mean_a = 0.5 * (truth["self_discharge_a"] + pop.truth_arrays()["self_discharge_a"])
    predicted_v = mean_a * 24.0 / truth["capacity_ah"] * slope_v
    np.testing.assert_allclose(drop_v, predicted_v, rtol=0.02)
    assert np.all(drop_v[:4] > 2.0 * np.median(drop_v[4:]))
    assert 0.5 < float(np.median(drop_v[4:])) * 1e3 < 2.0  # a formed good cell: 0.5-2 mV/day (docs/domain.md)


def test_lfp_low_soc_storage_shows_self_discharge_the_plateau_hides() -> None:
    pop = CellPopulation(LFP, 2, seed=1, formed=True, initial_soc=np.array([0.03, 0.6]), defect_fraction=0.0)
    pop.add_leak_a(np.array([0, 1]), 1e-3 - pop.truth_arrays()["leak_a"])  # both leak exactly 1 mA
    self_discharge_ma = pop.truth_arrays()["self_discharge_a"] * 1e3  # the leak plus the SEI growth
    ocv_start_v = pop.ocv_v()
    rest(pop, 86400.0)
    drop_mv = (ocv_start_v - pop.ocv_v()) * 1e3
    per_ma = drop_mv / self_discharge_ma
    assert per_ma[1] == pytest.approx(0.01, rel=0.5)  # docs/domain.md: ≈ 0.01 mV/day per mA on the plateau
    assert per_ma[0] > 20.0 * per_ma[1]


def test_leak_grows_with_temperature() -> None:
    pop = CellPopulation(NCM, 1, formed=True, initial_soc=0.5, defect_fraction=0.0)
    at_25c = pop.truth(0)["leak_a"]
    pop.temperature_c[:] = 45.0
    assert pop.truth(0)["leak_a"] > 2.0 * at_25c
