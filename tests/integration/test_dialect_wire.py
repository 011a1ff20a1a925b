"""The two copies of the wire contract mean the same thing, proved through the wire.

The driver decodes with ``formation/instruments/program.py``; the simulator means with ``formation/sim/wire.py``.
Cells run on a simulated cabinet (real TCP, loopback) through the real driver, in every state at once: never
defined, idle, enabled, running, done after a charge that ended on a voltage NEXT test, failed by a FAIL test,
aborted. What the driver reads (``STAT:CELL:REP?`` states, ``STAT:CELL:STEP?`` positions, ``STAT:CELL:VERB?`` end
codes, ``DATA:LOG?`` columns and end codes, the modes behind the logged currents) is compared with the simulator's
own ground truth (its model, its data log, ``SIM:CELL:TRUTH?``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

import formation.instruments.program as drv
import formation.sim.wire as sim
from formation.clock import ScaledClock
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.scpi import ScpiSession
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.sim.server import CabinetServer

SCALE = 4000.0
VOLT_NEXT_V = 3.95  # the charge's voltage NEXT test (test 2); the cells start at 50 % SOC, about 3.78 V under load

UNDEFINED = [60]
IDLE = [1, 2]
ENABLED = [3, 4]
NEXT_THEN_TIME = [5, 6, 7, 8]
FAILED = [9, 10]
ABORTED = [11, 12]
RUNNING = [13, 33]  # two slots: instrument channels 113 and 201
DEFINED = IDLE + ENABLED + NEXT_THEN_TIME + FAILED + ABORTED + RUNNING
EVERY = DEFINED + UNDEFINED

CHARGE_TO_VOLTAGE = drv.StepProgram(
    steps=(
        drv.InstrumentStep(
            mode=drv.StepMode.CHARGE,
            duration_s=4 * 3600.0,
            current_a=2.5,
            voltage_v=4.2,
            tests=(
                drv.StepTest(drv.TestType.TEMP_GE, 90.0, drv.TestAction.FAIL),
                drv.StepTest(drv.TestType.VOLT_GE, VOLT_NEXT_V),
            ),
            every_s=60.0,
            every_mv=0.0,
        ),
        drv.InstrumentStep(mode=drv.StepMode.REST, duration_s=60.0, every_s=30.0, every_mv=0.0),
    )
)
DISCHARGE_THAT_FAILS = drv.StepProgram(
    steps=(
        drv.InstrumentStep(
            mode=drv.StepMode.DISCHARGE,
            duration_s=600.0,
            current_a=1.0,
            voltage_v=2.5,
            tests=(
                drv.StepTest(drv.TestType.VOLT_LE, 1.0),  # never holds
                drv.StepTest(drv.TestType.VOLT_LE, 4.5, drv.TestAction.FAIL),  # holds at once
            ),
        ),
    )
)
LONG_REST = drv.StepProgram(steps=(drv.InstrumentStep(mode=drv.StepMode.REST, duration_s=10 * 86400.0),))


@dataclass
class Rig:
    server: CabinetServer
    clock: ScaledClock
    cycler: Bt2200Cycler
    injector: ScpiSession
    seqs: dict[str, int]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = ScaledClock(SCALE)
    spec = CabinetSpec("cab", channels=64, seed=5, initial_soc=0.5, formed=True, defect_fraction=0.0)
    async with SimulatedPlant([spec], clock) as plant:
        server = plant.cabinets["cab"]
        async with (
            Bt2200Cycler(ScpiSession(server.resource, timeout_s=2.0, name="cab")) as cycler,
            ScpiSession(server.resource, timeout_s=2.0, name="injector") as injector,
        ):
            await cycler.reset()
            await cycler.define_cells(DEFINED)
            seqs = {
                "charge": await cycler.load_program(CHARGE_TO_VOLTAGE),
                "fail": await cycler.load_program(DISCHARGE_THAT_FAILS),
                "rest": await cycler.load_program(LONG_REST),
            }
            await cycler.start(NEXT_THEN_TIME, seqs["charge"])
            await cycler.start(FAILED, seqs["fail"])
            await cycler.start(ABORTED + RUNNING, seqs["rest"])
            await cycler.abort(ABORTED)
            # Enabled but never started: the driver has no enable-only method, so a second client binds them.
            ids = ",".join(str(drv.channel_to_cell_id(ch)) for ch in ENABLED)
            await injector.write(f"CELL:ENAB (@{ids}),{seqs['rest']}")
            await injector.raise_on_errors("CELL:ENAB")
            deadline = clock.now() + 6 * 3600.0
            while clock.now() < deadline:
                done = await cycler.status(NEXT_THEN_TIME)
                if np.all(done == drv.CellState.DONE):
                    break
                await clock.sleep(60.0)
            else:
                pytest.fail("the charge never ended on its voltage test and rest")
            yield Rig(server, clock, cycler, injector, seqs)


def indices(rig: Rig, channels: list[int]) -> np.ndarray:
    return rig.server.model.indices([drv.channel_to_cell_id(ch) for ch in channels])


async def test_states_positions_and_last_ends_mean_the_same_on_both_sides(rig: Rig) -> None:
    model = rig.server.model
    codes = await rig.cycler.status(EVERY)
    truth = model.status([drv.channel_to_cell_id(ch) for ch in EVERY])
    np.testing.assert_array_equal(codes, truth)
    decoded = {ch: drv.CellState(int(c)).name for ch, c in zip(EVERY, codes.tolist(), strict=True)}
    meant = {ch: sim.CellState(int(c)).name for ch, c in zip(EVERY, truth.tolist(), strict=True)}
    assert decoded == meant
    expected = {
        **dict.fromkeys(UNDEFINED, "UNDEFINED"),
        **dict.fromkeys(IDLE, "IDLE"),
        **dict.fromkeys(ENABLED, "ENABLED"),
        **dict.fromkeys(NEXT_THEN_TIME, "DONE"),
        **dict.fromkeys(FAILED, "FAIL"),
        **dict.fromkeys(ABORTED, "ABORTED"),
        **dict.fromkeys(RUNNING, "RUNNING"),
    }
    assert decoded == expected

    seqs, steps = await rig.cycler.step_positions(DEFINED)
    idx = indices(rig, DEFINED)
    np.testing.assert_array_equal(seqs, model.seq[idx])
    np.testing.assert_array_equal(steps, model.step[idx])
    by_channel = dict(zip(DEFINED, zip(seqs.tolist(), steps.tolist(), strict=True), strict=True))
    assert {by_channel[ch] for ch in NEXT_THEN_TIME} == {(rig.seqs["charge"], 2)}
    assert {by_channel[ch] for ch in FAILED} == {(rig.seqs["fail"], 1)}
    assert {by_channel[ch] for ch in RUNNING} == {(rig.seqs["rest"], 1)}

    expected_end = {"time": NEXT_THEN_TIME, "fail2": FAILED, "abort": ABORTED}
    for name, channels in expected_end.items():
        for ch in channels:
            code = await rig.cycler.last_end(ch)
            assert code == int(model.last_end[indices(rig, [ch])[0]])
            assert drv.EndCode.describe(code) == sim.EndCode.describe(code) == name


async def test_log_columns_through_the_wire_are_the_simulators_columns(rig: Rig) -> None:
    truth = rig.server.model.log.read(1, 10**7)  # from rec 1: acknowledges nothing
    rows = await rig.cycler.read_log(1, 10**6)
    n = min(rows.shape[0], truth.shape[0])
    assert n > 0 and truth.shape[0] <= rows.shape[0]
    assert drv.LOG_COLUMNS == sim.LOG_COLUMNS
    for name in drv.LOG_COLUMNS:
        got, meant = rows[:n, drv.LOG_COL[name]], truth[:n, sim.LOG_COL[name]]
        np.testing.assert_allclose(got, meant, rtol=1e-8, atol=1e-3, err_msg=name)
    # Records of cells that are defined, on the cells the driver named.
    cells = set(rows[:, drv.LOG_COL["cell"]].astype(int).tolist())
    assert cells == {drv.channel_to_cell_id(ch) for ch in NEXT_THEN_TIME + FAILED + ABORTED + RUNNING}


async def test_end_codes_and_step_modes_through_the_wire(rig: Rig) -> None:
    rows = await rig.cycler.read_log(1, 10**6)
    c = drv.LOG_COL

    def of(ch: int, step: int | None = None) -> np.ndarray:
        mine = rows[rows[:, c["cell"]] == drv.channel_to_cell_id(ch)]
        return mine if step is None else mine[mine[:, c["step"]] == step]

    for ch in NEXT_THEN_TIME:
        charge, rest = of(ch, 1), of(ch, 2)
        ends = charge[charge[:, c["end"]] != 0]
        assert ends.shape[0] == 1
        end = int(ends[0, c["end"]])
        assert end == drv.EndCode.NEXT_BASE + 2 == sim.EndCode.NEXT_BASE + 2
        assert drv.EndCode.describe(end) == sim.EndCode.describe(end) == "test2"
        assert ends[0, c["voltage_v"]] >= VOLT_NEXT_V  # test 2 is the voltage test, and it held
        assert np.all(charge[:-1, c["voltage_v"]] < VOLT_NEXT_V)  # and not before
        assert np.all(charge[1:, c["current_a"]] > 0)  # CHARGE: + current
        rest_end = rest[rest[:, c["end"]] != 0]
        assert int(rest_end[0, c["end"]]) == drv.EndCode.TIME == sim.EndCode.TIME
        assert rest_end[0, c["step_time_s"]] == pytest.approx(60.0)
        assert np.all(rest[:, c["current_a"]] == 0.0)  # REST: no current

    for ch in FAILED:
        log = of(ch)
        assert np.all(log[:, c["step"]] == 1) and np.all(log[:, c["current_a"]] < 0)  # DISCHARGE: − current
        end = int(log[-1, c["end"]])
        assert end == drv.EndCode.FAIL_BASE + 2 == sim.EndCode.FAIL_BASE + 2
        assert drv.EndCode.describe(end) == sim.EndCode.describe(end) == "fail2"

    for ch in ABORTED:
        end = int(of(ch)[-1, c["end"]])
        assert end == drv.EndCode.ABORT == sim.EndCode.ABORT
        assert drv.EndCode.describe(end) == sim.EndCode.describe(end) == "abort"

    for ch in RUNNING:
        assert np.all(of(ch)[:, c["end"]] == 0)


async def test_parsed_programs_and_channel_numbers_agree(rig: Rig) -> None:
    model = rig.server.model
    for name, program in (("charge", CHARGE_TO_VOLTAGE), ("fail", DISCHARGE_THAT_FAILS), ("rest", LONG_REST)):
        parsed = model.sequences[rig.seqs[name]]
        for sim_step, step in zip(parsed, program.steps, strict=True):
            assert sim.StepMode(step.mode.value) == sim_step.mode
            assert (sim_step.duration_s, sim_step.every_s, sim_step.every_mv) == (
                step.duration_s,
                step.every_s,
                step.every_mv,
            )
            for n, test in enumerate(step.tests, start=1):
                meant = sim_step.tests[n]
                assert (meant.type.value, meant.when.value, meant.action.value) == (
                    test.type.value,
                    test.when.value,
                    test.action.value,
                )
                assert (meant.value, meant.at_s) == (test.value, test.at_s)
    for ch in (IDLE[0], RUNNING[-1]):
        reply = await rig.injector.query(f"SIM:CELL:TRUTH? {drv.channel_to_cell_id(ch)}")
        assert json.loads(reply)["channel"] == drv.channel_to_instrument(ch)
