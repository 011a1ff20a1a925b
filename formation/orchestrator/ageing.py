"""The ageing room's I/O shell: one ageing job run on its rack (plan: ``formation/ageing/plan.py``).

:class:`AgeingRunner` (an async context manager with one named task) follows the plan from the job's time zero:
the rack's chamber holds each stage's set point in turn, and each checkpoint — a persistent timer of kind
``ageing_checkpoint`` in ``line_timers`` (``orchestrator/timers.py``: plain rows, fired once, also after a restart)
— reads OCV and ACIR of every cell of the job through the tester in one scan pass. Each reading is stored with its
time, the cell temperature (the chamber air the cells sit in: the tester has no probe) and the chamber's state.
A position the tester cannot read (no contact, over range) or a tester that does not answer (timeout) gives the
reading a reason instead of numbers, and an alarm. After the last checkpoint K is fit per cell
(``formation/ageing/kvalue.py``) and stored with its standard error; the job is done.

Re-attach: a runner that starts on an open job takes every checkpoint that is due, has no readings and no pending
timer (a host that died mid-scan) at once, schedules those that lost their row, and waits for the rest. Readings are
unique per (job, checkpoint, cell), so nothing is stored twice. Stopping (SIGTERM, Ctrl-C) leaves the job
``interrupted`` with its timers in the database: the next runner takes it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from formation.ageing import AgeingPlan, fit_k, parse_plan
from formation.clock import Clock
from formation.config import SiteConfig
from formation.errors import FormationError, InstrumentError, StoreError, TransportError
from formation.instruments.bt3562 import Bt3562Tester, TesterReading, scanner_channel
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.chamber_loop import ChamberLoop, open_chamber_loop
from formation.orchestrator.timers import LineTimers, ageing_timer_id
from formation.site_ageing import TesterSite
from formation.store import AgeingJobRow, Store

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink

log = logging.getLogger(__name__)

#: Clock seconds between looks at the stage (set point) and the checkpoints due; stretched to MIN_WALL_S.
PERIOD_S = 300.0
MIN_WALL_S = 0.05
#: Positions in a row that time out before the rest of the pass is given up (each would wait its timeout).
MAX_TIMEOUTS_IN_A_ROW = 3
TIMEOUT_REASON = "timeout"


@dataclass(frozen=True)
class RackCell:
    """A cell of the job and where it sits."""

    cell_id: str
    position: int
    channel: int


class AgeingRunner:
    """Runs one ageing job to its end (or to a stop); an async context manager with one named task."""

    def __init__(
        self,
        job: AgeingJobRow,
        store: Store,
        clock: Clock,
        timers: LineTimers,
        tester: Bt3562Tester,
        tester_site: TesterSite,
        chamber: ChamberLoop | None = None,
        *,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.job = job
        self.plan: AgeingPlan = parse_plan(json.loads(job.plan_json), f"ageing job {job.id}")
        self.store = store
        self.clock = clock
        self.timers = timers
        self.tester = tester
        self.tester_site = tester_site
        self.chamber = chamber
        self._on_event = on_event
        self.rack = job.rack
        self.cells: list[RackCell] = []
        self.taken: set[int] = set()
        self.done = asyncio.Event()
        self._due: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.period_s = max(PERIOD_S, MIN_WALL_S * clock.scale)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    async def __aenter__(self) -> AgeingRunner:
        job = self.job
        slot = self.tester_site.slot(self.rack)
        places = await asyncio.to_thread(self.store.rack_places, rack=self.rack)
        lot_cells = await asyncio.to_thread(self._lot_cells)
        self.cells = [
            RackCell(p.cell_id, p.position, scanner_channel(slot, p.position)) for p in places if p.cell_id in lot_cells
        ]
        if not self.cells:
            raise FormationError(f"ageing job {job.id}: no cell of lot {job.lot_id} sits on rack {self.rack}")
        await self.tester.configure(
            resistance_range_ohm=self.tester_site.resistance_range_ohm, sample_rate=self.tester_site.sample_rate
        )
        await asyncio.to_thread(self.store.set_ageing_job_state, job.id, "running", owner=job.owner)
        self.taken = await asyncio.to_thread(self.store.taken_checkpoints, job.id)
        self._catch_up()
        self.timers.register_ageing(self.rack, self)
        self._task = asyncio.create_task(self._run(), name=f"ageing-{self.rack}-{job.id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.timers.unregister_ageing(self.rack, self)
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.done.is_set():
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(
                    self.store.set_ageing_job_state, self.job.id, "interrupted", expect=("running",)
                )

    def stop(self) -> None:
        """Stop after the scan in progress; the job is left ``interrupted`` with its timers in the database."""
        self._stop.set()

    async def run_until_done(self) -> bool:
        """Until the last checkpoint is read and K stored (True), or until stopped (False)."""
        stop = asyncio.create_task(self._stop.wait(), name=f"ageing-stop-{self.job.id}")
        done = asyncio.create_task(self.done.wait(), name=f"ageing-done-{self.job.id}")
        try:
            assert self._task is not None
            await asyncio.wait({stop, done, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stop, done):
                task.cancel()
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # a bug in the loop surfaces here
        return self.done.is_set()

    def on_ageing_checkpoint(self, job_id: int, stage: int, k: int) -> None:
        """A fired timer (``orchestrator/timers.py``): take checkpoint ``k`` on the next turn of the loop."""
        if job_id == self.job.id and k not in self.taken:
            self._due.put_nowait((stage, k))

    # -- the loop ------------------------------------------------------------------------------------------------
    def _lot_cells(self) -> set[str]:
        return {r.cell_id for r in self.store.latest_runs(self.job.lot_id)}

    def _catch_up(self) -> None:
        """Checkpoints due with no readings and no pending timer are taken now; future ones without a row scheduled."""
        pending = set(self.timers.pending())
        now_s = self.clock.now()
        missing: list[tuple[int, int, float]] = []
        for c in self.plan.checkpoints():
            if c.k in self.taken or ageing_timer_id(self.rack, self.job.id, c.k) in pending:
                continue
            at_s = self.job.started_s + c.at_s
            if at_s <= now_s:
                self._due.put_nowait((c.stage, c.k))
            else:
                missing.append((c.stage, c.k, at_s))
        if missing:
            self.timers.schedule_ageing_checkpoints(self.rack, self.job.id, missing)

    async def _run(self) -> None:
        while not self._stop.is_set():
            # Checkpoints first: one at the end of a stage is read before the chamber moves to the next.
            while not self._due.empty():
                stage, k = self._due.get_nowait()
                if k in self.taken:
                    continue
                await self._checkpoint(stage, k)
            self._follow_stage()
            if len(self.taken) == len(self.plan.checkpoints()):
                await self._finish()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake(), timeout=self.period_s / self.clock.scale)

    async def _wake(self) -> None:
        """Until a checkpoint is due (or the stop): the loop's sleep, cut short by the timer."""
        stage, k = await self._due.get()
        self._due.put_nowait((stage, k))

    def _follow_stage(self) -> None:
        if self.chamber is None:
            return
        stage = self.plan.stages[self.plan.stage_at(self.clock.now() - self.job.started_s)]
        if self.chamber.setpoint_c != stage.setpoint_c:
            self.chamber.set_setpoint(stage.setpoint_c)
            self._event(f"rack {self.rack}: stage {stage.id}, chamber {self.chamber.name} to {stage.setpoint_c:g} °C")

    # -- one checkpoint -----------------------------------------------------------------------------------------
    async def _checkpoint(self, stage: int, k: int) -> None:
        """Read every cell of the job in one scan pass, store the readings, alarm on what the tester could not read."""
        readings, faults = await self._scan()
        rows = [self._row(cell, stage, k, ts_s, reading, reason) for cell, ts_s, reading, reason in readings]
        await asyncio.to_thread(self.store.add_ageing_readings, rows)
        self.taken.add(k)
        self._event(f"rack {self.rack}: checkpoint {k} read, {len(rows) - len(faults)}/{len(rows)} cells")
        await self._alarm_faults(k, faults)

    async def _scan(self) -> tuple[list[tuple[RackCell, float, TesterReading | None, str | None]], list[str]]:
        out: list[tuple[RackCell, float, TesterReading | None, str | None]] = []
        faults: list[str] = []
        timeouts = 0
        for cell in self.cells:
            reading: TesterReading | None = None
            reason: str | None = None
            if timeouts >= MAX_TIMEOUTS_IN_A_ROW:
                reason = TIMEOUT_REASON
            else:
                try:
                    reading = await self.tester.read(cell.channel)
                    timeouts = 0
                    fault = reading.fault
                    reason = None if fault is None else str(fault)
                except TransportError:
                    timeouts += 1
                    reason = TIMEOUT_REASON
                except InstrumentError as exc:  # an error reply or garbage: this position has no number
                    reason = f"tester error: {exc}"[:200]
            if reason is not None:
                faults.append(f"{cell.position}:{reason}")
            out.append((cell, self.clock.now(), reading, reason))
        return out, faults

    def _row(
        self, cell: RackCell, stage: int, k: int, ts_s: float, reading: TesterReading | None, reason: str | None
    ) -> dict[str, Any]:
        chamber = self.chamber
        temperature_c = None if chamber is None or math.isnan(chamber.temperature_c) else chamber.temperature_c
        ok = reading is not None and reading.ok and reason is None
        return {
            "ageing_job_id": self.job.id,
            "cell_id": cell.cell_id,
            "position": cell.position,
            "k": k,
            "stage": stage,
            "ts_s": ts_s,
            "ocv_v": reading.voltage_v if ok and reading is not None else None,
            "acir_mohm": reading.resistance_ohm * 1000.0 if ok and reading and reading.resistance_ohm else None,
            "cell_temperature_c": temperature_c,
            "chamber_setpoint_c": None if chamber is None else chamber.setpoint_c,
            "chamber_temperature_c": temperature_c,
            "chamber_in_band": None if chamber is None or chamber.last_step is None else chamber.in_band,
            "chamber_stable": None if chamber is None or chamber.last_step is None else chamber.stable,
            "reason": reason,
        }

    async def _alarm_faults(self, k: int, faults: list[str]) -> None:
        if not faults:
            return
        by_reason: dict[str, list[str]] = {}
        for item in faults:
            position, reason = item.split(":", 1)
            by_reason.setdefault(reason, []).append(position)
        for reason, positions in sorted(by_reason.items()):
            code = "tester_timeout" if reason == TIMEOUT_REASON else f"tester_{reason.split(':')[0].replace(' ', '_')}"
            severity = "critical" if reason == TIMEOUT_REASON else "warning"
            shown = ", ".join(positions[:20]) + (" …" if len(positions) > 20 else "")
            message = f"rack {self.rack} checkpoint {k}: {reason} at {len(positions)} position(s): {shown}"
            self._event(message)
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.add_alarm, self.clock.now(), severity, code[:40], message)

    # -- the end ------------------------------------------------------------------------------------------------
    async def _finish(self) -> None:
        results = await asyncio.to_thread(self._results)
        await asyncio.to_thread(self.store.save_ageing_results, self.job.id, results)
        await asyncio.to_thread(self.store.set_ageing_job_state, self.job.id, "done", ended_s=self.clock.now())
        fitted = sum(1 for r in results if r["k_mv_per_day"] is not None)
        self._event(f"rack {self.rack}: ageing job {self.job.id} done, K of {fitted}/{len(results)} cells")
        self.done.set()

    def _results(self) -> list[dict[str, Any]]:
        return ageing_results_rows(
            self.store, self.job.id, self.plan, [c.cell_id for c in self.cells], self.clock.now()
        )

    def _event(self, text: str) -> None:
        log.info("%s", text)
        if self._on_event is not None:
            self._on_event(text)


