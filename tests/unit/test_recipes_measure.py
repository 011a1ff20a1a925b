"""The dcir and age step kinds: parsing, defaults, refusals with field paths, canonical JSON, hash, built-ins."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any, get_args

import pytest

from formation.errors import RecipeError
from formation.recipes import (
    AgeStep,
    CurrentSpec,
    DcirStep,
    DischargeStep,
    RecordRule,
    Step,
    builtin_recipes,
    describe_step,
    load_builtin,
    loads_recipe,
    parse_recipe,
)

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
every_s = 60
every_mv = 5.0
"""

#: The two kinds exactly as docs/measurement-steps.md writes them.
CONTRACT_TOML = """
[[steps]]
id = "dcir"
kind = "dcir"
rest = "30min"
method = "single"
direction = "discharge"
current = "1C"
duration = "18s"
sample_at = ["1s", "10s", "18s"]
record = { every_s = 1, every_mv = 0 }

[[steps]]
id = "age"
kind = "age"
duration = "7d"
ocv_at = ["1d", "7d"]
chamber_c = 45.0
record = { every_s = 3600, every_mv = 1.0 }
"""

#: The same steps with every default left out and other spellings of the same quantities.
CONTRACT_MINIMAL_TOML = """
[[steps]]
id = "dcir"
kind = "dcir"
rest = 1800
current = "1.0C"
duration = "18 seconds"
sample_at = [1, "10s", "0.3min"]

[[steps]]
id = "age"
kind = "age"
duration = "168h"
ocv_at = ["24h", "7 days"]
chamber_c = 45
record = { every_s = 3600, every_mv = 1 }
"""


def test_contract_syntax_parses_into_typed_steps() -> None:
    dcir, age = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml").steps
    assert dcir == DcirStep(
        id="dcir",
        rest_s=1800.0,
        method="single",
        direction="discharge",
        current=CurrentSpec(c_rate=1.0),
        duration_s=18.0,
        sample_at_s=(1.0, 10.0, 18.0),
        low_current=None,
        low_duration_s=None,
        record=RecordRule(1.0, 0.0),
    )
    assert dcir.kind == "dcir" and dcir.total_s == 1818.0
    assert age == AgeStep("age", 7 * 86400.0, (86400.0, 7 * 86400.0), 45.0, RecordRule(3600.0, 1.0))
    assert age.kind == "age"
    assert {DcirStep, AgeStep} <= set(get_args(Step))


def test_single_pulse_defaults() -> None:
    steps = '[[steps]]\nkind = "dcir"\nrest = "1h"\ncurrent = "1C"\nduration = "10s"\n'
    (dcir,) = loads_recipe(HEAD_TOML + steps, "toml").steps
    assert isinstance(dcir, DcirStep)
    assert (dcir.method, dcir.direction) == ("single", "discharge")
    assert dcir.sample_at_s == (10.0,)  # the pulse end when sample_at is absent
    assert dcir.record == RecordRule(1.0, 0.0)  # pulses log every second whatever the recipe rule
    assert (dcir.low_current, dcir.low_duration_s) == (None, None)


def test_pulse_record_override_keeps_the_one_second_default() -> None:
    steps = '[[steps]]\nkind = "dcir"\nrest = "1h"\ncurrent = "1C"\nduration = "10s"\nrecord = { every_mv = 2 }\n'
    (dcir,) = loads_recipe(HEAD_TOML + steps, "toml").steps
    assert dcir.record == RecordRule(1.0, 2.0)


def test_iec61960_defaults_and_explicit_values_are_one_step() -> None:
    implicit = loads_recipe(HEAD_TOML + '[[steps]]\nkind = "dcir"\nrest = "1h"\nmethod = "iec61960"\n', "toml")
    explicit = loads_recipe(
        HEAD_TOML
        + '[[steps]]\nkind = "dcir"\nrest = "1h"\nmethod = "iec61960"\nlow_current = "C/5"\n'
        + 'low_duration = "10s"\ncurrent = "1C"\nduration = "1s"\ndirection = "discharge"\n',
        "toml",
    )
    (dcir,) = implicit.steps
    assert isinstance(dcir, DcirStep)
    assert (dcir.low_current, dcir.low_duration_s) == (CurrentSpec(c_rate=0.2), 10.0)
    assert (dcir.current, dcir.duration_s) == (CurrentSpec(c_rate=1.0), 1.0)
    assert dcir.sample_at_s == ()  # R comes from the ends of the two pulses, reported under the key "iec"
    assert dcir.total_s == 3600.0 + 10.0 + 1.0
    assert implicit.sha256 == explicit.sha256


