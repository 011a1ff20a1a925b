"""Re-attaching to a job after a host crash: runs rebuilt from the store, and ends no host processed.

What the journal holds (written at every step transition) plus what the samples prove (a step's start record) is
enough to continue without repeating a step: a run whose step was started keeps its cursor; a run whose start
may not have reached the instrument is UNSURE, and the step starter asks the instrument before any start.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from formation.errors import InputError
from formation.instruments.program import LOG_COL, LOG_COLUMNS, CellState
from formation.orchestrator.compile import compile_step
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ChannelRun
from formation.orchestrator.timebase import anchor_s
from formation.recipes import Recipe, parse_recipe
from formation.states import RESUMABLE_JOB_STATES, RunState, StartState
from formation.store import Store
from formation.store.records import StepResultRecord


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
        carried = journal.get("carried")
        if journal.get("restart_s") is not None and carried is not None and len(carried) == 3:
            # The watchdog cut this step and a host restarted what was left of it: the same remainder again.
            done = (float(carried[0]), float(carried[1]), float(carried[2]))
            run.apply_restart(float(journal["restart_s"]), int(journal.get("restarts", 1)), done)
            run.account.started_s = journal.get("started_s")
            run.account.start_voltage_v = journal.get("start_voltage_v")
        if run.compiled is not None and run.compiled.host_step:
            # A chamber step starts over host-side (setting a set point twice is harmless); a hold keeps its start
            # and the continue count it saw, so a continue sent while no host ran still releases it.
            run.account.started_s = journal.get("started_s")
            run.hold_seen = journal.get("hold_seen")
            runs.append(run)
            continue
        all_samples = _step_samples(store, run)
        # The records of the program running now (after a restart: those after the watchdog's end record).
        step_samples = all_samples if run.restart_s is None else all_samples[all_samples["ts_s"] > run.restart_s]
        if step_samples.empty:
            if _journalled_started(journal):
                # The start's reply came back before the journal was written; its records are still on the
                # instrument (unacknowledged) and the first drain brings them. An idle cell faults as lost.
                run.start = StartState.STARTED
            else:
                # The old host may have sent the start after writing the journal: ask the instrument first.
                run.start_transition(StartState.UNSURE)
        else:
            _restore_step_start(run, all_samples, step_samples)
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
    samples = store.samples(run.run_id, with_sub_step=True)
    return samples[samples["step_index"] == run.step_index]


def _restore_step_start(run: ChannelRun, step: pd.DataFrame, program: pd.DataFrame) -> None:
    """Records of the current step's program exist: it was started; restore its start, what its finished
    instrument steps did (a dcir's rest before its pulse), and the records its result needs (dcir pulse, age OCV).

    ``step`` holds every stored record of the step, ``program`` those of the program running now (the same unless
    the step was restarted after the instrument's watchdog cut it).
    """
    run.start = StartState.STARTED  # restored, not a transition: the stored records prove the start
    if run.state is RunState.PENDING:
        run.transition(RunState.RUNNING)  # the old host died before journalling its first start
    first = step.iloc[0]
    if run.account.started_s is None:
        run.account.started_s = float(first["ts_s"])
        run.account.start_voltage_v = float(first["voltage_v"])
    run.program_t0_s = float(program["ts_s"].iloc[0])
    for done in finished_segments(program):
        end = end_record_from_samples(done, 0, 0)
        run.account.ah += end.step_ah
        run.account.wh += end.step_wh
        run.account.duration_s += end.step_time_s
    if run.needs_records:
        # A dcir is measured from its own sequence's records (sub-steps stored with them: rest 1, pulse 2); an age
        # step or a judged rest from every record of the step.
        rows = program if run.step.kind == "dcir" else step
        run.captured = [log_rows_from_samples(rows)]


def finished_segments(program: pd.DataFrame) -> list[pd.DataFrame]:
    """The stored records of each instrument step of a program that is over: every one but the last (which may
    still run). An instrument step starts with its step-time-0 record."""
    starts = np.flatnonzero(program["step_time_s"].to_numpy() == 0.0).tolist()
    bounds = sorted({0, *starts, len(program)})
    segments = [program.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    return segments[:-1]


def log_rows_from_samples(samples: pd.DataFrame, *, sub_step: int | None = None) -> np.ndarray:
    """Stored samples as data-log rows (the columns samples keep) for step measurements; the instrument sub-step
    from the stored ``sub_step`` column, else ``sub_step`` (0 when neither)."""
    rows = np.zeros((len(samples), len(LOG_COLUMNS)))
    rows[:, LOG_COL["rec"]] = samples["rec"].to_numpy()
    rows[:, LOG_COL["time_s"]] = samples["ts_s"].to_numpy()
    rows[:, LOG_COL["step_time_s"]] = samples["step_time_s"].to_numpy()
    rows[:, LOG_COL["voltage_v"]] = samples["voltage_v"].to_numpy()
    rows[:, LOG_COL["current_a"]] = samples["current_a"].to_numpy()
    rows[:, LOG_COL["temp_c"]] = samples["temperature_c"].to_numpy()
    if sub_step is None and "sub_step" in samples:
        rows[:, LOG_COL["step"]] = samples["sub_step"].to_numpy()
    else:
        rows[:, LOG_COL["step"]] = sub_step or 0
    return rows


def end_record_from_samples(samples: pd.DataFrame, end_code: int, n_sub_steps: int) -> EndRecord:
    """The end record of a step the old host stored but never processed, from its stored samples (those of its
    last instrument step count: Ah and step time are per instrument step).

    Wh is not in the samples: V·I is integrated over them (exact for the logged curve).
    """
    starts = np.flatnonzero(samples["step_time_s"].to_numpy() == 0.0)
    if len(starts):
        samples = samples.iloc[int(starts[-1]) :]
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
        and run.program_t0_s is not None
        and code in (CellState.DONE, CellState.FAIL, CellState.ABORTED)
    ]


class EndPort(Protocol):
    """What settling ends needs of a cycler driver (``Bt2200Cycler`` provides it)."""

    async def last_end(self, channel: int) -> int: ...


async def settle_unprocessed_ends(
    runs: list[ChannelRun],
    status: np.ndarray,
    store: Store,
    cycler: EndPort,
    apply_end: Callable[[ChannelRun, EndRecord], Awaitable[StepResultRecord | None]],
) -> tuple[list[ChannelRun], list[StepResultRecord]]:
    """Steps that ended while no host processed their end: the old host may have stored the end record and died
    before writing the step result, so it will never be drained again. Finish them from the stored samples and the
    instrument's last end code; returns the runs settled and their step results."""
    ended = ended_unprocessed(runs, status)
    results: list[StepResultRecord] = []
    for run in ended:
        samples = await asyncio.to_thread(store.samples, run.run_id)
        step = samples[samples["step_index"] == run.step_index]
        if step.empty:
            continue
        code = await cycler.last_end(run.channel)
        n_sub = len(run.compiled.program.steps) if run.compiled is not None else 1
        result = await apply_end(run, end_record_from_samples(step, code, n_sub))
        if result is not None:
            results.append(result)
    return ended, results


def anchor_started_steps(runs: list[ChannelRun], offset_s: float | None) -> None:
    """Anchor every started step on the host clock from the measured clock offset (without one, the first drained
    records anchor them): a checkpoint that fell due while no host was there is read against the right start."""
    if offset_s is None:
        return
    for run in runs:
        if not run.terminal and run.account.started_s is not None and not (run.compiled and run.compiled.host_step):
            run.step_t0_host_s = anchor_s(run.account.started_s, offset_s)
