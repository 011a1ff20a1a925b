"""Property tests (hypothesis) of every input parser: any input gives a valid object or the project's own error,
never another exception, a hang (a per-example deadline) or an unbounded result. Example counts are bounded so the
whole set stays within a few seconds; counts and times are recorded in bench/RESULTS.md.

Two kinds of input per parser: arbitrary text, and a valid document with one value replaced somewhere by an
arbitrary TOML/JSON value (a huge integer, NaN, a nested array, a lone surrogate...), which reaches the field
checks deep inside instead of stopping at the syntax."""

from __future__ import annotations

import copy
import json
import math
import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formation.bounds import (
    MAX_C_RATE,
    MAX_CAPACITY_AH,
    MAX_CURRENT_A,
    MAX_DURATION_S,
    MIN_C_RATE,
    MIN_CAPACITY_AH,
    MIN_CURRENT_A,
    MIN_DURATION_S,
    MIN_RECORD_S,
)
from formation.config import ConfigError, load_site_config, parse_site_config
from formation.errors import CellsFileError, InputError, RecipeError, RulesError
from formation.grading.rules import loads_rules, parse_rules
from formation.orchestrator.inputs import parse_cells_csv, parse_channel_list
from formation.recipes import parse_current, parse_duration_s
from formation.recipes.library import _library, loads_recipe
from formation.recipes.parse import parse_recipe
from formation.recipes.pybamm import parse_experiment_step
from formation.recipes.units import parse_charge, parse_percent, parse_voltage_text

ROOT = Path(__file__).resolve().parents[2]
#: Bounded runs: no example database on disk; a deadline far above any example (ms) that still catches a hang.
#: FORMATION_FUZZ_SCALE=20 multiplies every example count (a longer soak; bench/RESULTS.md).
SCALE = int(os.environ.get("FORMATION_FUZZ_SCALE", "1"))
FAST = settings(
    max_examples=SCALE * 100,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FAST, max_examples=SCALE * 40)

# -- strategies ----------------------------------------------------------------------------------------------

SCALARS = (
    st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.sampled_from([10**400, -(10**400), 2**63, 0, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["\ud800", "2h-1h", "1e-300A", "C/0", "99999999999999d", "1e400s", "30%", "-1h", ""])
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


#: Nested beyond the documents' bound (32), and within what hypothesis can still print when it reports one.
DEEP = st.integers(min_value=30, max_value=120).map(_nest)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a document (tables and arrays walked)."""
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with the value at one path replaced (or a key added to a table) by an arbitrary value."""
    doc = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(doc)))
    value = draw(VALUES | DEEP)
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        parent[draw(st.text(max_size=8))] = value  # an extra key beside the others
    else:
        parent[path[-1]] = value
    return doc


def _builtin(name: str) -> dict[str, Any]:
    return tomllib.loads(_library().joinpath(f"{name}.toml").read_text(encoding="utf-8"))


RECIPES = [_builtin("ncm21700-formation"), _builtin("demo-ncm21700"), _builtin("lfp-280ah-formation")]
SITE = tomllib.loads((ROOT / "examples" / "site.toml").read_text(encoding="utf-8"))
RULES = tomllib.loads((ROOT / "examples" / "grading.toml").read_text(encoding="utf-8"))
CELLS = (ROOT / "examples" / "cells.csv").read_text(encoding="utf-8")


def _check_recipe(recipe: Any) -> None:
    """A recipe that parsed honours the documented bounds."""
    assert MIN_CAPACITY_AH <= recipe.nominal_capacity_ah <= MAX_CAPACITY_AH
    for step in recipe.steps:
        record = step.record
        assert record.every_s == 0 or record.every_s >= MIN_RECORD_S
        duration_s = getattr(getattr(step, "until", None), "duration_s", None)
        assert duration_s is None or MIN_DURATION_S <= duration_s <= MAX_DURATION_S


# -- recipes -------------------------------------------------------------------------------------------------


@FAST
@given(data=st.sampled_from(RECIPES).flatmap(mutated))
def test_recipe_data_gives_a_recipe_or_a_recipe_error(data: Any) -> None:
    try:
        recipe = parse_recipe(data)
    except RecipeError as exc:
        assert exc.errors and all(isinstance(f, str) and isinstance(r, str) for f, r in exc.errors)
        return
    _check_recipe(recipe)


@FAST
@given(data=st.sampled_from(RECIPES).flatmap(mutated), as_toml=st.booleans())
def test_recipe_text_gives_a_recipe_or_a_recipe_error(data: Any, as_toml: bool) -> None:
    try:
        text = json.dumps(data)
    except (ValueError, TypeError, RecursionError):
        return  # not expressible as JSON text (a lone surrogate is, a 3000-deep array is not)
    if as_toml and isinstance(data, dict):  # the same document through TOML's parser: JSON arrays are TOML's
        text = "\n".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in data.items())
    try:
        recipe = loads_recipe(text, "toml" if as_toml else "json")
    except RecipeError:
        return
    _check_recipe(recipe)


@FAST
@given(text=st.text(max_size=200), fmt=st.sampled_from(["toml", "json"]))
def test_recipe_garbage_text_is_a_recipe_error(text: str, fmt: str) -> None:
    with pytest.raises(RecipeError):
        loads_recipe(text, fmt)  # type: ignore[arg-type]


@FEW
@given(depth=st.integers(min_value=33, max_value=200_000), fmt=st.sampled_from(["toml", "json"]))
def test_deeply_nested_recipe_text_is_a_recipe_error(depth: int, fmt: str) -> None:
    text = "a = " + "[" * depth + "]" * depth if fmt == "toml" else "[" * depth + "]" * depth
    with pytest.raises(RecipeError, match="nested"):
        loads_recipe(text, fmt)  # type: ignore[arg-type]