def test_charge_direction_pulse() -> None:
    steps = '[[steps]]\nkind = "dcir"\nrest = "1h"\ndirection = "charge"\ncurrent = "C/2"\nduration = "10s"\n'
    (dcir,) = loads_recipe(HEAD_TOML + steps, "toml").steps
    assert isinstance(dcir, DcirStep) and dcir.direction == "charge"


def test_age_inherits_the_recipe_record_rule_and_has_no_chamber_by_default() -> None:
    steps = '[[steps]]\nkind = "age"\nduration = "3d"\nocv_at = ["1d", "2d", "3d"]\nrecord = { every_mv = 1 }\n'
    (age,) = loads_recipe(HEAD_TOML + steps, "toml").steps
    assert age == AgeStep("step1", 3 * 86400.0, (86400.0, 2 * 86400.0, 3 * 86400.0), None, RecordRule(60.0, 1.0))


def test_describe_step() -> None:
    recipe = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml")
    iec = loads_recipe(HEAD_TOML + '[[steps]]\nkind = "dcir"\nrest = "1h"\nmethod = "iec61960"\n', "toml")
    assert [describe_step(step) for step in recipe.steps + iec.steps] == [
        "dcir discharge 1C 18s after 30m rest, at 1s, 10s, 18s",
        "age 7d at 45 °C, OCV at 1d, 7d",
        "dcir iec61960 discharge C/5 10s then 1C 1s after 1h rest",
    ]


# -- canonical JSON and hash --------------------------------------------------------------------------------


def test_canonical_form_of_both_kinds() -> None:
    data = json.loads(loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml").canonical_json())
    assert data["steps"] == [
        {
            "current": {"c_rate": 1.0},
            "direction": "discharge",
            "duration": 18.0,
            "id": "dcir",
            "kind": "dcir",
            "method": "single",
            "record": {"every_mv": 0.0, "every_s": 1.0},
            "rest": 1800.0,
            "sample_at": [1.0, 10.0, 18.0],
        },
        {
            "chamber_c": 45.0,
            "duration": 604800.0,
            "id": "age",
            "kind": "age",
            "ocv_at": [86400.0, 604800.0],
            "record": {"every_mv": 1.0, "every_s": 3600.0},
        },
    ]


def test_hash_is_pinned() -> None:
    # A change to the canonical form changes every recorded recipe hash: do it on purpose, and update this pin.
    recipe = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml")
    assert recipe.sha256 == "7671976d2ba09b499f1060c7d183013a79832533d6b780d8699f21f09f08ac04"


def test_equivalent_spellings_have_one_hash() -> None:
    full = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml")
    minimal = loads_recipe(HEAD_TOML + CONTRACT_MINIMAL_TOML, "toml")
    assert minimal == full and minimal.sha256 == full.sha256


def test_amps_and_c_rate_are_different_recipes() -> None:
    # 5 A and 1C are equal only for a 5 Ah cell: the C-rate resolves per cell, so they hash differently.
    full = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml")
    amps = loads_recipe(HEAD_TOML + CONTRACT_TOML.replace('current = "1C"', 'current = "5A"'), "toml")
    assert amps.sha256 != full.sha256


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"10s", "18s"]', '"10s", "17s"]'),
        ('method = "single"', 'method = "single"\nlow_current = "C/5"'),
        ('rest = "30min"', 'rest = "31min"'),
        ("chamber_c = 45.0", "chamber_c = 40.0"),
        ('ocv_at = ["1d", "7d"]', 'ocv_at = ["2d", "7d"]'),
        ('direction = "discharge"', 'direction = "charge"'),
    ],
)
def test_hash_changes_with_content(old: str, new: str) -> None:
    base = loads_recipe(HEAD_TOML + CONTRACT_TOML, "toml")
    text = HEAD_TOML + CONTRACT_TOML.replace(old, new)
    if "low_current" in new:  # not allowed on a single pulse: the changed recipe is refused instead
        with pytest.raises(RecipeError, match="only for method 'iec61960'"):
            loads_recipe(text, "toml")
        return
    assert loads_recipe(text, "toml").sha256 != base.sha256


