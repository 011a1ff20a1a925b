"""Recipe language: quantities, every way of writing a step, PyBaMM strings, hashes, library and examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from formation.errors import RecipeError
from formation.recipes import (
    AgeStep,
    ChargeStep,
    CurrentSpec,
    DcirStep,
    DischargeStep,
    Limits,
    RecordRule,
    RestStep,
    Step,
    Until,
    builtin_recipes,
    describe_step,
    format_duration,
    load_builtin,
    load_recipe,
    loads_recipe,
    parse_current,
    parse_duration_s,
    parse_experiment_step,
    parse_recipe,
    resolve_recipe,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"

HEAD_TOML = """
name = "t"
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

#: One protocol written three ways: TOML tables, JSON, and PyBaMM text steps.
STEPS_TOML = """
[[steps]]
kind = "charge"
current = "C/20"
until = { duration = "2h", voltage_v = 3.4 }

[[steps]]
kind = "charge"
current = "5A"
cv_voltage_v = 4.2
until = { current = "C/50" }

[[steps]]
kind = "rest"
until = { duration = "1h" }
record = { every_s = 10, every_mv = 1.0 }

[[steps]]
kind = "discharge"
current = "0.2C"
until = { voltage_v = 2.5 }

[[steps]]
kind = "discharge"
current = "1000mA"
until = { duration = "10min" }
"""

STEPS_TEXT = """
[[steps]]
text = "Charge at C/20 for 2 hours or until 3.4 V"

[[steps]]
text = "Hold at 4.2 V until C/50"

[[steps]]
text = "Rest for 1 hour"
record = { every_s = 10, every_mv = 1.0 }

[[steps]]
text = "Discharge at C/5 until 2.5 V"

[[steps]]
text = "Discharge at 1A for 10 minutes"
"""

AS_JSON = {
    "name": "t",
    "version": "1.0",
    "chemistry": "NCM",
    "nominal_capacity_ah": 5,
    "limits": {
        "max_voltage_v": 4.25,
        "min_voltage_v": 2.45,
        "max_cell_temperature_c": 60,
        "max_current_a": 5,
    },
    "record": {"every_s": 30, "every_mv": 5},
    "steps": [
        {"kind": "charge", "current": {"c_rate": 0.05}, "until": {"duration": 7200, "voltage_v": 3.4}},
        {"kind": "charge", "current": 5, "cv_voltage_v": 4.2, "until": {"current": {"c_rate": 0.02}}},
        {"kind": "rest", "until": {"duration": "60min"}, "record": {"every_s": 10, "every_mv": 1}},
        {"kind": "discharge", "current": "C/5", "until": {"voltage_v": 2.5}},
        {"kind": "discharge", "current": "1 A", "until": {"duration": 600}},
    ],
}


# -- quantities ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1h 30min", 5400.0),
        ("10 minutes", 600.0),
        ("1 hour", 3600.0),
        ("0.1h", 360.0),
        ("2 hours", 7200.0),
        ("45 sec", 45.0),
        (120, 120.0),
        (1.5, 1.5),
        ("300", 300.0),
    ],
)
def test_durations_normalise_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["2 fortnights", "h", "", "1h30", "-5s", "0s", 0, -3, True, "abc"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(bad)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("2.5A", CurrentSpec(amps=2.5)),
        ("500mA", CurrentSpec(amps=0.5)),
        ("500 mA", CurrentSpec(amps=0.5)),
        (3, CurrentSpec(amps=3.0)),
        ({"a": 1.5}, CurrentSpec(amps=1.5)),
        ("C/20", CurrentSpec(c_rate=0.05)),
        ("c/5", CurrentSpec(c_rate=0.2)),
        ("1C", CurrentSpec(c_rate=1.0)),
        ("1 C", CurrentSpec(c_rate=1.0)),
        ("0.5C", CurrentSpec(c_rate=0.5)),
        ({"c_rate": 0.1}, CurrentSpec(c_rate=0.1)),
    ],
)
def test_currents_parse_to_amps_or_c_rate(text: object, spec: CurrentSpec) -> None:
    assert parse_current(text) == spec


