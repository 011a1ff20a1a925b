"""PidController and simc_tuning: clamping, anti-windup, real dt, bumpless changes, derivative on measurement."""

from __future__ import annotations

import math

import pytest

from formation.chamber.pid import PidController, PidTuning
from formation.chamber.tuning import simc_tuning
from formation.errors import ConfigError

PI = PidTuning(kc=0.25, ti_s=480.0)


def test_simc_tuning_of_the_reference_chamber() -> None:
    # K 40 °C, τ 20 min, θ 60 s, τc = θ: Kc = 1200 / (40 × 120), Ti = min(1200, 4 × 120).
    tuning = simc_tuning(40.0, 1200.0, 60.0)
    assert (tuning.kc, tuning.ti_s, tuning.td_s) == pytest.approx((0.25, 480.0, 0.0))
    tighter = simc_tuning(40.0, 1200.0, 60.0, tau_c_s=30.0)
    assert tighter.kc == pytest.approx(1200.0 / (40.0 * 90.0))
    assert tighter.ti_s == pytest.approx(360.0)
    # A fast chamber: Ti is capped at τ.
    assert simc_tuning(40.0, 100.0, 60.0).ti_s == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0.0, 1200.0, 60.0), "gain_c"),
        ((-40.0, 1200.0, 60.0), "gain_c"),
        ((math.nan, 1200.0, 60.0), "gain_c"),
        ((40.0, math.inf, 60.0), "tau_s"),
        ((40.0, 1200.0, 0.0), "dead_time_s"),
        ((40.0, 1200.0, 60.0, -1.0), "tau_c_s"),
        ((40.0, 1200.0, 60.0, math.nan), "tau_c_s"),
    ],
)
def test_simc_tuning_refuses_bad_plants(args: tuple[float, ...], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        simc_tuning(*args)
    assert err.value.field == field
    assert err.value.reason


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kc": 0.0, "ti_s": 480.0}, "kc"),
        ({"kc": math.inf, "ti_s": 480.0}, "kc"),
        ({"kc": 0.25, "ti_s": -1.0}, "ti_s"),
        ({"kc": 0.25, "ti_s": math.nan}, "ti_s"),
        ({"kc": 0.25, "ti_s": 480.0, "td_s": -1.0}, "td_s"),
    ],
)
def test_tuning_refuses_bad_gains(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        PidTuning(**kwargs)
    assert err.value.field == field


def test_controller_refuses_bad_options() -> None:
    with pytest.raises(ConfigError) as err:
        PidController(PI, setpoint_weight=1.5)
    assert err.value.field == "setpoint_weight"
    with pytest.raises(ConfigError) as err:
        PidController(PI, derivative_filter=0.0)
    assert err.value.field == "derivative_filter"


def test_output_is_signed_and_clamped() -> None:
    pid = PidController(PI)
    assert pid.update(45.0, 44.0, 0.0) == pytest.approx(0.25)  # 1 °C cold: a quarter of full heating
    assert PidController(PI).update(45.0, 46.0, 0.0) == pytest.approx(-0.25)
    assert PidController(PI).update(45.0, 25.0, 0.0) == 1.0
    assert PidController(PI).update(25.0, 45.0, 0.0) == -1.0


def test_integral_uses_the_real_dt_whatever_the_partition() -> None:
    even, uneven = PidController(PI), PidController(PI)
    for pid in (even, uneven):
        pid.update(45.0, 44.0, 0.0)
    for _ in range(10):
        even.update(45.0, 44.0, 5.0)
    for dt_s in (0.5, 7.0, 1.5, 30.0, 11.0):
        uneven.update(45.0, 44.0, dt_s)
    assert even.integral == pytest.approx(0.25 * 1.0 * 50.0 / 480.0)
    assert uneven.integral == pytest.approx(even.integral)
    assert uneven.output == pytest.approx(even.output)


@pytest.mark.parametrize("dt_s", [0.0, -5.0, math.nan, math.inf])
def test_non_positive_or_non_finite_dt_integrates_nothing(dt_s: float) -> None:
    pid = PidController(PI)
    pid.update(45.0, 44.0, 0.0)
    pid.update(45.0, 44.0, 10.0)
    before = pid.integral
    out = pid.update(45.0, 44.0, dt_s)
    assert pid.integral == before
    assert out == pytest.approx(0.25 + before)


def test_nan_measurement_changes_nothing() -> None:
    pid = PidController(PI)
    out = pid.update(45.0, 44.0, 0.0)
    assert pid.update(45.0, math.nan, 5.0) == out
    assert pid.update(math.nan, 44.0, 5.0) == out
    assert pid.integral == 0.0


def test_no_windup_after_a_long_saturation() -> None:
    pid = PidController(PI)
    pid.update(45.0, 25.0, 0.0)
    for _ in range(720):  # an hour at full heating, 20 °C cold
        assert pid.update(45.0, 25.0, 5.0) == 1.0
    assert pid.integral <= 1.0
    # The moment the chamber crosses the set point the output leaves saturation: nothing to unwind.
    assert pid.update(45.0, 45.2, 5.0) < 0.5


def test_integral_stops_at_the_limit_it_pushes_toward() -> None:
    pid = PidController(PI)
    pid.update(45.0, 43.0, 0.0)  # P = 0.5
    for _ in range(2000):
        pid.update(45.0, 43.0, 5.0)
    assert pid.output == 1.0
    assert pid.integral == pytest.approx(0.5)  # exactly what saturates, no more


def test_setpoint_changes_are_bumpless_by_default() -> None:
    pid = PidController(PI)
    pid.update(25.0, 25.0, 0.0)
    for _ in range(10):
        pid.update(25.0, 25.0, 5.0)
    before = pid.output
    assert pid.update(45.0, 25.0, 0.0) == pytest.approx(before)
    # Then the integral carries the change: the output climbs at kc × error / Ti per second.
    assert pid.update(45.0, 25.0, 10.0) == pytest.approx(before + 0.25 * 20.0 * 10.0 / 480.0)


def test_setpoint_weight_one_applies_the_full_proportional_step() -> None:
    pid = PidController(PI, setpoint_weight=1.0)
    pid.update(45.0, 45.0, 0.0)
    assert pid.update(46.0, 45.0, 0.0) == pytest.approx(0.25)


def test_first_update_applies_proportional_action_at_once() -> None:
    # A fresh controller (a new chamber run) is not bumpless: the valves start from closed, not from an output.
    assert PidController(PI).update(45.0, 44.0, 0.0) == pytest.approx(0.25)


def test_retune_is_bumpless() -> None:
    pid = PidController(PI)
    pid.update(45.0, 44.0, 0.0)
    for _ in range(20):
        pid.update(45.0, 44.0, 5.0)
    before = pid.output
    pid.retune(PidTuning(kc=0.5, ti_s=240.0))
    assert pid.update(45.0, 44.0, 0.0) == pytest.approx(before)
    assert pid.tuning.kc == 0.5


def test_derivative_acts_on_the_measurement_only_and_is_filtered() -> None:
    tuning = PidTuning(kc=0.25, ti_s=1e9, td_s=60.0)
    pid = PidController(tuning)
    pid.update(45.0, 45.0, 0.0)
    pid.update(45.0, 45.0, 5.0)
    # A set-point step: no derivative kick (and no P kick, bumpless).
    assert pid.update(46.0, 45.0, 5.0) == pytest.approx(0.0, abs=1e-6)
    pid = PidController(tuning)
    pid.update(45.0, 45.0, 0.0)
    # The measurement falls 0.1 °C in one 5 s step: the derivative pushes toward heating, less than unfiltered.
    out = pid.update(45.0, 44.9, 5.0)
    p = 0.25 * 0.1
    unfiltered = 0.25 * 60.0 * 0.1 / 5.0
    assert p < out < p + unfiltered
    # Then it fades while the measurement stays put.
    later = [pid.update(45.0, 44.9, 5.0) for _ in range(10)]
    assert later[-1] == pytest.approx(p, abs=1e-3)


def test_derivative_survives_a_stretched_period() -> None:
    pid = PidController(PidTuning(kc=0.25, ti_s=480.0, td_s=60.0))
    pid.update(45.0, 45.0, 0.0)
    out = pid.update(45.0, 44.0, 600.0)  # the loop stalled ten minutes
    assert -1.0 <= out <= 1.0 and math.isfinite(out)


def test_reset_forgets_history() -> None:
    pid = PidController(PI)
    pid.update(45.0, 44.0, 0.0)
    pid.update(45.0, 44.0, 100.0)
    pid.reset()
    assert pid.integral == 0.0 and pid.output == 0.0
    assert pid.update(45.0, 45.0, 0.0) == 0.0
    pid.reset(integral=0.5)
    assert pid.update(45.0, 45.0, 0.0) == pytest.approx(0.5)
