"""The BT3562-dialect tester driver against the simulated tester over real TCP (pyvisa-py), inside a simulated plant.

Cells moved from a cabinet onto a rack keep their state and follow the chamber, readings match the truth within
the instrument's noise, no contact and a stalled tester reach the driver typed, and every command the driver
sends is a table command accepted without error (the dialect coverage).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from formation.clock import ScaledClock
from formation.errors import InstrumentTimeout
from formation.instruments import bt3562
from formation.instruments.bt3562 import ReadingFault, scanner_channel
from formation.instruments.scpi import ScpiSession
from formation.sim import tester as sim_tester
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.sim.rack import RackSpec
from formation.sim.tester_commands import COMMAND_TABLE

SCALE = 2000.0
#: Table entries the driver never sends, each with its reason (docs/bt3562-dialect.md lists them too).
NOT_USED_BY_DRIVER = {
    "*ESR?": "the session drains the error queue instead",
    "*STB?": "the session drains the error queue instead",
    "*CLS": "nothing to clear before a reading",
    ":ROUT:CLOS?": "the driver closes the channel it reads in the same line",
}


class Client:
    """A plain asyncio line client, for the simulator-only commands (they are not the driver's)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def query(self, line: str) -> str:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        async with asyncio.timeout(5.0):
            return (await self.reader.readline()).decode().rstrip("\n")

    async def send(self, line: str) -> None:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()

    async def write(self, line: str) -> None:
        await self.send(line)
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
    tester: bt3562.Bt3562Tester
    sim: Client
    chamber: Client
    headers: list[str]

    async def truth(self, position: int) -> dict[str, float]:
        return dict(json.loads(await self.sim.query(f"SIM:RACK:TRUTH? rack1,{position}")))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    cabinet = CabinetSpec("cab1", channels=8, seed=3, initial_soc=0.3, formed=True, chamber="ch1")
    async with SimulatedPlant(
        [cabinet],
        ScaledClock(SCALE),
        chambers=[ChamberSpec("ch1", seed=5)],
        racks=[RackSpec("rack1", positions=16, chamber="ch1", seed=7)],
        testers=[sim_tester.TesterSpec("t1", ("rack1",), seed=2)],
    ) as plant:
        server = plant.testers["t1"]
        headers: list[str] = []
        server.dispatcher.recorder = headers.append
        session = ScpiSession(plant.tester_resources["t1"], timeout_s=1.0, name="t1")
        async with (
            bt3562.Bt3562Tester(session) as tester,
            connect(server.port) as sim,
            connect(plant.chambers["ch1"].port) as chamber,
        ):
            yield Rig(plant, tester, sim, chamber, headers)


async def test_moved_cells_keep_their_state_and_read_as_their_truth(rig: Rig) -> None:
    async with connect(rig.plant.cabinets["cab1"].port) as cab:
        cab_truth = []
        for k in range(4):
            await cab.write(f"CELL:DEF {1001 + k},(@{101 + k})")
            cab_truth.append(json.loads(await cab.query(f"SIM:CELL:TRUTH? {1001 + k}")))
    for k in range(4):
        await rig.sim.write(f"SIM:RACK:LOAD rack1,{k + 1},cab1,{101 + k}")
    await rig.tester.configure(resistance_range_ohm=30e-3, voltage_range_v=6.0, sample_rate="SLOW")
    readings = await rig.tester.read_positions([scanner_channel(1, p) for p in range(1, 6)])
    for k, reading in enumerate(readings[:4]):
        truth = await rig.truth(k + 1)
        assert truth["cell"] == 1001 + k and truth["channel"] == 101 + k
        assert truth["capacity_ah"] == cab_truth[k]["capacity_ah"]
        assert abs(truth["soc"] - cab_truth[k]["soc"]) < 1e-5  # the same charge, a moment of self-discharge later
        assert reading.ok and reading.resistance_ohm is not None and reading.voltage_v is not None
        assert reading.resistance_ohm == pytest.approx(truth["acir_ohm"] + truth["contact_ohm"], abs=10e-6)
        assert reading.voltage_v == pytest.approx(truth["ocv_v"], abs=100e-6)
    assert readings[4].fault is ReadingFault.NO_CONTACT  # position 5 is empty
    assert await rig.sim.query("SIM:RACK:LOAD rack1,6,cab1,101;SYST:ERR?") == '-221,"Settings conflict"'


async def test_rack_cells_follow_the_chamber_air(rig: Rig) -> None:
    await rig.sim.write("SIM:RACK:LOAD rack1,1,cab1,101")
    await rig.chamber.write("SIM:FAULT:AMB 40")  # no loop holds the chamber: its air drifts to the new ambient
    rack = rig.plant.racks["rack1"]
    start_s = rack.time_s
    while rack.time_s < start_s + 1.5 * 3600.0:
        await asyncio.sleep(0.05)
        await rig.sim.query("SIM:TIME?")  # each command advances the rack with its chamber
    air_c = json.loads(await rig.chamber.query("SIM:CHAM:TRUTH?"))["air_c"]
    cell_c = (await rig.truth(1))["temperature_c"]
    assert air_c > 35.0 and abs(cell_c - air_c) < 0.5


async def test_no_contact_and_a_stalled_tester_reach_the_driver_typed(rig: Rig) -> None:
    await rig.sim.write("SIM:RACK:LOAD rack1,3,cab1,103")
    await rig.sim.write("SIM:FAULT:CONT (@1003)")
    reading = await rig.tester.read(1003)
    assert reading.fault is ReadingFault.NO_CONTACT and reading.resistance_ohm is None and reading.voltage_v is None
    await rig.sim.write("SIM:FAULT:CLE")
    assert (await rig.tester.read(1003)).ok
    await rig.sim.send("SIM:FAULT:STALL 1.5")  # no error check: the tester answers nobody for 1.5 s
    with pytest.raises(InstrumentTimeout):
        await rig.tester.read(1003)
    await rig.sim.write("SIM:FAULT:CLE")  # answered once the stall is over
    assert (await rig.tester.read(1003)).ok  # the session reconnects after the timeout


async def test_every_driver_command_is_a_table_command_accepted_without_error(rig: Rig) -> None:
    await rig.sim.write("SIM:RACK:LOAD rack1,1,cab1,101")
    rig.headers.clear()
    server = rig.plant.testers["t1"]
    assert (await rig.tester.identify()).startswith("Formation,BT3562-SIM,SIM-t1,")
    await rig.tester.reset()
    await rig.tester.configure(resistance_range_ohm=30e-3, voltage_range_v=6.0, sample_rate="FAST")
    assert await rig.tester.settings() == ("RV", 0.03, 6.0, "FAST")
    assert (await rig.tester.read(1001)).ok
    await rig.tester.read_positions([1001, 1002])
    await rig.tester.open_scanner()
    assert await rig.tester.session.check_errors("after every driver method") == []
    assert len(server.commands.errors) == 0 and server.commands.errors.esr == 0
    hit = set()
    for header in rig.headers:
        found = server.dispatcher.resolve(header)
        assert found is not None, f"the driver sent {header!r}, which is not in COMMAND_TABLE"
        hit.add(found.short)
    public = {name for name in dir(bt3562.Bt3562Tester) if not name.startswith("_")} - {"session"}
    assert public == {"identify", "reset", "configure", "settings", "read", "read_positions", "open_scanner"}
    for spec in COMMAND_TABLE:
        if spec.header.startswith("SIM:"):
            continue
        assert spec.short in hit or spec.short in NOT_USED_BY_DRIVER, f"{spec.short} is neither sent nor documented"
        assert not (spec.short in hit and spec.short in NOT_USED_BY_DRIVER), f"{spec.short} is sent after all"
    assert set(NOT_USED_BY_DRIVER) <= {spec.short for spec in COMMAND_TABLE}


def test_the_commands_the_driver_does_not_send_are_documented() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "bt3562-dialect.md").read_text(encoding="utf-8")
    section = text[text.index("## Commands the driver does not send") :]
    section = section[: section.index("\n## ", 1)]
    for short in NOT_USED_BY_DRIVER:
        assert f"`{short}`" in section
