"""SensorVoter (open, out of range, disagreeing thermocouples) and the controller's fail-safe policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from formation.chamber import ChamberConfig, ChamberController, SensorFault, SensorId, SensorVoter, simc_tuning
from formation.errors import ConfigError

SENSORS = (201, 202, 203)


def voter() -> SensorVoter:
    return SensorVoter(SENSORS, valid_range_c=(-40.0, 150.0), disagree_limit_c=1.0)


def reasons(failed: tuple[SensorFault, ...]) -> dict[SensorId, str]:
    return {f.sensor: f.reason for f in failed}


def test_healthy_sensors_give_their_median() -> None:
    vote = voter().vote({201: 45.1, 202: 44.9, 203: 45.3})
    assert vote.temperature_c == pytest.approx(45.1)
    assert vote.healthy == SENSORS and vote.failed == () and not vote.fail_safe


def test_open_missing_and_out_of_range_sensors_are_left_out() -> None:
    vote = voter().vote({201: math.nan, 203: 45.0})
    assert reasons(vote.failed) == {201: "open", 202: "open"}
    assert vote.temperature_c == 45.0 and vote.healthy == (203,)
    vote = voter().vote({201: 1200.0, 202: -math.inf, 203: 45.0})
    assert reasons(vote.failed) == {201: "out_of_range", 202: "out_of_range"}
    assert vote.failed[0].value_c == 1200.0


def test_a_sensor_disagreeing_with_the_others_is_left_out() -> None:
    vote = voter().vote({201: 45.0, 202: 45.2, 203: 47.5})
    assert reasons(vote.failed) == {203: "disagrees"}
    assert vote.temperature_c == pytest.approx(45.1)


def test_one_wild_sensor_does_not_make_good_ones_look_wrong() -> None:
    # Against the median of the other two, 45.0 is 2.5 °C off as well; removing the worst first keeps it.
    vote = voter().vote({201: 45.0, 202: 45.1, 203: 50.0})
    assert reasons(vote.failed) == {203: "disagrees"}
    assert vote.healthy == (201, 202)


def test_two_sensors_that_disagree_cannot_be_told_apart() -> None:
    vote = voter().vote({201: 45.0, 202: 47.0, 203: math.nan})
    assert reasons(vote.failed) == {201: "disagrees", 202: "disagrees", 203: "open"}
    assert vote.fail_safe and math.isnan(vote.temperature_c)


def test_no_healthy_sensor_is_fail_safe() -> None:
    vote = voter().vote({})
    assert vote.fail_safe and vote.healthy == () and math.isnan(vote.temperature_c)
    assert len(vote.failed) == 3


def test_a_single_sensor_and_unknown_readings() -> None:
    vote = SensorVoter(["tc"]).vote({"tc": 40.0, "other": 99.0})
    assert vote.temperature_c == 40.0 and vote.failed == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sensors": ()}, "sensors"),
        ({"sensors": (201, 201)}, "sensors"),
        ({"valid_range_c": (150.0, -40.0)}, "valid_range_c"),
        ({"valid_range_c": (-40.0, math.inf)}, "valid_range_c"),
        ({"valid_range_c": (1.0,)}, "valid_range_c"),
        ({"disagree_limit_c": 0.0}, "disagree_limit_c"),
        ({"disagree_limit_c": math.nan}, "disagree_limit_c"),
    ],
)
def test_bad_configuration(kwargs: dict[str, object], field: str) -> None:
    sensors = kwargs.pop("sensors", SENSORS)
    with pytest.raises(ConfigError) as err:
        SensorVoter(sensors, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


# -- the fail-safe policy of ChamberController --------------------------------------------------------------------


def controller() -> ChamberController:
    config = ChamberConfig(
        heating_channels=(101, 102, 103, 104),
        cooling_channels=(105, 106, 107, 108),
        sensors=SENSORS,
        tuning=simc_tuning(40.0, 1200.0, 60.0),
        min_on_s=30.0,
    )
    return ChamberController(config, 45.0)


def test_losing_every_sensor_closes_every_valve_at_once() -> None:
    ctl = controller()
    step = ctl.update({201: 30.0, 202: 30.1, 203: 29.9}, None, 0.0)
    assert step.command.open == {101, 102, 103, 104} and not step.fail_safe
    step = ctl.update({201: math.nan, 202: math.nan, 203: math.nan}, None, 5.0)
    # Inside the 30 s minimum on-time, still closed: safety outranks valve wear.
    assert step.fail_safe and step.command.open == frozenset() and step.command.changed
    assert step.demand == 0.0 and math.isnan(step.temperature_c)
    assert any(a.startswith("fail_safe:") for a in step.alarms)
    assert {a.split(":")[0] for a in step.alarms} >= {"sensor_open", "fail_safe"}
    assert not step.in_band and not step.stable


def test_control_resumes_when_a_sensor_comes_back() -> None:
    ctl = controller()
    ctl.update({201: 30.0}, None, 0.0)
    integral = ctl.pid.integral
    ctl.update({}, None, 5.0)
    ctl.update({}, None, 600.0)
    step = ctl.update({202: 30.0}, None, 605.0)
    assert not step.fail_safe and step.command.open
    assert ctl.pid.integral == integral  # the blind stretch was not integrated


def test_one_sensor_left_keeps_control_with_an_alarm_per_failed_sensor() -> None:
    step = controller().update({201: 44.0, 202: math.nan, 203: 200.0}, None, 0.0)
    assert not step.fail_safe and step.temperature_c == 44.0
    assert sorted(a.split(":")[0] for a in step.alarms) == ["sensor_open", "sensor_out_of_range"]
    assert [f.sensor for f in step.failed_sensors] == [202, 203]


def test_numpy_readings_from_the_driver_and_none_as_open() -> None:
    values = np.array([45.0, np.nan, 45.2])  # what Daq970aChamber.read_temperatures_c returns
    vote = voter().vote(dict(zip(SENSORS, values, strict=True)))
    assert type(vote.temperature_c) is float and vote.temperature_c == pytest.approx(45.1)
    assert reasons(vote.failed) == {202: "open"}
    assert reasons(voter().vote({201: None, 202: 45.0, 203: 45.0}).failed) == {201: "open"}  # type: ignore[dict-item]
    step = controller().update(dict(zip(SENSORS, values, strict=True)), None, np.float64(0.0))
    assert type(step.demand) is float and step.demand == pytest.approx(-0.025)
