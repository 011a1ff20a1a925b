"""Rebuilding a job's runs from the store, so a restarted host re-attaches to cells that kept running.

What the journal holds (written at every step transition) plus what the samples prove (a step's start record)
is enough to continue without repeating a step: a run whose step was started keeps its cursor; a run whose start
may not have reached the instrument is checked against the instrument's step positions before any start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from formation.errors import InputError
from formation.instruments.program import LOG_COL, LOG_COLUMNS
from formation.orchestrator.compile import compile_step
from formation.orchestrator.run import ChannelRun, RunState
from formation.recipes import Recipe, parse_recipe
from formation.store import Store


@dataclass
class RestoredJob:
    """A job as the store knows it: recipe, runs with their cursors, and the last committed record."""

    job_id: int
    cabinet: str
    recipe: Recipe
    runs: list[ChannelRun]
    committed_rec: int | None
    journal_rec: int


def restore_job(store: Store, job_id: int) -> RestoredJob:
    """Read a job back into ChannelRuns (terminal runs included, so the job's accounting stays whole)."""
    job = store.get_job(job_id)
    if job is None:
        raise InputError("job", f"no job {job_id}")
    if job.state not in ("running", "aborting", "interrupted"):
        raise InputError("job", f"job {job_id} is {job.state}: nothing to resume")
    row = store.recipe(job.recipe_sha256)
    if row is None:  # pragma: no cover - the foreign key makes this impossible
        raise InputError("job", f"job {job_id} has no recipe")
    recipe = parse_recipe(json.loads(row.body_json), source=f"job {job_id} recipe", source_text=row.source_text)
    results = store.step_results(job_id=job_id)
    done_by_run = results.groupby("run_id").size().to_dict() if not results.empty else {}
    runs: list[ChannelRun] = []
    for r in store.job_runs(job_id):
        cell = store.cell(r.cell_id)
        assert cell is not None and r.id is not None
        run = ChannelRun(r.id, r.cell_id, cell.lot_id, r.channel, cell.nominal_capacity_ah, recipe)
        run.state = RunState(r.state)
        run.end_reason = r.end_reason
        run.steps_done = int(done_by_run.get(r.id, 0))
        journal = json.loads(r.journal or "{}")
        run.soc_ah = float(journal.get("soc_ah", 0.0))
        run.capacity_ref_ah = journal.get("capacity_ref_ah")
        if run.terminal:
            run.step_index = r.step_index
            runs.append(run)
            continue
        if run.state is RunState.PAUSED:
            run.state = RunState.RUNNING  # a paused link belonged to the old process
        index = int(journal.get("step_index", r.step_index))
        if index >= len(recipe.steps):
            run.step_index = index
            run.transition(RunState.DONE)
            runs.append(run)
            continue
        run.begin_step(index, compile_step(recipe.steps[index], recipe, run.nominal_capacity_ah))
        run.seq_id = journal.get("seq_id")
        run.awaiting_start = bool(journal.get("awaiting_start", True))
        # Whether a start reached the instrument is unknown after a crash: the supervisor checks positions first.
        run.start_attempted = run.awaiting_start or run.state is RunState.PENDING
        _restore_step_start(store, run)
        runs.append(run)
    journal_rec = max((r.last_rec for r in store.job_runs(job_id)), default=0)
    return RestoredJob(job_id, job.cabinet, recipe, runs, store.max_sample_rec(job_id), journal_rec)


def _restore_step_start(store: Store, run: ChannelRun) -> None:
    """The current step's start and its records (for an age step's OCV) from the stored samples."""
    samples = store.samples(run.run_id)
    step = samples[samples["step_index"] == run.step_index]
    if step.empty:
        return
    run.awaiting_start = False  # records of this step exist: it was started
    run.start_attempted = False
    first = step.iloc[0]
    run.account.started_s = float(first["ts_s"])
    run.account.start_voltage_v = float(first["voltage_v"])
    run.step_t0_host_s = float(first["ts_s"])
    if run.needs_records:
        rows = np.zeros((len(step), len(LOG_COLUMNS)))
        rows[:, LOG_COL["rec"]] = step["rec"].to_numpy()
        rows[:, LOG_COL["time_s"]] = step["ts_s"].to_numpy()
        rows[:, LOG_COL["step_time_s"]] = step["step_time_s"].to_numpy()
        rows[:, LOG_COL["voltage_v"]] = step["voltage_v"].to_numpy()
        rows[:, LOG_COL["current_a"]] = step["current_a"].to_numpy()
        rows[:, LOG_COL["temp_c"]] = step["temperature_c"].to_numpy()
        # The instrument sub-step of a dcir sequence is not stored with samples: a dcir step interrupted by a
        # host restart reports an error in its details rather than a wrong resistance.
        rows[:, LOG_COL["step"]] = 0 if run.step.kind == "dcir" else 1
        run.captured = [rows]
