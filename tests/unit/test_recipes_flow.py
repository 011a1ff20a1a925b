"""Repeat blocks, the host-judged step kinds and their bounds: parsing, unrolling, canonical form, and every
refusal as one line naming the field (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.errors import RecipeError
from formation.orchestrator.compile import compile_step
from formation.recipes import (
    HoldStep,
    LoopMark,
    PrecheckStep,
    TagMark,
    WaitStep,
    describe_step,
    loads_recipe,
    parse_recipe,
)

HEAD = """
name = "flow"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
"""
CHARGE = '[[steps]]\nid = "c"\nkind = "charge"\ncurrent = "1C"\nuntil = { voltage_v = 4.1, duration = "2h" }\n'
REST = '[[steps]]\nid = "r"\nkind = "rest"\nuntil = { duration = "10min" }\n'
DISCHARGE = '[[steps]]\nid = "d"\nkind = "discharge"\ncurrent = "1C"\nuntil = { voltage_v = 3.0, duration = "2h" }\n'


def _tag(name: str) -> str:
    return f'[[steps]]\nkind = "tag"\ntag = "{name}"\n'


def _loop(to: str, count: object) -> str:
    return f'[[steps]]\nkind = "loop"\nloop_to = "{to}"\ncycle_count = {count}\n'


def test_a_block_unrolls_into_its_cycles_and_keeps_its_layout() -> None:
    first, last = REST.replace('"r"', '"first"'), REST.replace('"r"', '"last"')
    recipe = loads_recipe(HEAD + first + _tag("cyc") + CHARGE + REST + DISCHARGE + _loop("cyc", 3) + last, "toml")
    ids = [s.id for s in recipe.steps]
    assert ids == ["first", "c", "r", "d", "c", "r", "d", "c", "r", "d", "last"]
    assert recipe.cycles == (0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0)
    assert [recipe.cycle_of(i) for i in (0, 4, 10, 11)] == [0, 2, 0, 0]
    assert TagMark("cyc") in recipe.layout and LoopMark("cyc", 3) in recipe.layout
    # The canonical form keeps the marks: parsed back it is the same recipe with the same hash.
    again = parse_recipe(json.loads(recipe.canonical_json()))
    assert again.sha256 == recipe.sha256 and again.steps == recipe.steps and again.cycles == recipe.cycles


def test_two_blocks_number_their_cycles_on_and_a_recipe_without_marks_has_no_cycles() -> None:
    text = HEAD + _tag("a") + CHARGE + _loop("a", 2) + _tag("b") + DISCHARGE + _loop("b", 2)
    assert loads_recipe(text, "toml").cycles == (1, 2, 3, 4)
    plain = loads_recipe(HEAD + CHARGE, "toml")
    assert plain.cycles == () and plain.layout == () and plain.cycle_of(0) == 0


def test_host_judged_kinds_parse_compile_and_describe() -> None:
    text = (
        HEAD
        + """
