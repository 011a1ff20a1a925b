"""The daily lot report: per lot, what happened in one day of clock time and what was still unfinished at its end.

A day ends at the site's ``daily_at`` (the host's local time) and begins at the same local time the day before,
so consecutive reports tile without a gap or an overlap (23 or 25 hours across a change of daylight saving time).
Times are the store's clock seconds; the window is half-open, ``[start, end)``.

One row per lot that had any activity in the window or unfinished work at its end:

- ``cells``: the lot's cells.
- ``runs_running``: runs that existed by the end and had not finished by then (queued, pending ones included);
  ``runs_done`` / ``runs_faulted`` / ``runs_aborted``: runs that ended in the window in that state.
- ``ageing_jobs_running``: ageing jobs begun by the end and not ended by then; ``ageing_jobs_done``: ended done in
  the window.
- ``graded_cells`` and ``grade_<name>``: each cell of the lot counted once, by its latest grade given before the end
  (whatever the rules version); ``yield_a_pct``: the A share of the graded cells. Grade columns are A, B, C, NG,
  then any other name the store holds, sorted.
- ``alarms_critical`` / ``alarms_warning``: alarms raised in the window on a run of the lot, or on a job with cells
  of the lot (alarms of no run or job — a chamber, a health check — belong to no lot and are not here).
- ``first_activity`` / ``last_activity``: the earliest and latest event of the lot in the window (a cell
  registered, a run started or ended, a step ended, an ageing job begun or ended, a reading, a grade, an alarm);
  empty for a lot that is here for its unfinished work only.

Seven aggregate queries (cells, runs, step results, ageing jobs, ageing readings, grades, alarms), each grouped by
lot in the database, whatever the number of lots and cells. The file is written beside its name and renamed into
place, so a reader never sees half of one; a day without activity still gets a file, with the header only.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, union

from formation.states import TERMINAL_RUN_STATES, RunState
from formation.store.ageing import OPEN_AGEING_STATES
from formation.store.models import AgeingJob, AgeingReading, Alarm, Cell, Grade, Run, StepResult
from formation.store.store import Store

#: The grades most rules use, always given a column, in this order; other names follow sorted.
USUAL_GRADES: tuple[str, ...] = ("A", "B", "C", "NG")
#: Columns before the grade columns, and after them.
HEAD_COLUMNS: tuple[str, ...] = (
    "lot",
    "cells",
    "runs_running",
    "runs_done",
    "runs_faulted",
    "runs_aborted",
    "ageing_jobs_running",
    "ageing_jobs_done",
    "graded_cells",
)
TAIL_COLUMNS: tuple[str, ...] = (
    "yield_a_pct",
    "alarms_critical",
    "alarms_warning",
    "first_activity",
    "last_activity",
    "window_start",
    "window_end",
)
_COUNTS = (*HEAD_COLUMNS[1:], "alarms_critical", "alarms_warning")
_TERMINAL = sorted(s.value for s in TERMINAL_RUN_STATES)
FILE_PREFIX = "lot-report-"


# -- the day ------------------------------------------------------------------------------------------------------


def report_time(day: date, hour_minute: tuple[int, int]) -> float:
    """Unix seconds of ``daily_at`` on ``day`` in the host's local time."""
    return datetime.combine(day, time(*hour_minute)).timestamp()  # naive: local time, daylight saving included


def report_window(day: date, hour_minute: tuple[int, int]) -> tuple[float, float]:
    """The window of the report dated ``day``: from ``daily_at`` the day before to ``daily_at`` on ``day``."""
    return report_time(day - timedelta(days=1), hour_minute), report_time(day, hour_minute)


def latest_report_day(now_s: float, hour_minute: tuple[int, int]) -> date:
    """The date of the latest report due at ``now_s`` (today once ``daily_at`` has passed, else yesterday)."""
    today = datetime.fromtimestamp(now_s).date()
    return today if report_time(today, hour_minute) <= now_s else today - timedelta(days=1)


