"""The daily lot report's day: its window from local ``daily_at`` to local ``daily_at``, tiling across daylight
saving time, and which report is due or meant at a given moment (host time zones set per test)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from formation.store.lotreport import (
    grade_names,
    latest_report_day,
    nearest_report_day,
    report_path,
    report_time,
    report_window,
)

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local time is Berlin's (daylight saving time from the last Sunday of March to October's)."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


@pytest.mark.usefixtures("berlin")
def test_the_window_runs_from_daily_at_to_daily_at_in_local_time() -> None:
    assert report_window(date(2026, 3, 10), (6, 0)) == (at(2026, 3, 9, 6), at(2026, 3, 10, 6))
    start, end = report_window(date(2026, 3, 29), (6, 0))  # clocks go forward at 02:00: a 23-hour day
    assert (start, end) == (at(2026, 3, 28, 6), at(2026, 3, 29, 6)) and end - start == 23 * 3600
    start, end = report_window(date(2026, 10, 25), (6, 0))  # and back: 25 hours
    assert end - start == 25 * 3600
    # Consecutive reports tile: each starts where the one before ended.
    days = [date(2026, 3, d) for d in range(27, 32)]
    windows = [report_window(d, (6, 30)) for d in days]
    assert all(a[1] == b[0] for a, b in pairwise(windows))


@pytest.mark.usefixtures("berlin")
def test_the_latest_report_due_is_today_once_daily_at_has_passed() -> None:
    assert latest_report_day(at(2026, 12, 2, 5, 59, 59), (6, 0)) == date(2026, 12, 1)
    assert latest_report_day(at(2026, 12, 2, 6, 0), (6, 0)) == date(2026, 12, 2)
    assert latest_report_day(at(2026, 12, 2, 23, 59), (6, 0)) == date(2026, 12, 2)
    assert latest_report_day(at(2026, 12, 2, 0, 10), (0, 0)) == date(2026, 12, 2)
    assert latest_report_day(at(2026, 12, 2, 23, 58), (23, 59)) == date(2026, 12, 1)


@pytest.mark.usefixtures("berlin")
def test_a_timer_firing_near_a_report_time_means_that_report() -> None:
    assert nearest_report_day(at(2026, 12, 2, 5, 59, 59), (6, 0)) == date(2026, 12, 2)  # a little early
    assert nearest_report_day(at(2026, 12, 2, 6, 0, 2), (6, 0)) == date(2026, 12, 2)  # a little late
    assert nearest_report_day(at(2026, 12, 2, 23, 50), (0, 0)) == date(2026, 12, 3)
    assert nearest_report_day(at(2026, 3, 29, 7, 0), (6, 0)) == date(2026, 3, 29)


def test_report_time_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert report_time(date(2026, 12, 2), (6, 0)) == datetime(2026, 12, 2, 6, tzinfo=ZoneInfo("UTC")).timestamp()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_file_name_and_the_grade_columns() -> None:
    assert str(report_path("reports", date(2026, 1, 5))) == "reports/lot-report-2026-01-05.csv"
    assert grade_names([]) == ["A", "B", "C", "NG"]
    assert grade_names(["NG", "Z", "A", "A+", "B"]) == ["A", "B", "C", "NG", "A+", "Z"]