[[steps]]
id = "screen"
kind = "precheck"
ocv_min_v = 2.5
ocv_max_v = 4.0
rest = "10min"
max_drop_mv = 3
[[steps]]
id = "relax"
kind = "rest"
until = { duration = "2h", dvdt_mv_per_h = 2.5 }
record = { every_s = 30 }
[[steps]]
id = "cool"
kind = "wait"
below_c = 30
[[steps]]
id = "degas"
kind = "hold"
message = "degas"
"""
    )
    recipe = loads_recipe(text, "toml")
    screen, relax, cool, degas = recipe.steps
    assert isinstance(screen, PrecheckStep) and screen.rest_s == 600 and screen.max_drop_mv == 3
    assert relax.until.dvdt_mv_per_h == 2.5 and relax.until.dvdt_window_s == 600  # the default window
    assert isinstance(cool, WaitStep) and cool.timeout_s == 4 * 3600
    assert isinstance(degas, HoldStep) and degas.timeout_s == 24 * 3600
    assert [describe_step(s) for s in recipe.steps] == [
        "precheck OCV 2.5–4 V, drop < 3 mV over 10m rest",
        "rest until |dV/dt| < 2.5 mV/h over 10m or 2h",
        "wait until the cell is below 30 °C (≤ 4h)",
        "hold, output off, until `formation run continue` (≤ 1d): degas",
    ]
    compiled = [compile_step(s, recipe, 5.0) for s in recipe.steps]
    assert [c.host_judged for c in compiled] == [False, True, True, False]
    assert [c.host_step for c in compiled] == [False, False, False, True]
    # The instrument keeps a backstop on every judged step: the rest's duration, the wait's timeout.
    assert compiled[1].program.steps[0].duration_s == 7200 and compiled[2].program.steps[0].duration_s == 4 * 3600
    assert compiled[2].end_reason(1) == "timeout" and compiled[1].end_reason(1) == "duration"
    assert parse_recipe(json.loads(recipe.canonical_json())).sha256 == recipe.sha256


BAD = [
    # The four: a loop to an unknown tag, a cycle count of 0, a loop around nothing, a dV/dt on a charge.
    (CHARGE + _loop("nope", 3), "steps[1].loop_to: no tag 'nope' before this loop (tags: none)"),
    (_tag("c") + CHARGE + _loop("c", 0), "steps[2].cycle_count: 0 is outside 1 … 1000 (the total number of cycles)"),
    (CHARGE + _tag("c") + _loop("c", 2), "steps[2]: this loop repeats nothing: no step between tag 'c' and it"),
    (
        CHARGE.replace("duration = ", "dvdt_mv_per_h = 5, duration = "),
        "steps[0].until.dvdt_mv_per_h: not an end of a charge step "
        "(allowed: duration, voltage_v, current, charge, soc)",
    ),
    # Loops that cannot run.
    (_loop("c", 2) + _tag("c") + CHARGE, "steps[0].loop_to: no tag 'c' before this loop (tags: none)"),
    (
        _tag("a") + CHARGE + _tag("b") + REST + _loop("b", 2) + _loop("a", 2),
        "steps[5]: loops do not nest: this block contains another loop",
    ),
    (_tag("c") + CHARGE + _tag("c") + REST, "steps[2].tag: duplicate tag 'c' (first at steps[0])"),
    (_tag("c") + CHARGE + _loop("c", 1.5), "steps[2].cycle_count: expected a whole number of cycles, got 1.5"),
    (
        _tag("c") + CHARGE + _loop("c", 1001),
        "steps[2].cycle_count: 1001 is outside 1 … 1000 (the total number of cycles)",
    ),
    (_tag("c") + CHARGE + _loop("c", "inf"), "steps[2].cycle_count: expected a whole number of cycles, got inf"),
    (_tag("c") + _loop("c", 2), "steps[1]: this loop repeats nothing: no step between tag 'c' and it"),
    # dV/dt bounds.
    (
        REST.replace("duration = ", "dvdt_mv_per_h = nan, duration = "),
        "steps[0].until.dvdt_mv_per_h: expected a finite number of mV/h, got nan",
    ),
    (
        REST.replace("duration = ", "dvdt_mv_per_h = 0, duration = "),
        "steps[0].until.dvdt_mv_per_h: 0 mV/h is outside above 0 … 1000 mV/h",
    ),
    (
        REST.replace("duration = ", "dvdt_mv_per_h = 2000, duration = "),
        "steps[0].until.dvdt_mv_per_h: 2000 mV/h is outside above 0 … 1000 mV/h",
    ),
    (
        REST.replace("duration = ", 'dvdt_window = "5min", duration = '),
        "steps[0].until.dvdt_window: only with dvdt_mv_per_h (the window of the dV/dt end)",
    ),
    (
        REST.replace("duration = ", 'dvdt_mv_per_h = 1, dvdt_window = "10s", duration = '),
        "steps[0].until.dvdt_window: 10s is below 60 s",
    ),
    (
        REST.replace("duration = ", 'dvdt_mv_per_h = 1, dvdt_window = "1h", duration = '),
        "steps[0].until.dvdt_window: 1h is not shorter than the rest (10m): never judged",
    ),
    (
        REST.replace("duration = ", 'dvdt_mv_per_h = 1, dvdt_window = "2min", duration = '),
        "steps[0].record.every_s: a dV/dt end over 2m needs a record at least every 40 s",
    ),
    # wait, hold, precheck bounds.
    (
        '[[steps]]\nid = "w"\nkind = "wait"\nbelow_c = inf\n',
        "steps[0].below_c: expected a finite number of °C, got inf",
    ),
    ('[[steps]]\nid = "w"\nkind = "wait"\nbelow_c = 70\n', "steps[0].below_c: 70 °C is outside -40 … 60 °C"),
    ('[[steps]]\nid = "w"\nkind = "wait"\n', "steps[0].below_c: missing required key"),
    ('[[steps]]\nid = "h"\nkind = "hold"\ntimeout = "-1h"\n', "steps[0].timeout: '-1h' must be positive"),
    ('[[steps]]\nid = "h"\nkind = "hold"\ntimeout = 0\n', "steps[0].timeout: 0 must be positive"),
    ('[[steps]]\nid = "h"\nkind = "hold"\nmessage = "a\\nb"\n', "steps[0].message: one line of at most 200 characters"),
    (
        '[[steps]]\nid = "p"\nkind = "precheck"\nocv_min_v = 3.9\nocv_max_v = 3.0\nrest = "10min"\nmax_drop_mv = 3\n',
        "steps[0].ocv_min_v: 3.9 V is not below ocv_max_v 3 V",
    ),
    (
        '[[steps]]\nid = "p"\nkind = "precheck"\nocv_min_v = 2.0\nocv_max_v = 4.0\nrest = "10min"\nmax_drop_mv = 3\n',
        "steps[0].ocv_min_v: 2 V is below limits.min_voltage_v 2.45 V",
    ),
    (
        '[[steps]]\nid = "p"\nkind = "precheck"\nocv_min_v = 3.0\nocv_max_v = 4.0\nrest = "10s"\nmax_drop_mv = 3\n',
        "steps[0].rest: 10s is outside 1m … 1d (the short check's rest)",
    ),
    (
        '[[steps]]\nid = "p"\nkind = "precheck"\nocv_min_v = 3.0\nocv_max_v = 4.0\nrest = "10min"\nmax_drop_mv = nan\n',
        "steps[0].max_drop_mv: expected a finite number of mV, got nan",
    ),
    (
        CHARGE
        + '[[steps]]\nid = "p"\nkind = "precheck"\nocv_min_v = 3\nocv_max_v = 4\nrest = "10min"\nmax_drop_mv = 3\n',
        "steps[1].kind: a precheck comes before any current (steps[0] moves some)",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), BAD, ids=[e.split(":")[0] + f"-{i}" for i, (_, e) in enumerate(BAD)])
def test_bad_flow_and_host_steps_are_one_line_and_exit_2(
    steps: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + steps, encoding="utf-8")
    with pytest.raises(RecipeError):
        loads_recipe(HEAD + steps, "toml")
    assert main(["recipe", "validate", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [f"error: {path}: {expected}"], lines
    assert "Traceback" not in captured.err
