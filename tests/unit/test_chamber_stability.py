"""StabilityDetector: stable after a continuous hold in band, time bookkeeping, the out-of-band alarm."""

from __future__ import annotations

import math

import pytest

from formation.chamber.stability import StabilityDetector, StabilityStatus
from formation.errors import ConfigError


def feed(
    detector: StabilityDetector, temps: list[float], setpoint_c: float = 45.0, t0: float = 0.0, dt: float = 10.0
) -> list[StabilityStatus]:
    out: list[StabilityStatus] = []
    for i, temperature_c in enumerate(temps):
        out.append(detector.update(temperature_c, setpoint_c, t0 + i * dt))
    return out


def test_stable_only_after_holding_the_band_continuously() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=60.0)
    statuses = feed(det, [45.2] * 8)  # t = 0 … 70
    assert [s.stable for s in statuses] == [False] * 6 + [True] * 2
    assert statuses[6].in_band_for_s == 60.0


def test_leaving_the_band_starts_the_hold_over() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=60.0)
    statuses = feed(det, [45.0] * 7 + [45.6] + [45.0] * 7)
    assert statuses[6].stable and not statuses[7].stable and not statuses[7].in_band
    assert statuses[7].out_of_band_for_s == 0.0  # just left
    assert not statuses[13].stable and statuses[14].stable


def test_a_setpoint_change_resets_stability() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=60.0)
    feed(det, [45.0] * 10)
    status = det.update(45.0, 45.3, 100.0)  # still in the new band, but the hold starts over
    assert status.in_band and not status.stable and status.in_band_for_s == 0.0
    assert det.update(45.0, 45.3, 160.0).stable


def test_time_in_and_out_of_band_adds_up_with_irregular_updates() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=0.0)
    # Each interval is booked to the state seen at its start.
    samples = [(0.0, 45.0), (3.0, 46.0), (20.0, 46.0), (21.5, 45.1), (60.0, 44.0), (61.0, 45.0)]
    for t, temp in samples:
        status = det.update(temp, 45.0, t)
    assert status.in_band_total_s == pytest.approx(3.0 + 38.5)
    assert status.out_of_band_total_s == pytest.approx(18.5 + 1.0)
    assert status.in_band_total_s + status.out_of_band_total_s == pytest.approx(61.0)


def test_unknown_temperature_is_out_of_band() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=0.0)
    det.update(math.nan, 45.0, 0.0)
    status = det.update(45.0, 45.0, 30.0)
    assert status.out_of_band_total_s == 30.0 and status.in_band


def test_out_of_band_alarm_after_the_delay_once_stable() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=60.0, alarm_delay_s=120.0)
    # Approaching the set point for 10 minutes: out of band but never stable yet, so no alarm.
    approach = feed(det, [30.0 + i * 0.25 for i in range(60)])
    assert not any(s.out_of_band_alarm for s in approach)
    feed(det, [45.0] * 10, t0=600.0)
    excursion = feed(det, [46.0] * 15, t0=700.0)
    assert [s.out_of_band_alarm for s in excursion] == [False] * 12 + [True] * 3
    assert excursion[12].out_of_band_for_s == 120.0
    assert not det.update(45.0, 45.0, 850.0).out_of_band_alarm


def test_settle_alarm_when_the_chamber_never_gets_there() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=60.0, settle_timeout_s=3600.0)
    assert not det.update(30.0, 45.0, 0.0).settle_alarm
    assert det.update(30.0, 45.0, 3600.0).settle_alarm
    assert not det.update(30.0, 35.0, 3610.0).settle_alarm  # a new set point restarts the timeout
    assert not StabilityDetector(band_c=0.5, hold_s=60.0).update(30.0, 45.0, 1e9).settle_alarm


def test_clock_stepping_back_books_no_negative_time() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=0.0)
    det.update(45.0, 45.0, 1000.0)
    status = det.update(45.0, 45.0, 10.0)
    assert status.in_band_total_s == 0.0 and status.out_of_band_total_s == 0.0
    assert det.update(45.0, 45.0, 20.0).in_band_total_s == 10.0


def test_reset_clears_totals() -> None:
    det = StabilityDetector(band_c=0.5, hold_s=0.0)
    feed(det, [47.0] * 5)
    det.reset()
    assert det.update(45.0, 45.0, 100.0).out_of_band_total_s == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"band_c": 0.0, "hold_s": 60.0}, "band_c"),
        ({"band_c": math.nan, "hold_s": 60.0}, "band_c"),
        ({"band_c": 0.5, "hold_s": -1.0}, "hold_s"),
        ({"band_c": 0.5, "hold_s": math.inf}, "hold_s"),
        ({"band_c": 0.5, "hold_s": 60.0, "alarm_delay_s": -1.0}, "alarm_delay_s"),
        ({"band_c": 0.5, "hold_s": 60.0, "settle_timeout_s": 0.0}, "settle_timeout_s"),
    ],
)
def test_bad_configuration(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        StabilityDetector(**kwargs)
    assert err.value.field == field
