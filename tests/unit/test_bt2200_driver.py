"""Bt2200Cycler: the exact command/response pairs of every driver method, and garbage refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from formation.errors import InstrumentProtocolError, ScpiError
from formation.instruments import (
    LOG_COLUMNS,
    Bt2200Cycler,
    CellState,
    InstrumentStep,
    StepMode,
    StepProgram,
    StepTest,
    TestAction,
    TestType,
    TestWhen,
    channel_to_instrument,
    compress_ids,
)
from formation.instruments.scpi import ScpiSession
from formation.instruments.scripted import Reply, ScriptedInstrument

NO_ERROR = ("SYST:ERR?", '+0,"No error"')

TWO_STEP = StepProgram(
    steps=(
        InstrumentStep(
            mode=StepMode.CHARGE,
            duration_s=7200,
            current_a=14.0,
            voltage_v=3.65,
            tests=(
                StepTest(TestType.VOLT_GE, 3.4),
                StepTest(TestType.TEMP_GE, 60.0, action=TestAction.FAIL),
            ),
            every_s=60,
            every_mv=5,
        ),
        InstrumentStep(
            mode=StepMode.REST,
            duration_s=3600,
            tests=(StepTest(TestType.STEPTIME_GE, 1800, when=TestWhen.AT, at_s=1800),),
            every_s=10,
            every_mv=1,
        ),
    )
)
TWO_STEP_COMMANDS = [
    ("SEQ:CLE 1", None),
    NO_ERROR,
    (
        "SEQ:STEP:DEF 1,1,CHARGE,7200,14,3.65;SEQ:STEP:LOG 1,1,60,5;"
        "SEQ:TEST:DEF 1,1,1,VOLT_GE,3.4,AFTER,0,NEXT;SEQ:TEST:DEF 1,1,2,TEMP_GE,60,AFTER,0,FAIL",
        None,
    ),
    NO_ERROR,
    (
        "SEQ:STEP:DEF 1,2,REST,3600,0,0;SEQ:STEP:LOG 1,2,10,1;SEQ:TEST:DEF 1,2,1,STEPTIME_GE,1800,AT,1800,NEXT",
        None,
    ),
    NO_ERROR,
    # The download is counted before it is trusted (lines lost unread leave no error in the queue).
    ("SEQ:STEP:COUN? 1", "2"),
]


def two_step_commands(seq: int) -> list[tuple[str, str | None]]:
    """TWO_STEP_COMMANDS for sequence ``seq``."""
    return [
        (c.replace(" 1,", f" {seq},").replace("CLE 1", f"CLE {seq}").replace("COUN? 1", f"COUN? {seq}"), r)
        for c, r in TWO_STEP_COMMANDS
    ]


class Rig:
    """A driver on a scripted instrument; ``expect`` appends exchanges, ``done`` checks they were all sent."""

    def __init__(self) -> None:
        self.inst = ScriptedInstrument()
        session = ScpiSession(
            "TCPIP0::scripted::5025::SOCKET", timeout_s=0.2, name="cab1", resource_factory=self.inst.open
        )
        self.cycler = Bt2200Cycler(session)

    def expect(self, *exchanges: tuple[str, Reply]) -> None:
        for command, reply in exchanges:
            self.inst.expect(command, reply)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    async with r.cycler:
        yield r
    r.inst.assert_done()


def log_block(rows: list[list[float]]) -> bytes:
    payload = "".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows).encode()
    size = str(len(payload)).encode()
    return b"#" + str(len(size)).encode() + size + payload + b"\n"


@pytest.mark.parametrize(
    ("ids", "text"),
    [
        ([1001], "(@1001)"),
        ([1001, 1005], "(@1001,1005)"),
        (list(range(1001, 1033)), "(@1001:1032)"),
        ([*range(1001, 1017), 1020, *range(1030, 1033)], "(@1001:1016,1020,1030:1032)"),
        ([1003, 1002, 1001], "(@1003,1002,1001)"),  # request order is reply order: never sorted
    ],
)
def test_compress_ids(ids: list[int], text: str) -> None:
    assert compress_ids(ids) == text


def test_compress_ids_refuses_an_empty_list() -> None:
    with pytest.raises(ValueError, match="empty"):
        compress_ids([])


async def test_common_commands(rig: Rig) -> None:
    rig.expect(
        ("*IDN?", "Formation,BT2200-SIM,0001,1.0"),
        ("*RST", None),
        ("*OPC?", "1"),
        ("*CLS", None),
        ("SYST:COMM:WDOG 30", None),
        NO_ERROR,
    )
    assert await rig.cycler.identify() == "Formation,BT2200-SIM,0001,1.0"
    await rig.cycler.reset()
    await rig.cycler.clear_status()
    await rig.cycler.set_watchdog(30)


async def test_identify_refuses_garbage(rig: Rig) -> None:
    rig.expect(("*IDN?", "3.41237"))
    with pytest.raises(InstrumentProtocolError, match=r"\*IDN\?"):
        await rig.cycler.identify()


async def test_define_cells_maps_logical_channels_and_batches_lines(rig: Rig) -> None:
    rig.expect(("CELL:DEF 1001,(@101);CELL:DEF 1032,(@132);CELL:DEF 1033,(@201)", None), NO_ERROR)
    await rig.cycler.define_cells([1, 32, 33])
    channels = list(range(1, 101))
    line1 = ";".join(f"CELL:DEF {1000 + c},(@{channel_to_instrument(c)})" for c in channels[:64])
    line2 = ";".join(f"CELL:DEF {1000 + c},(@{channel_to_instrument(c)})" for c in channels[64:])
    assert line1.endswith("CELL:DEF 1064,(@232)") and line2.startswith("CELL:DEF 1065,(@301)")
    rig.expect((line1, None), NO_ERROR, (line2, None), NO_ERROR)
    await rig.cycler.define_cells(channels)


async def test_define_cells_raises_the_instrument_error(rig: Rig) -> None:
    rig.expect(("CELL:DEF 1001,(@101)", None), ("SYST:ERR?", '-221,"Settings conflict"'), NO_ERROR)
    with pytest.raises(ScpiError) as info:
        await rig.cycler.define_cells([1])
    assert (info.value.code, info.value.command) == (-221, "CELL:DEF 1001,(@101)")


async def test_load_program_downloads_once_per_identical_program(rig: Rig) -> None:
    rig.expect(*TWO_STEP_COMMANDS)
    assert await rig.cycler.load_program(TWO_STEP) == 1
    equal_copy = StepProgram(steps=tuple(TWO_STEP.steps))
    assert await rig.cycler.load_program(equal_copy) == 1  # cached: nothing sent
    rest = StepProgram(steps=(InstrumentStep(mode=StepMode.REST, duration_s=60),))
    rig.expect(
        ("SEQ:CLE 2", None),
        NO_ERROR,
        ("SEQ:STEP:DEF 2,1,REST,60,0,0;SEQ:STEP:LOG 2,1,60,5", None),
        NO_ERROR,
        ("SEQ:STEP:COUN? 2", "1"),
    )
    assert await rig.cycler.load_program(rest) == 2
    rig.cycler.forget_programs()
    rig.expect(*two_step_commands(3))
    assert await rig.cycler.load_program(TWO_STEP) == 3


async def test_load_program_error_names_the_failing_line(rig: Rig) -> None:
    rig.expect(
        *TWO_STEP_COMMANDS[:3],
        ("SYST:ERR?", '-222,"Data out of range"'),
        NO_ERROR,
    )
    with pytest.raises(ScpiError) as info:
        await rig.cycler.load_program(TWO_STEP)
    assert info.value.code == -222
    assert info.value.command is not None and info.value.command.startswith("SEQ:STEP:DEF 1,1,CHARGE")
    # A failed download is not cached: the next attempt allocates a new id and downloads again.
    rig.expect(*two_step_commands(2))
    assert await rig.cycler.load_program(TWO_STEP) == 2


async def test_a_download_the_instrument_holds_short_of_is_refused_and_not_cached(rig: Rig) -> None:
    rig.expect(*TWO_STEP_COMMANDS[:-1], ("SEQ:STEP:COUN? 1", "1"))  # one step line never read
    with pytest.raises(InstrumentProtocolError, match=r"holds 1 step\(s\) after a download of 2: a command was lost"):
        await rig.cycler.load_program(TWO_STEP)
    rig.expect(*two_step_commands(2))
    assert await rig.cycler.load_program(TWO_STEP) == 2


async def test_sequence_ids_are_reused_oldest_first() -> None:
    inst = ScriptedInstrument()
    session = ScpiSession("TCPIP0::scripted::5025::SOCKET", timeout_s=0.2, resource_factory=inst.open)
    programs = [StepProgram(steps=(InstrumentStep(mode=StepMode.REST, duration_s=d),)) for d in (10, 20, 30)]
    for seq, d in ((7, 10), (8, 20), (7, 30)):
        inst.expect(f"SEQ:CLE {seq}")
        inst.expect(*NO_ERROR)
        inst.expect(f"SEQ:STEP:DEF {seq},1,REST,{d},0,0;SEQ:STEP:LOG {seq},1,60,5")
        inst.expect(*NO_ERROR)
        inst.expect(f"SEQ:STEP:COUN? {seq}", "1")
    async with Bt2200Cycler(session, seq_ids=(7, 8)) as cyc:
        assert [await cyc.load_program(p) for p in programs] == [7, 8, 7]
        assert await cyc.load_program(programs[1]) == 8  # still downloaded
    inst.assert_done()


async def test_start_enables_then_initiates_with_checks(rig: Rig) -> None:
    rig.expect(
        ("CELL:ENAB (@1001:1032,1040),3", None),
        ("*OPC?", "1"),
        NO_ERROR,
        ("CELL:INIT (@1001:1032,1040)", None),
        ("*OPC?", "1"),
        NO_ERROR,
    )
    await rig.cycler.start([*range(1, 33), 40], 3)


async def test_start_does_not_initiate_after_a_refused_enable(rig: Rig) -> None:
    rig.expect(("CELL:ENAB (@1001),3", None), ("*OPC?", "1"), ("SYST:ERR?", '-221,"Settings conflict"'), NO_ERROR)
    with pytest.raises(ScpiError) as info:
        await rig.cycler.start([1], 3)
    assert (info.value.code, info.value.command) == (-221, "CELL:ENAB (@1001),3")


async def test_abort(rig: Rig) -> None:
    rig.expect(("CELL:ABORT (@1001:1003)", None), ("*OPC?", "1"), NO_ERROR)
    await rig.cycler.abort([1, 2, 3])


async def test_status_of_a_whole_cabinet_is_one_query(rig: Rig) -> None:
    codes = [2] * 250 + [3, 4, 5, 1, 0, -1]
    rig.expect(("STAT:CELL:REP? (@1001:1256)", ",".join(map(str, codes))))
    status = await rig.cycler.status(list(range(1, 257)))
    assert status.dtype == np.int64 and status.tolist() == codes
    assert CellState(int(status[-1])) is CellState.UNDEFINED


@pytest.mark.parametrize("reply", ["2,9,1", "2,1.5,1", "2,1", "2,1,1,1", "RUNNING,1,1", "2,nan,1", ""])
async def test_status_refuses_garbage(rig: Rig, reply: str) -> None:
    rig.expect(("STAT:CELL:REP? (@1001:1003)", reply))
    with pytest.raises(InstrumentProtocolError) as info:
        await rig.cycler.status([1, 2, 3])
    assert info.value.command == "STAT:CELL:REP? (@1001:1003)"


async def test_step_positions(rig: Rig) -> None:
    rig.expect(("STAT:CELL:STEP? (@1001,1003)", "12:2,0:0"), ("STAT:CELL:STEP? (@1001)", "12-2"))
    seq, step = await rig.cycler.step_positions([1, 3])
    assert seq.tolist() == [12, 0] and step.tolist() == [2, 0]
    with pytest.raises(InstrumentProtocolError):
        await rig.cycler.step_positions([1])


MEAS = "MEAS:CELL:VOLT? (@1001:1002);MEAS:CELL:CURR? (@1001:1002);MEAS:CELL:CAP:AHR? (@1001:1002);" + (
    "MEAS:CELL:TEMP? (@1001:1002)"
)


async def test_measure_is_one_compound_line(rig: Rig) -> None:
    rig.expect((MEAS, "3.41237,3.38001;14.0000,-14.0000;1.25,-0.5;25.1,25.3"))
    m = await rig.cycler.measure([1, 2])
    np.testing.assert_array_equal(m.voltage_v, [3.41237, 3.38001])
    np.testing.assert_array_equal(m.current_a, [14.0, -14.0])
    np.testing.assert_array_equal(m.step_ah, [1.25, -0.5])
    np.testing.assert_array_equal(m.temperature_c, [25.1, 25.3])


@pytest.mark.parametrize(
    ("reply", "names"),
    [
        ("9.9E+37,3.38;14,-14;1.25,-0.5;25.1,25.3", "MEAS:CELL:VOLT?"),
        ("3.41,3.38;14,-14;1.25,-0.5;25.1,9.9E+37", "MEAS:CELL:TEMP?"),
        ("3.41,3.38;#$%@,-14;1.25,-0.5;25.1,25.3", "MEAS:CELL:CURR?"),
        ("3.41,3.38;14,-14;1.25;25.1,25.3", "MEAS:CELL:CAP:AHR?"),
        ("3.41,3.38;14,-14;25.1,25.3", "3 reply groups"),
    ],
)
async def test_measure_refuses_garbage_and_names_the_command(rig: Rig, reply: str, names: str) -> None:
    rig.expect((MEAS, reply))
    with pytest.raises(InstrumentProtocolError, match=names.replace("?", r"\?")):
        await rig.cycler.measure([1, 2])


async def test_read_log_parses_the_block(rig: Rig) -> None:
    rows = [
        [17, 1001, 1, 1, 1.7e9, 0, 3.2, 14, 0, 0, 25, 0],
        [18, 1002, 1, 1, 1.7e9 + 0.5, 0, 3.21, 14, 0, 0, 25.2, 0],
        [19, 1001, 1, 1, 1.7e9 + 60, 60, 3.3, 14, 0.233, 0.77, 25.4, 11],
    ]
    rig.expect(("DATA:LOG? 17,100000", log_block(rows)), ("DATA:LOG? 20,5", b"#10\n"), ("DATA:LOG:NEXT?", "20"))
    block = await rig.cycler.read_log(17)
    assert block.shape == (3, len(LOG_COLUMNS)) and block.dtype == np.float64
    np.testing.assert_allclose(block, rows)
    empty = await rig.cycler.read_log(20, max_rows=5)
    assert empty.shape == (0, len(LOG_COLUMNS))
    assert await rig.cycler.log_next_rec() == 20


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"1,1001,1,1,0,0,3.4,1,0,0,25\n", "11 columns"),
        (b"1,1001,1,1,0,0,3.4,1,0,0,25,0\n2,1001,1,1,0,0,3.4,1,0\n", "parse"),
        (b"garbage text\n", "parse"),
        (b"1,1001,1,1,0,0,nan,1,0,0,25,0\n", "non-finite"),
        (b"2,1001,1,1,0,0,3.4,1,0,0,25,0\n1,1001,1,1,0,0,3.4,1,0,0,25,0\n", "increasing"),
        (b"0,1001,1,1,0,0,3.4,1,0,0,25,0\n", "increasing"),
    ],
)
async def test_read_log_refuses_garbage(rig: Rig, payload: bytes, match: str) -> None:
    size = str(len(payload)).encode()
    rig.expect(("DATA:LOG? 1,100000", b"#" + str(len(size)).encode() + size + payload + b"\n"))
    with pytest.raises(InstrumentProtocolError, match=match) as info:
        await rig.cycler.read_log(1)
    assert info.value.command == "DATA:LOG? 1,100000"


async def test_log_next_rec_refuses_garbage(rig: Rig) -> None:
    rig.expect(("DATA:LOG:NEXT?", "-3"))
    with pytest.raises(InstrumentProtocolError, match="DATA:LOG:NEXT"):
        await rig.cycler.log_next_rec()


async def test_channels_are_one_based(rig: Rig) -> None:
    with pytest.raises(ValueError, match="1-based"):
        await rig.cycler.status([0, 1])
    assert rig.inst.sent == []  # refused before anything was sent
