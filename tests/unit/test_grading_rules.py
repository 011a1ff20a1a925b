"""Grading rules: parsing, canonical hash, and every way a rules file is refused (field named, reason given)."""

from __future__ import annotations

from pathlib import Path

import pytest

from formation.errors import InputError, RulesError
from formation.grading import METRICS, Bounds, builtin_rules, load_rules, loads_rules, parse_rules, resolve_rules
from formation.recipes import builtin_recipes

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "formation" / "grading" / "library"
EXAMPLES = sorted(LIBRARY.glob("*.toml"))

HEAD = """
name = "t"
version = "1"
[metrics.capacity_ah]
step = "capacity"
[metrics.dcir_mohm]
step = "dcir"
at = "10s"
[metrics.k_mv_per_day]
step = "age"
[metrics.ocv_v]
step = "age"
"""

GOOD = (
    HEAD
    + """
[[grades]]
name = "A"
capacity_ah = { min = 4.95 }
dcir_mohm = { max_sigma = 2.0 }
k_mv_per_day = { max = 0.5, max_sigma_above = 4.5 }
ocv_v = { max_dev = 0.005 }
[[grades]]
name = "B"
capacity_ah = { min = 4.90 }
dcir_mohm = { max_sigma = 3.0 }
k_mv_per_day = { max = 0.5, max_sigma_above = 4.5 }
ocv_v = { max_dev = 0.015 }
[[grades]]
name = "C"
capacity_ah = { min = 4.80 }
ocv_v = { max_dev = 0.050 }
"""
)


def grades(*tables: str) -> str:
    return HEAD + "".join(f"[[grades]]\n{t}\n" for t in tables)


#: Built-in recipes that give one metric: their rules grade what they measure (a capacity check, a DCIR map, the
#: three-cycle formation with no DCIR or ageing, the pre-check's OCV).
MEASUREMENT_RULES = {
    "ncm21700-capacity": ("capacity_ah",),
    "ncm21700-dcir-soc": ("dcir_mohm",),
    "ncm21700-formation-3cycles": ("capacity_ah",),
    "ncm21700-precheck": ("ocv_v",),
    # The route to the ageing room: K, OCV and ACIR from the rack.
    "demo-ncm21700-to-ageing": ("capacity_ah", "dcir_mohm", "k_mv_per_day", "ocv_v", "acir_mohm"),
}


def test_builtin_rules_cover_every_builtin_recipe_and_parse() -> None:
    names = {p.stem for p in EXAMPLES}
    assert set(builtin_recipes()) == names  # every built-in recipe has its rules
    assert set(builtin_rules()) == names
    assert resolve_rules("demo-ncm21700").name == load_rules(LIBRARY / "demo-ncm21700.toml").name
    for path in EXAMPLES:
        rules = load_rules(path)
        assert [g.name for g in rules.grades] == ["A", "B", "C"]
        # acir_mohm comes from the ageing room (from = "ageing"); the recipes' own rules do not grade on it.
        assert rules.used_metrics == MEASUREMENT_RULES.get(path.stem, tuple(m for m in METRICS if m != "acir_mohm"))
        if "dcir_mohm" in rules.used_metrics:
            assert rules.metrics["dcir_mohm"].at == "10"
    demo = (LIBRARY / "demo-ncm21700.toml").read_bytes()
    assert (ROOT / "examples" / "grading.toml").read_bytes() == demo


def test_parsed_model() -> None:
    rules = loads_rules(GOOD)
    assert rules.grade_names == ("A", "B", "C", "NG")
    assert rules.grades[0].bounds["k_mv_per_day"] == Bounds(max=0.5, max_sigma_above=4.5)
    assert list(rules.grades[2].bounds) == ["capacity_ah", "ocv_v"]
    assert rules.metrics["ocv_v"].step == "age"


def test_hash_ignores_spelling_and_order_but_not_content() -> None:
    base = loads_rules(GOOD)
    # Same rules spelt differently: metric tables reordered, an int bound, another spelling of 10 s.
    respelt = GOOD.replace('at = "10s"', 'at = "10 seconds"').replace("min = 4.80", "min = 4.8")
    respelt = respelt.replace('[metrics.capacity_ah]\nstep = "capacity"\n', "") + (
        '[metrics.capacity_ah]\nstep = "capacity"\n'
    )
    assert loads_rules(respelt).sha256 == base.sha256
    assert parse_rules(base.to_canonical()).sha256 == base.sha256
    assert len(base.sha256) == 64
    assert loads_rules(GOOD.replace("max_dev = 0.050", "max_dev = 0.051")).sha256 != base.sha256
    assert loads_rules(GOOD.replace('at = "10s"', 'at = "18s"')).sha256 != base.sha256


