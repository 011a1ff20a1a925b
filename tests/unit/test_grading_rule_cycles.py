"""Grading rules that read cycles: ``cycle = "last" | "first" | N`` on a metric source, its canonical form, the
refusals (one field, one reason), the check against a recipe's repeat blocks, and the results it picks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from formation.errors import RulesError
from formation.grading import builtin_rules, check_rules_cycles, loads_rules, metrics_frame, resolve_rules
from formation.grading.rules import MAX_CYCLE
from formation.recipes import builtin_recipes, load_builtin

RULES = """
name = "cycles"
version = "1"
[metrics.capacity_ah]
step = "discharge"
{cycle}
[[grades]]
name = "A"
capacity_ah = {{ min = 4.0 }}
"""


def _rules(cycle_line: str = "") -> str:
    return RULES.format(cycle=cycle_line)


@pytest.mark.parametrize(
    ("line", "expected"),
    [("", "last"), ('cycle = "last"', "last"), ('cycle = "first"', "first"), ('cycle = " First "', "first"),
     ("cycle = 2", 2), (f"cycle = {MAX_CYCLE}", MAX_CYCLE)],
)  # fmt: skip
def test_the_cycle_of_a_metric_source(line: str, expected: str | int) -> None:
    assert loads_rules(_rules(line)).metrics["capacity_ah"].cycle == expected


def test_the_default_cycle_keeps_the_hash_of_rules_written_before_cycles() -> None:
    plain, last = loads_rules(_rules()), loads_rules(_rules('cycle = "last"'))
    assert plain.sha256 == last.sha256
    assert "cycle" not in json.loads(plain.canonical_json())["metrics"]["capacity_ah"]
    first, second = loads_rules(_rules('cycle = "first"')), loads_rules(_rules("cycle = 2"))
    assert len({plain.sha256, first.sha256, second.sha256}) == 3
    assert json.loads(second.canonical_json())["metrics"]["capacity_ah"] == {"step": "discharge", "cycle": 2}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "cycle 0 is outside 1 … 1000000 (cycles are numbered from 1)"),
        ("-1", "cycle -1 is outside 1 … 1000000"),
        (str(MAX_CYCLE + 1), "cycle 1000001 is outside 1 … 1000000"),
        ("2.0", "expected 'last', 'first' or a cycle number (1, 2, …), got 2.0"),
        ("true", "expected 'last', 'first' or a cycle number (1, 2, …), got True"),
        ('"second"', "expected 'last', 'first' or a cycle number (1, 2, …), got 'second'"),
        ("nan", "got nan"),
        ("[1, 2]", "got [1, 2]"),
    ],
)
def test_a_bad_cycle_is_refused_naming_the_field(value: str, reason: str) -> None:
    with pytest.raises(RulesError) as err:
        loads_rules(_rules(f"cycle = {value}"), "r.toml")
    assert err.value.field == "metrics.capacity_ah.cycle"
    assert reason in err.value.reason
    assert "\n" not in str(err.value)


def test_the_cycle_is_checked_against_the_recipe_it_grades() -> None:
    recipe = load_builtin("ncm21700-formation-3cycles")
    for ok in ('cycle = "first"', 'cycle = "last"', "cycle = 1", "cycle = 3"):
        check_rules_cycles(loads_rules(_rules(ok)), recipe)
    with pytest.raises(RulesError) as err:
        check_rules_cycles(loads_rules(_rules("cycle = 4"), "r.toml"), recipe)
    assert str(err.value) == (
        "r.toml: metrics.capacity_ah.cycle: step 'discharge' of ncm21700-formation-3cycles runs in cycles 1-3, not 4"
    )
    outside = loads_rules(_rules("cycle = 1").replace('"discharge"', '"storage"'), "r.toml")
    with pytest.raises(RulesError, match="step 'storage' of ncm21700-formation-3cycles is outside any repeat block"):
        check_rules_cycles(outside, recipe)
    # A step the recipe does not have is left to grading (it warns when no run has the metric).
    check_rules_cycles(loads_rules(_rules("cycle = 9").replace('"discharge"', '"nowhere"')), recipe)


def test_every_builtin_rules_file_fits_its_recipe() -> None:
    for name in builtin_rules():
        assert name in builtin_recipes()
        check_rules_cycles(resolve_rules(name), load_builtin(name))


def _rows(cycles_ah: dict[str, list[tuple[int, float]]]) -> pd.DataFrame:
    """Rows as ``lot_query`` returns them: per cell, its discharge results (cycle, Ah) in step order."""
    rows = []
    for run_id, (cell, results) in enumerate(cycles_ah.items(), start=1):
        for k, (cycle, ah) in enumerate(results):
            rows.append({"cell_id": cell, "lot": "L", "run_id": run_id, "run_state": "done",
                         "run_end_reason": "", "cabinet": "c", "channel": 1, "recipe": "r", "recipe_sha256": "s",
                         "graded_at_s": 1.0, "step_index": 3 + 4 * k, "step_id": "discharge", "cycle": cycle,
                         "ah": ah, "details": "{}"})  # fmt: skip
    return pd.DataFrame(rows)


def test_each_cycle_choice_picks_its_step_result() -> None:
    rows = _rows({"X-1": [(1, -4.90), (2, -4.85), (3, -4.80)], "X-2": [(1, -4.70), (2, -4.65)]})
    picked = {}
    for line in ("", 'cycle = "first"', "cycle = 2", "cycle = 3"):
        frame = metrics_frame(rows, loads_rules(_rules(line)))
        picked[line] = frame.set_index("cell_id")["capacity_ah"].round(4).to_dict()
    assert picked[""] == {"X-1": 4.80, "X-2": 4.65}  # the last cycle each run reached
    assert picked['cycle = "first"'] == {"X-1": 4.90, "X-2": 4.70}
    assert picked["cycle = 2"] == {"X-1": 4.85, "X-2": 4.65}
    # A run that stopped before cycle 3 has no capacity of cycle 3: the grade says it is missing.
    assert picked["cycle = 3"]["X-1"] == 4.80 and np.isnan(picked["cycle = 3"]["X-2"])
