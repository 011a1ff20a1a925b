"""Re-attaching to a job after a host crash: runs rebuilt from the store, and ends no host processed.

What the journal holds (written at every step transition) plus what the samples prove (a step's start record) is
enough to continue without repeating a step: a run whose step was started keeps its cursor; a run whose start
may not have reached the instrument is UNSURE, and the step starter asks the instrument before any start.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from formation.errors import InputError
from formation.instruments.program import LOG_COL, LOG_COLUMNS, CellState
from formation.orchestrator.compile import compile_step
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ChannelRun
from formation.recipes import Recipe, parse_recipe
from formation.states import RESUMABLE_JOB_STATES, RunState, StartState
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
    #: Instrument time of the newest stored sample of the job (NaN if none): where the old host left off.
    latest_sample_s: float


def restore_job(store: Store, job_id: int) -> RestoredJob:
    """Read a job back into ChannelRuns (terminal runs included, so the job's accounting stays whole)."""
    job = store.get_job(job_id)
    if job is None:
        raise InputError("job", f"no job {job_id}")
    if job.state not in {s.value for s in RESUMABLE_JOB_STATES}:
        raise InputError("job", f"job {job_id} is {job.state}: nothing to resume")
    row = store.recipe(job.recipe_sha256)
    if row is None:  # pragma: no cover - the foreign key makes this impossible
        raise InputError("job", f"job {job_id} has no recipe")
    recipe = parse_recipe(json.loads(row.body_json), source=f"job {job_id} recipe", source_text=row.source_text)
    results = store.step_results(job_id=job_id)
    done_by_run = results.groupby("run_id").size().to_dict() if not results.empty else {}
    runs: list[ChannelRun] = []
    latest_s = float("nan")
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
        run.host_end = journal.get("host_end")
        if run.compiled is not None and run.compiled.host_step:
            # A chamber step starts over host-side (setting a set point twice is harmless); a hold keeps its start
            # and the continue count it saw, so a continue sent while no host ran still releases it.
            run.account.started_s = journal.get("started_s")
            run.hold_seen = journal.get("hold_seen")
            runs.append(run)
            continue
        step_samples = _step_samples(store, run)
        if step_samples.empty:
            if _journalled_started(journal):
                # The start's reply came back before the journal was written; its records are still on the
                # instrument (unacknowledged) and the first drain brings them. An idle cell faults as lost.
                run.start = StartState.STARTED
            else:
                # The old host may have sent the start after writing the journal: ask the instrument first.
                run.start_transition(StartState.UNSURE)
        else:
            _restore_step_start(run, step_samples)
            last_s = float(step_samples["ts_s"].iloc[-1])
            latest_s = last_s if math.isnan(latest_s) else max(latest_s, last_s)
        runs.append(run)
    journal_rec = max((r.last_rec for r in store.job_runs(job_id)), default=0)
    return RestoredJob(job_id, job.cabinet, recipe, runs, store.max_sample_rec(job_id), journal_rec, latest_s)


def _journalled_started(journal: dict[str, object]) -> bool:
    """Whether the journal records the current step as confirmed started (old journals: ``awaiting_start``)."""
    if "start" in journal:
        return journal["start"] == StartState.STARTED.value
    return journal.get("awaiting_start") is False


def _step_samples(store: Store, run: ChannelRun) -> pd.DataFrame:
    samples = store.samples(run.run_id)
    return samples[samples["step_index"] == run.step_index]


def _restore_step_start(run: ChannelRun, step: pd.DataFrame) -> None:
    """Records of the current step exist: it was started; restore its start and its records (age OCV)."""
    run.start = StartState.STARTED  # restored, not a transition: the stored records prove the start
    if run.state is RunState.PENDING:
        run.transition(RunState.RUNNING)  # the old host died before journalling its first start
    first = step.iloc[0]
    run.account.started_s = float(first["ts_s"])
    run.account.start_voltage_v = float(first["voltage_v"])
    if run.needs_records:
        # The instrument sub-step of a dcir sequence is not stored with samples: a dcir step interrupted by a
        # host restart reports an error in its details rather than a wrong resistance.
        run.captured = [log_rows_from_samples(step, sub_step=0 if run.step.kind == "dcir" else 1)]


def log_rows_from_samples(samples: pd.DataFrame, *, sub_step: int) -> np.ndarray:
    """Stored samples as data-log rows (the columns samples keep; ``sub_step`` for all), for step measurements."""
    rows = np.zeros((len(samples), len(LOG_COLUMNS)))
    rows[:, LOG_COL["rec"]] = samples["rec"].to_numpy()
    rows[:, LOG_COL["time_s"]] = samples["ts_s"].to_numpy()
    rows[:, LOG_COL["step_time_s"]] = samples["step_time_s"].to_numpy()
    rows[:, LOG_COL["voltage_v"]] = samples["voltage_v"].to_numpy()
    rows[:, LOG_COL["current_a"]] = samples["current_a"].to_numpy()
    rows[:, LOG_COL["temp_c"]] = samples["temperature_c"].to_numpy()
    rows[:, LOG_COL["step"]] = sub_step
    return rows


def end_record_from_samples(samples: pd.DataFrame, end_code: int, n_sub_steps: int) -> EndRecord:
    """The end record of a step the old host stored but never processed, from its stored samples.

    Wh is not in the samples: V·I is integrated over them (exact for the logged curve).
    """
    last = samples.iloc[-1]
    t, v, i = samples["ts_s"].to_numpy(), samples["voltage_v"].to_numpy(), samples["current_a"].to_numpy()
    p = v * i
    return EndRecord(
        time_s=float(last["ts_s"]),
        voltage_v=float(last["voltage_v"]),
        step_ah=float(last["ah"]),
        step_wh=float(np.sum((p[1:] + p[:-1]) * np.diff(t)) / 2.0 / 3600.0),
        step_time_s=float(last["step_time_s"]),
        sub_step=n_sub_steps,
        end_code=end_code,
    )


def ended_unprocessed(runs: list[ChannelRun], status: np.ndarray) -> list[ChannelRun]:
    """Runs whose started step the instrument shows ended although no host processed its end record."""
    return [
        run
        for run, code in zip(runs, status.tolist(), strict=True)
        if not run.terminal
        and run.start is StartState.STARTED
        and not (run.compiled is not None and run.compiled.host_step)
        and run.account.started_s is not None
        and code in (CellState.DONE, CellState.FAIL, CellState.ABORTED)
    ]
