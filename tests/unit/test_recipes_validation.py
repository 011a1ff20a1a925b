"""Recipe validation: every refusal, with its exact field path, before anything starts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from formation.errors import InputError, RecipeError
from formation.recipes import load_recipe, loads_recipe, parse_recipe

BASE: dict[str, Any] = {
    "name": "lfp-test",
    "version": "1.0",
    "chemistry": "LFP",
    "nominal_capacity_ah": 280.0,
    "limits": {
        "max_voltage_v": 3.75,
        "min_voltage_v": 2.0,
        "max_cell_temperature_c": 60.0,
        "max_current_a": 140.0,
    },
    "record": {"every_s": 60, "every_mv": 5.0},
    "steps": [
        {
            "id": "precharge",
            "kind": "charge",
            "current": "C/20",
            "until": {"duration": "2h", "voltage_v": 3.4},
        },
        {
            "id": "cccv",
            "kind": "charge",
            "current": "C/5",
            "cv_voltage_v": 3.65,
            "until": {"current": "C/20"},
        },
        {"id": "relax", "kind": "rest", "until": {"duration": "1h"}},
        {"id": "capacity", "kind": "discharge", "current": "C/5", "until": {"voltage_v": 2.5}},
    ],
}


def errors_of(data: object) -> list[tuple[str, str]]:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, source="test.toml")
    error = info.value
    assert isinstance(error, InputError)
    assert error.errors[0] == (error.field, error.reason)  # the raised one is the first of the list
    assert str(error).startswith("test.toml: ")
    return error.errors


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def test_base_recipe_is_valid() -> None:
    assert len(parse_recipe(BASE).steps) == 4


CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    # unknown keys, at every level
    ("unknown top key", lambda d: d.update(colour="red"), "colour", "unknown key"),
    ("unknown limit", lambda d: d["limits"].update(max_power_w=5), "limits.max_power_w", "unknown key"),
    ("unknown record key", lambda d: d["record"].update(every_ah=1), "record.every_ah", "unknown key"),
    ("unknown step key", lambda d: d["steps"][1].update(speed=1), "steps[1].speed", "unknown key"),
    (
        "unknown until key",
        lambda d: d["steps"][0]["until"].update(temp_c=40),
        "steps[0].until.temp_c",
        "unknown key",
    ),
    (
        "unknown step record key",
        lambda d: d["steps"][2].update(record={"every_h": 1}),
        "steps[2].record.every_h",
        "unknown key",
    ),
    (
        "key beside text",
        lambda d: d["steps"].append({"text": "Rest for 1 hour", "kind": "rest"}),
        "steps[4].kind",
        "not allowed beside text",
    ),
    # missing required keys
    ("no name", lambda d: d.pop("name"), "name", "missing required key"),
    ("no nominal", lambda d: d.pop("nominal_capacity_ah"), "nominal_capacity_ah", "missing required key"),
    (
        "no max voltage",
        lambda d: d["limits"].pop("max_voltage_v"),
        "limits.max_voltage_v",
        "missing required key",
    ),
    (
        "no min voltage",
        lambda d: d["limits"].pop("min_voltage_v"),
        "limits.min_voltage_v",
        "missing required key",
    ),
    ("no steps", lambda d: d.pop("steps"), "steps", "missing required key"),
    ("empty steps", lambda d: d.update(steps=[]), "steps", "at least one step"),
    ("no current", lambda d: d["steps"][3].pop("current"), "steps[3].current", "missing required key"),
    ("no kind", lambda d: d["steps"][2].pop("kind"), "steps[2].kind", "missing required key"),
    # a step with no end that bounds it
    ("no until", lambda d: d["steps"][3].pop("until"), "steps[3].until", "needs an end"),
    ("empty until", lambda d: d["steps"][3].update(until={}), "steps[3].until", "needs an end"),
    (
        "rest without duration",
        lambda d: d["steps"][2].update(until={"voltage_v": 3.3}),
        "steps[2].until.duration",
        "needs a duration",
    ),
    (
        "CC-CV without taper or time",
        lambda d: d["steps"][1].update(until={"voltage_v": 3.6}),
        "steps[1].until",
        "taper current or a duration",
    ),
    (
        "taper on a CC step",
        lambda d: d["steps"][0]["until"].update(current="C/50"),
        "steps[0].until.current",
        "needs cv_voltage_v",
    ),
    (
        "charge voltage end at the CV",
        lambda d: d["steps"][1]["until"].update(voltage_v=3.65),
        "steps[1].until.voltage_v",
        "3.65 V is at or above cv_voltage_v 3.65 V",
    ),
    (
        "discharge voltage end below its CV",
        lambda d: d["steps"][3].update(cv_voltage_v=2.5, until={"voltage_v": 2.4, "duration": "1h"}),
        "steps[3].until.voltage_v",
        "at or below cv_voltage_v",
    ),
    (
        "taper not below current",
        lambda d: d["steps"][1]["until"].update(current="60A"),
        "steps[1].until.current",
        "not below the step current 56 A",
    ),
    (
        "current end on rest",
        lambda d: d["steps"][2]["until"].update(current="1A"),
        "steps[2].until.current",
        "not an end of a rest step",
    ),
    # cut-offs outside limits
    (
        "charge above max",
        lambda d: d["steps"][0]["until"].update(voltage_v=4.5),
        "steps[0].until.voltage_v",
        "4.5 V is above limits.max_voltage_v 3.75 V",
    ),
    (
        "cv above max",
        lambda d: d["steps"][1].update(cv_voltage_v=3.8),
        "steps[1].cv_voltage_v",
        "3.8 V is above limits.max_voltage_v 3.75 V",
    ),
    (
        "discharge below min",
        lambda d: d["steps"][3]["until"].update(voltage_v=1.9),
        "steps[3].until.voltage_v",
        "1.9 V is below limits.min_voltage_v 2 V",
    ),
    (
        "rest voltage outside",
        lambda d: d["steps"][2]["until"].update(voltage_v=3.9),
        "steps[2].until.voltage_v",
        "above limits.max_voltage_v",
    ),
    (
        "min not below max",
        lambda d: d["limits"].update(min_voltage_v=3.8),
        "limits.min_voltage_v",
        "not below limits.max_voltage_v",
    ),
    (
        "max voltage typo",
        lambda d: d["limits"].update(max_voltage_v=37.5),
        "limits.max_voltage_v",
        "above 5 V",
    ),
    # currents above the limit
    (
        "current above max",
        lambda d: d["steps"][3].update(current="1C"),
        "steps[3].current",
        "1C is 280 A, above limits.max_current_a 140 A",
    ),
    (
        "amps above max",
        lambda d: d["steps"][3].update(current="150A"),
        "steps[3].current",
        "above limits.max_current_a",
    ),
    (
        "above the 2C default",
        lambda d: (d["limits"].pop("max_current_a"), d["steps"][3].update(current="3C")),
        "steps[3].current",
        "above limits.max_current_a 560 A",
    ),
    # unparseable values
    (
        "bad duration",
        lambda d: d["steps"][2]["until"].update(duration="an hour"),
        "steps[2].until.duration",
        "cannot read duration",
    ),
    (
        "bad current",
        lambda d: d["steps"][0].update(current="slow"),
        "steps[0].current",
        "cannot read current",
    ),
    (
        "bad charge",
        lambda d: d["steps"][0]["until"].update(charge="lots"),
        "steps[0].until.charge",
        "cannot read charge",
    ),
    (
        "soc without percent",
        lambda d: d["steps"][0]["until"].update(soc=0.3),
        "steps[0].until.soc",
        "such as '30%'",
    ),
    (
        "charge and soc",
        lambda d: d["steps"][0]["until"].update(charge="1Ah", soc="3%"),
        "steps[0].until.soc",
        "not both",
    ),
    # negative or zero values
    ("zero nominal", lambda d: d.update(nominal_capacity_ah=0), "nominal_capacity_ah", "must be positive"),
    (
        "negative voltage end",
        lambda d: d["steps"][3]["until"].update(voltage_v=-2.5),
        "steps[3].until.voltage_v",
        "must be positive",
    ),
    (
        "zero duration",
        lambda d: d["steps"][2]["until"].update(duration="0s"),
        "steps[2].until.duration",
        "must be positive",
    ),
    (
        "negative current",
        lambda d: d["steps"][0].update(current="-1A"),
        "steps[0].current",
        "must be positive",
    ),
    ("negative record", lambda d: d["record"].update(every_s=-1), "record.every_s", "zero or positive"),
    ("record all off", lambda d: d["record"].update(every_s=0, every_mv=0), "record", "both 0"),
    (
        "negative max current",
        lambda d: d["limits"].update(max_current_a=-5),
        "limits.max_current_a",
        "must be positive",
    ),
    (
        "zero temperature limit",
        lambda d: d["limits"].update(max_cell_temperature_c=0),
        "limits.max_cell_temperature_c",
        "must be positive",
    ),
    # wrong types
    ("name not a string", lambda d: d.update(name=5), "name", "expected a non-empty string, got number"),
    ("version not a string", lambda d: d.update(version=1.0), "version", "got number"),
    (
        "voltage as string",
        lambda d: d["limits"].update(max_voltage_v="3.75"),
        "limits.max_voltage_v",
        "expected a number, got string",
    ),
    ("boolean number", lambda d: d.update(nominal_capacity_ah=True), "nominal_capacity_ah", "got boolean"),
    ("nan number", lambda d: d.update(nominal_capacity_ah=float("nan")), "nominal_capacity_ah", "finite"),
    ("steps not an array", lambda d: d.update(steps={"kind": "rest"}), "steps", "expected an array"),
    ("step not a table", lambda d: d["steps"].append("Rest for 1 hour"), "steps[4]", "expected a table"),
    ("limits not a table", lambda d: d.update(limits=[3.75, 2.0]), "limits", "expected a table"),
    ("until not a table", lambda d: d["steps"][2].update(until="1h"), "steps[2].until", "expected a table"),
    ("kind not a string", lambda d: d["steps"][2].update(kind=3), "steps[2].kind", "expected a string"),
    ("text not a string", lambda d: d["steps"].append({"text": 5}), "steps[4].text", "expected a string"),
    # kinds
    (
        "unknown kind",
        lambda d: d["steps"][2].update(kind="soak"),
        "steps[2].kind",
        "unknown step kind 'soak'",
    ),
    # ids
    ("duplicate id", lambda d: d["steps"][3].update(id="relax"), "steps[3].id", "duplicate id 'relax'"),
    (
        "given id collides with an auto id",
        lambda d: (d["steps"][0].update(id="step2"), d["steps"][1].pop("id")),
        "steps[1].id",
        "duplicate id 'step2'",
    ),
    ("bad id", lambda d: d["steps"][0].update(id="pre charge"), "steps[0].id", "not a valid id"),
    # PyBaMM text
    (
        "unknown phrasing",
        lambda d: d["steps"].append({"text": "Charge until it is full"}),
        "steps[4].text",
        "cannot read 'Charge until it is full'",
    ),
    (
        "text ends outside limits",
        lambda d: d["steps"].append({"text": "Charge at C/10 until 4.2 V"}),
        "steps[4].until.voltage_v",
        "4.2 V is above limits.max_voltage_v 3.75 V",
    ),
]


@pytest.mark.parametrize(("change", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_field_and_the_reason(
    change: Callable[[dict[str, Any]], object], field: str, reason: str
) -> None:
    errors = errors_of(mutated(change))
    assert errors[0][0] == field, errors
    assert reason in errors[0][1], errors
    assert len(errors) == 1, errors  # one fault reports once, not as a cascade


def test_all_errors_are_collected() -> None:
    def break_three(d: dict[str, Any]) -> None:
        d["steps"][0]["until"]["voltage_v"] = 4.5
        d["steps"][2]["kind"] = "soak"
        d["limits"]["colour"] = "red"

    errors = errors_of(mutated(break_three))
    assert [field for field, _ in errors] == ["limits.colour", "steps[0].until.voltage_v", "steps[2].kind"]


def test_top_level_must_be_a_table() -> None:
    assert errors_of([1, 2]) == [("<recipe>", "expected a table, got array")]


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nnominal_capacity_ah = \n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.source == str(path)
    assert "invalid TOML" in info.value.reason and "line 2" in info.value.reason
    assert str(path) in str(info.value)


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "x",\n  "steps": [,]\n}\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.source == str(path)
    assert info.value.reason.startswith("invalid JSON at line 3, column")


def test_duplicate_json_keys_are_refused() -> None:
    with pytest.raises(RecipeError, match="duplicate key 'name'"):
        loads_recipe('{"name": "a", "name": "b"}', "json")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"\.toml or \.json"):
        load_recipe(tmp_path / "recipe.yaml")
    with pytest.raises(RecipeError, match="cannot read the file"):
        load_recipe(tmp_path / "missing.toml")


def test_semantic_errors_from_a_file_carry_its_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    data = mutated(lambda d: d["steps"][0]["until"].update(voltage_v=4.5))
    path.write_text(json.dumps(data))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: steps[0].until.voltage_v: 4.5 V is above limits.max_voltage_v 3.75 V"
