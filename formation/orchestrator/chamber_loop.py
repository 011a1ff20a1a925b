"""ChamberLoop: the I/O shell around one chamber's control core (:class:`formation.chamber.ChamberController`).

Every control period (clock time) the loop reads every thermocouple in one query and the valve relays in one
query, lets the controller decide, writes the valves only when the command changed (or the relays no longer show
what was written), keeps a decimated sample, and raises alarms. Valve wear is stored as totals across restarts.

Fault policy: an instrument that does not answer, answers garbage or reports an error gives no healthy reading,
so the controller goes fail-safe (every valve closed) and the loop tries to write that; it keeps looping and
takes up control again when the link comes back. A database that refuses writes costs only the log line: samples
wait in memory (bounded), alarms are logged. On exit every valve is closed (best effort) and the wear is saved.

Time: periods, sample spacing and alarm ages are clock seconds (the injected :class:`~formation.clock.Clock`);
a period shorter than :data:`MIN_PERIOD_WALL_S` of wall time stretches, and the controller integrates the real
clock ``dt``. Store writes are spaced in wall time too, so a fast simulated clock does not hammer the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from formation.chamber import ChamberController, ControlStep
from formation.clock import Clock
from formation.config import ChamberSite
from formation.errors import InputError, InstrumentError, StoreError, TransportError
from formation.instruments.daq970a import Daq970aChamber
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.feed_hooks import ChamberFeed
from formation.orchestrator.timebase import wall_s

if TYPE_CHECKING:
    from formation.feed.sink import FeedSink
    from formation.store import Store, ValveWear

log = logging.getLogger(__name__)

#: A control period never takes less than this much wall time: at a high clock scale the period stretches.
MIN_PERIOD_WALL_S = 0.01
#: Samples and valve wear go to the store every this many clock seconds ...
PERSIST_EVERY_S = 300.0
#: ... but never more often than this in wall time, whatever the clock scale.
MIN_PERSIST_WALL_S = 1.0
#: Samples kept while the database refuses them; beyond this the oldest are dropped.
MAX_PENDING_SAMPLES = 10_000
#: A condition absent this long (clock seconds, and at least three periods) is cleared: it alarms again on return.
ALARM_CLEAR_S = 60.0
#: Wall seconds the exit waits for a control step in flight before cancelling it.
EXIT_WAIT_WALL_S = 30.0
#: Controller alarm codes that are critical; the others are warnings.
CRITICAL_CODES = frozenset({"fail_safe", "valve_readback", "valve_response"})

#: (code, subject): one alarm per pair until the condition clears.
AlarmKey = tuple[str, str]


@dataclass
class HoldStats:
    """Time-in-band figures of one set point, from the loop's control temperature (clock seconds).

    ``time_to_band_s`` runs from the set point being given to the first step in band; "after settling" counts from
    the first step reported stable (in band for ``hold_s``), each interval booked to the state at its start.
    """

    setpoint_c: float
    started_s: float
    time_to_band_s: float | None = None
    time_to_stable_s: float | None = None
    in_band_s: float = 0.0
    out_of_band_s: float = 0.0
    max_deviation_c: float = 0.0
    _last: tuple[float, bool] | None = field(default=None, repr=False)

    @property
    def in_band_pct(self) -> float:
        """Share of the time after first settling spent in band (NaN before settling)."""
        total = self.in_band_s + self.out_of_band_s
        return 100.0 * self.in_band_s / total if total > 0 else math.nan

    def update(self, step: ControlStep, now_s: float) -> None:
        """Book one control step taken at ``now_s``."""
        if self._last is not None and self.time_to_stable_s is not None:
            dt_s = max(0.0, now_s - self._last[0])
            if self._last[1]:
                self.in_band_s += dt_s
            else:
                self.out_of_band_s += dt_s
        if self.time_to_band_s is None and step.in_band:
            self.time_to_band_s = now_s - self.started_s
        if self.time_to_stable_s is None and step.stable:
            self.time_to_stable_s = now_s - self.started_s
        if self.time_to_stable_s is not None:
            deviation = abs(step.temperature_c - step.setpoint_c)
            self.max_deviation_c = max(self.max_deviation_c, deviation if math.isfinite(deviation) else math.inf)
        self._last = (now_s, step.in_band)


def _alarm_key(text: str) -> tuple[AlarmKey, str]:
    """A controller alarm ``"code: detail"`` as its (code, subject) key and its detail."""
    code, _, detail = text.partition(": ")
    words = detail.split()
    if code.startswith("sensor_"):
        subject = " ".join(words[:1])  # the sensor
    elif code == "valve_readback":
        subject = " ".join(words[:3])  # "heating valve 301"
    elif code == "valve_response":
        subject = " ".join(words[:2])  # "heating side"
    else:
        subject = ""
    return (code, subject), detail


class ChamberLoop:
    """Holds one chamber at its set point; an async context manager running one background task."""

    def __init__(
        self,
        site: ChamberSite,
        daq: Daq970aChamber,
        clock: Clock,
        store: Store | None = None,
        feed: FeedSink | None = None,
    ) -> None:
        self.site = site
        self.daq = daq
        self.clock = clock
        self.store = store
        #: The status feed of this chamber (None: no feed).
        self.feed = ChamberFeed(feed, site) if feed is not None else None
        self.name: str = site.name
        self.controller = ChamberController(site.control_config(), site.initial_setpoint_c)
        #: The period the task steps at: ``site.period_s``, stretched to MIN_PERIOD_WALL_S of wall time.
        self.period_s = max(site.period_s, MIN_PERIOD_WALL_S * clock.scale)
        #: Alarms raised (severity, code, message), the latest few.
        self.alarms: deque[tuple[str, str, str]] = deque(maxlen=100)
        self.steps_taken = 0
        self.stats = HoldStats(site.initial_setpoint_c, clock.now())
        self._sensors = list(site.sensors)
        self._valves = list(site.valves)
        self._last_step: ControlStep | None = None
        self._started_s = clock.now()
        self._sent_open: frozenset[int] | None = None  # None: unknown, write the whole state next time
        self._blind_since_s: float | None = None
        self._reconnects_seen = self._reconnects()
        self._active: dict[AlarmKey, float] = {}
        self._samples: deque[dict[str, Any]] = deque(maxlen=MAX_PENDING_SAMPLES)
        self._next_sample_s = -math.inf
        self._next_persist_s = clock.now() + PERSIST_EVERY_S
        self._last_persist_wall_s = wall_s()
        self._wear: dict[int, ValveWear] | None = None  # stored totals at start; None until loaded
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sleeping = False

    # -- what the supervisor and displays read -------------------------------------------------------------------
    @property
    def setpoint_c(self) -> float:
        """The set point in force."""
        return self.controller.setpoint_c

    def set_setpoint(self, setpoint_c: float) -> None:
        """Hold ``setpoint_c`` from the next control step on; InputError when outside the chamber's range."""
        low, high = self.site.setpoint_min_c, self.site.setpoint_max_c
        value = float(setpoint_c)
        if not low <= value <= high:
            raise InputError("chamber_c", f"{value:g} °C is outside {low:g}–{high:g} °C of chamber {self.name}")
        if value != self.controller.setpoint_c:
            self.controller.set_setpoint(value)
            self.stats = HoldStats(value, self.clock.now())

    @property
    def last_step(self) -> ControlStep | None:
        """The latest control step (None before the first)."""
        return self._last_step

    @property
    def temperature_c(self) -> float:
        """The control temperature of the latest step; NaN before the first reading or without a healthy one."""
        return math.nan if self._last_step is None else self._last_step.temperature_c

    @property
    def in_band(self) -> bool:
        """Whether the latest temperature is within the band around the current set point."""
        return abs(self.temperature_c - self.setpoint_c) <= self.site.band_c

    @property
    def stable(self) -> bool:
        """Stable at the current set point: in band for ``hold_s`` (False until a step has seen this set point)."""
        step = self._last_step
        return step is not None and step.stable and step.setpoint_c == self.setpoint_c

    @property
    def out_of_band_total_s(self) -> float:
        """Clock seconds out of band (or without a reading) since the loop started: the K clock's pause."""
        return 0.0 if self._last_step is None else self._last_step.out_of_band_total_s

    @property
    def switch_counts(self) -> dict[int, int]:
        """Total switchings per valve: the stored ones (when loaded) plus this loop's."""
        base = self._wear or {}
        return {ch: n + (base[ch].switches if ch in base else 0) for ch, n in self.controller.switch_counts.items()}

    @property
    def open_s_total(self) -> dict[int, float]:
        """Total seconds each valve was commanded open: the stored ones (when loaded) plus this loop's."""
        base = self._wear or {}
        return {ch: s + (base[ch].open_s if ch in base else 0.0) for ch, s in self.controller.valves.open_s.items()}

    def switches_per_hour(self) -> dict[int, float]:
        """This loop's switchings per valve per clock hour since it started."""
        hours = max(self.clock.now() - self._started_s, 1e-9) / 3600.0
        return {ch: n / hours for ch, n in self.controller.switch_counts.items()}

    async def wait_stable(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` clock seconds for stability at the current set point; whether it came."""
        deadline_s = self.clock.now() + timeout_s
        while not self.stable:
            left_s = deadline_s - self.clock.now()
            if left_s <= 0:
                return False
            await self.clock.sleep(min(left_s, self.period_s))
        return True

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def __aenter__(self) -> ChamberLoop:
        await self._load_wear()
        self._task = asyncio.create_task(self._run(), name=f"chamber-{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            # A step in flight finishes (its alarms and samples reach the store); only the sleep is cancelled.
            self._stopping = True
            if self._sleeping:
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=EXIT_WAIT_WALL_S)
            if not done:  # a step stuck beyond every instrument timeout: cut it short
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._lock:
            await self._close_valves()
            await self._persist()

    async def _run(self) -> None:
        next_s = self.clock.now()
        while True:
            try:
                await self.step()
            except Exception as exc:  # a bug must not leave the valves as they stand: alarm, fail safe, go on
                log.exception("chamber %s: control step failed", self.name)
                await self._alarm("critical", ("loop_error", type(exc).__name__), f"control step failed: {exc!r}")
                with contextlib.suppress(Exception):
                    await self._close_valves()
            if self._stopping:
                return
            next_s += self.period_s
            now_s = self.clock.now()
            next_s = max(next_s, now_s)  # late: no burst of catch-up steps
            self._sleeping = True
            try:
                await self.clock.sleep(next_s - now_s)
            finally:
                self._sleeping = False

    # -- one control period ----------------------------------------------------------------------------------------
    async def step(self) -> ControlStep:
        """One control period: read, decide, write the valves if needed, sample, alarm, persist when due."""
        async with self._lock:
            now_s = self.clock.now()
            readings, readback, problems = await self._read()
            if readback is not None and readback != self._sent_open:
                self._sent_open = None  # someone moved the relays (a reset, another client): write everything
            # The end switches say where the valves are; without them the relays say what was commanded.
            feedback = await self._positions(problems) if self.site.position_ports else readback
            step = self.controller.update(readings, feedback, now_s)
            written = await self._write(step.command.open)
            if problems and problems[0][1][1] == "sensors":
                # One alarm per outage: the fail-safe write failing with the reads is part of the same fault.
                severity, key, message = problems[0]
                tail = "valves not closed either" if written else "every valve closed (fail-safe)"
                problems[0] = (severity, key, f"{message}; {tail}")
            else:
                problems += written
            self._last_step = step
            if self.feed is not None:
                self.feed.step(step, readings)
            self.stats.update(step, now_s)
            await self._raise_alarms(step, problems, now_s)
            self._sample(step, readings, now_s)
            if now_s >= self._next_persist_s and wall_s() - self._last_persist_wall_s >= MIN_PERSIST_WALL_S:
                await self._persist()
            self.steps_taken += 1
            return step

    async def _read(self) -> tuple[dict[int, float], frozenset[int] | None, list[tuple[str, AlarmKey, str]]]:
        """Readings by sensor (empty when the DAQ gave none), relays read energised (None when unread), problems."""
        problems: list[tuple[str, AlarmKey, str]] = []
        try:
            values = await self.daq.read_temperatures_c(self._sensors)
        except InstrumentError as exc:
            problems.append(self._instrument_problem(exc, "sensors", "critical", "no temperature reading"))
            return {}, None, problems
        readings = dict(zip(self._sensors, (float(v) for v in values), strict=True))
        try:
            states = await self.daq.valve_states(self._valves)
        except InstrumentError as exc:
            problems.append(self._instrument_problem(exc, "readback", "warning", "valve read-back failed"))
            return readings, None, problems
        return readings, frozenset(c for c, on in zip(self._valves, states, strict=True) if on), problems

    async def _positions(self, problems: list[tuple[str, AlarmKey, str]]) -> frozenset[int] | None:
        """The valves whose end switch reads open (None when unread, with a problem added)."""
        try:
            positions = await self.daq.valve_positions(self.site.position_ports, len(self._valves))
        except InstrumentError as exc:
            problems.append(self._instrument_problem(exc, "positions", "warning", "valve end switches not read"))
            return None
        return frozenset(c for c, on in zip(self._valves, positions, strict=True) if on)

    async def _write(self, open_channels: frozenset[int]) -> list[tuple[str, AlarmKey, str]]:
        """Write the valve command when it differs from what was last written; a problem when it fails."""
        if open_channels == self._sent_open:
            return []
        closed = [c for c in self._valves if c not in open_channels]
        try:
            await self.daq.set_valves(sorted(open_channels), closed)
        except InstrumentError as exc:
            self._sent_open = None
            return [self._instrument_problem(exc, "valves", "critical", "valve command not written")]
        self._sent_open = open_channels
        return []

    def _instrument_problem(
        self, exc: InstrumentError, subject: str, severity: str, what: str
    ) -> tuple[str, AlarmKey, str]:
        code = "link_lost" if isinstance(exc, TransportError) else "instrument_error"
        return severity, (code, subject), f"{what}: {exc}"

    # -- alarms ------------------------------------------------------------------------------------------------------
    async def _raise_alarms(self, step: ControlStep, problems: list[tuple[str, AlarmKey, str]], now_s: float) -> None:
        """Raise what is new, once per (code, subject); clear what has been absent for a while."""
        found: list[tuple[str, AlarmKey, str]] = list(problems)
        reconnects = self._reconnects()
        reconnected, self._reconnects_seen = reconnects > self._reconnects_seen, reconnects
        blind = any(key[1] == "sensors" for _, key, _ in problems)
        if blind:
            if self._blind_since_s is None:
                self._blind_since_s = now_s
            # No reading is an instrument fault, not open sensors: the sensor conditions stay as they stood.
            for key in self._active:
                self._active[key] = now_s
        else:
            for text in step.alarms:
                key, detail = _alarm_key(text)
                found.append(("critical" if key[0] in CRITICAL_CODES else "warning", key, detail))
            if self._blind_since_s is not None:
                # The outage is over: the next one alarms again.
                for key in [k for k in self._active if k[1] == "sensors"]:
                    del self._active[key]
                blind_s = now_s - self._blind_since_s
                self._blind_since_s = None
                await self._alarm("info", ("link_restored", ""), f"temperatures read again after {blind_s:.0f} s")
            elif reconnected:
                message = f"link dropped and reconnected ({reconnects} so far)"
                found.append(("warning", ("link_reconnected", ""), message))
        for severity, key, message in found:
            if key not in self._active:
                await self._alarm(severity, key, message)
            self._active[key] = now_s
        clear_s = max(ALARM_CLEAR_S, 3.0 * self.period_s)
        for key, seen_s in list(self._active.items()):
            if now_s - seen_s >= clear_s:
                del self._active[key]

    async def _alarm(self, severity: str, key: AlarmKey, message: str) -> None:
        code = f"chamber_{key[0]}"
        text = f"{self.name}: {message}"
        self.alarms.append((severity, code, text))
        log.log(logging.INFO if severity == "info" else logging.WARNING, "%s: %s", code, text)
        if self.feed is not None:
            self.feed.alarm(severity, code, text)
        if self.store is None:
            return
        try:
            await asyncio.to_thread(self.store.add_alarm, self.clock.now(), severity, code, text)
        except StoreError as exc:
            log.error("chamber %s: alarm not stored: %s", self.name, exc)

    def _reconnects(self) -> int:
        return int(getattr(getattr(self.daq, "session", None), "reconnects", 0))

    # -- samples and wear --------------------------------------------------------------------------------------------
    def _sample(self, step: ControlStep, readings: Mapping[int, float], now_s: float) -> None:
        if now_s < self._next_sample_s:
            return
        every_s = self.site.sample_every_s
        # On a grid from the first sample, a step late at most; after a gap the grid starts again.
        grid_s = self._next_sample_s + every_s
        self._next_sample_s = grid_s if grid_s > now_s else now_s + every_s
        self._samples.append(
            {
                "chamber": self.name,
                "ts_s": now_s,
                "setpoint_c": step.setpoint_c,
                "temperature_c": step.temperature_c,
                "sensors_c": [readings.get(s, math.nan) for s in self._sensors],
                "demand": step.demand,
                "valves_open": step.command.open,
                "stable": step.stable,
                "in_band": step.in_band,
            }
        )

    async def _load_wear(self) -> None:
        if self.store is None:
            self._wear = {}
            return
        try:
            self._wear = await asyncio.to_thread(self.store.valve_switches, self.name)
            self.controller.valves.seed_wear({channel: wear.switches for channel, wear in self._wear.items()})
        except StoreError as exc:
            log.warning("chamber %s: stored valve switch counts not loaded yet: %s", self.name, exc)

    async def _persist(self) -> None:
        """Write pending samples and the valve wear totals; whatever the database refuses waits for next time."""
        self._next_persist_s = self.clock.now() + PERSIST_EVERY_S
        self._last_persist_wall_s = wall_s()
        if self.store is None:
            self._samples.clear()
            return
        rows = list(self._samples)
        try:
            if rows:
                await asyncio.to_thread(self.store.add_chamber_samples, rows)
                for _ in rows:
                    self._samples.popleft()
            if self._wear is None:
                await self._load_wear()  # never overwrite stored totals with this loop's counts alone
            if self._wear is not None:
                counts, open_s, now_s = self.switch_counts, self.open_s_total, self.clock.now()
                await asyncio.to_thread(self.store.save_valve_switches, self.name, counts, open_s, now_s)
        except StoreError as exc:
            log.warning("chamber %s: %d samples and valve counts not stored yet: %s", self.name, len(rows), exc)

    async def _close_valves(self) -> None:
        """Close every valve (the controller counts it; the DAQ is told, best effort, within a bounded wait)."""
        command = self.controller.valves.close_all(self.clock.now())
        try:
            async with asyncio.timeout(4.0 * self.site.timeout_s + 2.0):
                await self.daq.set_valves([], self._valves)
            self._sent_open = command.open
        except (InstrumentError, TimeoutError) as exc:
            self._sent_open = None
            log.error("chamber %s: could not close the valves: %s", self.name, exc)


@contextlib.asynccontextmanager
async def open_chamber_loop(
    site: ChamberSite, clock: Clock, store: Store | None = None, feed: FeedSink | None = None
) -> AsyncIterator[ChamberLoop]:
    """Open the chamber's DAQ session and driver and run its loop; everything closes on exit (valves first)."""
    session = ScpiSession(site.resource, timeout_s=site.timeout_s, name=site.name)
    async with Daq970aChamber(session) as daq, ChamberLoop(site, daq, clock, store, feed) as loop:
        yield loop