def test_c_rates_resolve_per_cell_from_nominal_capacity() -> None:
    assert parse_current("C/20").resolve_a(280.0) == 14.0
    assert parse_current("C/5").resolve_a(5.0) == 1.0
    assert parse_current("0.5C").resolve_a(5.0) == 2.5
    assert parse_current("2.5A").resolve_a(280.0) == 2.5
    # C/20 and 0.05C are the same current, so the same canonical value.
    assert parse_current("C/20") == parse_current("0.05C")


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (CurrentSpec(c_rate=0.05), "C/20"),
        (CurrentSpec(c_rate=0.5), "C/2"),
        (CurrentSpec(c_rate=1.0), "1C"),
        (CurrentSpec(c_rate=0.3), "0.3C"),
        (CurrentSpec(amps=2.5), "2.5A"),
        (CurrentSpec(amps=0.5), "500mA"),
    ],
)
def test_current_spec_prints_as_written(spec: CurrentSpec, text: str) -> None:
    assert str(spec) == text


@pytest.mark.parametrize("bad", ["2.5", "C", "C/0", "-1A", "0A", "2 W", "fast", {"amps": 1}, [1], False])
def test_bad_currents_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_current(bad)


def test_current_spec_needs_exactly_one_of_amps_and_c_rate() -> None:
    with pytest.raises(ValueError):
        CurrentSpec()
    with pytest.raises(ValueError):
        CurrentSpec(amps=1.0, c_rate=1.0)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (90, 7200, 5400, 604800, 0.5)] == [
        "1m30s",
        "2h",
        "1h30m",
        "7d",
        "0.5s",
    ]


# -- every form of a step ----------------------------------------------------------------------------------


def test_toml_recipe_parses_into_typed_steps() -> None:
    recipe = loads_recipe(HEAD_TOML + STEPS_TOML, "toml", source="t.toml")
    assert recipe.name == "t" and recipe.version == "1.0" and recipe.chemistry == "NCM"
    assert recipe.limits == Limits(4.25, 2.45, 60.0, 5.0)
    assert recipe.record == RecordRule(30.0, 5.0)
    assert [step.kind for step in recipe.steps] == ["charge", "charge", "rest", "discharge", "discharge"]
    assert [step.id for step in recipe.steps] == ["step1", "step2", "step3", "step4", "step5"]
    pre, cccv, rest, capacity, short = recipe.steps
    assert pre == ChargeStep(
        "step1",
        CurrentSpec(c_rate=0.05),
        None,
        Until(duration_s=7200.0, voltage_v=3.4),
        RecordRule(30.0, 5.0),
    )
    assert isinstance(cccv, ChargeStep) and cccv.is_cccv and cccv.cv_voltage_v == 4.2
    assert cccv.until.current == CurrentSpec(c_rate=0.02)
    assert isinstance(rest, RestStep) and rest.record == RecordRule(10.0, 1.0)
    assert isinstance(capacity, DischargeStep) and capacity.current.resolve_a(5.0) == 1.0
    assert isinstance(short, DischargeStep) and short.until.duration_s == 600.0 and not short.is_cccv


def test_charge_throughput_ends_absolute_percent_and_soc() -> None:
    data = json.loads(json.dumps(AS_JSON))
    data["steps"] = [
        {"id": "a", "kind": "charge", "current": "C/10", "until": {"charge": "1.5Ah"}},
        {"id": "b", "kind": "charge", "current": "C/10", "until": {"charge": "30%"}},
        {"id": "c", "kind": "charge", "current": "C/10", "until": {"soc": "30%"}},
        {"id": "d", "kind": "charge", "current": "C/10", "until": {"charge": "750mAh"}},
    ]
    a, b, c, d = parse_recipe(data).steps
    assert a.until.charge_ah == 1.5 and a.until.charge_limit_ah(5.0) == 1.5
    assert b.until.charge_fraction == 0.3 and b.until.charge_limit_ah(280.0) == pytest.approx(84.0)
    assert c.until == b.until
    assert d.until.charge_limit_ah(5.0) == 0.75
    assert Until(duration_s=1.0).charge_limit_ah(5.0) is None


def test_step_record_override_merges_with_the_recipe_rule() -> None:
    data = json.loads(json.dumps(AS_JSON))
    data["steps"][0]["record"] = {"every_s": 5}
    data["steps"][1]["record"] = {"every_mv": 0}  # 0 switches the voltage rule off
    steps = parse_recipe(data).steps
    assert steps[0].record == RecordRule(5.0, 5.0)
    assert steps[1].record == RecordRule(30.0, 0.0)
    assert steps[3].record == RecordRule(30.0, 5.0)


