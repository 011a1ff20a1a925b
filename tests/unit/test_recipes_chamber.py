"""Temperatures in recipes: the ``chamber`` step and ``chamber_c`` on every step kind.

Parsing, defaults, canonical JSON (recipes without them keep their old form and hash), ``chamber_setpoints``,
``describe_step`` and every refusal with its field path.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from formation.errors import RecipeError
from formation.recipes import (
    CHAMBER_MAX_C,
    CHAMBER_MIN_C,
    CHAMBER_WAIT_DEFAULT_S,
    UNSUPPORTED_KINDS,
    AgeStep,
    ChamberStep,
    ChargeStep,
    CurrentSpec,
    DcirStep,
    DischargeStep,
    Recipe,
    RecordRule,
    RestStep,
    Until,
    builtin_recipes,
    chamber_setpoints,
    describe_step,
    load_builtin,
    load_recipe,
    loads_recipe,
    parse_recipe,
)
from formation.recipes.units import MAX_DURATION_S

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"

HEAD_TOML = """
name = "hot-formation"
version = "1.0"
chemistry = "NCM"
nominal_capacity_ah = 5.0

[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = 60.0
max_current_a = 5.0

[record]
every_s = 30
every_mv = 5.0
"""

STEPS_TOML = """
[[steps]]
id = "warm"
kind = "chamber"
setpoint_c = 45

[[steps]]
id = "charge"
kind = "charge"
current = "C/5"
cv_voltage_v = 4.2
chamber_c = 45.0
until = { current = "C/20", duration = "8h" }

[[steps]]
id = "soak"
kind = "rest"
chamber_c = 45
until = { duration = "1h" }

[[steps]]
id = "cool"
kind = "chamber"
setpoint_c = 25.0
timeout = "2h"
record = { every_s = 600 }

[[steps]]
id = "dcir"
kind = "dcir"
rest = "30min"
current = "1C"
duration = "10s"
chamber_c = 25

[[steps]]
id = "age"
kind = "age"
duration = "7d"
ocv_at = ["1d", "7d"]
chamber_c = 45.0

[[steps]]
id = "release"
kind = "chamber"
setpoint_c = -10.5
wait = false

[[steps]]
text = "Discharge at C/5 until 3.0 V"
id = "capacity"
chamber_c = 0
"""

RECIPE_TOML = HEAD_TOML + STEPS_TOML
NEW_KEYS = ("chamber_c", "setpoint_c", "wait", "timeout")


def _recipe() -> Recipe:
    return loads_recipe(RECIPE_TOML, "toml", source="hot.toml")


# -- parsing ------------------------------------------------------------------------------------------------


def test_chamber_steps_and_chamber_c_parse_into_typed_steps() -> None:
    recipe = _recipe()
    rule = RecordRule(30.0, 5.0)
    assert recipe.steps == (
        ChamberStep("warm", 45.0, True, None, rule),
        ChargeStep("charge", CurrentSpec(c_rate=0.2), 4.2, Until(28800.0, None, CurrentSpec(c_rate=0.05)), rule, 45.0),
        RestStep("soak", Until(duration_s=3600.0), rule, chamber_c=45.0),
        ChamberStep("cool", 25.0, wait=True, timeout_s=7200.0, record=RecordRule(600.0, 5.0)),
        DcirStep(
            "dcir",
            1800.0,
            "single",
            "discharge",
            CurrentSpec(c_rate=1.0),
            10.0,
            (10.0,),
            None,
            None,
            RecordRule(1.0, 0.0),
            chamber_c=25.0,
        ),
        AgeStep("age", 7 * 86400.0, (86400.0, 7 * 86400.0), 45.0, rule),
        ChamberStep("release", -10.5, wait=False, timeout_s=None, record=rule),
        DischargeStep("capacity", CurrentSpec(c_rate=0.2), None, Until(voltage_v=3.0), rule, chamber_c=0.0),
    )
    assert all(type(step.setpoint_c) is float for step in recipe.steps if isinstance(step, ChamberStep))
    assert recipe.step("cool") == recipe.steps[3]


def test_chamber_step_defaults_and_its_wait_limit() -> None:
    step = ChamberStep("c", 45.0)
    assert (step.kind, step.wait, step.timeout_s, step.record) == ("chamber", True, None, RecordRule())
    assert step.wait_limit_s == CHAMBER_WAIT_DEFAULT_S == 4 * 3600.0
    assert ChamberStep("c", 45.0, timeout_s=600.0).wait_limit_s == 600.0
    assert ChamberStep("c", 45.0, wait=False).wait_limit_s is None


def test_steps_without_chamber_c_default_to_none() -> None:
    rule = RecordRule()
    assert RestStep("r", Until(duration_s=60.0), rule).chamber_c is None
    assert ChargeStep("c", CurrentSpec(amps=1.0), None, Until(duration_s=60.0), rule).chamber_c is None
    for step in load_builtin("ncm21700-formation").steps:
        assert not isinstance(step, ChamberStep) and step.chamber_c is None


def test_chamber_step_gets_an_automatic_id_and_inherits_the_recipe_record_rule() -> None:
    recipe = loads_recipe(HEAD_TOML + '[[steps]]\nkind = "chamber"\nsetpoint_c = 30\n', "toml")
    assert recipe.steps == (ChamberStep("step1", 30.0, record=RecordRule(30.0, 5.0)),)


def test_set_points_at_the_ends_of_the_range_are_accepted() -> None:
    hot = HEAD_TOML.replace("max_cell_temperature_c = 60.0", "max_cell_temperature_c = 120.0")
    steps = f"""
[[steps]]
kind = "chamber"
setpoint_c = {CHAMBER_MAX_C}

[[steps]]
kind = "rest"
chamber_c = {CHAMBER_MIN_C}
until = {{ duration = "1h" }}
"""
    recipe = loads_recipe(hot + steps, "toml")
    assert chamber_setpoints(recipe) == (100.0, -40.0)
    assert (CHAMBER_MIN_C, CHAMBER_MAX_C) == (-40.0, 100.0)


def test_a_text_step_carries_chamber_c() -> None:
    step = _recipe().step("capacity")
    assert isinstance(step, DischargeStep) and step.chamber_c == 0.0
    assert UNSUPPORTED_KINDS == ()


# -- chamber_setpoints --------------------------------------------------------------------------------------


def test_chamber_setpoints_in_step_order() -> None:
    assert chamber_setpoints(_recipe()) == (45.0, 45.0, 45.0, 25.0, 25.0, 45.0, -10.5, 0.0)


def test_chamber_setpoints_of_a_recipe_without_temperatures_is_empty() -> None:
    for name in builtin_recipes():
        assert chamber_setpoints(load_builtin(name)) == ()


# -- canonical JSON and hash --------------------------------------------------------------------------------


def test_canonical_form_of_chamber_steps_and_chamber_c() -> None:
    steps = json.loads(_recipe().canonical_json())["steps"]
    assert steps[0] == {
        "id": "warm",
        "kind": "chamber",
        "setpoint_c": 45.0,
        "wait": True,
        "record": {"every_s": 30.0, "every_mv": 5.0},
    }
    assert steps[3] == {
        "id": "cool",
        "kind": "chamber",
        "setpoint_c": 25.0,
        "wait": True,
        "timeout": 7200.0,
        "record": {"every_s": 600.0, "every_mv": 5.0},
    }
    assert steps[6]["wait"] is False and "timeout" not in steps[6]
    assert [step.get("chamber_c") for step in steps] == [None, 45.0, 45.0, None, 25.0, 45.0, None, 0.0]


def test_canonical_json_parses_back_to_the_same_recipe_and_hash() -> None:
    recipe = _recipe()
    again = parse_recipe(json.loads(recipe.canonical_json()))
    assert again == recipe and again.sha256 == recipe.sha256


def test_toml_and_json_spellings_have_one_hash() -> None:
    as_json = json.loads(_recipe().canonical_json())
    as_json["steps"][0]["setpoint_c"] = 45  # an int, as TOML gave it
    as_json["steps"][3]["timeout"] = "120min"
    del as_json["steps"][0]["wait"]  # the default
    assert loads_recipe(json.dumps(as_json), "json").sha256 == _recipe().sha256


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("setpoint_c = 45\n", "setpoint_c = 46\n"),
        ("wait = false\n", "wait = true\n"),
        ('timeout = "2h"\n', 'timeout = "3h"\n'),
        ("chamber_c = 0\n", "chamber_c = 1\n"),
        ("chamber_c = 45\n", ""),
    ],
)
def test_hash_changes_with_every_temperature_key(old: str, new: str) -> None:
    assert RECIPE_TOML.count(old) == 1
    assert loads_recipe(HEAD_TOML + STEPS_TOML.replace(old, new), "toml").sha256 != _recipe().sha256


def _keys(value: object) -> set[str]:
    """Every key of every table in ``value``, nested."""
    if isinstance(value, dict):
        return set(value).union(*(_keys(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(item) for item in value))
    return set()


def _recipes_without_temperatures() -> list[Recipe]:
    examples = [load_recipe(path) for path in sorted(EXAMPLES.iterdir()) if path.suffix in (".toml", ".json")]
    return [load_builtin(name) for name in builtin_recipes()] + examples


def test_recipes_without_temperatures_keep_their_canonical_form() -> None:
    # The canonical form (so the sha256 recorded with every past run) of the built-in and example recipes is what
    # it was before chamber steps and chamber_c on every kind existed: no new key appears, not even as null or a
    # default. Only an age step had chamber_c before (examples/recipes/ncm21700-iec-dcir-ageing.toml uses it).
    for recipe in _recipes_without_temperatures():
        data = json.loads(recipe.canonical_json())
        assert not _keys({**data, "steps": None}).intersection(NEW_KEYS), recipe.name
        # The steps as written (a repeat block once, with its tag and loop marks), as the canonical form has them.
        for step, canonical in zip(recipe.layout or recipe.steps, data["steps"], strict=True):
            new_keys = _keys(canonical).intersection(NEW_KEYS)
            assert new_keys <= ({"chamber_c"} if isinstance(step, AgeStep) else set()), (recipe.name, canonical)


def test_chamber_c_is_only_an_added_key() -> None:
    # chamber_c set on a step adds exactly that key; the rest of the step's canonical form is untouched.
    for recipe in _recipes_without_temperatures():
        for step in recipe.steps:
            if not isinstance(step, ChargeStep | DischargeStep | RestStep | DcirStep):
                continue  # age and chamber steps are covered above; wait, hold and precheck have no chamber_c
            hot = replace(step, chamber_c=45.0)
            assert hot.to_canonical() == {**step.to_canonical(), "chamber_c": 45.0}


# -- describe_step ------------------------------------------------------------------------------------------


def test_describe_step() -> None:
    assert [describe_step(step) for step in _recipe().steps] == [
        "set chamber to 45 °C and wait until stable (≤ 4h)",
        "charge C/5 CC-CV 4.2 V at 45 °C until I < C/20 or 8h",
        "rest 1h at 45 °C",
        "set chamber to 25 °C and wait until stable (≤ 2h)",
        "dcir at 25 °C discharge 1C 10s after 30m rest, at 10s",
        "age 7d at 45 °C, OCV at 1d, 7d",
        "set chamber to -10.5 °C and go on (no wait)",
        "discharge C/5 at 0 °C until 3 V",
    ]


def test_describe_step_of_other_chamber_c_shapes() -> None:
    rule = RecordRule()
    rest = RestStep("r", Until(duration_s=3600.0, voltage_v=3.3), rule, chamber_c=45.0)
    assert describe_step(rest) == "rest at 45 °C until 3.3 V or 1h"
    iec = DcirStep(
        "d", 60.0, "iec61960", "charge", CurrentSpec(c_rate=1.0), 1.0, (), CurrentSpec(c_rate=0.2), 10.0, rule, 10.0
    )
    assert describe_step(iec) == "dcir iec61960 at 10 °C charge C/5 10s then 1C 1s after 1m rest"


# -- refusals -----------------------------------------------------------------------------------------------

#: The recipe above as data; steps[0] is a chamber step, steps[1] a charge, steps[2] a rest, steps[5] an age.
BASE: dict[str, Any] = json.loads(_recipe().canonical_json())


def _at(index: int, **changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"][index].update(changes)


def _chamber(**changes: object) -> Callable[[dict[str, Any]], object]:
    return _at(0, **changes)


def _without(index: int, key: str) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"][index].pop(key)


def _replace(index: int, step: dict[str, Any]) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"].__setitem__(index, step)


CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    # chamber step: setpoint_c
    ("set point missing", _without(0, "setpoint_c"), "steps[0].setpoint_c", "missing required key"),
    ("set point NaN", _chamber(setpoint_c=float("nan")), "steps[0].setpoint_c", "expected a finite number of °C"),
    ("set point inf", _chamber(setpoint_c=float("inf")), "steps[0].setpoint_c", "got inf"),
    ("set point -inf", _chamber(setpoint_c=float("-inf")), "steps[0].setpoint_c", "got -inf"),
    ("set point string", _chamber(setpoint_c="45 °C"), "steps[0].setpoint_c", "got string"),
    ("set point boolean", _chamber(setpoint_c=True), "steps[0].setpoint_c", "got boolean"),
    ("set point too cold", _chamber(setpoint_c=-41), "steps[0].setpoint_c", "-41 °C is below -40 °C"),
    (
        "set point at the cell limit",
        _chamber(setpoint_c=60),
        "steps[0].setpoint_c",
        "60 °C is not below limits.max_cell_temperature_c 60 °C",
    ),
    (
        "set point above the range",
        lambda d: (d["limits"].update(max_cell_temperature_c=150), d["steps"][0].update(setpoint_c=100.5)),
        "steps[0].setpoint_c",
        "100.5 °C is above 100 °C (chamber set points are -40 … 100 °C)",
    ),
    # chamber step: wait and timeout
    ("wait string", _chamber(wait="yes"), "steps[0].wait", "expected a boolean (true or false), got string"),
    ("wait number", _chamber(wait=1), "steps[0].wait", "expected a boolean (true or false), got number"),
    ("timeout unreadable", _chamber(timeout="soon"), "steps[0].timeout", "cannot read duration 'soon'"),
    ("timeout zero", _chamber(timeout=0), "steps[0].timeout", "must be positive"),
    ("timeout negative", _chamber(timeout="-1h"), "steps[0].timeout", "must be positive"),
    ("timeout NaN", _chamber(timeout=float("nan")), "steps[0].timeout", "not a finite number"),
    ("timeout boolean", _chamber(timeout=True), "steps[0].timeout", "expected a duration"),
    (
        "timeout beyond the duration bound",
        _chamber(timeout=MAX_DURATION_S * 2),
        "steps[0].timeout",
        "1.5552e+07 s is longer than 90 days",
    ),
    (
        "timeout without wait",
        _chamber(wait=False, timeout="1h"),
        "steps[0].timeout",
        "only with wait = true (a chamber step that does not wait has nothing to time out)",
    ),
    # chamber step: keys of other kinds
    ("chamber with until", _chamber(until={"duration": "1h"}), "steps[0].until", "a chamber step has no end condition"),
    ("chamber with current", _chamber(current="1C"), "steps[0].current", "a chamber step moves no current"),
    ("chamber with chamber_c", _chamber(chamber_c=45), "steps[0].chamber_c", "gives its temperature as setpoint_c"),
    (
        "chamber as text",
        _replace(0, {"text": "Rest for 1 hour", "kind": "chamber", "setpoint_c": 45}),
        "steps[0].text",
        "a chamber step has no PyBaMM text",
    ),
    ("chamber unknown key", _chamber(ramp_c_per_min=1), "steps[0].ramp_c_per_min", "unknown key"),
    ("chamber setpoint typo", _chamber(setpoint=45), "steps[0].setpoint", "unknown key"),
    ("chamber record bad", _chamber(record={"every_h": 1}), "steps[0].record.every_h", "unknown key"),
    # chamber_c on every kind
    ("charge chamber_c NaN", _at(1, chamber_c=float("nan")), "steps[1].chamber_c", "expected a finite number"),
    ("charge chamber_c string", _at(1, chamber_c="45"), "steps[1].chamber_c", "got string"),
    ("rest chamber_c too cold", _at(2, chamber_c=-60), "steps[2].chamber_c", "-60 °C is below -40 °C"),
    ("rest chamber_c at the cell limit", _at(2, chamber_c=75), "steps[2].chamber_c", "not below limits"),
    ("dcir chamber_c inf", _at(4, chamber_c=float("inf")), "steps[4].chamber_c", "got inf"),
    ("age chamber_c boolean", _at(5, chamber_c=False), "steps[5].chamber_c", "got boolean"),
    ("discharge chamber_c array", _at(7, chamber_c=[45]), "steps[7].chamber_c", "got array"),
    (
        "text chamber_c string",
        _replace(7, {"text": "Rest for 1 hour", "chamber_c": "hot"}),
        "steps[7].chamber_c",
        "got string",
    ),
    ("chamber_c typo", _at(2, chamber=45), "steps[2].chamber", "unknown key"),
    # a kind that still does not exist
    (
        "unknown kind",
        _at(2, kind="soak"),
        "steps[2].kind",
        "expected one of: charge, discharge, rest, dcir, age, chamber",
    ),
]


@pytest.mark.parametrize(("change", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_field_and_the_reason(
    change: Callable[[dict[str, Any]], object], field: str, reason: str
) -> None:
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, source="hot.json")
    errors = info.value.errors
    assert errors[0][0] == field, errors
    assert reason in errors[0][1], errors
    assert len(errors) == 1, errors  # one fault reports once, not as a cascade
    assert str(info.value).startswith(f"hot.json: {field}: ")


def test_base_is_valid() -> None:
    assert parse_recipe(copy.deepcopy(BASE)) == _recipe()


def test_every_fault_is_collected() -> None:
    data = copy.deepcopy(BASE)
    data["steps"][0].update(setpoint_c=float("nan"), wait="no", until={"duration": 60})
    data["steps"][1]["chamber_c"] = 200
    data["steps"][3].update(timeout="later", current="1A")
    data["steps"][5]["chamber_c"] = "warm"
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    assert [field for field, _ in info.value.errors] == [
        "steps[0].until",
        "steps[0].setpoint_c",
        "steps[0].wait",
        "steps[1].chamber_c",
        "steps[3].current",
        "steps[3].timeout",
        "steps[5].chamber_c",
    ]


def test_toml_nan_and_inf_set_points_are_refused() -> None:
    for literal in ("nan", "inf", "-inf"):
        with pytest.raises(RecipeError) as info:
            loads_recipe(RECIPE_TOML.replace("setpoint_c = 45\n", f"setpoint_c = {literal}\n"), "toml")
        assert [field for field, _ in info.value.errors] == ["steps[0].setpoint_c"]
