"""A store filled for the daily lot report: lots with runs in every state, steps, ageing jobs and readings, grades
under two rules versions and alarms, placed around one day's window; and what the report must say of them."""

from __future__ import annotations

from datetime import date

import pandas as pd

from formation.states import JobState
from formation.store import Store
from formation.store.lotreport import report_window

SHA = "c" * 64
DAY = date(2026, 3, 10)
HOUR_MINUTE = (6, 0)
H = 3600.0


class SetClock:
    """A clock the test sets (the store reads ``now()`` for the times it stamps itself)."""

    scale = 1.0

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - the store never sleeps
        raise AssertionError("the store never sleeps")


def _runs(store: Store, job_id: int, cells: list[str], started_s: float, state: str) -> list[int]:
    rows = [
        {"cell_id": c, "cabinet": "cab1", "channel": i + 1, "instrument_cell": 1001 + i, "state": state}
        for i, c in enumerate(cells)
    ]
    return store.create_runs(job_id, [{**r, "started_s": started_s} for r in rows])


def _grades(store: Store, lot: str, grades: dict[str, str], rules: str, graded_s: float) -> None:
    frame = pd.DataFrame(
        {"cell_id": list(grades), "lot": lot, "run_id": None, "grade": list(grades.values()), "reason": ""}
    )
    store.save_grades(frame, rules_sha256=rules * 64, rules_name=f"rules-{rules}", graded_s=graded_s)