def test_defaults_for_optional_head_fields() -> None:
    recipe = parse_recipe(
        {
            "name": "min",
            "nominal_capacity_ah": 280,
            "limits": {"max_voltage_v": 3.75, "min_voltage_v": 2.0},
            "steps": [{"kind": "rest", "until": {"duration": "1h"}}],
        }
    )
    # max_current_a defaults to 2C of nominal, the temperature limit to 60 °C, the record rule to 60 s / 5 mV.
    assert recipe.limits == Limits(3.75, 2.0, 60.0, 560.0)
    assert recipe.record == RecordRule(60.0, 5.0)
    assert recipe.version == "1" and recipe.chemistry is None and recipe.description == ""
    assert recipe.source_text == recipe.canonical_json()


def test_given_ids_are_kept_and_steps_found_by_id() -> None:
    recipe = load_builtin("lfp-280ah-formation")
    assert recipe.step("capacity").kind == "discharge"
    with pytest.raises(KeyError):
        recipe.step("nope")


def test_describe_step_is_one_human_line() -> None:
    recipe = loads_recipe(HEAD_TOML + STEPS_TOML, "toml")
    assert [describe_step(step) for step in recipe.steps] == [
        "charge C/20 until 3.4 V or 2h",
        "charge 5A CC-CV 4.2 V until I < C/50",
        "rest 1h",
        "discharge C/5 until 2.5 V",
        "discharge 1A until 10m",
    ]


# -- PyBaMM experiment strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        (
            "Charge at C/20 for 2 hours or until 3.4 V",
            {"kind": "charge", "current": {"c_rate": 0.05}, "until": {"duration": 7200.0, "voltage_v": 3.4}},
        ),
        (
            "Discharge at C/5 until 2.5 V",
            {"kind": "discharge", "current": {"c_rate": 0.2}, "until": {"voltage_v": 2.5}},
        ),
        (
            "Discharge at 1A for 10 minutes",
            {"kind": "discharge", "current": {"a": 1.0}, "until": {"duration": 600.0}},
        ),
        ("Rest for 1 hour", {"kind": "rest", "until": {"duration": 3600.0}}),
        ("REST FOR 90 S", {"kind": "rest", "until": {"duration": 90.0}}),
        ("Rest for 2 h or until 3.3V", {"kind": "rest", "until": {"duration": 7200.0, "voltage_v": 3.3}}),
        (
            "Charge at 1 C until 4.2 V",
            {"kind": "charge", "current": {"c_rate": 1.0}, "until": {"voltage_v": 4.2}},
        ),
        (
            "charge at 500 mA for 30 min",
            {"kind": "charge", "current": {"a": 0.5}, "until": {"duration": 1800.0}},
        ),
        (
            "Hold at 4.2 V until C/50",
            {
                "kind": "charge",
                "current": {"a": 5.0},
                "cv_voltage_v": 4.2,
                "until": {"current": {"c_rate": 0.02}},
            },
        ),
        (
            "Hold at 4.2V for 1 hour or until 50 mA",
            {
                "kind": "charge",
                "current": {"a": 5.0},
                "cv_voltage_v": 4.2,
                "until": {"duration": 3600.0, "current": {"a": 0.05}},
            },
        ),
    ],
)
def test_pybamm_strings(text: str, raw: dict[str, object]) -> None:
    assert parse_experiment_step(text, hold_current_a=5.0) == raw


def test_pybamm_hold_takes_the_direction_of_the_previous_current_step() -> None:
    after_discharge = parse_experiment_step("Hold at 2.5 V until C/50", previous_kind="discharge", hold_current_a=5)
    after_charge = parse_experiment_step("Hold at 4.2 V until C/50", previous_kind="charge", hold_current_a=5)
    assert after_discharge["kind"] == "discharge"
    assert after_charge["kind"] == "charge"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Charge at 1 W for 1 hour", "power steps"),
        ("Charge at 4.2 V for 1 hour", "Hold at"),
        ("Cycle the cell a bit", "expected 'Charge|Discharge at"),
        ("Rest for a while", "cannot read duration"),
        ("Discharge at lots until 2.5 V", "cannot read current"),
        ("Discharge at 1C until 2.5 V or until 2.4 V", "two voltage_v ends"),
    ],
)
def test_pybamm_unknown_phrasing_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_experiment_step(text, hold_current_a=5.0)


def test_text_steps_keep_their_id_and_record() -> None:
    recipe = loads_recipe(
        HEAD_TOML + '[[steps]]\nid = "relax"\ntext = "Rest for 1 hour"\nrecord = { every_s = 10 }\n', "toml"
    )
    assert recipe.steps == (RestStep("relax", Until(duration_s=3600.0), RecordRule(10.0, 5.0)),)


# -- canonical JSON and hash --------------------------------------------------------------------------------