def test_canonical_json_parses_back_for_both_methods() -> None:
    iec = '[[steps]]\nkind = "dcir"\nrest = "1h"\nmethod = "iec61960"\nlow_current = "0.1C"\n'
    for text in (HEAD_TOML + CONTRACT_TOML, HEAD_TOML + iec):
        recipe = loads_recipe(text, "toml")
        again = parse_recipe(json.loads(recipe.canonical_json()))
        assert again == recipe and again.sha256 == recipe.sha256


# -- built-in library ---------------------------------------------------------------------------------------

GRADED = ("ncm21700-formation", "lfp-280ah-formation", "demo-ncm21700")


@pytest.mark.parametrize("name", GRADED)
def test_graded_builtins_have_capacity_dcir_and_age(name: str) -> None:
    recipe = load_builtin(name)
    ids = [step.id for step in recipe.steps]
    capacity, dcir, age = recipe.step("capacity"), recipe.step("dcir"), recipe.step("age")
    assert isinstance(capacity, DischargeStep) and isinstance(dcir, DcirStep) and isinstance(age, AgeStep)
    assert ids.index("capacity") < ids.index("dcir") < ids.index("age") == len(ids) - 1
    assert dcir.method == "single" and dcir.direction == "discharge" and 10.0 in dcir.sample_at_s
    assert dcir.sample_at_s == (1.0, 10.0, 18.0) and dcir.duration_s == 18.0
    assert dcir.current.resolve_a(recipe.nominal_capacity_ah) <= recipe.limits.max_current_a
    assert len(age.ocv_at_s) >= 2 and age.ocv_at_s[-1] == age.duration_s


def test_ageing_follows_the_domain_numbers() -> None:
    ncm, lfp = load_builtin("ncm21700-formation"), load_builtin("lfp-280ah-formation")
    day_s = 86400.0
    assert ncm.step("age") == AgeStep("age", 7 * day_s, (day_s, 7 * day_s), None, RecordRule(3600.0, 1.0))
    assert lfp.step("age") == AgeStep("age", 14 * day_s, (2 * day_s, 14 * day_s), None, RecordRule(3600.0, 1.0))
    # NCM stores at 30 %: 50 % at the DCIR, less 20 % of nominal.
    assert ncm.step("storage").until.charge_fraction == pytest.approx(0.2)  # type: ignore[union-attr]
    # LFP ages at ~3 % SOC, where its flat plateau no longer hides self-discharge: empty to the cut-off, then 3 %.
    empty, storage = lfp.step("empty"), lfp.step("storage")
    assert isinstance(empty, DischargeStep) and empty.until.voltage_v == 2.5
    assert storage.kind == "charge" and storage.until.charge_fraction == pytest.approx(0.03)  # type: ignore[union-attr]
    # 1C would be 280 A, above the recipe's 140 A limit.
    assert lfp.step("dcir").current == CurrentSpec(c_rate=0.5)  # type: ignore[union-attr]


def test_demo_dcir_and_age() -> None:
    recipe = load_builtin("demo-ncm21700")
    dcir, age = recipe.step("dcir"), recipe.step("age")
    assert isinstance(dcir, DcirStep) and (dcir.rest_s, dcir.current) == (600.0, CurrentSpec(c_rate=1.0))
    assert age == AgeStep("age", 12 * 3600.0, (2 * 3600.0, 12 * 3600.0), None, RecordRule(900.0, 0.5))


def test_dcir_soc_recipe_compares_two_socs_at_one_current() -> None:
    recipe = load_builtin("ncm21700-dcir-soc")
    assert [step.id for step in recipe.steps] == ["soc50", "dcir50", "soc05", "dcir05"]
    high, low = recipe.step("dcir50"), recipe.step("dcir05")
    assert isinstance(high, DcirStep) and isinstance(low, DcirStep)
    assert high == DcirStep(
        "dcir50", 1800.0, "single", "discharge", CurrentSpec(c_rate=0.5), 10.0, (1.0, 10.0), None, None, high.record
    )
    assert low.current == high.current and low.sample_at_s == high.sample_at_s and low.rest_s == high.rest_s
    up, down = recipe.step("soc50"), recipe.step("soc05")
    # From 0 % SOC: +50 % then -45 % of nominal leaves 5 %.
    assert up.until.charge_fraction == 0.5 and down.until.charge_fraction == 0.45  # type: ignore[union-attr]


def test_every_builtin_round_trips() -> None:
    for name in builtin_recipes():
        recipe = load_builtin(name)
        assert parse_recipe(json.loads(recipe.canonical_json())) == recipe


