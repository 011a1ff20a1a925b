"""ChamberLoop without a socket: an in-memory DAQ double, a manual clock, and store doubles (plus the chamber tables
of a real SQLite store).

The loop's own decisions are tested here: writes only on a change, the fail-safe on a blind or silent DAQ, alarms
once per condition, a refusing database, the set-point range, period stretching, valve wear across restarts. The
loop against the real simulated chamber over TCP is tests/integration/test_chamber_loop.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.config import ChamberSite
from formation.errors import InputError, InstrumentProtocolError, InstrumentTimeout, StoreError
from formation.instruments.daq970a import Daq970aChamber
from formation.orchestrator import chamber_loop
from formation.orchestrator.chamber_loop import ChamberLoop, HoldStats
from formation.store import Store, ValveWear

HEAT = (301, 302, 303, 304)
COOL = (305, 306, 307, 308)
SITE = ChamberSite("ch1", "TCPIP0::127.0.0.1::5030::SOCKET", sample_every_s=60.0, hold_s=60.0)


class InMemoryDaq:
    """A DAQ double: readings set by the test, relays kept as a set, every valve write recorded.

    ``fail`` makes every call raise that error (a timeout, garbage) until cleared.
    """

    def __init__(self, temperature_c: float = 25.0) -> None:
        self.readings = dict.fromkeys(SITE.sensors, temperature_c)
        self.relays: set[int] = set()
        self.writes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        self.fail: Exception | None = None
        self.session = SimpleNamespace(reconnects=0)

    def set_all(self, temperature_c: float) -> None:
        self.readings = dict.fromkeys(self.readings, temperature_c)

    async def read_temperatures_c(self, channels: Sequence[int]) -> np.ndarray:
        if self.fail is not None:
            raise self.fail
        return np.array([self.readings[c] for c in channels], dtype=np.float64)

    async def valve_states(self, channels: Sequence[int]) -> np.ndarray:
        if self.fail is not None:
            raise self.fail
        return np.array([c in self.relays for c in channels], dtype=bool)

    async def set_valves(self, open_channels: Sequence[int], closed_channels: Sequence[int]) -> None:
        if self.fail is not None:
            raise self.fail
        self.writes.append((tuple(open_channels), tuple(closed_channels)))
        self.relays = (self.relays - set(closed_channels)) | set(open_channels)


class ManualClock:
    """Clock time moved by the test; ``sleep`` never returns by itself (the test steps the loop)."""

    scale = 1.0

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


class MemoryStore:
    """A store double keeping what the loop writes; ``refuse`` makes every call raise StoreError."""

    def __init__(self, wear: Mapping[int, ValveWear] | None = None) -> None:
        self.refuse = False
        self.alarm_rows: list[tuple[float, str, str, str]] = []
        self.samples: list[dict[str, Any]] = []
        self.wear = dict(wear or {})

    def _check(self) -> None:
        if self.refuse:
            raise StoreError("database error: OperationalError: database is locked")

    def add_alarm(self, ts_s: float, severity: str, code: str, message: str) -> int:
        self._check()
        self.alarm_rows.append((ts_s, severity, code, message))
        return len(self.alarm_rows)

    def add_chamber_samples(self, rows: Iterable[Mapping[str, Any]]) -> int:
        self._check()
        self.samples.extend(dict(r) for r in rows)
        return len(self.samples)

    def valve_switches(self, chamber: str) -> dict[int, ValveWear]:
        self._check()
        return dict(self.wear)

    def save_valve_switches(
        self, chamber: str, counts: Mapping[int, int], open_s: Mapping[int, float], now_s: float
    ) -> None:
        self._check()
        self.wear = {ch: ValveWear(n, open_s[ch]) for ch, n in counts.items()}

    def codes(self) -> list[str]:
        return [code for _, _, code, _ in self.alarm_rows]


def make_loop(daq: InMemoryDaq, clock: ManualClock, store: MemoryStore | None = None, **site: Any) -> ChamberLoop:
    config = ChamberSite(**{**SITE.__dict__, **site})
    return ChamberLoop(config, cast(Daq970aChamber, daq), clock, cast(Store | None, store))


async def run(loop: ChamberLoop, clock: ManualClock, steps: int, period_s: float = 5.0) -> None:
    for _ in range(steps):
        await loop.step()
        clock.t += period_s


async def test_valves_are_written_only_when_the_command_changes() -> None:
    daq, clock = InMemoryDaq(25.0), ManualClock()
    loop = make_loop(daq, clock, initial_setpoint_c=45.0)
    await run(loop, clock, 60)
    commands = [loop.last_step]
    assert daq.writes[0][0] and set(daq.writes[0][0]) <= set(HEAT)  # the first step writes the whole state
    assert set(daq.writes[0][0]) | set(daq.writes[0][1]) == set(HEAT + COOL)
    # Every heating valve opens and stays open while far below the set point: one write, then none.
    assert len(daq.writes) == 1 and commands[0] is not None and commands[0].demand == 1.0
    assert daq.relays == set(HEAT)


async def test_relays_moved_by_someone_else_are_written_again() -> None:
    daq, clock = InMemoryDaq(25.0), ManualClock()
    loop = make_loop(daq, clock, initial_setpoint_c=45.0)
    await run(loop, clock, 3)
    daq.relays.clear()  # a *RST from another client
    await run(loop, clock, 2)
    assert len(daq.writes) == 2 and daq.relays == set(HEAT)


async def test_every_sensor_open_closes_every_valve_at_once_and_alarms_once() -> None:
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    loop = make_loop(daq, clock, store, initial_setpoint_c=45.0)
    await run(loop, clock, 3)
    assert daq.relays == set(HEAT)
    daq.set_all(math.nan)
    await run(loop, clock, 1)
    assert daq.relays == set() and loop.last_step is not None and loop.last_step.fail_safe
    assert math.isnan(loop.temperature_c) and not loop.in_band and not loop.stable
    await run(loop, clock, 20)
    assert store.codes().count("chamber_fail_safe") == 1 and store.codes().count("chamber_sensor_open") == 4
    fail_safe = next(row for row in store.alarm_rows if row[2] == "chamber_fail_safe")
    assert fail_safe[1] == "critical" and fail_safe[3].startswith("ch1: ")
    # Sensors back for longer than the clearing time, then open again: a second alarm.
    daq.set_all(25.0)
    await run(loop, clock, 20)
    assert daq.relays == set(HEAT)
    daq.set_all(math.nan)
    await run(loop, clock, 1)
    assert store.codes().count("chamber_fail_safe") == 2


async def test_one_open_sensor_is_a_warning_and_control_goes_on_with_the_others() -> None:
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    loop = make_loop(daq, clock, store, initial_setpoint_c=45.0)
    daq.readings[102] = math.nan
    await run(loop, clock, 10)
    assert store.alarm_rows == [(clock.t - 50.0, "warning", "chamber_sensor_open", "ch1: 102 no reading")]
    assert loop.temperature_c == 25.0 and daq.relays == set(HEAT)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InstrumentTimeout("no reply within 2 s", resource="r"), "chamber_link_lost"),
        (InstrumentProtocolError("reply is not numeric", resource="r"), "chamber_instrument_error"),
    ],
)
async def test_a_silent_or_garbled_daq_is_no_reading_and_the_loop_recovers(error: Exception, code: str) -> None:
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    loop = make_loop(daq, clock, store, initial_setpoint_c=45.0)
    await run(loop, clock, 3)
    daq.fail = error
    await run(loop, clock, 10)
    step = loop.last_step
    assert step is not None and step.fail_safe and step.command.open == frozenset()
    assert loop.controller.valves.command.open == frozenset()
    assert store.codes() == [code]  # once; the sensors are not blamed for the instrument
    assert store.alarm_rows[0][1] == "critical" and store.alarm_rows[0][3].startswith("ch1: no temperature reading")
    assert store.alarm_rows[0][3].endswith("; valves not closed either")
    assert loop.out_of_band_total_s >= 45.0
    daq.fail = None
    await run(loop, clock, 2)
    assert daq.relays == set(HEAT)  # the fail-safe command never reached the DAQ; control writes the state again
    assert store.codes() == [code, "chamber_link_restored"]
    assert store.alarm_rows[-1][1] == "info"
    daq.fail = error  # the next outage alarms again
    await run(loop, clock, 1)
    assert store.codes().count(code) == 2


async def test_a_transparent_reconnect_is_a_warning() -> None:
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    loop = make_loop(daq, clock, store)
    await run(loop, clock, 2)
    daq.session.reconnects += 1
    await run(loop, clock, 2)
    assert store.codes() == ["chamber_link_reconnected"]


async def test_a_refusing_store_costs_a_log_line_and_samples_wait_for_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chamber_loop, "MIN_PERSIST_WALL_S", 0.0)  # persist on clock time alone
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    store.refuse = True
    loop = make_loop(daq, clock, store, initial_setpoint_c=45.0)
    daq.readings[101] = math.nan
    await run(loop, clock, 80)  # 400 s: one persist attempt refused
    assert loop.steps_taken == 80 and daq.relays == set(HEAT)
    assert "alarm not stored" in caplog.text and "not stored yet" in caplog.text
    store.refuse = False
    await run(loop, clock, 41)  # the next persist, 300 s after the refused one
    assert [round(s["ts_s"] - store.samples[0]["ts_s"]) for s in store.samples] == list(range(0, 660, 60))
    assert store.wear and sum(w.switches for w in store.wear.values()) == 4


async def test_samples_are_decimated_with_sensors_in_order_and_nan_kept() -> None:
    daq, clock, store = InMemoryDaq(25.0), ManualClock(), MemoryStore()
    loop = make_loop(daq, clock, store, sample_every_s=30.0, initial_setpoint_c=45.0)
    daq.readings[103] = math.nan
    async with loop:
        for _ in range(20):
            await asyncio.sleep(0)
        await run(loop, clock, 25)  # the task's first step, then 0–120 s at 5 s
    assert len(store.samples) == 5  # 0, 30, 60, 90, 120 s
    first = store.samples[0]
    assert first["chamber"] == "ch1" and first["setpoint_c"] == 45.0 and first["valves_open"] == frozenset(HEAT)
    assert first["sensors_c"][:2] == [25.0, 25.0] and math.isnan(first["sensors_c"][2])
    assert not first["stable"] and not first["in_band"]


async def test_valve_wear_is_loaded_at_start_added_to_and_saved_on_exit() -> None:
    daq, clock = InMemoryDaq(25.0), ManualClock()
    store = MemoryStore({ch: ValveWear(100, 3600.0) for ch in HEAT + COOL})
    loop = make_loop(daq, clock, store, initial_setpoint_c=45.0)
    async with loop:
        for _ in range(20):
            await asyncio.sleep(0)
        await run(loop, clock, 10)
        assert loop.switch_counts == {**dict.fromkeys(HEAT, 101), **dict.fromkeys(COOL, 100)}
    # Exit closes every valve (one more switch each for the heating ones) and saves the totals.
    assert daq.relays == set()
    assert {ch: w.switches for ch, w in store.wear.items()} == {**dict.fromkeys(HEAT, 102), **dict.fromkeys(COOL, 100)}
    # The task's first step and the ten after it, 50 clock seconds open, on top of the stored hour.
    assert {ch: w.open_s for ch, w in store.wear.items()} == {
        **dict.fromkeys(HEAT, 3650.0),
        **dict.fromkeys(COOL, 3600.0),
    }


async def test_set_point_outside_the_range_is_refused_and_a_new_one_restarts_stability() -> None:
    daq, clock = InMemoryDaq(45.0), ManualClock()
    loop = make_loop(daq, clock, initial_setpoint_c=45.0)
    await run(loop, clock, 14)  # 65 s in band at hold_s = 60
    assert loop.stable and loop.in_band
    for bad in (9.0, 61.0, math.nan):
        with pytest.raises(InputError) as err:
            loop.set_setpoint(bad)
        assert err.value.field == "chamber_c" and "°C of chamber ch1" in str(err.value)
    assert "outside 10–60 °C" in str(err.value)
    loop.set_setpoint(45.2)
    assert loop.setpoint_c == 45.2 and not loop.stable and loop.in_band
    assert not await loop.wait_stable(0.0)


async def test_the_period_stretches_when_it_would_be_shorter_than_10_ms_of_wall_time() -> None:
    daq = cast(Daq970aChamber, InMemoryDaq())
    assert ChamberLoop(SITE, daq, ScaledClock(100.0)).period_s == 5.0
    assert ChamberLoop(SITE, daq, ScaledClock(2400.0)).period_s == pytest.approx(24.0)


def test_hold_stats_count_from_the_first_stable_step() -> None:
    from formation.chamber import ChamberController

    controller = ChamberController(SITE.control_config(), 45.0)
    stats = HoldStats(45.0, 0.0)
    temps = [25.0] * 10 + [44.8] * 20 + [45.9] * 2 + [45.1] * 10
    for i, t in enumerate(temps):
        stats.update(controller.update(dict.fromkeys(SITE.sensors, t), None, i * 5.0), i * 5.0)
    assert stats.time_to_band_s == 50.0 and stats.time_to_stable_s == 110.0
    assert stats.in_band_s + stats.out_of_band_s == pytest.approx(len(temps) * 5.0 - 5.0 - 110.0)
    assert stats.out_of_band_s == 10.0 and stats.max_deviation_c == pytest.approx(0.9)
    assert stats.in_band_pct == pytest.approx(100.0 * (stats.in_band_s / (stats.in_band_s + 10.0)))


# -- the chamber tables of a real store ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new SQLite file, or a fresh PostgreSQL schema (skipped without it unless services are required)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'line.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_the_store_keeps_chamber_samples_with_nan_as_null(store_url: str) -> None:
    with Store(store_url) as store:
        store.create_schema()
        row = {
            "chamber": "ch1",
            "ts_s": 10.0,
            "setpoint_c": 45.0,
            "temperature_c": math.nan,
            "sensors_c": [25.1, math.nan, 25.3],
            "demand": -0.25,
            "valves_open": frozenset({306, 305}),
            "stable": False,
            "in_band": True,
        }
        assert store.add_chamber_samples([row, {**row, "ts_s": 70.0, "temperature_c": 44.9}]) == 2
        assert store.add_chamber_samples([]) == 0
        frame = store.chamber_samples("ch1")
        assert frame["ts_s"].tolist() == [10.0, 70.0] and math.isnan(frame["temperature_c"].iloc[0])
        assert frame["sensors_c"].iloc[0][0] == 25.1 and math.isnan(frame["sensors_c"].iloc[0][1])
        assert frame["valves_open"].iloc[0] == "305,306" and frame["in_band"].iloc[0] and not frame["stable"].iloc[0]
        assert store.chamber_samples("ch1", since_s=20.0)["ts_s"].tolist() == [70.0]
        assert store.chamber_samples("ch2").empty


def test_valve_switches_are_upserted_per_chamber_and_channel(store_url: str) -> None:
    with Store(store_url) as store:
        store.create_schema()
        assert store.valve_switches("ch1") == {}
        store.save_valve_switches("ch1", {301: 3, 302: 4}, {301: 12.5, 302: 0.0}, 100.0)
        store.save_valve_switches("ch1", {301: 5}, {301: 20.0}, 200.0)
        store.save_valve_switches("ch2", {301: 1}, {301: 1.0}, 200.0)
        assert store.valve_switches("ch1") == {301: ValveWear(5, 20.0), 302: ValveWear(4, 0.0)}
        assert store.valve_switches("ch2") == {301: ValveWear(1, 1.0)}