def nearest_report_day(now_s: float, hour_minute: tuple[int, int]) -> date:
    """The date whose report time is nearest ``now_s``: what a timer firing around a report time is for, whether
    it fired a little late or (a scaled clock against the scheduler's wall time) a little early."""
    today = datetime.fromtimestamp(now_s).date()
    days = (today - timedelta(days=1), today, today + timedelta(days=1))
    return min(days, key=lambda d: abs(report_time(d, hour_minute) - now_s))


def report_path(folder: str | Path, day: date) -> Path:
    """``<folder>/lot-report-YYYY-MM-DD.csv``."""
    return Path(folder) / f"{FILE_PREFIX}{day.isoformat()}.csv"


# -- the queries --------------------------------------------------------------------------------------------------


def _t(model: Any) -> Any:
    return model.__table__


def _count(condition: ColumnElement[bool]) -> Any:
    return func.sum(case((condition, 1), else_=0))


class _Window:
    """Builds the report's queries for one window ``[start_s, end_s)``."""

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s

    def inside(self, column: Any) -> ColumnElement[bool]:
        return and_(column >= self.start_s, column < self.end_s)

    def first_last(self, *columns: Any) -> list[Any]:
        """min and max of each column over its values inside the window (NULL outside)."""
        out: list[Any] = []
        for i, column in enumerate(columns):
            inside = case((self.inside(column), column))
            out += [func.min(inside).label(f"first_{i}"), func.max(inside).label(f"last_{i}")]
        return out

    def open_at_end(self, ended: Any, state: Any, open_states: Sequence[str]) -> ColumnElement[bool]:
        """Not finished by the end: no end yet (in an open state), or an end after it."""
        return or_(and_(ended.is_(None), state.in_(list(open_states))), ended >= self.end_s)

    def cells(self) -> Select[Any]:
        cell = _t(Cell)
        # Every cell of the lot, whenever registered: cells are stamped by the store's clock, which in a simulated
        # plant need not be the line's.
        return select(
            cell.c.lot_id.label("lot"), func.count().label("cells"), *self.first_last(cell.c.created_s)
        ).group_by(cell.c.lot_id)

    def runs(self) -> Select[Any]:
        run, cell = _t(Run), _t(Cell)
        open_states = sorted(s.value for s in RunState if s.value not in _TERMINAL)

        def ended(state: RunState) -> Any:
            return _count(and_(run.c.state == state.value, self.inside(run.c.ended_s))).label(f"runs_{state.value}")

        return (
            select(
                cell.c.lot_id.label("lot"),
                _count(self.open_at_end(run.c.ended_s, run.c.state, open_states)).label("runs_running"),
                ended(RunState.DONE),
                ended(RunState.FAULTED),
                ended(RunState.ABORTED),
                *self.first_last(run.c.started_s, run.c.ended_s),
            )
            .join(cell, cell.c.id == run.c.cell_id)
            .where(run.c.started_s < self.end_s, or_(run.c.ended_s.is_(None), run.c.ended_s >= self.start_s))
            .group_by(cell.c.lot_id)
        )

    def steps(self) -> Select[Any]:
        sr, run, cell = _t(StepResult), _t(Run), _t(Cell)
        return (
            select(cell.c.lot_id.label("lot"), *self.first_last(sr.c.started_s, sr.c.ended_s))
            .join(run, run.c.id == sr.c.run_id)
            .join(cell, cell.c.id == run.c.cell_id)
            .where(or_(self.inside(sr.c.started_s), self.inside(sr.c.ended_s)))
            .group_by(cell.c.lot_id)
        )

    def ageing_jobs(self) -> Select[Any]:
        job = _t(AgeingJob)
        return (
            select(
                job.c.lot_id.label("lot"),
                _count(self.open_at_end(job.c.ended_s, job.c.state, OPEN_AGEING_STATES)).label("ageing_jobs_running"),
                _count(and_(job.c.state == "done", self.inside(job.c.ended_s))).label("ageing_jobs_done"),
                *self.first_last(job.c.started_s, job.c.ended_s),
            )
            .where(job.c.started_s < self.end_s, or_(job.c.ended_s.is_(None), job.c.ended_s >= self.start_s))
            .group_by(job.c.lot_id)
        )

    def readings(self) -> Select[Any]:
        reading, job = _t(AgeingReading), _t(AgeingJob)
        return (
            select(job.c.lot_id.label("lot"), *self.first_last(reading.c.ts_s))
            .join(job, job.c.id == reading.c.ageing_job_id)
            .where(self.inside(reading.c.ts_s))
            .group_by(job.c.lot_id)
        )

    def grades(self) -> Select[Any]:
        grade = _t(Grade)
        newest = func.row_number().over(
            partition_by=grade.c.cell_id, order_by=(grade.c.graded_s.desc(), grade.c.id.desc())
        )
        ranked = (
            select(grade.c.lot_id, grade.c.grade, grade.c.graded_s, newest.label("newest"))
            .where(grade.c.graded_s < self.end_s)
            .subquery("ranked")
        )
        return select(
            ranked.c.lot_id.label("lot"),
            ranked.c.grade,
            _count(ranked.c.newest == 1).label("n"),
            *self.first_last(ranked.c.graded_s),
        ).group_by(ranked.c.lot_id, ranked.c.grade)

    def alarms(self) -> Select[Any]:
        alarm, run, cell = _t(Alarm), _t(Run), _t(Cell)
        columns = (alarm.c.id, alarm.c.severity, alarm.c.ts_s, cell.c.lot_id)
        on_run = (
            select(*columns)
            .join(run, run.c.id == alarm.c.run_id)
            .join(cell, cell.c.id == run.c.cell_id)
            .where(self.inside(alarm.c.ts_s))
        )
        on_job = (  # an alarm of a whole job counts once for each lot with cells in the job
            select(*columns)
            .join(run, run.c.job_id == alarm.c.job_id)
            .join(cell, cell.c.id == run.c.cell_id)
            .where(alarm.c.run_id.is_(None), self.inside(alarm.c.ts_s))
        )
        lots = union(on_run, on_job).subquery("alarm_lot")  # UNION: one row per (alarm, lot)
        return select(
            lots.c.lot_id.label("lot"),
            _count(lots.c.severity == "critical").label("alarms_critical"),
            _count(lots.c.severity == "warning").label("alarms_warning"),
            *self.first_last(lots.c.ts_s),
        ).group_by(lots.c.lot_id)