def ageing_results_rows(
    store: Store, job_id: int, plan: AgeingPlan, cells: list[str], computed_s: float
) -> list[dict[str, Any]]:
    """K per cell from a job's stored readings (the plan's fit window), with the last valid OCV and ACIR."""
    frame = store.ageing_readings(job_id=job_id)
    window = plan.k_window
    ks = [c.k for c in plan.k_checkpoints()]
    index = {cell: i for i, cell in enumerate(cells)}
    shape = (len(cells), len(ks))
    t, v, temp = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    rows = frame[frame["cell_id"].isin(index) & frame["k"].isin(ks)]
    if len(rows):
        r = rows["cell_id"].map(index).to_numpy(dtype=np.int64)
        c = rows["k"].map({k: j for j, k in enumerate(ks)}).to_numpy(dtype=np.int64)
        ocv = rows["ocv_v"].to_numpy(dtype=np.float64, na_value=np.nan)
        t[r, c] = np.where(np.isfinite(ocv), rows["ts_s"].to_numpy(dtype=np.float64), np.nan)
        v[r, c] = ocv
        temp[r, c] = rows["cell_temperature_c"].to_numpy(dtype=np.float64, na_value=np.nan)
    fit = fit_k(
        t,
        v,
        temp,
        reference_c=window.reference_c,
        ocv_temp_coeff_mv_per_k=window.ocv_temp_coeff_mv_per_k,
        min_points=window.min_points,
    )
    faults = frame[frame["reason"].notna() & frame["k"].isin(ks)].groupby("cell_id")["reason"]
    fault_text = {cell: ", ".join(sorted(set(reasons))) for cell, reasons in faults}
    valid = frame[frame["ocv_v"].notna()].sort_values(["k", "position"])
    last = valid.drop_duplicates("cell_id", keep="last").set_index("cell_id")
    out: list[dict[str, Any]] = []

    def number(x: float) -> float | None:
        return float(x) if math.isfinite(x) else None

    for i, cell in enumerate(cells):
        reason = str(fit.reason[i])
        if reason and cell in fault_text:
            reason = f"{reason} (tester: {fault_text[cell]})"
        out.append(
            {
                "ageing_job_id": job_id,
                "cell_id": cell,
                "k_mv_per_day": number(fit.k_mv_per_day[i]),
                "k_se_mv_per_day": number(fit.k_se_mv_per_day[i]),
                "n_points": int(fit.n_points[i]),
                "window_start_s": number(fit.window_start_s[i]),
                "window_end_s": number(fit.window_end_s[i]),
                "temperature_c": number(fit.temperature_c[i]),
                "reference_c": window.reference_c,
                "ocv_v": number(float(last.at[cell, "ocv_v"])) if cell in last.index else None,
                "acir_mohm": number(float(last.at[cell, "acir_mohm"])) if cell in last.index else None,
                "reason": reason,
                "computed_s": computed_s,
            }
        )
    return out


