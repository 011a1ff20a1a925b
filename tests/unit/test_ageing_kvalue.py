"""K by regression (formation/ageing/kvalue.py): slope, standard error, temperature correction, too few readings."""

from __future__ import annotations

import numpy as np
import pytest

from formation.ageing import fit_k

DAY_S = 86400.0


def test_a_clean_line_gives_its_slope_and_a_zero_standard_error() -> None:
    t = np.arange(6) * DAY_S
    v = 3.6 - 0.0012 * np.arange(6)  # 1.2 mV/day
    fit = fit_k(t, v, np.full(6, 25.0))
    assert fit.k_mv_per_day[0] == pytest.approx(1.2, abs=1e-9)
    assert fit.k_se_mv_per_day[0] == pytest.approx(0.0, abs=1e-9)
    assert fit.n_points[0] == 6 and fit.reason[0] == ""
    assert (fit.window_start_s[0], fit.window_end_s[0]) == (0.0, 5 * DAY_S)


def test_the_standard_error_matches_the_textbook_formula_on_noisy_readings() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(8) * DAY_S
    v = 3.6 - 0.0005 * np.arange(8) + rng.normal(0.0, 20e-6, 8)
    fit = fit_k(t, v, np.full(8, 25.0))
    days = t / DAY_S
    slope, intercept = np.polyfit(days, v, 1)
    residual = v - (slope * days + intercept)
    se = np.sqrt(residual @ residual / 6) / np.sqrt(((days - days.mean()) ** 2).sum())
    assert fit.k_mv_per_day[0] == pytest.approx(-slope * 1000.0, rel=1e-9)
    assert fit.k_se_mv_per_day[0] == pytest.approx(se * 1000.0, rel=1e-9)


def test_readings_are_corrected_to_the_reference_temperature() -> None:
    # An NCM cell's OCV falls 0.1 mV/K: a cell warming by 1 K/day looks like 0.1 mV/day of extra self-discharge.
    t = np.arange(5) * DAY_S
    temperature = 25.0 + np.arange(5)
    v = 3.6 - 0.0008 * np.arange(5) - 0.0001 * (temperature - 25.0)
    raw = fit_k(t, v, temperature)
    corrected = fit_k(t, v, temperature, reference_c=25.0, ocv_temp_coeff_mv_per_k=-0.1)
    assert raw.k_mv_per_day[0] == pytest.approx(0.9, abs=1e-9)
    assert corrected.k_mv_per_day[0] == pytest.approx(0.8, abs=1e-9)
    assert corrected.temperature_c[0] == pytest.approx(27.0)


def test_cells_are_fit_at_once_and_invalid_readings_are_left_out() -> None:
    t = np.tile(np.arange(5) * DAY_S, (3, 1))
    v = np.vstack([3.6 - 0.001 * np.arange(5), 3.5 - 0.002 * np.arange(5), 3.4 - 0.003 * np.arange(5)])
    v[1, 2] = np.nan  # a reading with no number (no contact) is left out, the rest still fit
    v[2, 1:] = np.nan  # one valid reading: no K, a reason
    fit = fit_k(t, v, np.full((3, 5), 25.0), min_points=3)
    assert fit.k_mv_per_day[:2] == pytest.approx([1.0, 2.0])
    assert fit.n_points.tolist() == [5, 4, 1]
    assert np.isnan(fit.k_mv_per_day[2]) and np.isnan(fit.k_se_mv_per_day[2])
    assert fit.reason.tolist() == ["", "", "K: 1 valid reading(s) after the relaxation window, needs 3"]


def test_a_missing_temperature_invalidates_a_reading_only_when_there_is_something_to_correct() -> None:
    t = np.arange(4) * DAY_S
    v = 3.6 - 0.001 * np.arange(4)
    temperature = np.array([25.0, np.nan, 25.0, 25.0])
    assert fit_k(t, v, temperature).n_points[0] == 4
    assert fit_k(t, v, temperature, ocv_temp_coeff_mv_per_k=-0.1).n_points[0] == 3


def test_fewer_than_three_points_cannot_give_a_standard_error() -> None:
    with pytest.raises(ValueError, match="min_points must be >= 3"):
        fit_k(np.zeros(3), np.zeros(3), np.zeros(3), min_points=2)
    with pytest.raises(ValueError, match="one shape"):
        fit_k(np.zeros(3), np.zeros(4), np.zeros(3))
