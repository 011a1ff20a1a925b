"""Re-attach helpers on an SQLite store: what a restarted host believes about each run's start (no socket)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from formation.errors import InputError
from formation.instruments.program import LOG_COL, CellState
from formation.orchestrator.cabinet import resume
from formation.recipes import load_builtin
from formation.states import JobState, RunState, StartState
from formation.store import Store

RECIPE = load_builtin("ncm21700-formation")


def _job(store: Store, journals: list[dict[str, object]], state: JobState = JobState.RUNNING) -> tuple[int, list[int]]:
    cells = [(f"C{i}", "L", 5.0) for i in range(1, len(journals) + 1)]
    store.upsert_lot_and_cells(cells)
    store.save_recipe(
        RECIPE.sha256, RECIPE.name, RECIPE.version, RECIPE.chemistry, RECIPE.nominal_capacity_ah,
        RECIPE.canonical_json(), RECIPE.source_text,
    )  # fmt: skip
    job_id = store.create_job(RECIPE.sha256, "cab", f"1-{len(cells)}", 1.0, 0.0, state=state)
    run_ids = store.create_runs(
        job_id,
        [
            {"cell_id": c, "cabinet": "cab", "channel": i + 1, "instrument_cell": 1001 + i, "state": "running",
             "step_index": int(j["step_index"]), "journal": json.dumps(j), "started_s": 0.0}  # type: ignore[call-overload]
            for i, ((c, _, _), j) in enumerate(zip(cells, journals, strict=True))
        ],
    )  # fmt: skip
    return job_id, run_ids


def _samples(run_id: int, step_index: int, t0: float, n: int) -> np.ndarray:
    """A stored sample block: run id, rec, time, step index, step time, V, A, Ah, °C."""
    t = t0 + np.arange(n) * 10.0
    return np.column_stack(
        [np.full(n, run_id), np.arange(1, n + 1) + 1000 * run_id, t, np.full(n, step_index), t - t0,
         np.linspace(3.6, 3.7, n), np.full(n, 2.5), (t - t0) * 2.5 / 3600.0, np.full(n, 25.0)]
    )  # fmt: skip


def test_restore_marks_every_start_neither_journalled_nor_recorded_unsure(store: Store) -> None:
    journals = [
        {"step_index": 2, "start": "awaiting"},
        {"step_index": 2, "start": "sent"},  # the host died waiting for the reply
        {"step_index": 2, "awaiting_start": True},  # a journal written before start states existed
        {"step_index": 2, "start": "started"},  # the reply came back: its records are still on the instrument
        {"step_index": 2, "awaiting_start": False},
    ]
    job_id, run_ids = _job(store, journals)
    store.write_samples(_samples(run_ids[1], 1, 100.0, 3))  # records of the previous step only
    restored = resume.restore_job(store, job_id)
    assert [r.start for r in restored.runs] == [StartState.UNSURE] * 3 + [StartState.STARTED] * 2
    assert [r.step_index for r in restored.runs] == [2] * 5


def test_a_pending_run_with_stored_records_is_running(store: Store) -> None:
    """The old host died after the first start but before journalling it: the records prove the start."""
    job_id, run_ids = _job(store, [{"step_index": 0}])
    store.update_runs([{"id": run_ids[0], "state": "pending"}])
    store.write_samples(_samples(run_ids[0], 0, 10.0, 2))
    run = resume.restore_job(store, job_id).runs[0]
    assert (run.state, run.start) == (RunState.RUNNING, StartState.STARTED)


def test_restore_takes_the_start_from_the_stored_records(store: Store) -> None:
    job_id, run_ids = _job(store, [{"step_index": 1, "start": "awaiting"}])
    store.write_samples(_samples(run_ids[0], 1, 500.0, 4))
    restored = resume.restore_job(store, job_id)
    run = restored.runs[0]
    assert run.start is StartState.STARTED
    assert run.account.started_s == 500.0 and run.account.start_voltage_v == pytest.approx(3.6)
    assert restored.latest_sample_s == 530.0
    assert run.step_t0_host_s is None  # anchored on the host clock by the supervisor after its first drain


@pytest.mark.parametrize("state", [JobState.DONE, JobState.FAULTED, JobState.ABORTED])
def test_a_finished_job_is_not_resumed(store: Store, state: JobState) -> None:
    job_id, _ = _job(store, [{"step_index": 0}], state=state)
    with pytest.raises(InputError, match=f"is {state.value}: nothing to resume"):
        resume.restore_job(store, job_id)


def test_end_record_and_log_rows_from_stored_samples(store: Store) -> None:
    _, run_ids = _job(store, [{"step_index": 1}])
    store.write_samples(_samples(run_ids[0], 1, 0.0, 361))  # one hour at 2.5 A, 3.6 -> 3.7 V
    step = store.samples(run_ids[0])
    end = resume.end_record_from_samples(step, end_code=11, n_sub_steps=1)
    assert (end.time_s, end.end_code, end.sub_step) == (3600.0, 11, 1)
    assert end.step_ah == pytest.approx(2.5)
    assert end.step_wh == pytest.approx(2.5 * 3.65, rel=1e-3)  # ∫V·I dt over the logged curve
    rows = resume.log_rows_from_samples(step, sub_step=1)
    assert rows.shape == (361, len(LOG_COL)) and (rows[:, LOG_COL["step"]] == 1).all()
    assert rows[-1, LOG_COL["voltage_v"]] == pytest.approx(3.7)


def test_ended_unprocessed_needs_a_started_step_and_a_finished_instrument_state(store: Store) -> None:
    job_id, run_ids = _job(store, [{"step_index": 1}, {"step_index": 1}, {"step_index": 1}])
    for rid in run_ids:
        store.write_samples(_samples(rid, 1, 0.0, 3))
    runs = resume.restore_job(store, job_id).runs
    runs[2].transition(RunState.FAULTED)
    status = np.array([int(CellState.DONE), int(CellState.RUNNING), int(CellState.DONE)])
    assert resume.ended_unprocessed(runs, status) == [runs[0]]
