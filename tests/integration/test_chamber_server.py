"""The chamber DAQ driver against the simulated chamber over real TCP (pyvisa-py), inside a simulated plant.

Sensors in one query, valve sets read back, an open thermocouple as NaN, a stuck valve that stays stuck, the cells
of a cabinet in the chamber following its air, and every command the driver sends being a table command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.errors import ScpiError
from formation.instruments import Daq970aChamber
from formation.instruments.scpi import ScpiSession
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant

SCALE = 2000.0  # simulated seconds per wall second: the 60 s dead time passes in 30 ms
TCS = [101, 102, 103, 104]
HOT = [301, 302, 303, 304]
COLD = [305, 306, 307, 308]


class Client:
    """A plain asyncio line client, for the simulator-only commands (they are not the driver's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def query(self, line: str) -> str:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        async with asyncio.timeout(5.0):
            return (await self.reader.readline()).decode().rstrip("\n")

    async def write(self, line: str) -> None:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        assert await self.query("SYST:ERR?") == '+0,"No error"'


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[Client]:
    client = Client(*await asyncio.open_connection("127.0.0.1", port))
    try:
        yield client
    finally:
        client.writer.close()
        with contextlib.suppress(ConnectionError):
            await client.writer.wait_closed()


@dataclass
class Rig:
    plant: SimulatedPlant
    daq: Daq970aChamber
    sim: Client
    headers: list[str]

    async def truth(self) -> dict[str, object]:
        return json.loads(await self.sim.query("SIM:CHAM:TRUTH?"))  # type: ignore[no-any-return]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    specs = [
        CabinetSpec("in", channels=32, seed=1, initial_soc=0.3, formed=True, chamber="ch1"),
        CabinetSpec("out", channels=32, seed=1, initial_soc=0.3, formed=True),
    ]
    async with SimulatedPlant(specs, ScaledClock(SCALE), chambers=[ChamberSpec("ch1", seed=5)]) as plant:
        server = plant.chambers["ch1"]
        headers: list[str] = []
        server.dispatcher.recorder = headers.append
        session = ScpiSession(plant.chamber_resources["ch1"], timeout_s=2.0, name="ch1")
        async with Daq970aChamber(session) as daq, connect(server.port) as sim:
            yield Rig(plant, daq, sim, headers)


async def wait_for(seconds: float, rig: Rig) -> None:
    """Wait until the chamber's clock has advanced ``seconds`` simulated seconds."""
    start = rig.plant.chambers["ch1"].model.time_s
    while rig.plant.chambers["ch1"].model.time_s < start + seconds:
        await asyncio.sleep(0.02)


async def test_every_sensor_is_read_in_one_query(rig: Rig) -> None:
    rig.headers.clear()
    values = await rig.daq.read_temperatures_c(TCS)
    assert rig.headers == ["MEAS:TEMP?"]
    assert values.shape == (4,) and np.all(np.abs(values - 25.0) < 0.3)
    assert values == pytest.approx(np.round(values, 2), abs=1e-9)  # 0.01 °C resolution through the wire


async def test_valve_sets_are_set_and_read_back(rig: Rig) -> None:
    await rig.daq.set_valves([301, 302], [303, 304, *COLD])
    assert (await rig.daq.valve_states(HOT + COLD)).tolist() == [True, True] + [False] * 6
    await rig.daq.set_valves(COLD, HOT)
    assert (await rig.daq.valve_states(HOT + COLD)).tolist() == [False] * 4 + [True] * 4
    truth = await rig.truth()
    assert truth["valve_open"] == [False] * 4 + [True] * 4
    assert truth["switch_counts"] == [2, 2, 0, 0, 1, 1, 1, 1]
    assert (await rig.daq.valve_states([308, 301])).tolist() == [True, False]


async def test_an_open_thermocouple_reads_nan_through_the_driver(rig: Rig) -> None:
    await rig.sim.write("SIM:FAULT:TC 102")
    values = await rig.daq.read_temperatures_c(TCS)
    assert np.isnan(values[1]) and not np.isnan(values[[0, 2, 3]]).any()
    await rig.sim.write("SIM:FAULT:CLE")
    assert not np.isnan(await rig.daq.read_temperatures_c(TCS)).any()


async def test_a_stuck_valve_stays_stuck(rig: Rig) -> None:
    await rig.sim.write("SIM:FAULT:VALV 303,OPEN")
    await rig.daq.set_valves([], HOT + COLD)  # accepted: the relays open ...
    assert not (await rig.daq.valve_states(HOT + COLD)).any()
    truth = await rig.truth()
    assert truth["valve_open"] == [False, False, True, False, False, False, False, False]  # ... the valve stays
    assert truth["valve_stuck"][2] == "OPEN"  # type: ignore[index]
    await wait_for(900.0, rig)
    assert float(np.mean(await rig.daq.read_temperatures_c(TCS))) > 26.0  # and keeps heating the chamber


async def test_cells_in_the_chamber_follow_its_air(rig: Rig) -> None:
    cabinets = {name: rig.plant.cabinets[name] for name in ("in", "out")}
    await rig.daq.set_valves([301, 302], [303, 304, *COLD])  # half the hot loop: 45 °C at steady state
    await wait_for(3000.0, rig)
    air_c = float((await rig.truth())["air_c"])  # type: ignore[arg-type]
    assert air_c > 35.0
    inside = cabinets["in"].model.cells.temperature_c
    assert float(np.min(inside)) > 30.0 and float(np.max(inside)) < air_c + 0.5
    assert cabinets["out"].model.cells.temperature_c == pytest.approx(25.0, abs=1e-6)


async def test_instrument_errors_reach_the_driver_as_scpi_errors(rig: Rig) -> None:
    with pytest.raises(ScpiError) as info:
        await rig.daq.set_valves([309], [])  # 4 + 4 valves: 309 is not wired
    assert info.value.code == -222
    assert (await rig.daq.valve_states(HOT)).tolist() == [False] * 4  # nothing moved


async def test_every_driver_command_is_a_table_command_accepted_without_error(rig: Rig) -> None:
    rig.headers.clear()
    await rig.daq.identify()
    await rig.daq.read_temperatures_c(TCS)
    await rig.daq.set_valves(HOT[:2], HOT[2:] + COLD)
    await rig.daq.valve_states(HOT + COLD)
    await rig.daq.reset()
    dispatcher = rig.plant.chambers["ch1"].dispatcher
    sent = sorted(set(rig.headers) - {"SYST:ERR?"})
    assert sent == ["*IDN?", "*OPC?", "*RST", "MEAS:TEMP?", "ROUT:CLOS", "ROUT:CLOS?", "ROUT:OPEN"]
    assert all(dispatcher.resolve(header) is not None for header in sent)
    assert await rig.sim.query("SYST:ERR?") == '+0,"No error"'
    assert not (await rig.daq.valve_states(HOT + COLD)).any()  # *RST opened every relay