# -- the report ---------------------------------------------------------------------------------------------------


def grade_names(names: Sequence[str]) -> list[str]:
    """The grade columns' names: the usual ones in their order, then any others sorted."""
    extra = sorted({str(n) for n in names} - set(USUAL_GRADES))
    return [*USUAL_GRADES, *extra]


def _activity(frame: pd.DataFrame) -> pd.DataFrame:
    """Per lot of one query's rows, the earliest of its ``first_*`` and the latest of its ``last_*`` (NaN: none)."""
    firsts = frame[[c for c in frame.columns if c.startswith("first_")]].apply(pd.to_numeric)
    lasts = frame[[c for c in frame.columns if c.startswith("last_")]].apply(pd.to_numeric)
    return pd.DataFrame(
        {"first": firsts.min(axis=1).astype(np.float64), "last": lasts.max(axis=1).astype(np.float64)}
    ).set_index(frame["lot"].astype(str))


def _grade_counts(grades: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``grade_<name>`` columns: per lot, how many cells have that grade as their latest."""
    rows = grades.assign(lot=grades["lot"].astype(str), grade=grades["grade"].astype(str), n=pd.to_numeric(grades["n"]))
    table = rows.pivot_table(index="lot", columns="grade", values="n", aggfunc="sum", fill_value=0)
    return table.reindex(columns=names, fill_value=0).rename(columns=lambda g: f"grade_{g}")


def lot_report(store: Store, start_s: float, end_s: float) -> pd.DataFrame:
    """The report of window ``[start_s, end_s)`` (clock seconds): one row per lot, sorted by lot; the counts as
    integers, ``yield_a_pct`` (NaN with no graded cell), activity and window times as unix seconds (NaN: none)."""
    window = _Window(start_s, end_s)
    counted = [store.query_frame(q) for q in (window.cells(), window.runs(), window.ageing_jobs(), window.alarms())]
    steps, readings, grades = (store.query_frame(q) for q in (window.steps(), window.readings(), window.grades()))
    names = grade_names(grades["grade"].astype(str).tolist())
    grade_columns = [f"grade_{g}" for g in names]
    # Every part is indexed by lot; an outer join keeps a lot any part knows.
    parts = [frame.drop(columns=[c for c in frame.columns if c.startswith(("first_", "last_"))]) for frame in counted]
    report = pd.concat([p.set_index(p["lot"].astype(str)).drop(columns="lot") for p in parts], axis=1)
    report = report.join(_grade_counts(grades, names), how="outer")
    activity = pd.concat([_activity(f) for f in (*counted, steps, readings, grades)])
    report = report.join(activity.groupby(level=0).agg({"first": "min", "last": "max"}), how="outer")
    numbers = [*_COUNTS, *grade_columns]
    report = report.reindex(columns=[*numbers, "first", "last"])
    report[numbers] = report[numbers].apply(pd.to_numeric).fillna(0).astype("int64")
    report["graded_cells"] = report[grade_columns].sum(axis=1).astype("int64")
    busy = (report["runs_running"] > 0) | (report["ageing_jobs_running"] > 0) | report["first"].notna()
    report = report[busy].sort_index()
    graded = report["graded_cells"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        report["yield_a_pct"] = np.where(graded > 0, 100.0 * report["grade_A"].to_numpy() / graded, np.nan)
    report = report.rename(columns={"first": "first_activity", "last": "last_activity"})
    report["window_start"], report["window_end"] = float(start_s), float(end_s)
    return report.rename_axis("lot").reset_index()[[*HEAD_COLUMNS, *grade_columns, *TAIL_COLUMNS]]


def _iso_utc(seconds: float) -> str:
    """ISO-8601 UTC to the second (``2026-12-02T06:00:00Z``); empty for NaN."""
    if not np.isfinite(seconds):
        return ""
    return datetime.fromtimestamp(np.floor(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_csv(report: pd.DataFrame) -> str:
    """The report as CSV text: counts as integers, the yield to two decimals, times in ISO-8601 UTC."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(report.columns)
    times = {"first_activity", "last_activity", "window_start", "window_end"}
    for row in report.itertuples(index=False):
        fields: list[str] = []
        for column, value in zip(report.columns, row, strict=True):
            if column == "lot":
                fields.append(str(value))
            elif column in times:
                fields.append(_iso_utc(float(value)))
            elif column == "yield_a_pct":
                fields.append("" if not np.isfinite(value) else f"{value:.2f}")
            else:
                fields.append(str(int(value)))
        writer.writerow(fields)
    return buffer.getvalue()


def write_atomically(text: str, path: Path) -> Path:
    """Write ``text`` to a temporary file beside ``path``, flushed to disk, then rename it to ``path``: a reader
    finds the old file, or none, or the whole new one. The folder is made if its parent exists."""
    path.parent.mkdir(exist_ok=True)
    # Not mkstemp: its file is the owner's alone (0600); this one gets the umask's mode, as any file written.
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.partial"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_daily_report(
    store: Store, folder: str | Path, day: date, hour_minute: tuple[int, int]
) -> tuple[Path, pd.DataFrame]:
    """Query and write the report dated ``day`` into ``folder``; its path and its rows."""
    start_s, end_s = report_window(day, hour_minute)
    report = lot_report(store, start_s, end_s)
    return write_atomically(report_csv(report), report_path(folder, day)), report
