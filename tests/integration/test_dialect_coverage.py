"""Every command the driver can write is a simulator command, accepted without error; and the reverse.

The real driver (``Bt2200Cycler`` over ``ScpiSession``) runs every public method against a simulated cabinet on a
loopback port. The cabinet's dispatcher records the header of every command it receives; each must name a
``COMMAND_TABLE`` entry, and the error queue must stay empty. In reverse, every table entry that is not
simulator-only is either sent by the driver or listed in docs/bt2200-dialect.md as not used by it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from formation.clock import ScaledClock
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import (
    InstrumentStep,
    StepMode,
    StepProgram,
    StepTest,
    TestAction,
    TestType,
    TestWhen,
)
from formation.instruments.scpi import ScpiSession
from formation.sim.commands import COMMAND_TABLE
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.sim.scpi import CommandSpec

DIALECT_DOC = Path(__file__).resolve().parents[2] / "docs" / "bt2200-dialect.md"
CHANNELS = [1, 2, 3, 33, 34, 40]  # two slots, with a gap: lists compress to (@1001:1003,1033:1034,1040)

#: Table entries the driver never sends, each with its reason (docs/bt2200-dialect.md lists them too).
NOT_USED_BY_DRIVER: dict[str, str] = {
    "*ESR?": "the driver reads the error queue (SYST:ERR?) instead of the event status register",
    "*STB?": "the driver reads the error queue (SYST:ERR?) instead of the status byte",
    "CELL:DEF:CLE": "the driver redefines cells in place and never forgets them",
    "DATA:LOG:LOST?": "the host detects lost records from gaps in rec numbers",
    "SYST:COMM:WDOG?": "the driver sets the watchdog and never reads it back",
}


def every_keyword_program() -> StepProgram:
    """One step per step mode, and every test type, time type and action the driver can send.

    The test values never hold (GE against huge values, LE against negative ones), so the cells keep running.
    """
    whens, actions = list(TestWhen), list(TestAction)
    tests = tuple(
        StepTest(
            t,
            1e6 if t.value.endswith("_GE") else -1.0,
            action=actions[i % len(actions)],
            when=whens[i % len(whens)],
            at_s=30.0 * (i % 3),
        )
        for i, t in enumerate(TestType)
    )
    assert len(tests) <= 8, "more test types than tests per step: spread them over the steps"
    return StepProgram(
        steps=tuple(
            InstrumentStep(mode=mode, duration_s=3600.0, current_a=1.0, voltage_v=4.2, tests=tests, every_s=10)
            for mode in StepMode
        )
    )


def public_methods() -> set[str]:
    return {name for name, _ in inspect.getmembers(Bt2200Cycler, inspect.isfunction) if not name.startswith("_")}


async def test_every_driver_command_is_a_table_command_accepted_without_error() -> None:
    clock = ScaledClock(1000.0)
    spec = CabinetSpec("cab", channels=64, seed=3, initial_soc=0.5, formed=True)
    async with SimulatedPlant([spec], clock) as plant:
        server = plant.cabinets["cab"]
        headers: list[str] = []
        server.dispatcher.recorder = headers.append
        session = ScpiSession(server.resource, timeout_s=2.0, name="cab")
        exercised: set[str] = set()

        async with Bt2200Cycler(session) as cycler:

            async def run(name: str, call: Callable[[], Awaitable[object]]) -> object:
                exercised.add(name)
                return await call()

            await run("reset", cycler.reset)
            await run("clear_status", cycler.clear_status)
            assert str(await run("identify", cycler.identify)).startswith("Formation,BT2200-SIM")
            await run("set_watchdog", lambda: cycler.set_watchdog(600.0))
            await run("define_cells", lambda: cycler.define_cells(CHANNELS))
            program = every_keyword_program()
            seq = await run("load_program", lambda: cycler.load_program(program))
            assert isinstance(seq, int)
            exercised.add("reserve_sequences")
            cycler.reserve_sequences([seq])  # host-side only: sends nothing
            exercised.add("forget_program")
            cycler.forget_program(program)  # host-side only: sends nothing
            exercised.add("forget_programs")
            cycler.forget_programs()  # host-side only: sends nothing
            await run("start", lambda: cycler.start(CHANNELS, seq))
            await run("status", lambda: cycler.status(CHANNELS))
            await run("step_positions", lambda: cycler.step_positions(CHANNELS))
            await run("measure", lambda: cycler.measure(CHANNELS))
            await run("last_end", lambda: cycler.last_end(CHANNELS[0]))
            await run("log_next_rec", cycler.log_next_rec)
            # The instrument's clock is the plant's: within a few ms of wall time (x1000) of the shared clock.
            assert abs(float(str(await run("instrument_time_s", cycler.instrument_time_s))) - clock.now()) < 20.0
            await run("read_log", lambda: cycler.read_log(1, 1000))
            await run("abort", lambda: cycler.abort(CHANNELS))
            await run("set_watchdog", lambda: cycler.set_watchdog(0.0))
            assert await session.check_errors("after every driver method") == []

        assert exercised == public_methods(), "a public driver method is not exercised here"
        # Simulator-side ground truth: no command, execution or query error was ever raised.
        assert len(server.commands.errors) == 0
        assert server.commands.errors.esr == 0

        resolved: dict[str, CommandSpec] = {}
        for header in headers:
            found = server.dispatcher.resolve(header)
            assert found is not None, f"the driver sent {header!r}, which is not in COMMAND_TABLE"
            assert found in COMMAND_TABLE
            resolved[header] = found
        # Every step mode, test type, time type and action reached the simulator as text it parsed.
        parsed = server.model.sequences[seq]
        assert [s.mode.value for s in parsed] == [s.mode.value for s in program.steps]
        for sim_step, step in zip(parsed, program.steps, strict=True):
            sent = [(t.type.value, t.value, t.when.value, t.at_s, t.action.value) for t in step.tests]
            got = [(t.type.value, t.value, t.when.value, t.at_s, t.action.value) for t in sim_step.tests.values()]
            assert got == sent

    hit = {spec.short for spec in resolved.values()}
    for spec in COMMAND_TABLE:
        if spec.header.startswith("SIM:"):
            continue  # simulator-only: never sent by a host driver
        assert spec.short in hit or spec.short in NOT_USED_BY_DRIVER, f"{spec.short} is neither sent nor documented"
        assert not (spec.short in hit and spec.short in NOT_USED_BY_DRIVER), f"{spec.short} is sent after all"
    assert set(NOT_USED_BY_DRIVER) <= {spec.short for spec in COMMAND_TABLE}


def test_the_commands_the_driver_does_not_send_are_documented() -> None:
    text = DIALECT_DOC.read_text(encoding="utf-8")
    section = text[text.index("## Commands the driver does not send") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    documented = set(re.findall(r"`([^`]+)`", section))
    assert set(NOT_USED_BY_DRIVER) <= documented