def test_iec_pulse_key_and_integer_version() -> None:
    rules = loads_rules(GOOD.replace('at = "10s"', 'at = "IEC"').replace('version = "1"', "version = 2"))
    assert rules.metrics["dcir_mohm"].at == "iec"
    assert rules.version == "2"


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (HEAD + "[metrics.weight_g]\nstep = 'x'\n", "metrics.weight_g", "unknown metric"),
        (HEAD.replace('at = "10s"', 'at = "10s"\nevery = 1'), "metrics.dcir_mohm.every", "unknown key"),
        (HEAD.replace('at = "10s"\n', ""), "metrics.dcir_mohm.at", "required"),
        (HEAD.replace('"10s"', '"soon"'), "metrics.dcir_mohm.at", "cannot read duration"),
        (HEAD.replace('step = "age"\n', "", 1), "metrics.k_mv_per_day.step", "required"),
        ("colour = 'red'\n" + HEAD, "colour", "unknown key"),
        (HEAD, "grades", "at least one"),
        (grades('name = "A"\nweight_g = { max = 1 }'), "grades[0].weight_g", "unknown metric"),
        (
            grades('name = "A"\ncapacity_ah = { min = 4.9 }', 'name = "B"\ndcir_mohm = { max_sigma = "x" }'),
            "grades[1].dcir_mohm.max_sigma",
            "must be a number",
        ),
        (grades('name = "A"\ncapacity_ah = { min = true }'), "grades[0].capacity_ah.min", "must be a number"),
        (grades('name = "A"\ncapacity_ah = { min = nan }'), "grades[0].capacity_ah.min", "finite"),
        (grades('name = "A"\ncapacity_ah = { least = 4 }'), "grades[0].capacity_ah.least", "unknown bound"),
        (grades('name = "A"\ndcir_mohm = { max_sigma = -1 }'), "grades[0].dcir_mohm.max_sigma", "positive"),
        (
            grades('name = "A"\ncapacity_ah = { min = 5.1, max = 5.0 }'),
            "grades[0].capacity_ah.min",
            "min 5.1 is above max 5",
        ),
        (grades('name = "A"\ncapacity_ah = 4.9'), "grades[0].capacity_ah", "table of bounds"),
        (grades('name = "A"'), "grades[0]", "no bounds"),
        (grades("capacity_ah = { min = 4.9 }"), "grades[0].name", "required"),
        (grades('name = "ng"\ncapacity_ah = { min = 4.9 }'), "grades[0].name", "reserved"),
        (
            grades('name = "A"\ncapacity_ah = { min = 4.9 }', 'name = "A"\ncapacity_ah = { min = 4.8 }'),
            "grades[1].name",
            "duplicate grade name 'A'",
        ),
    ],
)
def test_bad_rules_name_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(RulesError) as info:
        loads_rules(text, source="rules.toml")
    assert info.value.field == field
    assert reason in info.value.reason
    assert isinstance(info.value, InputError)
    assert str(info.value).startswith(f"rules.toml: {field}: ")


def test_metric_without_a_source_is_refused() -> None:
    text = 'name = "t"\nversion = "1"\n[metrics.capacity_ah]\nstep = "capacity"\n'
    text += '[[grades]]\nname = "A"\nocv_v = { max_dev = 0.005 }\n'
    with pytest.raises(RulesError) as info:
        loads_rules(text)
    assert info.value.field == "grades[0].ocv_v"
    assert "[metrics.ocv_v]" in info.value.reason


def test_unreachable_grade() -> None:
    text = grades(
        'name = "A"\ncapacity_ah = { min = 4.95 }\nocv_v = { max_dev = 0.005 }',
        'name = "B"\ncapacity_ah = { min = 4.90 }',
        # C bounds capacity at least as tightly as B (and adds DCIR): B takes every cell C would.
        'name = "C"\ncapacity_ah = { min = 4.90 }\ndcir_mohm = { max_sigma = 3 }',
    )
    with pytest.raises(RulesError) as info:
        loads_rules(text)
    assert info.value.field == "grades[2]"
    assert info.value.reason == "grades[2] 'C' is unreachable: grades[1] 'B' already accepts every cell it would"


def test_unreachable_uses_sigma_kinds() -> None:
    # max_sigma = 2 implies max_sigma_above = 2: B (above 3) is looser above, so B is reachable...
    loads_rules(
        grades('name = "A"\nk_mv_per_day = { max_sigma = 2 }', 'name = "B"\nk_mv_per_day = { max_sigma_above = 3 }')
    )
    # ...but a B tighter than A's one-sided bound is not.
    with pytest.raises(RulesError, match="unreachable"):
        loads_rules(
            grades('name = "A"\nk_mv_per_day = { max_sigma_above = 3 }', 'name = "B"\nk_mv_per_day = { max_sigma = 2 }')
        )


@pytest.mark.parametrize(
    ("a", "b", "field"),
    [
        # B demands more capacity than A: tighter floor on an absolute band.
        (
            "capacity_ah = { min = 4.90 }\nocv_v = { max_dev = 0.005 }",
            "capacity_ah = { min = 4.95 }",
            "grades[1].capacity_ah.min",
        ),
        (
            "dcir_mohm = { max = 20 }\nocv_v = { max_dev = 0.005 }",
            "dcir_mohm = { max = 18 }",
            "grades[1].dcir_mohm.max",
        ),
        # A later grade adds a side that the earlier band leaves open: not nested.
        (
            "dcir_mohm = { max = 20 }\nocv_v = { max_dev = 0.005 }",
            "dcir_mohm = { min = 10, max = 25 }",
            "grades[1].dcir_mohm.min",
        ),
    ],
)
def test_out_of_order_absolute_bands(a: str, b: str, field: str) -> None:
    with pytest.raises(RulesError) as info:
        loads_rules(grades(f'name = "A"\n{a}', f'name = "B"\n{b}'))
    assert info.value.field == field
    assert "out of order" in info.value.reason and "grades[0] 'A'" in info.value.reason


def test_relative_bands_may_differ_in_kind() -> None:
    # B is looser in absolute terms and uses another relative kind: allowed.
    rules = loads_rules(
        grades(
            'name = "A"\ncapacity_ah = { min = 4.9, max_dev_pct = 1 }',
            'name = "B"\ncapacity_ah = { min = 4.8, max_sigma_below = 3 }',
        )
    )
    assert [g.name for g in rules.grades] == ["A", "B"]


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ngrades = [oops\n')
    with pytest.raises(RulesError, match="not valid TOML") as info:
        load_rules(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "missing.toml")
