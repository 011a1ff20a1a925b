"""The driver against the simulated cabinet over real TCP (pyvisa-py): a run, a dropped link, a stall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.errors import InstrumentProtocolError, InstrumentTimeout
from formation.instruments import (
    LOG_COL,
    Bt2200Cycler,
    CellState,
    EndCode,
    InstrumentStep,
    StepMode,
    StepProgram,
    StepTest,
    TestType,
)
from formation.instruments.scpi import ScpiSession
from formation.sim.plant import CabinetSpec, SimulatedPlant

CHANNELS = list(range(1, 41))  # two slots: lists compress to (@1001:1040), instrument channels 101..208
SCALE = 2000.0


def two_step(charge_s: float, rest_s: float) -> StepProgram:
    """A C/5 charge of a 5 Ah cell (voltage-limited test as a safety end) then a rest."""
    return StepProgram(
        steps=(
            InstrumentStep(
                mode=StepMode.CHARGE,
                duration_s=charge_s,
                current_a=1.0,
                voltage_v=4.2,
                tests=(StepTest(TestType.VOLT_GE, 4.19),),
                every_s=10,
                every_mv=0,
            ),
            InstrumentStep(mode=StepMode.REST, duration_s=rest_s, every_s=10, every_mv=0),
        )
    )


@dataclass
class Rig:
    plant: SimulatedPlant
    clock: ScaledClock
    cycler: Bt2200Cycler
    resource: str


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = ScaledClock(SCALE)
    spec = CabinetSpec("cab1", channels=64, preset="ncm21700-5ah", seed=7)
    async with SimulatedPlant([spec], clock) as plant:
        resource = plant.cabinets["cab1"].resource
        session = ScpiSession(resource, timeout_s=0.5, name="cab1")
        async with Bt2200Cycler(session) as cycler:
            await cycler.reset()
            await cycler.clear_status()
            await cycler.define_cells(CHANNELS)
            yield Rig(plant, clock, cycler, resource)


async def drain(cycler: Bt2200Cycler, from_rec: int, max_rows: int = 100_000) -> tuple[np.ndarray, int]:
    """Read the log from ``from_rec`` until a read comes back empty; return the rows and the next rec."""
    blocks = []
    while (block := await cycler.read_log(from_rec, max_rows)).shape[0]:
        blocks.append(block)
        from_rec = int(block[-1, LOG_COL["rec"]]) + 1
    rows = np.concatenate(blocks) if blocks else np.empty((0, len(LOG_COL)))
    return rows, from_rec


async def wait_all(cycler: Bt2200Cycler, clock: ScaledClock, state: CellState, horizon_s: float) -> None:
    """Poll status every 5 clock seconds until every channel is in ``state`` (fail past ``horizon_s``)."""
    deadline = clock.now() + horizon_s
    while clock.now() < deadline:
        if np.all(await cycler.status(CHANNELS) == state):
            return
        await clock.sleep(5.0)
    pytest.fail(f"channels not all {state.name} within {horizon_s} clock seconds")


def assert_continuous(rows: np.ndarray, first_rec: int, next_rec: int) -> None:
    rec = rows[:, LOG_COL["rec"]].astype(np.int64)
    assert rec[0] == first_rec and rec[-1] == next_rec - 1
    np.testing.assert_array_equal(np.diff(rec), 1)  # no gap, no duplicate


async def test_run_two_step_program_to_done_and_drain_the_log(rig: Rig) -> None:
    cyc = rig.cycler
    assert (await cyc.identify()).startswith("Formation,BT2200-SIM")
    seq = await cyc.load_program(two_step(charge_s=300, rest_s=120))
    assert await cyc.load_program(two_step(charge_s=300, rest_s=120)) == seq
    await cyc.start(CHANNELS, seq)
    assert set((await cyc.status(CHANNELS)).tolist()) <= {CellState.RUNNING, CellState.DONE}
    m = await cyc.measure(CHANNELS)
    assert m.voltage_v.shape == (len(CHANNELS),) and np.all((m.voltage_v > 2.5) & (m.voltage_v < 4.3))
    await wait_all(cyc, rig.clock, CellState.DONE, horizon_s=3000)
    seqs, steps = await cyc.step_positions(CHANNELS)
    assert np.all(seqs == seq) and np.all(steps == 2)

    rows, next_rec = await drain(cyc, 1, max_rows=97)  # odd page size: pages split cells' records
    assert next_rec == await cyc.log_next_rec()
    assert_continuous(rows, 1, next_rec)
    cells = rows[:, LOG_COL["cell"]].astype(np.int64)
    assert set(cells.tolist()) == {1000 + ch for ch in CHANNELS}
    ends = rows[rows[:, LOG_COL["end"]] != 0]
    # Each cell ends both steps by time (C/5 for 300 s never reaches 4.19 V from empty).
    assert ends.shape[0] == 2 * len(CHANNELS)
    assert np.all(ends[:, LOG_COL["end"]] == EndCode.TIME)
    charge = rows[(rows[:, LOG_COL["step"]] == 1) & (rows[:, LOG_COL["end"]] != 0)]
    np.testing.assert_allclose(charge[:, LOG_COL["step_ah"]], 300 / 3600, rtol=0.05)
    assert (await cyc.read_log(next_rec)).shape[0] == 0  # acknowledged records are gone


async def test_dropped_link_mid_run_is_survived_without_gap_or_duplicate(rig: Rig) -> None:
    cyc = rig.cycler
    seq = await cyc.load_program(two_step(charge_s=600, rest_s=300))
    await cyc.start(CHANNELS, seq)
    async with ScpiSession(rig.resource, timeout_s=0.5, name="injector") as injector:
        rows = []
        from_rec = 1
        dropped = False
        while True:
            done = bool(np.all(await cyc.status(CHANNELS) == CellState.DONE))
            block, from_rec = await drain(cyc, from_rec, max_rows=50)
            rows.append(block)
            if not dropped and block.shape[0]:
                await injector.write("SIM:FAULT:DROP")
                assert await injector.query("*OPC?") == "1"  # the drop has been executed
                dropped = True
            if done and block.shape[0] == 0:
                break
            await rig.clock.sleep(20.0)
    assert cyc.session.reconnects >= 1
    log = np.concatenate(rows)
    assert_continuous(log, 1, from_rec)
    assert np.count_nonzero(log[:, LOG_COL["end"]]) == 2 * len(CHANNELS)


async def test_stall_longer_than_timeout_raises_and_the_next_reply_is_not_stale(rig: Rig) -> None:
    cyc = rig.cycler
    async with ScpiSession(rig.resource, timeout_s=0.5, name="injector") as injector:
        await injector.write("SIM:FAULT:STALL 1.0")
        # The injector's line must be read by the server before ours; both ride the same event loop.
        await asyncio.sleep(0.05)
        with pytest.raises(InstrumentTimeout) as info:
            await cyc.measure(CHANNELS)
        assert info.value.command is not None and info.value.command.startswith("MEAS:CELL:VOLT?")
        assert cyc.session.timeouts >= 1
        identity = None
        for _ in range(10):  # the stall outlasts a few timeouts; every answer must be the right one
            try:
                identity = await cyc.identify()
                break
            except InstrumentTimeout:
                continue
        assert identity is not None and identity.startswith("Formation,BT2200-SIM")
        assert (await cyc.status(CHANNELS)).tolist() == [CellState.IDLE] * len(CHANNELS)


async def test_the_scpi_socket_sends_small_writes_at_once(rig: Rig) -> None:
    """TCP_NODELAY: without it a write followed by a query waits ~40 ms for the peer's delayed ACK (Nagle)."""
    import socket

    session = ScpiSession(rig.resource, timeout_s=0.5, name="probe")
    async with session:
        assert "BT2200" in await session.query("*IDN?")
        res = session._res
        assert res is not None
        sock = res.visalib.sessions[res.session].interface  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_download_that_lost_a_line_is_refused_and_downloaded_again(rig: Rig) -> None:
    """Lines lost unread (as under a dropped connection) leave no error in the queue: the step count tells."""
    program = two_step(charge_s=300, rest_s=120)
    async with ScpiSession(rig.resource, name="injector") as injector:
        await injector.write("SIM:FAULT:LOSE 3")  # the SEQ:CLE and both steps' lines
    with pytest.raises(InstrumentProtocolError, match=r"holds 0 step\(s\) after a download of 2: a command was lost"):
        await rig.cycler.load_program(program)
    seq = await rig.cycler.load_program(program)  # not cached: downloaded again, whole this time
    assert await rig.cycler.load_program(program) == seq
    await rig.cycler.start(CHANNELS, seq)
    assert np.all(await rig.cycler.status(CHANNELS) == CellState.RUNNING)