def fill(store: Store, clock: SetClock) -> tuple[float, float]:
    """Five lots around the window of DAY (see EXPECTED); the window (start, end) in clock seconds."""
    s, e = report_window(DAY, HOUR_MINUTE)
    clock.now_s = s - 30 * 86400.0
    store.upsert_lot_and_cells([*((f"D{i}", "L-DONE", 5.0) for i in (1, 2, 3)), ("O1", "L-OLD", 5.0)])
    store.upsert_lot_and_cells([("G1", "L-AGE", 5.0), ("G2", "L-AGE", 5.0), ("Q1", "L-QUEUED", 5.0)])
    store.save_recipe(SHA, "r", "1", "NCM", 5.0, "{}", "")

    # L-DONE: three runs begun before the window, ended in it done, faulted and aborted.
    job1 = store.create_job(SHA, "cab1", "1-3", 1.0, s - 2 * H)
    d1, d2, d3 = _runs(store, job1, ["D1", "D2", "D3"], s - 2 * H, "running")
    store.update_runs(
        [
            {"id": d1, "state": "done", "ended_s": s + 1 * H},
            {"id": d2, "state": "faulted", "ended_s": s + 2 * H},
            {"id": d3, "state": "aborted", "ended_s": s + 3 * H},
        ]
    )
    step = {"kind": "charge", "duration_s": 1.0, "ah": 1.0, "wh": 3.7, "end_reason": "duration"}
    store.add_step_results(
        [
            {**step, "run_id": d1, "step_index": 0, "started_s": s - 3 * H, "ended_s": s - 1 * H},
            {**step, "run_id": d1, "step_index": 1, "started_s": s - 1 * H, "ended_s": s + 0.5 * H},
        ]
    )
    _grades(store, "L-DONE", {"D1": "B"}, "0", s - 10 * H)  # superseded by the newer rules below
    _grades(store, "L-DONE", {"D1": "A", "D2": "A", "D3": "NG"}, "1", s + 4 * H)
    store.add_alarm(s, "warning", "w", "at the window's start: in", run_id=d1, job_id=job1)
    store.add_alarm(s + 1 * H, "warning", "w", "on a run", run_id=d1, job_id=job1)
    store.add_alarm(s + 2 * H, "critical", "c", "on a run", run_id=d2, job_id=job1)
    store.add_alarm(s + 3 * H, "warning", "w", "on the job", job_id=job1)
    store.add_alarm(s + 5 * H, "info", "i", "activity, not counted", run_id=d1, job_id=job1)
    store.add_alarm(s - 1, "critical", "c", "before the window", run_id=d1, job_id=job1)
    store.add_alarm(e, "critical", "c", "at the window's end: the next day's", run_id=d1, job_id=job1)
    store.add_alarm(s + 1 * H, "critical", "chamber", "no run, no job: no lot", cabinet="chamber1")

    # L-OLD: finished before the window; nothing since.
    old = store.create_job(SHA, "cab1", "4", 1.0, s - 9 * H)
    (o1,) = _runs(store, old, ["O1"], s - 9 * H, "running")
    store.update_runs([{"id": o1, "state": "done", "ended_s": s - 5 * H}])

    # L-RUN: cells registered and a job begun in the window, both runs still running; one alarm on the job.
    clock.now_s = s + 6 * H
    store.upsert_lot_and_cells([("R1", "L-RUN", 5.0), ("R2", "L-RUN", 5.0)])
    job2 = store.create_job(SHA, "cab2", "1-2", 1.0, s + 6 * H)
    _runs(store, job2, ["R1", "R2"], s + 6.5 * H, "running")
    store.add_alarm(s + 7 * H, "critical", "c", "on the job: once for the lot", job_id=job2)

    # L-QUEUED: a job queued days ago, not started: unfinished work, no activity in the window.
    job3 = store.create_job(SHA, "cab3", "1", 1.0, s - 2 * 86400.0, state=JobState.QUEUED)
    _runs(store, job3, ["Q1"], s - 2 * 86400.0, "pending")

    # L-AGE: one ageing job running since days ago (readings in the window), one that ended done in it; grades
    # given before the window (still the latest), one of a name other than the usual ones.
    plan = {"plan_name": "p", "plan_sha256": "d" * 64, "plan_json": "{}", "rack": "rack1"}
    running = store.create_ageing_job(lot_id="L-AGE", state="running", started_s=s - 5 * 86400.0, **plan)
    done = store.create_ageing_job(lot_id="L-AGE", state="running", started_s=s - 3 * 86400.0, **plan)
    store.set_ageing_job_state(done, "done", ended_s=s + 9 * H)
    reading = {"ageing_job_id": running, "cell_id": "G1", "position": 1, "stage": 0, "ocv_v": 3.6}
    store.add_ageing_readings([{**reading, "k": 0, "ts_s": s - 4 * 86400.0}, {**reading, "k": 1, "ts_s": s + 8 * H}])
    _grades(store, "L-AGE", {"G1": "B", "G2": "Q"}, "2", s - 20 * H)

    # After the window: nothing of this is in the report.
    clock.now_s = e + 1 * H
    store.upsert_lot_and_cells([("F1", "L-LATER", 5.0)])
    job4 = store.create_job(SHA, "cab4", "1", 1.0, e + 1 * H)
    _runs(store, job4, ["F1"], e + 1 * H, "running")
    return s, e


#: lot -> (cells, running, done, faulted, aborted, ageing running, ageing done, graded, A, B, C, NG, Q, crit, warn,
#: first activity and last activity as hours after the window's start, None for none)
EXPECTED: dict[str, tuple[int | float | None, ...]] = {
    "L-AGE": (2, 0, 0, 0, 0, 1, 1, 2, 0, 1, 0, 0, 1, 0, 0, 8.0, 9.0),
    "L-DONE": (3, 0, 1, 1, 1, 0, 0, 3, 2, 0, 0, 1, 0, 1, 3, 0.0, 5.0),
    "L-QUEUED": (1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None),
    "L-RUN": (2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 6.0, 7.0),
}
COUNT_COLUMNS = (
    "cells",
    "runs_running",
    "runs_done",
    "runs_faulted",
    "runs_aborted",
    "ageing_jobs_running",
    "ageing_jobs_done",
    "graded_cells",
    "grade_A",
    "grade_B",
    "grade_C",
    "grade_NG",
    "grade_Q",
    "alarms_critical",
    "alarms_warning",
)
