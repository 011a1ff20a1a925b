"""Compiling recipe steps into instrument programs: clamps, ends, limits as FAIL tests, end reasons."""

from __future__ import annotations

import pytest

from formation.instruments.program import EndCode, StepMode, TestAction, TestType, TestWhen
from formation.orchestrator.compile import LIMIT_MARGIN_V, TAPER_HOLDOFF_S, compile_step
from formation.recipes import loads_recipe

RECIPE = """
name = "t"
version = "1"
chemistry = "NCM"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = 60.0
max_current_a = 10.0
[record]
every_s = 30
every_mv = 2.0
[[steps]]
id = "pre"
kind = "charge"
current = "C/20"
until = { duration = "2h", voltage_v = 3.4 }
[[steps]]
id = "cccv"
kind = "charge"
current = "C/2"
cv_voltage_v = 4.2
until = { current = "C/20" }
record = { every_s = 10, every_mv = 1.0 }
[[steps]]
id = "form"
kind = "charge"
current = "C/10"
until = { soc = "30%" }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "1h" }
[[steps]]
id = "dis"
kind = "discharge"
current = "1A"
until = { voltage_v = 2.5 }
"""


@pytest.fixture(scope="module")
def recipe():  # type: ignore[no-untyped-def]
    return loads_recipe(RECIPE, "toml", source="t.toml")


def _tests_by_type(inst):  # type: ignore[no-untyped-def]
    return {(t.type, t.action): t for t in inst.tests}


def test_cc_charge_to_voltage_is_clamped_at_the_limit_and_ends_on_a_test(recipe) -> None:  # type: ignore[no-untyped-def]
    c = compile_step(recipe.steps[0], recipe, 5.0)
    (inst,) = c.program.steps
    assert inst.mode is StepMode.CHARGE
    assert inst.current_a == pytest.approx(0.25)
    assert inst.voltage_v == pytest.approx(4.25)  # clamp = max_voltage_v: never above the recipe limit
    assert inst.duration_s == pytest.approx(7200.0)
    tests = _tests_by_type(inst)
    assert tests[(TestType.VOLT_GE, TestAction.NEXT)].value == pytest.approx(3.4)
    assert tests[(TestType.VOLT_GE, TestAction.FAIL)].value == pytest.approx(4.25 + LIMIT_MARGIN_V)
    assert tests[(TestType.VOLT_LE, TestAction.FAIL)].value == pytest.approx(2.45 - LIMIT_MARGIN_V)
    assert tests[(TestType.TEMP_GE, TestAction.FAIL)].value == pytest.approx(60.0)
    assert (inst.every_s, inst.every_mv) == (30.0, 2.0)
    assert tests[(TestType.CURR_GE, TestAction.FAIL)].value == pytest.approx(10.0 * 1.05)
    # FAIL tests come first; the voltage end is NEXT test 5.
    assert c.end_reason(EndCode.NEXT_BASE + 5) == "voltage"
    assert c.end_reason(EndCode.FAIL_BASE + 1) == "limit:max_voltage"
    assert c.end_reason(EndCode.TIME) == "duration"
    assert c.end_reason(EndCode.WATCHDOG) == "watchdog"


def test_cccv_taper_holds_off_and_uses_step_record_rule(recipe) -> None:  # type: ignore[no-untyped-def]
    c = compile_step(recipe.steps[1], recipe, 5.0)
    (inst,) = c.program.steps
    assert inst.voltage_v == pytest.approx(4.2)
    taper = _tests_by_type(inst)[(TestType.CURR_LE, TestAction.NEXT)]
    assert taper.value == pytest.approx(0.25)
    assert (taper.when, taper.at_s) == (TestWhen.AFTER, TAPER_HOLDOFF_S)
    assert (inst.every_s, inst.every_mv) == (10.0, 1.0)
    # No duration in the recipe: a generous backstop, reported as such.
    assert inst.duration_s >= 2 * 3600.0
    assert c.end_reason(EndCode.TIME) == "backstop"


def test_charge_throughput_and_per_cell_c_rate(recipe) -> None:  # type: ignore[no-untyped-def]
    c = compile_step(recipe.steps[2], recipe, 4.8)  # this cell's nominal differs from the recipe's
    (inst,) = c.program.steps
    assert inst.current_a == pytest.approx(0.48)
    assert _tests_by_type(inst)[(TestType.AMPH_GE, TestAction.NEXT)].value == pytest.approx(0.3 * 4.8)


def test_rest_and_discharge(recipe) -> None:  # type: ignore[no-untyped-def]
    rest = compile_step(recipe.steps[3], recipe, 5.0).program.steps[0]
    assert rest.mode is StepMode.REST and rest.current_a == 0.0 and rest.duration_s == 3600.0
    dis = compile_step(recipe.steps[4], recipe, 5.0).program.steps[0]
    assert dis.mode is StepMode.DISCHARGE and dis.current_a == pytest.approx(1.0)
    assert dis.voltage_v == pytest.approx(2.45)  # clamp at the recipe's floor
    assert _tests_by_type(dis)[(TestType.VOLT_LE, TestAction.NEXT)].value == pytest.approx(2.5)