# -- refusals -----------------------------------------------------------------------------------------------

#: LFP 280 Ah, limits.max_current_a 140 A (0.5C): a dcir at steps[1] and an age at steps[2].
BASE: dict[str, Any] = {
    "name": "lfp-test",
    "nominal_capacity_ah": 280.0,
    "limits": {"max_voltage_v": 3.75, "min_voltage_v": 2.0, "max_cell_temperature_c": 60.0, "max_current_a": 140.0},
    "steps": [
        {"id": "soc50", "kind": "charge", "current": "C/5", "until": {"soc": "50%"}},
        {
            "id": "dcir",
            "kind": "dcir",
            "rest": "30min",
            "current": "0.5C",
            "duration": "18s",
            "sample_at": ["1s", "10s", "18s"],
        },
        {"id": "age", "kind": "age", "duration": "14d", "ocv_at": ["2d", "14d"]},
    ],
}


def _iec(d: dict[str, Any], **changes: object) -> None:
    step = d["steps"][1]
    step.pop("sample_at")
    step.update(method="iec61960", current="0.5C", duration="1s", low_current="0.1C", low_duration="10s")
    for key, value in changes.items():
        if value is None:
            step.pop(key)
        else:
            step[key] = value


def _dcir(**changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"][1].update(changes)


def _age(**changes: object) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"][2].update(changes)


def _without(index: int, key: str) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["steps"][index].pop(key)


CASES: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    # dcir: keys and values
    ("dcir unknown key", _dcir(until={"duration": "1s"}), "steps[1].until", "unknown key"),
    ("dcir without rest", _without(1, "rest"), "steps[1].rest", "missing required key"),
    ("dcir zero rest", _dcir(rest="0s"), "steps[1].rest", "must be positive"),
    ("dcir bad rest", _dcir(rest="a while"), "steps[1].rest", "cannot read duration"),
    ("dcir bad method", _dcir(method="hppc"), "steps[1].method", "'hppc' is not one of: single, iec61960"),
    ("dcir method not a string", _dcir(method=1), "steps[1].method", "number is not one of"),
    ("dcir bad direction", _dcir(direction="up"), "steps[1].direction", "not one of: discharge, charge"),
    ("single without current", _without(1, "current"), "steps[1].current", "missing required key"),
    ("single without duration", _without(1, "duration"), "steps[1].duration", "missing required key"),
    ("dcir bad current", _dcir(current="fast"), "steps[1].current", "cannot read current"),
    (
        "dcir current above max",
        _dcir(current="1C"),
        "steps[1].current",
        "1C is 280 A, above limits.max_current_a 140 A",
    ),
    ("dcir zero duration", _dcir(duration=0), "steps[1].duration", "must be positive"),
    # dcir: sample_at, each entry by index
    ("sample_at not an array", _dcir(sample_at="10s"), "steps[1].sample_at", "expected an array"),
    ("sample_at empty", _dcir(sample_at=[]), "steps[1].sample_at", "at least one"),
    ("sample_at unreadable", _dcir(sample_at=["1s", "soon"]), "steps[1].sample_at[1]", "cannot read duration"),
    ("sample_at zero", _dcir(sample_at=["0s", "10s"]), "steps[1].sample_at[0]", "must be positive"),
    (
        "sample_at unsorted",
        _dcir(sample_at=["10s", "1s"]),
        "steps[1].sample_at[1]",
        "1s is not after sample_at[0] 10s",
    ),
    ("sample_at repeated", _dcir(sample_at=["1s", "1s", "18s"]), "steps[1].sample_at[1]", "increasing"),
    (
        "sample_at after the pulse",
        _dcir(sample_at=["1s", "10s", "20s"]),
        "steps[1].sample_at[2]",
        "20s is after the pulse end (duration 18s)",
    ),
    # dcir: method-specific keys
    ("low_current on single", _dcir(low_current="0.1C"), "steps[1].low_current", "only for method 'iec61960'"),
    ("low_duration on single", _dcir(low_duration="10s"), "steps[1].low_duration", "only for method 'iec61960'"),
    ("sample_at on iec", lambda d: _iec(d, sample_at=["1s"]), "steps[1].sample_at", "not allowed"),
    (
        "iec low not below high",
        lambda d: _iec(d, low_current="0.5C"),
        "steps[1].low_current",
        "C/2 (140 A) is not below current C/2 (140 A)",
    ),
    (
        "iec default high above max",
        lambda d: _iec(d, current=None),
        "steps[1].current",
        "the iec61960 default 1C is 280 A, above limits.max_current_a 140 A",
    ),
    ("iec low above max", lambda d: _iec(d, low_current="150A"), "steps[1].low_current", "above limits"),
    ("iec bad low_duration", lambda d: _iec(d, low_duration="-1s"), "steps[1].low_duration", "must be positive"),
    # dcir: pulse record rule
    ("pulse logged too coarsely", _dcir(record={"every_s": 2}), "steps[1].record.every_s", "2 s is above 1 s"),
    ("pulse not logged in time", _dcir(record={"every_s": 0, "every_mv": 1}), "steps[1].record.every_s", "> 0"),
    ("pulse record unknown key", _dcir(record={"every_h": 1}), "steps[1].record.every_h", "unknown key"),
    # age
    ("age unknown key", _age(voltage_v=3.3), "steps[2].voltage_v", "unknown key"),
    ("age without duration", _without(2, "duration"), "steps[2].duration", "missing required key"),
    ("age without checkpoints", _without(2, "ocv_at"), "steps[2].ocv_at", "missing required key"),
    ("age bad duration", _age(duration="a week"), "steps[2].duration", "cannot read duration"),
    ("one checkpoint", _age(ocv_at=["14d"]), "steps[2].ocv_at", "at least 2 checkpoints"),
    ("checkpoints not an array", _age(ocv_at="2d"), "steps[2].ocv_at", "expected an array"),
    ("checkpoint unreadable", _age(ocv_at=["2d", "later"]), "steps[2].ocv_at[1]", "cannot read duration"),
    ("checkpoints decreasing", _age(ocv_at=["14d", "2d"]), "steps[2].ocv_at[1]", "2d is not after ocv_at[0] 14d"),
    (
        "checkpoint after the end",
        _age(ocv_at=["2d", "15d"]),
        "steps[2].ocv_at[1]",
        "15d is after the step end (duration 14d)",
    ),
    ("chamber as string", _age(chamber_c="45"), "steps[2].chamber_c", "expected a finite number of °C, got string"),
    ("chamber boolean", _age(chamber_c=True), "steps[2].chamber_c", "got boolean"),
    (
        "chamber at the cell limit",
        _age(chamber_c=60),
        "steps[2].chamber_c",
        "60 °C is not below limits.max_cell_temperature_c 60 °C",
    ),
    ("chamber too cold", _age(chamber_c=-50), "steps[2].chamber_c", "below -40 °C"),
    ("age record all off", _age(record={"every_s": 0, "every_mv": 0}), "steps[2].record", "both 0"),
]


