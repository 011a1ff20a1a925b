"""ValveArray (staging, time-proportioning of the remainder, rotation, minimum times) and StuckValveDetector."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import pytest

from formation.chamber.faults import StuckValveDetector
from formation.chamber.valves import ValveArray, ValveCommand
from formation.errors import ConfigError

HEAT = (101, 102, 103, 104)
COOL = (105, 106, 107, 108)


def array(**kwargs: float) -> ValveArray:
    options = {"cycle_s": 60.0, "min_on_s": 5.0, "min_off_s": 5.0, **kwargs}
    return ValveArray(HEAT, COOL, **options)


class Recorder:
    """Drives a ValveArray and checks, at every update, the rules that must always hold."""

    def __init__(self, valves: ValveArray) -> None:
        self.valves = valves
        self.last_switch: dict[int, float] = {}
        self.state: dict[int, bool] = dict.fromkeys(HEAT + COOL, False)
        self.open_valve_s = {1: 0.0, -1: 0.0}
        self.prev: tuple[float, ValveCommand] | None = None

    def update(self, demand: float, now_s: float) -> ValveCommand:
        if self.prev is not None:
            t0, cmd = self.prev
            self.open_valve_s[1] += len(cmd.open & set(HEAT)) * (now_s - t0)
            self.open_valve_s[-1] += len(cmd.open & set(COOL)) * (now_s - t0)
        counts_before = self.valves.switch_counts
        cmd = self.valves.update(demand, now_s)
        assert cmd.open | cmd.closed == set(HEAT + COOL) and not cmd.open & cmd.closed
        assert not (cmd.open & set(HEAT) and cmd.open & set(COOL)), "heating and cooling open together"
        assert cmd.changed == (self.valves.switch_counts != counts_before)
        for ch in HEAT + COOL:
            if (ch in cmd.open) != self.state[ch]:
                if ch in self.last_switch:
                    held_s = now_s - self.last_switch[ch]
                    least_s = self.valves.min_on_s if self.state[ch] else self.valves.min_off_s
                    assert held_s >= least_s, f"{ch} switched after {held_s} s"
                self.state[ch] = ch in cmd.open
                self.last_switch[ch] = now_s
        self.prev = (now_s, cmd)
        return cmd

    def run(self, demands: Iterable[tuple[float, float]]) -> None:
        for now_s, demand in demands:
            self.update(demand, now_s)


def times(period: float | tuple[float, float], end_s: float, seed: int = 3) -> list[float]:
    rng, t, out = random.Random(seed), 0.0, []
    while t < end_s:
        out.append(t)
        t += period if isinstance(period, float) else rng.uniform(*period)
    return out


@pytest.mark.parametrize("demand", [0.05, 0.1, 0.3, 0.55, 0.625, 0.9, 0.97, -0.2, -0.7])
@pytest.mark.parametrize("period", [5.0, 20.0, (2.0, 15.0)], ids=["5s", "20s", "irregular"])
def test_an_hour_at_a_constant_fractional_demand(demand: float, period: float | tuple[float, float]) -> None:
    rec = Recorder(array())
    ticks = times(period, 3600.0)
    rec.run((t, demand) for t in ticks)
    side = HEAT if demand > 0 else COOL
    counts = [rec.valves.switch_counts[ch] for ch in side]
    assert max(counts) <= 60, counts
    assert max(counts) - min(counts) <= 2, counts  # the wear is spread over the parallel valves
    other = COOL if demand > 0 else HEAT
    assert all(rec.valves.switch_counts[ch] == 0 for ch in other)
    mean_open = rec.open_valve_s[1 if demand > 0 else -1] / (ticks[-1] * len(side))
    assert mean_open == pytest.approx(abs(demand), abs=0.02)


def test_whole_valves_stay_open_and_only_one_valve_proportions() -> None:
    rec = Recorder(array())
    open_counts = set()
    for t in times(5.0, 3600.0):
        open_counts.add(len(rec.update(0.625, t).open))  # 2.5 valves
    assert open_counts == {2, 3}


def test_a_whole_number_of_valves_does_not_switch() -> None:
    rec = Recorder(array())
    rec.run((t, 0.5) for t in times(5.0, 3600.0))
    assert sum(rec.valves.switch_counts.values()) == 2
    assert rec.valves.command.open == {101, 102}


def test_full_and_zero_demand() -> None:
    valves = array()
    assert valves.update(1.0, 0.0).open == set(HEAT)
    assert valves.update(5.0, 10.0).open == set(HEAT)  # clamped
    assert valves.update(0.0, 20.0).open == frozenset()
    assert valves.update(-1.0, 30.0).open == set(COOL)
    assert valves.update(math.nan, 40.0).open == frozenset()


def test_steady_roles_rotate_as_well() -> None:
    rec = Recorder(array())
    rec.run((t, 0.625) for t in times(5.0, 3600.0))
    open_s = rec.valves.open_s
    # Every heating valve carried a share of the open time, not two valves all of it.
    assert min(open_s[ch] for ch in HEAT) > 0.5 * max(open_s[ch] for ch in HEAT)


def test_stored_wear_steers_the_rotation_to_the_least_worn_valves() -> None:
    rec = Recorder(array())
    rec.valves.seed_wear({101: 5000, 102: 5000, 103: 0, 104: 0, 999: 7})  # an unknown channel is ignored
    rec.run((t, 0.3) for t in times(5.0, 3600.0))
    counts = rec.valves.switch_counts  # still counted from construction
    assert counts[103] + counts[104] > 0 and counts[101] == counts[102] == 0


def test_a_valve_out_of_service_closes_at_once_and_the_others_carry_the_demand() -> None:
    rec = Recorder(array())
    rec.run((t, 0.5) for t in times(5.0, 600.0))  # two heating valves open, one of them 101 (least switched)
    assert 101 in rec.valves.command.open
    rec.valves.take_out_of_service(101)
    rec.valves.take_out_of_service(999)  # not a valve of this array: nothing happens
    cmd = rec.valves.update(0.5, 600.0 + 1e-3)  # inside the minimum on-time: a stuck valve gets nothing from waiting
    assert 101 not in cmd.open and cmd.changed and rec.valves.out_of_service == {101}
    rec.prev = (600.0 + 1e-3, cmd)
    rec.state[101] = False
    rec.run((t, 1.0) for t in times(5.0, 1800.0) if t > 700.0)
    assert rec.valves.command.open == {102, 103, 104}  # full demand: every heating valve still in service


def test_side_change_waits_for_the_other_side_to_close() -> None:
    rec = Recorder(array(min_on_s=20.0, min_off_s=5.0))
    assert rec.update(0.5, 0.0).open == {101, 102}
    # Cooling is asked for 10 s later, but the heating valves must stay open 20 s: cooling waits.
    cmd = rec.update(-0.3, 10.0)
    assert cmd.open == {101, 102}
    cmd = rec.update(-0.3, 20.0)
    assert cmd.open & set(COOL) and not cmd.open & set(HEAT)


def test_minimum_times_under_a_wandering_demand() -> None:
    rng = random.Random(11)
    rec = Recorder(array(min_on_s=8.0, min_off_s=12.0))
    demand = 0.0
    for t in times((1.0, 9.0), 6 * 3600.0, seed=5):
        demand = min(1.0, max(-1.0, demand + rng.gauss(0.0, 0.08)))
        rec.update(demand, t)  # the recorder checks minimum times and sides at every update
    assert sum(rec.valves.switch_counts.values()) > 100


def test_close_all_is_immediate_even_inside_the_minimum_on_time() -> None:
    valves = array(min_on_s=30.0)
    valves.update(0.8, 0.0)
    cmd = valves.close_all(1.0)
    assert cmd.open == frozenset() and cmd.changed
    assert not valves.close_all(2.0).changed


def test_clock_stepping_back_does_not_freeze_the_valves() -> None:
    valves = array()
    valves.update(0.3, 1000.0)
    valves.update(0.3, 10.0)  # the clock jumped back
    assert valves.update(0.0, 20.0).open == frozenset()  # 10 s later: past the 5 s minimum on-time


def test_switch_counts_are_a_copy() -> None:
    valves = array()
    valves.update(1.0, 0.0)
    counts = valves.switch_counts
    counts[101] = 99
    assert valves.switch_counts[101] == 1


@pytest.mark.parametrize(
    ("heat", "cool", "kwargs", "field"),
    [
        ((101, 101), (105,), {}, "heating_channels"),
        ((101,), (105, 105), {}, "cooling_channels"),
        ((101, 102), (102, 105), {}, "cooling_channels"),
        ((), (), {}, "heating_channels"),
        ((-1,), (), {}, "heating_channels"),
        ((True,), (), {}, "heating_channels"),
        ((101,), (105,), {"cycle_s": 0.0}, "cycle_s"),
        ((101,), (105,), {"cycle_s": math.inf}, "cycle_s"),
        ((101,), (105,), {"min_on_s": -1.0}, "min_on_s"),
        ((101,), (105,), {"min_off_s": math.nan}, "min_off_s"),
        ((101,), (105,), {"cycle_s": 10.0, "min_on_s": 6.0, "min_off_s": 6.0}, "cycle_s"),
    ],
)
def test_bad_configuration(heat: tuple[int, ...], cool: tuple[int, ...], kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ValveArray(heat, cool, **kwargs)
    assert err.value.field == field
    assert err.value.reason


# -- StuckValveDetector ---------------------------------------------------------------------------------------------


def command(opened: Iterable[int]) -> ValveCommand:
    opened = frozenset(opened)
    return ValveCommand(open=opened, closed=frozenset(HEAT + COOL) - opened, changed=False)


def test_readback_disagreeing_twice_running_is_a_stuck_valve() -> None:
    detector = StuckValveDetector(HEAT, COOL)
    cmd = command({101, 102})
    assert detector.update(cmd, frozenset({101}), 45.0, 0.0) == ()  # one sample of lag is normal
    (fault,) = detector.update(cmd, frozenset({101}), 45.0, 5.0)
    assert (fault.side, fault.channel) == ("heating", 102)
    assert "commanded open, reads closed" in fault.reason
    assert detector.update(cmd, frozenset({101, 102}), 45.0, 10.0) == ()  # it came back
    detector.update(command(set()), frozenset({106}), 45.0, 15.0)
    (fault,) = detector.update(command(set()), frozenset({106}), 45.0, 20.0)
    assert (fault.side, fault.channel) == ("cooling", 106) and "commanded closed, reads open" in fault.reason


def test_no_readback_checks_nothing() -> None:
    detector = StuckValveDetector(HEAT, COOL)
    for t in range(5):
        assert detector.update(command({101}), None, 45.0, t * 5.0) == ()


def test_full_heating_without_a_rise_is_a_stuck_side() -> None:
    detector = StuckValveDetector(HEAT, COOL, response_s=300.0, min_change_c=0.5)
    full = command(HEAT)
    faults = [detector.update(full, frozenset(HEAT), 30.0 + 0.0001 * t, float(t)) for t in range(0, 400, 5)]
    assert all(f == () for f in faults[:60])
    (fault,) = faults[-1]
    assert (fault.side, fault.channel) == ("heating", None)
    assert "heating" in fault.reason
    # Demand drops below full: the check stops.
    assert detector.update(command({101, 102}), None, 30.0, 400.0) == ()


def test_full_heating_with_a_rise_is_fine_and_cooling_is_mirrored() -> None:
    detector = StuckValveDetector(HEAT, COOL, response_s=300.0)
    for t in range(0, 600, 5):
        assert detector.update(command(HEAT), None, 25.0 + 0.01 * t, float(t)) == ()
    detector = StuckValveDetector(HEAT, COOL, response_s=300.0)
    faults = [detector.update(command(COOL), None, 25.0 + 0.001 * t, float(t)) for t in range(0, 600, 5)]
    assert faults[-1] and faults[-1][0].side == "cooling"


def test_detector_bad_configuration() -> None:
    with pytest.raises(ConfigError) as err:
        StuckValveDetector(HEAT, COOL, response_s=0.0)
    assert err.value.field == "response_s"
    with pytest.raises(ConfigError) as err:
        StuckValveDetector(HEAT, COOL, readback_samples=0)
    assert err.value.field == "readback_samples"