@contextlib.asynccontextmanager
async def open_ageing_runner(
    site: SiteConfig,
    store: Store,
    clock: Clock,
    job: AgeingJobRow,
    timers: LineTimers,
    *,
    feed: FeedSink | None = None,
    on_event: Callable[[str], None] | None = None,
) -> AsyncIterator[AgeingRunner]:
    """Open the rack's tester, its chamber's loop (when it stands in one) and the runner of ``job``."""
    tester_site = site.tester_of(job.rack)
    if tester_site is None:
        raise FormationError(f"ageing job {job.id}: no tester of the site reaches rack {job.rack}")
    rack = site.rack(job.rack)
    async with contextlib.AsyncExitStack() as stack:
        chamber = None
        if rack.chamber is not None:
            chamber = await stack.enter_async_context(open_chamber_loop(site.chamber(rack.chamber), clock, store, feed))
        session = ScpiSession(tester_site.resource, timeout_s=tester_site.timeout_s, name=tester_site.name)
        tester = await stack.enter_async_context(Bt3562Tester(session))
        runner = AgeingRunner(job, store, clock, timers, tester, tester_site, chamber, on_event=on_event)
        if chamber is not None:
            runner._follow_stage()  # the first stage's set point before the first reading
        yield await stack.enter_async_context(runner)


