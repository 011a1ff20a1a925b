"""The daily lot report from a real store (SQLite file and PostgreSQL): counts per lot, the window's edges, grade
columns, the CSV as written, and a day without activity."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from formation.store import Store, sqlite_url
from formation.store.lotreport import (
    HEAD_COLUMNS,
    TAIL_COLUMNS,
    lot_report,
    report_path,
    write_daily_report,
)
from tests.integration.lotreport_support import COUNT_COLUMNS, DAY, EXPECTED, HOUR_MINUTE, H, SetClock, fill


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "formation.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> SetClock:
    return SetClock(0.0)


@pytest.fixture
def store(url: str, clock: SetClock) -> Iterator[Store]:
    with Store(url, clock=clock) as st:
        st.create_schema()
        yield st


def test_counts_per_lot_in_the_window_and_unfinished_work(store: Store, clock: SetClock) -> None:
    start, end = fill(store, clock)
    report = lot_report(store, start, end)
    grade_columns = ["grade_A", "grade_B", "grade_C", "grade_NG", "grade_Q"]
    assert list(report.columns) == [*HEAD_COLUMNS, *grade_columns, *TAIL_COLUMNS]
    assert report["lot"].tolist() == sorted(EXPECTED)  # not L-OLD (all before), not L-LATER (all after)
    for lot, expected in EXPECTED.items():
        row = report.set_index("lot").loc[lot]
        assert tuple(int(row[c]) for c in COUNT_COLUMNS) == expected[:-2], lot
        first, last = expected[-2:]
        if first is None:
            assert np.isnan(row["first_activity"]) and np.isnan(row["last_activity"]), lot
        else:
            assert (row["first_activity"], row["last_activity"]) == (start + first * H, start + last * H)
    by_lot = report.set_index("lot")
    assert by_lot.loc["L-DONE", "yield_a_pct"] == pytest.approx(200.0 / 3.0)
    assert by_lot.loc["L-AGE", "yield_a_pct"] == 0.0
    assert np.isnan(by_lot.loc["L-RUN", "yield_a_pct"])
    assert (report["window_start"] == start).all() and (report["window_end"] == end).all()


def test_the_csv_file_as_written(store: Store, clock: SetClock, tmp_path: Path) -> None:
    start, end = fill(store, clock)
    folder = tmp_path / "reports"
    path, report = write_daily_report(store, folder, DAY, HOUR_MINUTE)
    assert path == report_path(folder, DAY) == folder / "lot-report-2026-03-10.csv"
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary file left beside it
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert [r["lot"] for r in rows] == report["lot"].tolist()
    done = next(r for r in rows if r["lot"] == "L-DONE")
    assert done["yield_a_pct"] == "66.67" and done["grade_NG"] == "1" and done["alarms_warning"] == "3"
    iso = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (start, start + 5 * H, end)]
    assert (done["first_activity"], done["last_activity"]) == (iso[0], iso[1])
    assert (done["window_start"], done["window_end"]) == (iso[0], iso[2])
    queued = next(r for r in rows if r["lot"] == "L-QUEUED")
    assert queued["first_activity"] == queued["last_activity"] == queued["yield_a_pct"] == ""


def test_a_day_without_activity_is_a_file_with_the_header_only(store: Store, clock: SetClock, tmp_path: Path) -> None:
    fill(store, clock)
    path, report = write_daily_report(store, tmp_path, DAY.replace(year=2020), HOUR_MINUTE)
    assert report.empty
    header = ",".join([*HEAD_COLUMNS, "grade_A", "grade_B", "grade_C", "grade_NG", *TAIL_COLUMNS])
    assert path.read_text(encoding="utf-8") == header + "\n"  # no grade given by then: the usual columns only


def test_an_empty_store_gives_the_header_only(store: Store, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path, report = write_daily_report(store, tmp_path / "r", DAY, HOUR_MINUTE)
    finally:
        os.umask(umask)
    assert report.empty and path.read_text(encoding="utf-8").count("\n") == 1
    assert path.stat().st_mode & 0o777 == 0o644  # readable by whoever reads reports, as any file written


def test_a_report_that_cannot_be_written_leaves_nothing(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "file").write_text("x")
    with pytest.raises(OSError):
        write_daily_report(store, out / "file", DAY, HOUR_MINUTE)
    with pytest.raises(OSError):
        write_daily_report(store, out / "no" / "such" / "folder", DAY, HOUR_MINUTE)
    assert sorted(p.name for p in out.iterdir()) == ["file"]
