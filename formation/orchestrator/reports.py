"""The daily lot report of a running line (``[report]`` of the site file; the report itself: ``store/lotreport.py``).

On the line's scheduler: at clock scale 1 a cron job at ``daily_at`` in the host's local time; at any other scale
(a simulated plant) an interval job every 86 400 clock seconds (86 400 / scale wall seconds) from the next
``daily_at`` of the clock, so a simulated day's report still covers ``daily_at`` to ``daily_at`` of clock time.
When the line starts, the latest report due is written if its file is missing (the daemon was down at its time).

The report is queried and written in a worker thread. A failure (a folder that cannot be written, a database that
refuses) costs a ``lot_report`` warning in the store and on the feed and a log line; the line goes on, and the next
day's report is tried as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from formation.clock import Clock
from formation.errors import FormationError
from formation.site_report import ReportConfig
from formation.store import Store
from formation.store.lotreport import (
    latest_report_day,
    nearest_report_day,
    report_path,
    report_time,
    write_daily_report,
)

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink

log = logging.getLogger(__name__)

#: The scheduler job's id (one per line).
JOB_ID = "daily-lot-report"
#: Wall seconds a stopping line waits for a report being written before it leaves it.
STOP_WAIT_S = 10.0
ALARM_CODE = "lot_report"
DAY_S = 86400.0


class DailyReports:
    """Writes the daily lot report on the line's scheduler, and once at start if the latest is missing; an async
    context manager. ``written`` lists the reports written, ``failed`` the dates that could not be."""

    def __init__(
        self,
        config: ReportConfig,
        store: Store,
        clock: Clock,
        scheduler: BaseScheduler,
        *,
        feed: FeedSink | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.scheduler = scheduler
        self.feed = feed
        self._on_event = on_event
        self.written: list[Path] = []
        self.failed: list[date] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DailyReports:
        if not self.config.enabled:
            return self
        self.scheduler.add_job(self._due, self.trigger(), id=JOB_ID, name="daily lot report", replace_existing=True)
        self._start(latest_report_day(self.clock.now(), self.config.hour_minute), catch_up=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.scheduler.get_job(JOB_ID) is not None:
            self.scheduler.remove_job(JOB_ID)
        if not self._tasks:
            return
        # A report being written is let finish (a rename away from a whole file); one stuck on a database is left.
        _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_S)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def trigger(self) -> BaseTrigger:
        """When reports are due: ``daily_at`` local time at scale 1, else every 86 400 clock seconds from the next
        ``daily_at`` of the clock."""
        hour, minute = self.config.hour_minute
        if self.clock.scale == 1.0:
            return CronTrigger(hour=hour, minute=minute)  # no timezone: the host's local one
        now_s = self.clock.now()
        next_day = latest_report_day(now_s, self.config.hour_minute) + timedelta(days=1)
        wait_wall_s = (report_time(next_day, self.config.hour_minute) - now_s) / self.clock.scale
        start = datetime.now(UTC) + timedelta(seconds=wait_wall_s)
        return IntervalTrigger(seconds=DAY_S / self.clock.scale, start_date=start, timezone=UTC)

    async def _due(self) -> None:
        # The nearest report time, not the latest passed: on a fast clock the wall-time timer may fire a hair early.
        self._start(nearest_report_day(self.clock.now(), self.config.hour_minute))

    def _start(self, day: date, *, catch_up: bool = False) -> None:
        task = asyncio.create_task(self.write(day, catch_up=catch_up), name=f"lot-report-{day.isoformat()}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(self, day: date, *, catch_up: bool = False) -> None:
        """Write the report dated ``day`` (with ``catch_up``, only if its file is missing); a failure is an alarm."""
        try:
            written = await asyncio.to_thread(self._write, day, catch_up)
        except Exception as exc:  # whatever it is, the line goes on: said, stored and published
            await self._failed(day, " ".join(str(exc).split()) or type(exc).__name__)
            return
        if written is None:
            return
        path, lots = written
        self.written.append(path)
        self._say(logging.INFO, f"lot report {path}: {lots} lot(s){' (caught up)' if catch_up else ''}")

    def _write(self, day: date, catch_up: bool) -> tuple[Path, int] | None:
        if catch_up and report_path(self.config.folder, day).exists():
            return None
        path, report = write_daily_report(self.store, self.config.folder, day, self.config.hour_minute)
        return path, len(report)

    async def _failed(self, day: date, reason: str) -> None:
        self.failed.append(day)
        message = f"daily lot report {day.isoformat()} not written to {self.config.folder}: {reason}"
        self._say(logging.WARNING, message)
        if self.feed is not None:
            from formation.feed.payloads import FeedEvent

            try:
                self.feed.publish_event(FeedEvent(event="alarm", severity="warning", code=ALARM_CODE, message=message))
            except Exception:
                log.exception("feed: alarm %s not published", ALARM_CODE)
        try:
            await asyncio.to_thread(
                self.store.add_alarm, ts_s=self.clock.now(), severity="warning", code=ALARM_CODE, message=message
            )
        except FormationError as exc:  # the database that failed the report may refuse the alarm too
            log.error("alarm %s not stored: %s", ALARM_CODE, exc)

    def _say(self, level: int, text: str) -> None:
        log.log(level, "%s", text)
        if self._on_event is not None:
            self._on_event(text)