#: States a line takes an ageing job up from (a ``running`` one only when its owner is gone or is this line).
TAKEN_UP = ("queued", "interrupted", "running")


def _next_ageing_job(store: Store, rack: str, owner: str) -> AgeingJobRow | None:
    """The rack's oldest open ageing job this line may run, claimed for ``owner``; None when there is none."""
    from formation.orchestrator.lease import owner_is_dead_here

    for job in store.ageing_jobs(rack=rack, states=TAKEN_UP):
        if job.state == "running" and job.owner not in (None, owner) and not owner_is_dead_here(job.owner):
            continue  # a live process (a foreground `age start`, another daemon) runs it
        if store.set_ageing_job_state(job.id, "running", owner=owner, expect=(job.state,)):
            return job._replace(state="running", owner=owner)
    return None


async def drive_rack(
    site: SiteConfig,
    store: Store,
    clock: Clock,
    rack: str,
    timers: LineTimers,
    stop: asyncio.Event,
    owner: str,
    *,
    feed: FeedSink | None = None,
    on_event: Callable[[str], None] | None = None,
    idle_wall_s: float = 1.0,
    retry_wall_s: float = 10.0,
) -> None:
    """The daemon's loop for one rack: take up its open ageing jobs one at a time and run each until done or stop."""
    while not stop.is_set():
        job = await asyncio.to_thread(_next_ageing_job, store, rack, owner)
        wait_s = idle_wall_s
        if job is not None:
            try:
                async with open_ageing_runner(site, store, clock, job, timers, feed=feed, on_event=on_event) as runner:
                    if on_event is not None:
                        on_event(f"rack {rack}: ageing job {job.id} taken up")
                    watcher = asyncio.create_task(stop.wait(), name=f"ageing-watch-{rack}")
                    work = asyncio.create_task(runner.run_until_done(), name=f"ageing-job-{rack}")
                    await asyncio.wait({watcher, work}, return_when=asyncio.FIRST_COMPLETED)
                    runner.stop()
                    for task in (watcher, work):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                wait_s = 0.0
            except FormationError as exc:
                log.error("rack %s: ageing job %s: %s", rack, job.id, exc)
                if on_event is not None:
                    on_event(f"rack {rack}: ageing job {job.id}: {exc}")
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(store.set_ageing_job_state, job.id, "interrupted", expect=("running",))
                wait_s = retry_wall_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(wait_s, 0.001))
