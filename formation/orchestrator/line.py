"""Line: every cabinet of one site run as a service (`formation serve`), work taken from the database queue.

Per cabinet of the site, one named task: take the cabinet's lease (`orchestrator/lease.py`); while it is held,
re-attach to the cabinet's unfinished jobs (a previous daemon's, or a foreground process's that died), then claim
queued jobs one at a time (`formation run launch` writes them; `--at` sets their start time) and supervise each to
its end. One set of timers (age checkpoints) serves every cabinet; a job whose recipe asks for temperatures holds
its cabinet's chamber as a foreground job does. The daily lot report is written on the same timers
(``orchestrator/reports.py``).

Stopping (SIGTERM): every supervisor stops after its poll, drains and journals; its job is left ``interrupted``
with its cells running on the instrument (they own their step ends; its watchdog switches them off if no host
comes back in time); the leases are released, so the next daemon re-attaches at once. A cabinet whose lease is
lost (another daemon took it after this one failed to renew) is dropped the same way. Faults never end the
daemon: an instrument that does not answer costs an alarm and a retry after ``RETRY_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from formation.clock import Clock
from formation.config import CabinetConfig, SiteConfig
from formation.errors import FormationError
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.ageing import drive_rack
from formation.orchestrator.cabinet import CabinetSupervisor, PollStats
from formation.orchestrator.chamber_loop import open_chamber_loop
from formation.orchestrator.job import abort_and_drain, job_recipe
from formation.orchestrator.lease import LEASE_S, CabinetLeaseKeeper, process_owner
from formation.orchestrator.reports import DailyReports
from formation.orchestrator.timers import LineTimers
from formation.recipes import chamber_setpoints
from formation.states import RESUMABLE_JOB_STATES
from formation.store import Store

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink

log = logging.getLogger(__name__)

#: Wall seconds between attempts at a cabinet that failed (unreachable instrument, refused re-attach).
RETRY_S = 10.0
#: Wall seconds between looks at the queue of an idle cabinet, at least (the cabinet's poll interval otherwise).
MIN_IDLE_POLL_S = 0.05
#: Wall seconds between health checks of an idle cabinet (``*IDN?`` and its error queue); a busy one is polled.
HEALTH_EVERY_S = 300.0


@dataclass
class CabinetSlot:
    """What the line knows of one cabinet right now (read by `formation serve`'s status line and tests)."""

    name: str
    leased: bool = False
    job_id: int | None = None
    jobs_done: list[int] = field(default_factory=list)
    last_error: str | None = None


class Line:
    """Every cabinet of ``site`` driven from the database queue under leases; an async context manager."""

    def __init__(
        self,
        site: SiteConfig,
        store: Store,
        clock: Clock,
        *,
        feed: FeedSink | None = None,
        owner: str | None = None,
        lease_s: float = LEASE_S,
        on_event: Callable[[str], None] | None = None,
        health_every_s: float = HEALTH_EVERY_S,
        on_poll: Callable[[str, PollStats], None] | None = None,
    ) -> None:
        self.site = site
        self.store = store
        self.clock = clock
        self.feed = feed
        self.owner = owner or process_owner("serve")
        self.lease_s = lease_s
        self.slots = {c.name: CabinetSlot(c.name) for c in site.cabinets}
        self._on_event = on_event
        self._on_poll = on_poll
        self.health_every_s = health_every_s
        self._stop = asyncio.Event()
        self._timers: LineTimers | None = None
        self.reports: DailyReports | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Line:
        self._timers = await self._stack.enter_async_context(LineTimers(self.store, self.clock))
        # The daily lot report: on the same scheduler, written off the event loop (orchestrator/reports.py).
        self.reports = await self._stack.enter_async_context(
            DailyReports(
                self.site.report,
                self.store,
                self.clock,
                self._timers.scheduler,
                feed=self.feed,
                on_event=self._on_event,
            )
        )
        self._tasks = [asyncio.create_task(self._drive(c), name=f"line-{c.name}") for c in self.site.cabinets]
        # The ageing room: each rack a tester reaches runs its ageing jobs (orchestrator/ageing.py).
        for tester in self.site.testers:
            self._tasks += [
                asyncio.create_task(
                    drive_rack(
                        self.site,
                        self.store,
                        self.clock,
                        rack,
                        self._timers,
                        self._stop,
                        self.owner,
                        feed=self.feed,
                        on_event=self._event,
                    ),
                    name=f"line-rack-{rack}",
                )
                for rack in tester.racks
            ]
        # Periodic, so nothing to persist: the scheduler's in-memory store (timers keep no code in the database).
        for cabinet in self.site.cabinets:
            self._timers.scheduler.add_job(
                self.check_health, "interval", seconds=self.health_every_s, args=[cabinet], id=f"health-{cabinet.name}"
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            await self._stack.aclose()

    def stop(self) -> None:
        """Stop every cabinet after its current poll; the cells keep running on their instruments."""
        self._stop.set()

    async def wait(self) -> None:
        """Until ``stop()``."""
        await self._stop.wait()

    def _event(self, text: str) -> None:
        log.info("%s", text)
        if self._on_event is not None:
            self._on_event(text)

    # -- one cabinet ---------------------------------------------------------------------------------------------
    async def _drive(self, cabinet: CabinetConfig) -> None:
        slot = self.slots[cabinet.name]
        keeper = CabinetLeaseKeeper(self.store, cabinet.name, self.owner, ttl_s=self.lease_s)
        idle_s = max(cabinet.poll_interval_s / self.clock.scale, MIN_IDLE_POLL_S)
        try:
            while not self._stop.is_set():
                if not await keeper.try_acquire():
                    if slot.leased:
                        self._event(f"cabinet {cabinet.name}: lease lost")
                    slot.leased = False
                    await self._sleep(min(self.lease_s / 3.0, RETRY_S))
                    continue
                if not slot.leased:
                    self._event(f"cabinet {cabinet.name}: leased by {self.owner}")
                slot.leased = True
                job_id, resume = await asyncio.to_thread(self._next_job, cabinet.name)
                if job_id is None:
                    await self._sleep(idle_s)
                    continue
                ok = await self._run(cabinet, keeper, job_id, resume)
                if not ok:
                    await self._sleep(RETRY_S)
        finally:
            if slot.leased:
                with contextlib.suppress(FormationError):
                    await asyncio.to_thread(self.store.release_lease, cabinet.name, self.owner)
                slot.leased = False

    def _next_job(self, cabinet: str) -> tuple[int | None, bool]:
        """An unfinished job of the cabinet to re-attach to, else a queued one claimed now."""
        unfinished = self.store.jobs_in_states(cabinet, RESUMABLE_JOB_STATES)
        if unfinished:
            job_id = unfinished[0].id
            assert job_id is not None
            return job_id, True
        return self.store.claim_job(cabinet, self.owner, self.clock.now()), False

    async def _run(self, cabinet: CabinetConfig, keeper: CabinetLeaseKeeper, job_id: int, resume: bool) -> bool:
        """Supervise one job to its end (or to a stop); False when it could not be started or re-attached."""
        slot = self.slots[cabinet.name]
        slot.job_id = job_id
        keeper.lost.clear()
        renew = asyncio.create_task(self._keep_lease(keeper), name=f"lease-{cabinet.name}")
        try:
            async with contextlib.AsyncExitStack() as stack:
                chamber = None
                if cabinet.chamber is not None:
                    recipe = await asyncio.to_thread(job_recipe, self.store, job_id)
                    if recipe is not None and chamber_setpoints(recipe):
                        site_chamber = self.site.chamber(cabinet.chamber)
                        chamber = await stack.enter_async_context(
                            open_chamber_loop(site_chamber, self.clock, self.store, self.feed)
                        )
                session = await stack.enter_async_context(
                    ScpiSession(cabinet.resource, timeout_s=cabinet.timeout_s, name=cabinet.name)
                )
                supervisor = await stack.enter_async_context(
                    CabinetSupervisor(
                        cabinet.name,
                        Bt2200Cycler(session),
                        self.store,
                        self.clock,
                        poll_interval_s=cabinet.poll_interval_s,
                        watchdog_s=cabinet.watchdog_s,
                        n_channels=cabinet.channels,
                        timers=self._timers,
                        chamber=chamber,
                        feed=self.feed,
                    )
                )
                try:
                    await (supervisor.reattach(job_id) if resume else supervisor.start_queued(job_id))
                except FormationError as exc:
                    slot.last_error = str(exc)
                    self._event(
                        f"cabinet {cabinet.name}: job {job_id} not {'re-attached' if resume else 'started'}: {exc}"
                    )
                    if not resume and supervisor.job_id is not None:
                        await asyncio.shield(self._abort(supervisor))
                    return False
                self._event(f"cabinet {cabinet.name}: job {job_id} {'re-attached' if resume else 'started'}")
                watcher = asyncio.create_task(self._stop_when_asked(supervisor, keeper), name=f"stop-{cabinet.name}")
                try:
                    on_poll = self._on_poll
                    await supervisor.run_until_done(
                        (lambda stats: on_poll(cabinet.name, stats)) if on_poll is not None else None,
                        phase=self._phase(cabinet.name),
                    )
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                job = await asyncio.to_thread(self.store.get_job, job_id)
                state = job.state if job is not None else "?"
                self._event(f"cabinet {cabinet.name}: job {job_id} {state}")
                if supervisor.finished:
                    slot.jobs_done.append(job_id)
                return True
        except FormationError as exc:  # the instrument or chamber could not be opened
            slot.last_error = str(exc)
            self._event(f"cabinet {cabinet.name}: job {job_id}: {exc}")
            return False
        finally:
            slot.job_id = None
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def check_health(self, cabinet: CabinetConfig) -> str | None:
        """``*IDN?`` and the error queue of an idle cabinet this line leases; an alarm when either is wrong.

        Returns the problem (None when healthy, busy, or not ours). A running job's supervisor polls its cabinet
        anyway, so a busy cabinet is left alone: one connection per instrument.
        """
        slot = self.slots[cabinet.name]
        if not slot.leased or slot.job_id is not None:
            return None
        problem: str | None = None
        try:
            async with ScpiSession(cabinet.resource, timeout_s=cabinet.timeout_s, name=cabinet.name) as session:
                identity = await Bt2200Cycler(session).identify()
                errors = await session.check_errors("health check")
            if errors:
                listed = "; ".join(f"{e.code} {e.scpi_message}" for e in errors[:5])
                problem = f"{identity}: {len(errors)} error(s) in its queue: {listed}"
        except FormationError as exc:
            problem = f"does not answer: {exc}"
        if problem is not None:
            slot.last_error = problem
            self._event(f"cabinet {cabinet.name}: health check: {problem}")
            with contextlib.suppress(FormationError):
                await asyncio.to_thread(
                    self.store.add_alarm,
                    ts_s=self.clock.now(),
                    severity="warning",
                    code="health_check",
                    message=f"cabinet {cabinet.name} {problem}",
                    cabinet=cabinet.name,
                )
        return problem

    def _phase(self, cabinet: str) -> float:
        """Where in the poll interval this cabinet polls: the site's cabinets spread evenly, so 16 cabinets in one
        process take turns on the event loop instead of all polling at once (bench/bench_scale.py)."""
        names = [c.name for c in self.site.cabinets]
        return names.index(cabinet) / len(names)

    async def _keep_lease(self, keeper: CabinetLeaseKeeper) -> None:
        """Renew the lease every third of its length while a job runs; set ``lost`` when it is gone."""
        misses = 0
        while True:
            await asyncio.sleep(self.lease_s / 3.0)
            if await keeper.try_acquire():
                misses = 0
                continue
            misses += 1
            if misses >= 2:  # two thirds of the lease without renewal: another daemon may take it any moment
                keeper.lost.set()
                return

    async def _stop_when_asked(self, supervisor: CabinetSupervisor, keeper: CabinetLeaseKeeper) -> None:
        stop = asyncio.create_task(self._stop.wait())
        lost = asyncio.create_task(keeper.lost.wait())
        try:
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, lost):
                task.cancel()
        if keeper.lost.is_set():
            self._event(f"cabinet {supervisor.name}: lease lost; leaving job {supervisor.job_id} to its new holder")
        supervisor.stop()

    async def _abort(self, supervisor: CabinetSupervisor) -> None:
        await abort_and_drain(supervisor)

    async def _sleep(self, wall_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=wall_s)
