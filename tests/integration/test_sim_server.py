"""The simulated cabinet over real TCP: asyncio streams, a plain pyvisa session, watchdog and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import pyvisa

from formation.clock import ScaledClock
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.sim.server import CabinetServer

SCALE = 200.0  # simulated seconds per wall second: a 2-minute sequence runs in well under a second


class Client:
    """A plain asyncio line client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def write(self, line: str) -> None:
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()

    async def query(self, line: str) -> str:
        await self.write(line)
        async with asyncio.timeout(5.0):
            return (await self.reader.readline()).decode().rstrip("\n")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(server: CabinetServer) -> AsyncIterator[Client]:
    client = Client(*await asyncio.open_connection("127.0.0.1", server.port))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def plant() -> AsyncIterator[SimulatedPlant]:
    clock = ScaledClock(SCALE)
    specs = [CabinetSpec("cab1", channels=64, seed=1, initial_soc=0.3, formed=True), CabinetSpec("cab2", 32)]
    async with SimulatedPlant(specs, clock) as running:
        yield running


@pytest.fixture
def worker() -> Iterator[ThreadPoolExecutor]:
    """One thread for blocking pyvisa calls, so the server on this loop keeps serving; joined afterwards."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="visa") as pool:
        yield pool


async def in_thread(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


async def test_plant_serves_each_cabinet_on_its_own_port(plant: SimulatedPlant) -> None:
    ports = {server.port for server in plant.cabinets.values()}
    assert len(ports) == 2 and 0 not in ports
    assert plant.resources["cab1"] == f"TCPIP0::127.0.0.1::{plant.cabinets['cab1'].port}::SOCKET"
    async with connect(plant.cabinets["cab1"]) as a, connect(plant.cabinets["cab2"]) as b:
        assert (await a.query("*IDN?")).split(",")[2] == "SIM-cab1"
        assert (await b.query("*IDN?")).split(",")[2] == "SIM-cab2"
        t1 = float(await a.query("SIM:TIME?"))
        t2 = float(await a.query("SIM:TIME?"))
        assert t2 >= t1


async def test_two_step_sequence_over_pyvisa(plant: SimulatedPlant, worker: ThreadPoolExecutor) -> None:
    server = plant.cabinets["cab1"]
    rm = pyvisa.ResourceManager("@py")
    inst: Any = None
    try:
        inst = await in_thread(worker, rm.open_resource, server.resource)
        inst.read_termination = "\n"
        inst.write_termination = "\n"
        inst.timeout = 5000
        assert (await in_thread(worker, inst.query, "*IDN?")).startswith("Formation,BT2200-SIM,")
        for line in (
            "CELL:DEF 1001,(@101)",
            "CELL:DEF 1002,(@102)",
            "SEQ:STEP:DEF 1,1,CHARGE,60,2.5,4.2",
            "SEQ:STEP:LOG 1,1,10,5",
            "SEQ:STEP:DEF 1,2,REST,60,0,0",
            "CELL:ENAB (@1001:1002),1",
            "CELL:INIT (@1001:1002)",
        ):
            await in_thread(worker, inst.write, line)
        assert await in_thread(worker, inst.query, "SYST:ERR?") == '+0,"No error"'
        async with asyncio.timeout(10.0):
            while (state := await in_thread(worker, inst.query, "STAT:CELL:REP? (@1001,1002)")) != "3,3":
                assert state in {"2,2", "2,3", "3,2"}
                await asyncio.sleep(0.02)
        volts = [float(v) for v in (await in_thread(worker, inst.query, "MEAS:CELL:VOLT? (@1001,1002)")).split(",")]
        assert all(3.0 < v < 4.2 for v in volts)
        assert await in_thread(worker, inst.query, "STAT:CELL:STEP? (@1001,1002)") == "1:2,1:2"

        await in_thread(worker, inst.write, "DATA:LOG? 1,1000")
        head = bytes(await in_thread(worker, inst.read_bytes, 2))
        assert head[:1] == b"#"
        length = int(bytes(await in_thread(worker, inst.read_bytes, int(head[1:2]))))
        payload = bytes(await in_thread(worker, inst.read_bytes, length + 1))
        assert payload[length:] == b"\n"  # the reply terminator after the block
        lines = payload[:length].decode().splitlines()
        ends = [line.split(",") for line in lines if line.split(",")[-1] != "0"]
        assert sorted((e[1], e[3], e[-1]) for e in ends) == [
            ("1001", "1", "1"),
            ("1001", "2", "1"),
            ("1002", "1", "1"),
            ("1002", "2", "1"),
        ]
        await in_thread(worker, inst.write, "NOT:A:COMMAND")
        assert await in_thread(worker, inst.query, "SYST:ERR?") == '-113,"Undefined header"'
    finally:
        if inst is not None:
            await in_thread(worker, inst.close)
        await in_thread(worker, rm.close)


async def test_watchdog_aborts_running_cells_when_host_is_silent(plant: SimulatedPlant) -> None:
    server = plant.cabinets["cab1"]
    async with connect(server) as host:
        await host.write("CELL:DEF 1001,(@101);CELL:DEF 1002,(@102);SEQ:STEP:DEF 1,1,CHARGE,86400,1,4.2")
        await host.write("CELL:ENAB (@1001:1002),1;CELL:INIT (@1001:1002);SYST:COMM:WDOG 0.1")
        assert await host.query("STAT:CELL:REP? (@1001,1002)") == "2,2"
        async with asyncio.timeout(5.0):
            while server.watchdog_trips == 0:  # watched in-process: a query would feed the watchdog
                await asyncio.sleep(0.01)
        assert await host.query("STAT:CELL:REP? (@1001,1002)") == "5,5"
        assert await host.query("MEAS:CELL:CURR? (@1001,1002)") == "0.000000,0.000000"
        verbose = await host.query("STAT:CELL:VERB? 1001")
        assert verbose.split(",")[8] == "31"


async def test_drop_closes_other_connections_only(plant: SimulatedPlant) -> None:
    server = plant.cabinets["cab2"]
    async with connect(server) as victim, connect(server) as injector:
        assert await victim.query("*OPC?") == "1"
        await injector.write("SIM:FAULT:DROP")
        async with asyncio.timeout(5.0):
            assert await victim.reader.read() == b""
        assert await injector.query("*OPC?") == "1"


async def test_stall_delays_replies_on_every_connection(plant: SimulatedPlant) -> None:
    server = plant.cabinets["cab2"]
    async with connect(server) as a, connect(server) as b:
        assert await a.query("*OPC?") == "1"
        started = time.monotonic()
        assert await a.query("SIM:FAULT:STALL 0.4;*OPC?") == "1"
        assert time.monotonic() - started >= 0.35  # a lower bound: slow machines only make it larger
        await a.write("SIM:FAULT:STALL 0.4")
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await b.query("*IDN?") != ""
        assert time.monotonic() - started >= 0.2


async def test_several_clients_share_one_error_queue(plant: SimulatedPlant) -> None:
    server = plant.cabinets["cab1"]
    async with connect(server) as a, connect(server) as b:
        await a.write("BOGUS")
        assert await b.query("SYST:ERR?") == '-113,"Undefined header"'
        assert await a.query("SYST:ERR?") == '+0,"No error"'


async def test_ground_truth_queries_over_tcp(plant: SimulatedPlant) -> None:
    server = plant.cabinets["cab1"]
    async with connect(server) as host:
        await host.write("CELL:DEF 1001,(@101)")
        truth = json.loads(await host.query("SIM:CELL:TRUTH? 1001"))
        assert truth["k_mv_per_day"] > 0.0 and truth["ocv_slope_v"] > 0.0
        dcir_ohm = [float(v) for v in (await host.query("SIM:CELL:DCIR? 1001,-5,1,10,18")).split(",")]
        circuit_1s_ohm = sum(
            truth[r] * (1.0 - math.exp(-1.0 / truth[tau])) for r, tau in (("r1_ohm", "tau1_s"), ("r2_ohm", "tau2_s"))
        )
        assert len(dcir_ohm) == 3 and dcir_ohm[0] == pytest.approx(truth["r0_ohm"] + circuit_1s_ohm, rel=0.03)
        assert dcir_ohm[0] < dcir_ohm[1] < dcir_ohm[2]
        assert await host.query("SYST:ERR?") == '+0,"No error"'
