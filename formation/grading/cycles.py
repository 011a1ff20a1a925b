"""Per-cycle capacity and coulombic efficiency from a run's step results (pure pandas).

A cycle is one iteration of a recipe's repeat block (``StepResult.cycle``, 1, 2, … across the recipe; 0 outside
any block is left out). Per run and cycle: the charge put in (Ah of every step that charged), the charge taken
out (Ah of every step that discharged), and their ratio, the coulombic efficiency. Also the check that a rules
file's cycle numbers exist in the recipe it grades.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from formation.errors import RulesError

if TYPE_CHECKING:
    from formation.grading.rules import Rules
    from formation.recipes import Recipe

#: Columns of :func:`cycle_table`, in order.
CYCLE_COLUMNS: tuple[str, ...] = ("run_id", "cell_id", "cycle", "charge_ah", "discharge_ah", "efficiency")


def cycle_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run and cycle (by run, then cycle) from step results with ``run_id``, ``cycle`` and ``ah``
    (``cell_id`` too when there); ``efficiency`` is discharge / charge (NaN when nothing was charged)."""
    if results.empty or "cycle" not in results:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CYCLE_COLUMNS})
    rows = results[results["cycle"] > 0]
    ah = rows["ah"].astype(float)
    frame = pd.DataFrame(
        {
            "run_id": rows["run_id"],
            "cell_id": rows.get("cell_id", ""),
            "cycle": rows["cycle"].astype(int),
            "charge_ah": ah.clip(lower=0.0),
            "discharge_ah": (-ah).clip(lower=0.0),
        }
    )
    out = frame.groupby(["run_id", "cell_id", "cycle"], sort=True, as_index=False)[["charge_ah", "discharge_ah"]].sum()
    charge = out["charge_ah"].to_numpy(dtype=float)
    out["efficiency"] = np.divide(
        out["discharge_ah"].to_numpy(dtype=float), charge, out=np.full(len(out), np.nan), where=charge > 0
    )
    return out[list(CYCLE_COLUMNS)].reset_index(drop=True)


def cycle_capacity_fade_pct(table: pd.DataFrame) -> pd.Series:
    """Per run: the discharge capacity lost from its first to its last cycle, % of the first (NaN with one cycle)."""
    if table.empty:
        return pd.Series(dtype=float)
    grouped = table.sort_values(["run_id", "cycle"]).groupby("run_id")["discharge_ah"]
    first, last, count = grouped.first(), grouped.last(), grouped.size()
    fade = (first - last) / first.where(first > 0) * 100.0
    return fade.where(count > 1)


def _cycle_list(cycles: list[int]) -> str:
    """``1-3`` for a run of cycles, else ``1, 2, 5``."""
    if len(cycles) > 2 and cycles == list(range(cycles[0], cycles[-1] + 1)):
        return f"{cycles[0]}-{cycles[-1]}"
    return ", ".join(str(c) for c in cycles)


def check_rules_cycles(rules: Rules, recipe: Recipe) -> None:
    """Refuse (RulesError naming ``metrics.<metric>.cycle``) a metric that reads a cycle number its step does not
    run in under ``recipe``. A step the recipe does not have is left alone: grading warns when no run has it."""
    for metric, source in rules.metrics.items():
        if not isinstance(source.cycle, int):
            continue
        cycles = sorted({recipe.cycle_of(i) for i, step in enumerate(recipe.steps) if step.id == source.step})
        if not cycles or source.cycle in cycles:
            continue
        where = f"metrics.{metric}.cycle"
        if cycles == [0]:
            reason = f"step {source.step!r} of {recipe.name} is outside any repeat block (no cycle {source.cycle})"
        else:
            reason = f"step {source.step!r} of {recipe.name} runs in cycles {_cycle_list(cycles)}, not {source.cycle}"
        raise RulesError(where, reason, source=rules.source)