# -- PyBaMM strings, units and durations ---------------------------------------------------------------------

PYBAMM_WORDS = st.sampled_from(
    ["Charge", "Discharge", "Hold", "Rest", "at", "for", "or", "until", "C/20", "1C", "2.5A", "500mA", "4.2 V",
     "3.4V", "2 hours", "10 minutes", "1e400 s", "-1h", "C/0", "or until", "  ", "V", "A", "x" * 40]
)  # fmt: skip


@FAST
@given(
    text=st.lists(PYBAMM_WORDS, max_size=12).map(" ".join) | st.text(max_size=120),
    previous=st.sampled_from([None, "charge", "discharge"]),
)
def test_pybamm_strings_give_a_step_table_or_a_value_error(text: str, previous: str | None) -> None:
    try:
        table = parse_experiment_step(text, previous_kind=previous, hold_current_a=5.0)
    except ValueError:
        return
    assert isinstance(table, dict) and table["kind"] in ("charge", "discharge", "rest")


QUANTITY_TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["", "-", "+", "C/", " "]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers().map(str),
        st.sampled_from(["", "s", "min", "h", "d", "A", "mA", "C", "Ah", "mAh", "%", " V", "h-1h", "d1s"]),
    ),
)


@FAST
@given(value=QUANTITY_TEXT | SCALARS | VALUES)
def test_quantities_are_within_their_bounds_or_a_value_error(value: Any) -> None:
    for parse, check in (
        (parse_duration_s, lambda s: MIN_DURATION_S <= s <= MAX_DURATION_S),
        (parse_current, lambda c: MIN_CURRENT_A <= (c.amps or MIN_CURRENT_A) <= MAX_CURRENT_A
         and MIN_C_RATE <= (c.c_rate or MIN_C_RATE) <= MAX_C_RATE),
        (parse_charge, lambda pair: all(x is None or (math.isfinite(x) and x > 0) for x in pair)),
        (parse_percent, lambda f: f is None or 0 < f <= 2.0),
        (parse_voltage_text, lambda v: math.isfinite(v) and v > 0),
    ):  # fmt: skip
        try:
            result = parse(value)
        except ValueError:
            continue
        except TypeError:
            assert parse is parse_voltage_text  # takes text only: a caller never hands it anything else
            continue
        assert check(result), (parse.__name__, value, result)


# -- channel lists, cells, site, rules -----------------------------------------------------------------------

CHANNEL_TEXT = st.lists(
    st.one_of(
        st.integers(min_value=-5, max_value=10**12).map(str),
        st.tuples(st.integers(-5, 10**12), st.integers(-5, 10**12)).map(lambda t: f"{t[0]}-{t[1]}"),
        st.text(max_size=6),
    ),
    max_size=8,
).map(",".join)


@FAST
@given(text=CHANNEL_TEXT, n_channels=st.integers(min_value=1, max_value=1024))
def test_channel_lists_are_bounded_by_the_cabinet_or_an_input_error(text: str, n_channels: int) -> None:
    try:
        channels = parse_channel_list(text, n_channels)
    except InputError:
        return
    assert channels and len(channels) == len(set(channels)) <= n_channels
    assert all(1 <= c <= n_channels for c in channels)


CSV_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12), max_size=5).map(",".join),
        max_size=6,
    ).map(lambda rows: "cell_id,lot,nominal_capacity_ah\n" + "\n".join(rows)),
    st.sampled_from([CELLS, CELLS + "X,L,5,extra\n", CELLS.replace("5.0", "nan", 1), CELLS.replace("5.0", "1e300", 1)]),
)


@FAST
@given(text=CSV_TEXT)
def test_cells_csv_gives_cells_or_a_cells_file_error(text: str) -> None:
    try:
        cells = parse_cells_csv(text)
    except CellsFileError:
        return
    assert cells and len({c.cell_id for c in cells}) == len(cells)
    assert all(MIN_CAPACITY_AH <= c.nominal_capacity_ah <= MAX_CAPACITY_AH for c in cells)
    assert all(c.cell_id.isprintable() and c.lot.isprintable() for c in cells)


@FAST
@given(data=mutated(SITE))
def test_site_data_gives_a_site_or_a_config_error(data: Any) -> None:
    if not isinstance(data, dict):
        return  # TOML's top level is always a table
    try:
        cfg = parse_site_config(data)
    except ConfigError:
        return
    assert math.isfinite(cfg.clock_scale) and cfg.clock_scale > 0
    for cab in cfg.cabinets:
        assert math.isfinite(cab.poll_interval_s) and cab.poll_interval_s > 0 and cab.watchdog_s >= 0
        assert cab.sim is None or (0 <= cab.sim.initial_soc <= 1 and 0 <= cab.sim.port <= 65535)


@FEW
@given(text=st.text(max_size=200) | mutated(SITE).map(lambda d: json.dumps(d, default=str)))
def test_site_files_give_a_site_or_a_config_error(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("site") / "site.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg = load_site_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) or str(exc).startswith(str(path))  # TOML's own messages may span lines
        return
    assert math.isfinite(cfg.clock_scale) and cfg.clock_scale > 0


@FAST
@given(data=mutated(RULES))
def test_rules_data_gives_rules_or_a_rules_error(data: Any) -> None:
    try:
        rules = parse_rules(data)
    except RulesError:
        return
    assert rules.grades and rules.sha256


@FAST
@given(text=st.text(max_size=200))
def test_rules_text_gives_rules_or_a_rules_error(text: str) -> None:
    with pytest.raises(RulesError):
        loads_rules(text)
