"""Grading inputs from the store: one row per cell of a lot with its latest run's metrics and traceability.

One SELECT fetches the lot's cells, each cell's latest run (highest run id: runs are created in launch order),
its job's recipe, the time of the run's last step result, and the step results that the rules read metrics
from. Rows come back as plain tuples into a DataFrame (no ORM objects); only the ``details`` of the DCIR and age
steps are read (``StepDetails.from_json``, the store's one reader of that JSON), once per row.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Select, and_, func, select

from formation.errors import InputError, RecipeError
from formation.grading.cycles import check_rules_cycles
from formation.grading.rules import CYCLE_FIRST, FROM_AGEING, METRICS, Rules
from formation.recipes import parse_recipe
from formation.states import RunState
from formation.store import Store
from formation.store.models import AgeingJob, AgeingResult, Cell, Job, Recipe, Run, StepResult
from formation.store.records import StepDetails

#: Columns of :func:`load_lot_metrics` besides the metrics.
CELL_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "lot",
    "run_id",
    "run_state",
    "fault",
    "cabinet",
    "channel",
    "recipe",
    "recipe_sha256",
    "graded_at_s",
)


def _t(model: Any) -> Any:
    return model.__table__


def lot_query(lot: str, step_ids: list[str]) -> Select[Any]:
    """The one SELECT behind :func:`load_lot_metrics` (one row per cell and metric step; cells without any kept)."""
    cell, run, job, recipe, sr = _t(Cell), _t(Run), _t(Job), _t(Recipe), _t(StepResult)
    latest = (
        select(run.c.cell_id, func.max(run.c.id).label("run_id"))
        .join(cell, cell.c.id == run.c.cell_id)
        .where(cell.c.lot_id == lot)
        .group_by(run.c.cell_id)
        .subquery("latest")
    )
    last = sr.alias("last_sr")
    last_end = (
        select(last.c.run_id, func.max(last.c.ended_s).label("last_ended_s"))
        .where(last.c.run_id.in_(select(latest.c.run_id)))
        .group_by(last.c.run_id)
        .subquery("last_end")
    )
    return (
        select(
            cell.c.id.label("cell_id"),
            cell.c.lot_id.label("lot"),
            run.c.id.label("run_id"),
            run.c.state.label("run_state"),
            run.c.end_reason.label("run_end_reason"),
            run.c.cabinet,
            run.c.channel,
            recipe.c.name.label("recipe"),
            job.c.recipe_sha256,
            last_end.c.last_ended_s.label("graded_at_s"),
            sr.c.step_index,
            sr.c.step_id,
            sr.c.cycle,
            sr.c.ah,
            sr.c.details,
        )
        .select_from(cell)
        .outerjoin(latest, latest.c.cell_id == cell.c.id)
        .outerjoin(run, run.c.id == latest.c.run_id)
        .outerjoin(job, job.c.id == run.c.job_id)
        .outerjoin(recipe, recipe.c.sha256 == job.c.recipe_sha256)
        .outerjoin(last_end, last_end.c.run_id == run.c.id)
        .outerjoin(sr, and_(sr.c.run_id == run.c.id, sr.c.step_id.in_(step_ids)))
        .where(cell.c.lot_id == lot)
        .order_by(cell.c.id, sr.c.step_index)
    )


def _fault(state: pd.Series, end_reason: pd.Series) -> pd.Series:
    """Empty for a finished run, else why the cell cannot be graded (``run faulted: host_check``)."""
    state = state.astype(object)
    reason = end_reason.fillna("").astype(str)
    stopped = "run " + state.fillna("").astype(str) + np.where(reason != "", ": " + reason, "")
    stopped_states = [RunState.FAULTED.value, RunState.ABORTED.value]
    fault = np.where(state.isin(stopped_states), stopped, "run not finished (" + state.astype(str) + ")")
    fault = np.where(state == RunState.DONE.value, "", fault)
    return pd.Series(np.where(state.isna(), "no run", fault), index=state.index, dtype=object)


def _metric_values(details: list[StepDetails], metric: str, at: str | None) -> np.ndarray:
    """One metric out of each row's stored details (NaN where absent or not a number)."""
    return np.array([d.metric(metric, at) for d in details], dtype=np.float64)


def _source_rows(rows: pd.DataFrame, step: str, cycle: str | int) -> pd.DataFrame:
    """Per cell, the result of ``step`` a metric reads: the last or first of them in the run (rows are ordered by
    step index), or the one of cycle number ``cycle`` (none when the run did not reach that cycle)."""
    mine = rows[rows["step_id"] == step]
    if isinstance(cycle, int):
        return mine[pd.to_numeric(mine["cycle"]) == cycle].drop_duplicates("cell_id", keep="last")
    return mine.drop_duplicates("cell_id", keep="first" if cycle == CYCLE_FIRST else "last")


