"""Simulated self-discharge and OCV history: SEI growth, long relaxation, LFP hysteresis, micro-shorts, formation
conditions (docs/domain.md §5a)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.selfdischarge import SeiGrowth, arrhenius, formation_loss_factor, hysteresis_step

NCM = PRESETS["ncm21700-5ah"]
LFP = PRESETS["lfp-280ah"]
DAY_S = 86400.0


def rest(pop: CellPopulation, duration_s: float, ambient_c: float = 25.0, dt_s: float = 600.0) -> None:
    for _ in range(round(duration_s / dt_s)):
        pop.step(dt_s, 0.0, ambient_c)


def fresh_after_formation(n: int = 64, seed: int = 5, **kwargs: float) -> CellPopulation:
    """Good NCM cells whose SEI clock starts now (the first charge just done), at 30 % SOC."""
    pop = CellPopulation(NCM, n, seed=seed, formed=True, initial_soc=0.3, defect_fraction=0.0, **kwargs)
    pop.sei_growth = SeiGrowth(pop.sei_growth.c_a_ah / pop.sei_growth.q0_ah, NCM.sei_growth_tau_s, NCM.sei_activation_k)
    return pop


# --- SEI growth ------------------------------------------------------------------------------------------


def test_good_ncm_cell_k_is_half_to_two_mv_per_day_at_25c_and_falls_over_days() -> None:
    pop = fresh_after_formation()
    k_by_day: dict[int, float] = {}
    for day in (1, 3, 7):
        rest(pop, (day - (max(k_by_day) if k_by_day else 0)) * DAY_S)
        k_by_day[day] = float(np.median(pop.truth_arrays()["k_mv_per_day"]))
    assert 0.5 <= k_by_day[7] < k_by_day[3] < k_by_day[1] <= 2.0
    # Parabolic growth: I(t) = I0 / sqrt(1 + t/tau) at a fixed temperature (the leak adds ~0.1 mV/day).
    ratio = k_by_day[1] / k_by_day[7]
    expected = math.sqrt((1 + 7 * DAY_S / NCM.sei_growth_tau_s) / (1 + DAY_S / NCM.sei_growth_tau_s))
    assert ratio == pytest.approx(expected, rel=0.1)


def test_k_is_higher_at_45c_by_the_arrhenius_factor() -> None:
    cool = fresh_after_formation()
    warm = fresh_after_formation()
    warm.temperature_c[:] = 45.0
    growth_ratio = warm.truth_arrays()["sei_growth_a"] / cool.truth_arrays()["sei_growth_a"]
    np.testing.assert_allclose(growth_ratio, arrhenius(NCM.sei_activation_k, 45.0), rtol=1e-12)
    assert 3.0 < float(growth_ratio[0]) < 4.0  # Ea/R = 6000 K: 45 °C runs ~3.5x faster
    rest(cool, DAY_S, 25.0)
    rest(warm, DAY_S, 45.0)
    k_cool = np.median(cool.truth_arrays()["k_mv_per_day"])
    k_warm = np.median(warm.truth_arrays()["k_mv_per_day"])
    assert k_warm > 1.5 * k_cool
    # Time at 45 °C ages the SEI faster: back at 25 °C the warm-aged cells self-discharge less.
    warm.temperature_c[:] = 25.0
    assert np.median(warm.truth_arrays()["sei_growth_a"]) < np.median(cool.truth_arrays()["sei_growth_a"])


def test_sei_growth_integrates_exactly_whatever_the_step() -> None:
    one = SeiGrowth(np.array([300e-6, 400e-6]), 0.76 * DAY_S, 6000.0)
    many = SeiGrowth(np.array([300e-6, 400e-6]), 0.76 * DAY_S, 6000.0)
    consumed_one = one.advance(5 * DAY_S, 35.0)
    consumed_many = sum(many.advance(DAY_S / 8, 35.0) for _ in range(40))
    np.testing.assert_allclose(consumed_one, consumed_many, rtol=1e-12)
    np.testing.assert_allclose(one.current_a(35.0), many.current_a(35.0), rtol=1e-12)
    # The current is the derivative of the consumed charge.
    before = one.q_ah.copy()
    rate_a = one.current_a(35.0)
    one.advance(1.0, 35.0)
    np.testing.assert_allclose((one.q_ah - before) * 3600.0, rate_a, rtol=1e-6)


def test_sei_growth_spreads_from_cell_to_cell_and_is_seeded() -> None:
    a = CellPopulation(NCM, 2000, seed=3, formed=True, initial_soc=0.3, defect_fraction=0.0)
    b = CellPopulation(NCM, 2000, seed=3, formed=True, initial_soc=0.3, defect_fraction=0.0)
    growth = a.truth_arrays()["sei_growth_a"]
    np.testing.assert_array_equal(growth, b.truth_arrays()["sei_growth_a"])
    spread = np.std(np.log(growth))
    assert spread == pytest.approx(NCM.sei_growth_sigma_log, rel=0.1)


def test_clone_carries_the_sei_state() -> None:
    pop = CellPopulation(NCM, 8, seed=2, formed=True, initial_soc=0.3)
    rest(pop, DAY_S)
    twin = pop.clone([1, 5])
    np.testing.assert_array_equal(twin.sei_growth.q_ah, pop.sei_growth.q_ah[[1, 5]])
    rest(twin, DAY_S)
    assert np.all(twin.sei_growth.q_ah > pop.sei_growth.q_ah[[1, 5]])  # independent copies


# --- relaxation ------------------------------------------------------------------------------------------


def test_relaxation_continues_for_hours_after_a_discharge() -> None:
    pop = CellPopulation(NCM, 4, seed=1, formed=True, initial_soc=0.7, defect_fraction=0.0)
    for _ in range(240):  # 40 min at C/2
        pop.step(10.0, -2.5, 25.0)
    v = []
    for _hour in range(24):
        rest(pop, 3600.0, dt_s=60.0)
        v.append(pop.terminal_voltage_v(0.0) - pop.ocv_v())
    overpotential_v = np.array(v)
    # Two hours in, the cell is still more than 0.3 mV below its OCV and creeping up; a day in, it has settled.
    assert np.all(overpotential_v[1] < -0.3e-3)
    assert np.all(overpotential_v[5] - overpotential_v[1] > 0.2e-3)
    assert np.all(np.abs(overpotential_v[23]) < 5e-6)


# --- hysteresis ------------------------------------------------------------------------------------------


def test_lfp_ocv_after_charge_sits_above_ocv_after_discharge() -> None:
    up = CellPopulation(LFP, 2, seed=1, formed=True, initial_soc=0.3, defect_fraction=0.0)
    down = CellPopulation(LFP, 2, seed=1, formed=True, initial_soc=0.7, defect_fraction=0.0)
    for _ in range(360):  # 2 h at 0.1C: 20 % of capacity each way, to 50 %
        up.step(20.0, 28.0, 25.0)
        down.step(20.0, -28.0, 25.0)
    rest(up, 4 * 3600.0)
    rest(down, 4 * 3600.0)
    # Each sits on its branch: 10 mV above / below the mean table at its own SOC, 20 mV apart in all.
    up_mv = (up.ocv_v() - up.ocv_curve(up.soc)) * 1e3
    down_mv = (down.ocv_v() - down.ocv_curve(down.soc)) * 1e3
    np.testing.assert_allclose(up_mv, 10.0, atol=0.5)
    np.testing.assert_allclose(down_mv, -10.0, atol=0.5)
    assert np.all((up.ocv_v() - down.ocv_v()) * 1e3 > 17.0)  # both near 50 % SOC on the flat plateau
    assert np.all(up.hysteresis > 0.95) and np.all(down.hysteresis < -0.95)


def test_ncm_has_no_hysteresis() -> None:
    pop = CellPopulation(NCM, 2, seed=1, formed=True, initial_soc=0.5, defect_fraction=0.0)
    before = pop.ocv_curve(pop.soc)
    np.testing.assert_allclose(pop.ocv_v(), before)


def test_hysteresis_step_is_exact_and_saturates() -> None:
    h = np.array([-1.0, -1.0, 0.5])
    once = hysteresis_step(h, np.array([1.0, 1.0, 0.0]), np.array([2.0, 2.0, 2.0]))
    twice = hysteresis_step(hysteresis_step(h, np.full(3, 0.5), np.full(3, 2.0)), np.full(3, 0.5), np.full(3, 2.0))
    np.testing.assert_allclose(once[:2], twice[:2])
    assert once[2] == 0.5  # no charge flowed: the branch stays
    assert hysteresis_step(np.array([-1.0]), np.array([100.0]), np.array([1.0]))[0] == pytest.approx(1.0)


# --- micro-shorts ----------------------------------------------------------------------------------------


def test_micro_shorts_are_a_seeded_class_of_10_to_50_microamps() -> None:
    plain = CellPopulation(NCM, 500, seed=8, formed=True, initial_soc=0.3, defect_fraction=0.04)
    shorts = CellPopulation(
        NCM, 500, seed=8, formed=True, initial_soc=0.3, defect_fraction=0.04, microshort_fraction=0.02
    )
    shorted = shorts.defect == "microshort"
    assert int(shorted.sum()) == 10
    others = shorts.defect != "microshort"
    np.testing.assert_array_equal(shorts.defect[others], plain.defect[others])  # the other defects stay put
    assert not np.any(plain.defect[shorted] != "")  # only good cells get a micro-short
    extra_a = shorts.truth_arrays()["leak_a"] - plain.truth_arrays()["leak_a"]
    assert np.all((extra_a[shorted] >= 10e-6) & (extra_a[shorted] <= 50e-6))
    np.testing.assert_array_equal(extra_a[~shorted], 0.0)
    again = CellPopulation(
        NCM, 500, seed=8, formed=True, initial_soc=0.3, defect_fraction=0.04, microshort_fraction=0.02
    )
    np.testing.assert_array_equal(again.defect, shorts.defect)


def test_microshort_fraction_is_checked() -> None:
    with pytest.raises(ValueError, match="microshort_fraction"):
        CellPopulation(NCM, 4, microshort_fraction=1.5)


# --- formation conditions --------------------------------------------------------------------------------


def first_cycle_efficiency(c_rate: float, ambient_c: float) -> np.ndarray:
    pop = CellPopulation(NCM, 8, seed=9, formed=False, initial_soc=0.0, ambient_c=ambient_c, defect_fraction=0.0)
    current_a = c_rate * NCM.nominal_capacity_ah
    charge_ah = np.zeros(pop.n)
    while np.any(pop.soc < 0.95):
        applied_a = np.where(pop.soc < 0.95, current_a, 0.0)
        pop.step(20.0, applied_a, ambient_c)
        charge_ah += applied_a * 20.0 / 3600.0
    discharge_ah = np.zeros(pop.n)
    while np.any(pop.soc > 0.05):
        applied_a = np.where(pop.soc > 0.05, -NCM.nominal_capacity_ah / 5, 0.0)
        pop.step(20.0, applied_a, ambient_c)
        discharge_ah -= applied_a * 20.0 / 3600.0
    return discharge_ah / charge_ah


def test_formation_current_and_temperature_move_the_first_cycle_loss() -> None:
    reference = first_cycle_efficiency(0.1, 25.0)
    fast = first_cycle_efficiency(1.0, 25.0)
    hot = first_cycle_efficiency(0.1, 45.0)
    slow = first_cycle_efficiency(0.05, 25.0)
    assert np.all(fast < reference - 0.01)
    assert np.all(hot < reference - 0.01)
    assert np.all(slow > reference)
    np.testing.assert_allclose(
        formation_loss_factor(np.array([0.5, 5.0]), 5.0, np.array([25.0, 45.0]), 0.08, 0.01),
        [1.0, 1.0 + 0.08 * math.log(10.0) + 0.2],
    )
    assert formation_loss_factor(np.array([500.0]), 5.0, np.array([80.0]), 0.08, 0.01)[0] == 1.5  # clipped