@pytest.mark.parametrize(("change", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_names_the_field_and_the_reason(
    change: Callable[[dict[str, Any]], object], field: str, reason: str
) -> None:
    data = copy.deepcopy(BASE)
    change(data)
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, source="test.toml")
    errors = info.value.errors
    assert errors[0][0] == field, errors
    assert reason in errors[0][1], errors
    assert len(errors) == 1, errors  # one fault reports once, not as a cascade


def test_base_and_iec_variants_are_valid() -> None:
    assert [step.kind for step in parse_recipe(BASE).steps] == ["charge", "dcir", "age"]
    data = copy.deepcopy(BASE)
    _iec(data)
    assert parse_recipe(data).steps[1] == DcirStep(
        "dcir",
        1800.0,
        "iec61960",
        "discharge",
        CurrentSpec(c_rate=0.5),
        1.0,
        (),
        CurrentSpec(c_rate=0.1),
        10.0,
        RecordRule(1.0, 0.0),
    )


def test_negative_chamber_setpoint_is_accepted() -> None:
    data = copy.deepcopy(BASE)
    data["steps"][2]["chamber_c"] = -10
    step = parse_recipe(data).steps[2]
    assert isinstance(step, AgeStep) and step.chamber_c == -10.0


def test_every_fault_of_both_kinds_is_collected() -> None:
    data = copy.deepcopy(BASE)
    data["steps"][1].update(rest="0s", sample_at=["10s", "1s"], direction="up")
    data["steps"][2].update(ocv_at=["2d", "15d"], chamber_c=70)
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    assert [field for field, _ in info.value.errors] == [
        "steps[1].rest",
        "steps[1].direction",
        "steps[1].sample_at[1]",
        "steps[2].ocv_at[1]",
        "steps[2].chamber_c",
    ]