def metrics_frame(rows: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row per cell from the rows of :func:`lot_query`: traceability columns, ``fault`` and the metrics."""
    per_cell = rows.drop_duplicates("cell_id", keep="first").set_index("cell_id", drop=False)
    cells = pd.DataFrame(
        {
            "cell_id": per_cell["cell_id"].astype(str),
            "lot": per_cell["lot"].astype(str),
            "run_id": pd.to_numeric(per_cell["run_id"]).astype("Int64"),
            "run_state": per_cell["run_state"],
            "fault": _fault(per_cell["run_state"], per_cell["run_end_reason"]),
            "cabinet": per_cell["cabinet"],
            "channel": pd.to_numeric(per_cell["channel"]).astype("Int64"),
            "recipe": per_cell["recipe"],
            "recipe_sha256": per_cell["recipe_sha256"],
            "graded_at_s": pd.to_numeric(per_cell["graded_at_s"]).astype(np.float64),
        }
    )
    parsed: dict[tuple[str, str | int], list[StepDetails]] = {}  # details parsed once even if two metrics use them
    for metric in METRICS:
        source = rules.metrics.get(metric)
        if source is None or source.origin == FROM_AGEING:
            cells[metric] = np.nan  # ageing metrics join later (:func:`join_ageing`)
            continue
        steps = _source_rows(rows, source.step, source.cycle)
        if metric == "capacity_ah":
            values = np.abs(pd.to_numeric(steps["ah"]).to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            key = (source.step, source.cycle)
            if key not in parsed:
                parsed[key] = [StepDetails.from_json(text) for text in steps["details"].tolist()]
            values = _metric_values(parsed[key], metric, source.at)
        cells[metric] = pd.Series(values, index=steps["cell_id"].astype(str).to_numpy()).reindex(cells.index)
    return cells.reset_index(drop=True)


def load_lot_metrics(store: Store, lot: str, rules: Rules) -> pd.DataFrame:
    """Grading inputs of every cell of ``lot``; an unknown lot raises InputError."""
    if store.lot(lot) is None:
        raise InputError("lot", f"no lot {lot!r} in the store")
    step_ids = sorted({s.step for s in rules.metrics.values() if s.origin != FROM_AGEING})
    cells = metrics_frame(store.query_frame(lot_query(lot, step_ids)), rules)
    return join_ageing(cells, store.query_frame(ageing_query(lot)), rules)


#: Columns :func:`join_ageing` adds besides the ageing metrics: the K standard error, the fit window, its
#: temperature and the ageing job the K came from.
AGEING_COLUMNS: tuple[str, ...] = (
    "k_se_mv_per_day",
    "ageing_job_id",
    "ageing_start_s",
    "ageing_end_s",
    "ageing_temperature_c",
)


def ageing_query(lot: str) -> Select[Any]:
    """Every ageing result of the lot's cells, oldest job first."""
    res, job = _t(AgeingResult), _t(AgeingJob)
    return (
        select(
            res.c.cell_id,
            res.c.ageing_job_id,
            res.c.k_mv_per_day,
            res.c.k_se_mv_per_day,
            res.c.ocv_v,
            res.c.acir_mohm,
            res.c.window_start_s,
            res.c.window_end_s,
            res.c.temperature_c,
            res.c.reason,
        )
        .join(job, job.c.id == res.c.ageing_job_id)
        .join(_t(Cell), _t(Cell).c.id == res.c.cell_id)
        .where(_t(Cell).c.lot_id == lot, job.c.state == "done")
        .order_by(res.c.ageing_job_id)
    )


def join_ageing(cells: pd.DataFrame, results: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Per cell, each ageing metric from its latest ageing job with a valid value (a re-aged cell uses its re-ageing);
    the K's standard error, window and temperature with it. A cell whose K could not be fit keeps the reason in
    ``ageing_reason`` and no K (graded ``missing k_mv_per_day`` when a grade needs it)."""
    out = cells.copy()
    for column in AGEING_COLUMNS:
        out[column] = np.nan
    out["ageing_reason"] = ""
    wanted = [m for m, s in rules.metrics.items() if s.origin == FROM_AGEING]
    if results.empty or not wanted:
        return out
    by_cell = out["cell_id"].astype(str)
    for metric in wanted:
        valid = results[pd.to_numeric(results[metric], errors="coerce").notna()]
        latest = valid.drop_duplicates("cell_id", keep="last").set_index("cell_id")
        out[metric] = by_cell.map(pd.to_numeric(latest[metric])).astype(np.float64).to_numpy()
        if metric == "k_mv_per_day":
            out["k_se_mv_per_day"] = by_cell.map(latest["k_se_mv_per_day"]).astype(np.float64).to_numpy()
            out["ageing_job_id"] = by_cell.map(latest["ageing_job_id"]).astype(np.float64).to_numpy()
            out["ageing_start_s"] = by_cell.map(latest["window_start_s"]).astype(np.float64).to_numpy()
            out["ageing_end_s"] = by_cell.map(latest["window_end_s"]).astype(np.float64).to_numpy()
            out["ageing_temperature_c"] = by_cell.map(latest["temperature_c"]).astype(np.float64).to_numpy()
    last = results.drop_duplicates("cell_id", keep="last").set_index("cell_id")["reason"]
    out["ageing_reason"] = by_cell.map(last).fillna("").astype(str).to_numpy()
    return out


def check_lot_cycles(store: Store, cells: pd.DataFrame, rules: Rules) -> None:
    """Refuse (RulesError) rules naming a cycle number that a recipe of the lot's graded runs does not have."""
    if not any(isinstance(source.cycle, int) for source in rules.metrics.values()):
        return
    for sha256 in sorted(set(cells["recipe_sha256"].dropna().astype(str))):
        row = store.recipe(sha256)
        if row is None:
            continue
        try:
            recipe = parse_recipe(json.loads(row.body_json), f"recipe {row.name}")
        except (RecipeError, ValueError):
            continue  # a stored body this version cannot read: grading still works, there is just nothing to check
        check_rules_cycles(rules, recipe)