def test_same_recipe_in_toml_json_and_pybamm_text_has_one_hash() -> None:
    from_toml = loads_recipe(HEAD_TOML + STEPS_TOML, "toml")
    from_text = loads_recipe(HEAD_TOML + STEPS_TEXT, "toml")
    from_json = loads_recipe(json.dumps(AS_JSON, indent=2), "json")
    assert from_toml.sha256 == from_text.sha256 == from_json.sha256
    assert from_toml == from_text == from_json
    # ...while each keeps its own source text.
    assert "Hold at 4.2 V" in from_text.source_text and "Hold at" not in from_toml.source_text


def test_canonical_json_is_sorted_compact_and_normalised() -> None:
    recipe = loads_recipe(HEAD_TOML + STEPS_TOML, "toml")
    text = recipe.canonical_json()
    assert " " not in text and "\n" not in text
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["steps"][0]["current"] == {"c_rate": 0.05}
    assert data["steps"][0]["until"] == {"duration": 7200.0, "voltage_v": 3.4}
    assert data["steps"][1]["current"] == {"a": 5.0}
    assert data["steps"][2]["until"] == {"duration": 3600.0}
    assert len(recipe.sha256) == 64 and int(recipe.sha256, 16) >= 0


def test_canonical_json_parses_back_to_the_same_hash() -> None:
    for name in builtin_recipes():
        recipe = load_builtin(name)
        again = loads_recipe(recipe.canonical_json(), "json")
        assert again.sha256 == recipe.sha256 and again == recipe


def test_hash_changes_with_content() -> None:
    base = loads_recipe(HEAD_TOML + STEPS_TOML, "toml")
    changed = loads_recipe(HEAD_TOML + STEPS_TOML.replace("3.4", "3.45"), "toml")
    assert base.sha256 != changed.sha256


# -- files, library, examples -------------------------------------------------------------------------------


def test_builtin_library() -> None:
    names = builtin_recipes()
    assert {"lfp-280ah-formation", "ncm21700-formation", "demo-ncm21700", "ncm21700-capacity"} <= set(names)
    for name in names:
        recipe = load_builtin(name)
        assert recipe.name == name and recipe.steps and recipe.source_text.startswith("#")


def test_lfp_formation_follows_the_domain_numbers() -> None:
    recipe = load_builtin("lfp-280ah-formation")
    assert (recipe.nominal_capacity_ah, recipe.chemistry) == (280.0, "LFP")
    assert (recipe.limits.min_voltage_v, recipe.limits.max_voltage_v) == (2.0, 3.75)
    charge = recipe.step("charge")
    assert isinstance(charge, ChargeStep) and charge.cv_voltage_v == 3.65
    assert charge.until.current is not None and charge.until.current.resolve_a(280.0) == 14.0


def _backstop_s(step: Step) -> float | None:
    match step:
        case DcirStep():
            return step.total_s
        case AgeStep():
            return step.duration_s
        case _:
            return step.until.duration_s


def test_demo_recipe_finishes_within_a_simulated_day() -> None:
    recipe = load_builtin("demo-ncm21700")
    backstops_s = [_backstop_s(step) for step in recipe.steps]
    # Every step is bounded in time, and even all backstops together stay within a day (< 1 min wall at x1500).
    assert None not in backstops_s
    assert sum(s for s in backstops_s if s is not None) <= 24 * 3600
    assert [step.kind for step in recipe.steps][-3:] == ["dcir", "discharge", "age"]
    assert all(
        step.current.resolve_a(5.0) <= recipe.limits.max_current_a
        for step in recipe.steps
        if isinstance(step, ChargeStep | DischargeStep | DcirStep)
    )


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.*")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.steps and recipe.source == str(path)


def test_examples_cover_toml_with_text_and_json() -> None:
    suffixes = {path.suffix for path in EXAMPLES.iterdir()}
    assert {".toml", ".json"} <= suffixes
    assert any("text =" in path.read_text() for path in EXAMPLES.glob("*.toml"))


def test_resolve_recipe_by_path_then_builtin(tmp_path: Path) -> None:
    assert resolve_recipe("ncm21700-capacity").name == "ncm21700-capacity"
    path = tmp_path / "mine.toml"
    path.write_text(HEAD_TOML + STEPS_TOML)
    assert resolve_recipe(path).name == "t"
    assert resolve_recipe(str(path)).source == str(path)
    with pytest.raises(RecipeError, match="neither a recipe file nor a built-in"):
        resolve_recipe("no-such-recipe")
    with pytest.raises(RecipeError, match="no built-in recipe"):
        load_builtin("no-such-recipe")
