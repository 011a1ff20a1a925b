"""The daily lot report of a running Line: written once at start when the latest is missing, at daily_at on the
wall clock, every simulated day on a scaled clock (with a simulated cabinet running a queued job), and a report
that cannot be written is an alarm in the store and on the feed while the line goes on."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import aiomqtt
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from formation.clock import ScaledClock, WallClock
from formation.config import CabinetConfig, MqttConfig, SiteConfig
from formation.feed import FeedPublisher
from formation.orchestrator.job import assign_cells, queue_job
from formation.orchestrator.line import Line
from formation.orchestrator.reports import JOB_ID
from formation.recipes import loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.site_report import ReportConfig
from formation.store import Store
from formation.store.lotreport import latest_report_day, report_path, report_time
from tests.integration.feed_support import clear_retained, unique_topics
from tests.integration.test_serve import RECIPE, cells


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'line.db'}") as s:
        s.create_schema()
        yield s


def site_with(folder: Path, daily_at: str = "06:00", **site: object) -> SiteConfig:
    return SiteConfig(report=ReportConfig(daily_at=daily_at, folder=str(folder)), **site)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], wall_s: float) -> bool:
    deadline = time.monotonic() + wall_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


async def test_the_latest_report_is_caught_up_once_at_start_and_the_next_is_due_at_daily_at(
    store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    site = site_with(folder)
    day = latest_report_day(time.time(), (6, 0))
    async with Line(site, store, WallClock()) as line:
        assert line.reports is not None
        job = line.reports.scheduler.get_job(JOB_ID)
        assert isinstance(job.trigger, CronTrigger)
        # The next run is the next 06:00 of the host's local time.
        assert job.next_run_time.timestamp() == report_time(day + timedelta(days=1), (6, 0))
    assert line.reports.written == [report_path(folder, day)]
    assert report_path(folder, day).read_text(encoding="utf-8").startswith("lot,cells,runs_running,")
    # A second start finds the report there and leaves it alone (the daemon was not down at 06:00).
    report_path(folder, day).write_text("kept\n", encoding="utf-8")
    async with Line(site, store, WallClock()) as line:
        pass
    assert line.reports is not None and line.reports.written == []
    assert report_path(folder, day).read_text(encoding="utf-8") == "kept\n"


async def test_a_disabled_report_is_neither_scheduled_nor_caught_up(store: Store, tmp_path: Path) -> None:
    site = SiteConfig(report=ReportConfig(folder=str(tmp_path / "reports"), enabled=False))
    async with Line(site, store, WallClock()) as line:
        assert line.reports is not None and line.reports.scheduler.get_job(JOB_ID) is None
    assert not (tmp_path / "reports").exists()


async def test_a_scaled_clock_writes_a_report_every_simulated_day_and_the_windows_tile(
    store: Store, tmp_path: Path
) -> None:
    # Two wall seconds a simulated day; the clock starts a simulated hour before 06:00 of 1 June 2026.
    scale = 43_200.0
    first = date(2026, 6, 1)
    clock = ScaledClock(scale, start=report_time(first, (6, 0)) - 3600.0)
    # A run begun days before and unfinished: in every report.
    began_s = clock.now() - 3 * 86400.0
    store.upsert_lot_and_cells([("U1", "L-UNFINISHED", 5.0)])
    store.save_recipe("e" * 64, "r", "1", None, 5.0, "{}", "")
    job = store.create_job("e" * 64, "cab1", "1", scale, began_s)
    run = {"cell_id": "U1", "cabinet": "cab1", "channel": 1, "instrument_cell": 1001, "state": "running"}
    store.create_runs(job, [{**run, "started_s": began_s}])
    folder = tmp_path / "reports"
    days = [first - timedelta(days=1), first, first + timedelta(days=1)]
    async with Line(site_with(folder, clock_scale=scale), store, clock) as line:
        assert line.reports is not None
        trigger = line.reports.scheduler.get_job(JOB_ID).trigger
        assert isinstance(trigger, IntervalTrigger) and trigger.interval.total_seconds() == 86400.0 / scale
        assert await until(lambda: all(report_path(folder, d).exists() for d in days), 30.0)
    # The one before the clock's start is the catch-up; then one per simulated day, each starting where the one
    # before ended.
    windows = [(r["window_start"], r["window_end"]) for d in days for r in rows(report_path(folder, d))]
    assert len(windows) == 3 and windows[0][1] == windows[1][0] and windows[1][1] == windows[2][0]
    assert all(
        r["lot"] == "L-UNFINISHED" and r["runs_running"] == "1" for d in days for r in rows(report_path(folder, d))
    )


async def test_a_line_with_a_simulated_cabinet_reports_the_lot_it_ran(store: Store, tmp_path: Path) -> None:
    scale = 2000.0
    day = date(2026, 6, 1)
    clock = ScaledClock(scale, start=report_time(day, (6, 0)) - 1800.0)  # 06:00 comes after 0.9 s of wall time
    spec = CabinetSpec(name="cab1", channels=8, preset="ncm21700-5ah", seed=4, port=0, formed=True)
    folder = tmp_path / "reports"
    async with SimulatedPlant([spec], clock) as plant:
        cabinet = CabinetConfig(
            name="cab1", resource=plant.cabinets["cab1"].resource, channels=8, poll_interval_s=10.0, timeout_s=2.0
        )
        site = site_with(folder, cabinets=(cabinet,), clock_scale=scale)
        recipe = loads_recipe(RECIPE, "toml", source="serve-test.toml")
        queue_job(cabinet, recipe, assign_cells(range(1, 5), cells("P"), recipe), store, clock)
        async with Line(site, store, clock, lease_s=6.0) as line:
            assert await until(lambda: report_path(folder, day).exists(), 30.0)
    assert line.reports is not None and line.reports.failed == []
    assert rows(report_path(folder, day - timedelta(days=1))) == []  # the catch-up: the job came after its day
    (lot,) = rows(report_path(folder, day))
    # Queued before 06:00: running then, or already done (40 simulated minutes of steps against 30 before 06:00).
    assert lot["lot"] == "LOT-P" and lot["cells"] == "4"
    assert int(lot["runs_running"]) + int(lot["runs_done"]) == 4 and lot["runs_faulted"] == lot["runs_aborted"] == "0"


async def test_a_report_that_cannot_be_written_is_an_alarm_in_the_store_and_on_the_feed(
    store: Store, tmp_path: Path, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    topics = unique_topics()
    (tmp_path / "file").write_text("x")
    folder = tmp_path / "file" / "reports"  # under a file: nothing can be made there
    site = site_with(folder, site=topics.site, line=topics.line)
    broker = MqttConfig(host=host, port=port, interval_s=0.2, keepalive_s=5)
    heard: list[dict[str, object]] = []
    try:
        async with aiomqtt.Client(host, port) as client:
            await client.subscribe(topics.events(), qos=1)

            async def first_alarm() -> None:
                async for message in client.messages:
                    payload = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
                    if payload.get("code") == "lot_report":
                        heard.append(payload)
                        return

            async with (
                FeedPublisher(broker, topics.site, topics.line) as feed,
                Line(site, store, WallClock(), feed=feed) as line,
            ):
                await asyncio.wait_for(first_alarm(), 20.0)
                assert line.reports is not None
                assert await until(lambda: bool(store.alarms()), 10.0)
                assert line.reports.scheduler.get_job(JOB_ID) is not None  # tomorrow's is still due
    finally:
        await clear_retained(host, port, topics)
    day = latest_report_day(time.time(), (6, 0)).isoformat()
    (alarm,) = store.alarms()
    assert (alarm.code, alarm.severity) == ("lot_report", "warning")
    assert f"daily lot report {day} not written to {folder}" in alarm.message
    assert heard[0]["event"] == "alarm" and heard[0]["message"] == alarm.message
    assert line.reports.failed == [date.fromisoformat(day)] and line.reports.written == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "line.db", "line.db-shm", "line.db-wal"]