def test_voltage_end_at_the_clamp_moves_inside_it() -> None:
    r = loads_recipe(RECIPE.replace("voltage_v = 3.4", "voltage_v = 4.25"), "toml")
    inst = compile_step(r.steps[0], r, 5.0).program.steps[0]
    end = _tests_by_type(inst)[(TestType.VOLT_GE, TestAction.NEXT)]
    assert end.value < inst.voltage_v


def test_identical_steps_compile_to_equal_hashable_programs(recipe) -> None:  # type: ignore[no-untyped-def]
    a = compile_step(recipe.steps[1], recipe, 5.0).program
    b = compile_step(recipe.steps[1], recipe, 5.0).program
    assert a == b and hash(a) == hash(b)
    assert compile_step(recipe.steps[1], recipe, 4.9).program != a


MEASURE = """
name = "m"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_current_a = 10.0
[record]
every_s = 60
every_mv = 5
[[steps]]
id = "d1"
kind = "dcir"
rest = "30min"
current = "1C"
duration = "18s"
sample_at = ["1s", "10s", "18s"]
[[steps]]
id = "d2"
kind = "dcir"
rest = "10min"
method = "iec61960"
[[steps]]
id = "age"
kind = "age"
duration = "7d"
ocv_at = ["1d", "7d"]
record = { every_s = 3600, every_mv = 1.0 }
"""


def test_dcir_single_is_rest_then_pulse_in_one_sequence() -> None:
    r = loads_recipe(MEASURE, "toml")
    c = compile_step(r.steps[0], r, 5.0)
    rest, pulse = c.program.steps
    assert (rest.mode, rest.duration_s, rest.current_a) == (StepMode.REST, 1800.0, 0.0)
    assert (rest.every_s, rest.every_mv) == (60.0, 5.0)
    assert (pulse.mode, pulse.duration_s) == (StepMode.DISCHARGE, 18.0)
    assert pulse.current_a == pytest.approx(5.0)
    assert pulse.voltage_v == pytest.approx(2.45)  # clamp at the recipe floor
    assert pulse.every_s <= 1.0
    assert all(t.action is TestAction.FAIL for t in pulse.tests)
    assert c.end_reason(EndCode.TIME) == "duration"


def test_dcir_iec61960_is_rest_low_pulse_high_pulse() -> None:
    r = loads_recipe(MEASURE, "toml")
    rest, low, high = compile_step(r.steps[1], r, 5.0).program.steps
    assert rest.mode is StepMode.REST and rest.duration_s == 600.0
    assert (low.current_a, low.duration_s) == (pytest.approx(1.0), 10.0)  # 0.2C for 10 s
    assert (high.current_a, high.duration_s) == (pytest.approx(5.0), 1.0)  # 1C for 1 s


def test_age_is_a_long_open_circuit_rest_with_its_record_rule() -> None:
    r = loads_recipe(MEASURE, "toml")
    (inst,) = compile_step(r.steps[2], r, 5.0).program.steps
    assert (inst.mode, inst.duration_s, inst.current_a) == (StepMode.REST, 7 * 86400.0, 0.0)
    assert (inst.every_s, inst.every_mv) == (3600.0, 1.0)
    assert {t.type for t in inst.tests} == {TestType.VOLT_GE, TestType.VOLT_LE, TestType.TEMP_GE, TestType.CURR_GE}


def test_rest_voltage_end_follows_the_direction_of_relaxation() -> None:
    text = MEASURE.replace(
        '[[steps]]\nid = "d1"',
        '[[steps]]\nid = "dis"\nkind = "discharge"\ncurrent = "1A"\nuntil = { voltage_v = 3.0 }\n'
        '[[steps]]\nid = "up"\nkind = "rest"\nuntil = { duration = "1h", voltage_v = 3.2 }\n'
        '[[steps]]\nid = "chg"\nkind = "charge"\ncurrent = "1A"\nuntil = { voltage_v = 4.1 }\n'
        '[[steps]]\nid = "down"\nkind = "rest"\nuntil = { duration = "1h", voltage_v = 4.0 }\n'
        '[[steps]]\nid = "d1"',
    )
    r = loads_recipe(text, "toml")
    up = compile_step(r.step("up"), r, 5.0).program.steps[0]
    down = compile_step(r.step("down"), r, 5.0).program.steps[0]
    assert _tests_by_type(up)[(TestType.VOLT_GE, TestAction.NEXT)].value == pytest.approx(3.2)
    assert _tests_by_type(down)[(TestType.VOLT_LE, TestAction.NEXT)].value == pytest.approx(4.0)


def test_launch_refuses_a_dcir_pulse_above_the_current_limit() -> None:
    from formation.errors import InputError
    from formation.orchestrator.inputs import CellEntry
    from formation.orchestrator.job import assign_cells

    r = loads_recipe(MEASURE.replace("max_current_a = 10.0", "max_current_a = 6.0"), "toml")
    assign_cells([1], [CellEntry("ok", "L", 5.0)], r)  # 1C of 5 Ah is 5 A
    with pytest.raises(InputError) as err:
        assign_cells([1], [CellEntry("big", "L", 8.0)], r)  # the 1C pulse would be 8 A
    assert err.value.field == "steps[0].current" and "8 A for cell big" in err.value.reason
