"""ChamberGate: steps wait for their chamber temperature, K clocks pause out of band (no socket)."""

from __future__ import annotations

import pytest

from formation.clock import ScaledClock
from formation.errors import InputError
from formation.orchestrator.cabinet.temperature import ChamberGate, check_setpoints
from formation.orchestrator.compile import compile_step
from formation.orchestrator.run import ChannelRun
from formation.recipes import chamber_setpoints, loads_recipe
from formation.states import RunState, StartState

AGE_AT_45 = """
name = "age-45"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
id = "age"
kind = "age"
duration = "2d"
ocv_at = ["12h", "2d"]
chamber_c = 45.0
"""


class ChamberDouble:
    """A chamber loop's face to the gate: a set point, a stable flag and an out-of-band total, set by the test."""

    def __init__(self) -> None:
        self.name = "ch1"
        self.setpoint_c = 25.0
        self.stable = True
        self.out_of_band_total_s = 0.0
        self.setpoints_asked: list[float] = []

    def set_setpoint(self, setpoint_c: float) -> None:
        self.setpoints_asked.append(setpoint_c)
        self.setpoint_c = setpoint_c
        self.stable = False  # a new set point is never stable at once


def _age_run(clock: ScaledClock) -> ChannelRun:
    recipe = loads_recipe(AGE_AT_45, "toml")
    run = ChannelRun(1, "C1", "L", 1, 5.0, recipe)
    run.begin_step(0, compile_step(recipe.steps[0], recipe, 5.0))
    return run


def test_a_step_with_chamber_c_waits_until_the_chamber_is_stable_there() -> None:
    clock = ScaledClock(1.0, start=0.0)
    chamber = ChamberDouble()
    gate = ChamberGate(chamber, clock)
    run = _age_run(clock)
    assert gate.may_start(run) is False and chamber.setpoints_asked == [45.0]
    assert gate.may_start(run) is False  # heating up
    chamber.stable = True
    assert gate.may_start(run) is True and chamber.setpoints_asked == [45.0]


def test_k_clock_pauses_only_between_the_first_and_last_checkpoint() -> None:
    clock = ScaledClock(1.0, start=0.0)
    chamber = ChamberDouble()
    gate = ChamberGate(chamber, clock)
    run = _age_run(clock)
    run.transition(RunState.RUNNING)
    run.start = StartState.STARTED
    run.step_t0_host_s = clock.now() - 3600.0  # one hour into the step: before the first checkpoint (12 h)
    chamber.out_of_band_total_s = 600.0
    gate.pause_k_clocks([run])
    assert run.k_paused_s == 0.0
    run.step_t0_host_s = clock.now() - 86_400.0  # a day in: between the checkpoints
    chamber.out_of_band_total_s = 900.0
    gate.pause_k_clocks([run])
    assert run.k_paused_s == pytest.approx(300.0)  # only the seconds since the last look


def test_set_points_the_line_cannot_honour_are_refused() -> None:
    recipe = loads_recipe(AGE_AT_45, "toml")
    assert chamber_setpoints(recipe) == (45.0,)
    with pytest.raises(InputError, match=r"steps\[0\]\.chamber_c: 45 °C asked of cabinet cab1, which stands in no"):
        check_setpoints(recipe, "cab1", None, None)
    with pytest.raises(InputError, match="45 °C is outside 10–40 °C of chamber ch1"):
        check_setpoints(recipe, "cab1", "ch1", (10.0, 40.0))
    check_setpoints(recipe, "cab1", "ch1", (10.0, 60.0))


def test_without_a_chamber_nothing_waits() -> None:
    clock = ScaledClock(1.0, start=0.0)
    gate = ChamberGate(None, clock)
    assert gate.may_start(_age_run(clock)) is True


CHAMBER_STEPS = """
name = "soak"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
id = "hot"
kind = "chamber"
setpoint_c = 45.0
timeout = "1h"
[[steps]]
id = "set-cold"
kind = "chamber"
setpoint_c = 15.0
wait = false
"""


def _chamber_runs(clock: ScaledClock) -> list[ChannelRun]:
    recipe = loads_recipe(CHAMBER_STEPS, "toml")
    run = ChannelRun(1, "C1", "L", 1, 5.0, recipe)
    run.begin_step(0, compile_step(recipe.steps[0], recipe, 5.0))
    return [run]


def test_a_chamber_step_waits_for_stability_then_ends_on_it() -> None:
    clock = ScaledClock(1.0, start=0.0)
    chamber = ChamberDouble()
    gate = ChamberGate(chamber, clock)
    runs = _chamber_runs(clock)
    assert runs[0].compiled is not None and runs[0].compiled.host_step
    assert gate.host_steps_due(runs) == []  # set to 45 °C, heating
    assert chamber.setpoints_asked == [45.0]
    assert (runs[0].state, runs[0].start) == (RunState.RUNNING, StartState.STARTED)  # nothing sent to the cabinet
    chamber.stable = True
    [(run, reason)] = gate.host_steps_due(runs)
    assert reason == "stable"
    result = gate.finish(run, reason)
    assert (result.kind, result.end_reason, result.ah) == ("chamber", "stable", 0.0)


def test_a_chamber_step_that_never_settles_times_out() -> None:
    clock = ScaledClock(1.0, start=0.0)
    chamber = ChamberDouble()
    gate = ChamberGate(chamber, clock)
    runs = _chamber_runs(clock)
    assert gate.host_steps_due(runs) == []
    runs[0].account.started_s = clock.now() - 3601.0  # an hour ago: the step's timeout
    assert gate.host_steps_due(runs) == [(runs[0], "timeout")]


def test_a_chamber_step_without_wait_sets_and_goes_on() -> None:
    clock = ScaledClock(1.0, start=0.0)
    chamber = ChamberDouble()
    gate = ChamberGate(chamber, clock)
    recipe = loads_recipe(CHAMBER_STEPS, "toml")
    run = ChannelRun(1, "C1", "L", 1, 5.0, recipe)
    run.begin_step(1, compile_step(recipe.steps[1], recipe, 5.0))
    assert gate.host_steps_due([run]) == [(run, "set")] and chamber.setpoints_asked == [15.0]
