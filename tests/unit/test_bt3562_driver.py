"""Bt3562Tester: the exact command/response pairs of every driver method, faults as typed readings, garbage refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from formation.errors import InstrumentProtocolError, ScpiError
from formation.instruments import bt3562
from formation.instruments.bt3562 import ReadingFault, scanner_channel
from formation.instruments.scpi import ScpiSession
from formation.instruments.scripted import Reply, ScriptedInstrument

NO_ERROR = ("SYST:ERR?", '+0,"No error"')


class Rig:
    """A driver on a scripted instrument; ``expect`` appends exchanges, the fixture checks they were all sent."""

    def __init__(self) -> None:
        self.inst = ScriptedInstrument()
        session = ScpiSession(
            "TCPIP0::scripted::5027::SOCKET", timeout_s=0.2, name="tester1", resource_factory=self.inst.open
        )
        self.tester = bt3562.Bt3562Tester(session)

    def expect(self, *exchanges: tuple[str, Reply]) -> None:
        for command, reply in exchanges:
            self.inst.expect(command, reply)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    async with r.tester:
        yield r
    r.inst.assert_done()


async def test_identify_reset_and_configure(rig: Rig) -> None:
    rig.expect(("*IDN?", "HIOKI,BT3562,0,V2.05"), ("*RST", None), ("*OPC?", "1"))
    assert await rig.tester.identify() == "HIOKI,BT3562,0,V2.05"
    await rig.tester.reset()
    rig.expect((":FUNC RV;:RES:RANG 0.03;:VOLT:RANG 6;:SAMP:RATE SLOW", None), NO_ERROR)
    await rig.tester.configure(resistance_range_ohm=30e-3, voltage_range_v=6.0, sample_rate="SLOW")


async def test_settings_are_read_back_one_query_per_line(rig: Rig) -> None:
    rig.expect((":FUNC?", "RV"), (":RES:RANG?", "30E-3"), (":VOLT:RANG?", "6E+0"), (":SAMP:RATE?", "MEDIUM"))
    assert await rig.tester.settings() == ("RV", 0.03, 6.0, "MEDIUM")


async def test_a_reading_selects_the_position_and_parses_r_and_v(rig: Rig) -> None:
    rig.expect((":ROUT:CLOS (@1017);:MEAS:BATT?", "16.512E-3,3.61234E+0"))
    reading = await rig.tester.read(scanner_channel(1, 17))
    assert reading.ok and reading.fault is None
    assert (reading.channel, reading.resistance_ohm, reading.voltage_v) == (1017, 0.016512, 3.61234)


async def test_blank_padding_and_a_comparator_field_are_accepted(rig: Rig) -> None:
    rig.expect((":ROUT:CLOS (@2001);:MEAS:BATT?", "   16.51E-3, 3.61234E+0,PASS"))
    reading = await rig.tester.read(2001)
    assert (reading.resistance_ohm, reading.voltage_v) == (0.01651, 3.61234)


@pytest.mark.parametrize(
    ("reply", "r_fault", "v_fault", "fault"),
    [
        ("100.000E+8,1.00000E+10", ReadingFault.NO_CONTACT, ReadingFault.NO_CONTACT, ReadingFault.NO_CONTACT),
        ("100.000E+7,3.61234E+0", ReadingFault.OVER_RANGE, None, ReadingFault.OVER_RANGE),
        ("10.0000E+8,-1.00000E+9", ReadingFault.OVER_RANGE, ReadingFault.OVER_RANGE, ReadingFault.OVER_RANGE),
        ("16.512E-3,1.00000E+10", None, ReadingFault.NO_CONTACT, ReadingFault.NO_CONTACT),
    ],
)
async def test_overflow_and_fault_values_become_typed_faults_not_numbers(
    rig: Rig, reply: str, r_fault: ReadingFault | None, v_fault: ReadingFault | None, fault: ReadingFault
) -> None:
    rig.expect((":ROUT:CLOS (@1001);:MEAS:BATT?", reply))
    reading = await rig.tester.read(1001)
    assert (reading.resistance_fault, reading.voltage_fault, reading.fault) == (r_fault, v_fault, fault)
    assert not reading.ok
    if r_fault is not None:
        assert reading.resistance_ohm is None
    if v_fault is not None:
        assert reading.voltage_v is None


async def test_read_positions_reads_each_in_order(rig: Rig) -> None:
    rig.expect(
        (":ROUT:CLOS (@1001);:MEAS:BATT?", "16.5E-3,3.6E+0"),
        (":ROUT:CLOS (@1002);:MEAS:BATT?", "100.000E+8,1.00000E+10"),
    )
    first, second = await rig.tester.read_positions([1001, 1002])
    assert first.ok and second.fault is ReadingFault.NO_CONTACT


@pytest.mark.parametrize(
    "reply",
    ["16.5E-3", "16.5E-3,3.6E+0,5.0", "abc,3.6", "nan,3.6", "16.5E-3,inf", "-1.0E-3,3.6E+0", "16.5E-3,99.0E+0", ""],
)
async def test_garbage_readings_raise_protocol_errors_naming_the_command(rig: Rig, reply: str) -> None:
    rig.expect((":ROUT:CLOS (@1001);:MEAS:BATT?", reply))
    with pytest.raises(InstrumentProtocolError, match="MEAS:BATT"):
        await rig.tester.read(1001)


@pytest.mark.parametrize(
    ("replies", "command"),
    [
        (("OHM", "30E-3", "6E+0", "MEDIUM"), ":FUNC?"),
        (("RV", "25E-3", "6E+0", "MEDIUM"), ":RES:RANG?"),
        (("RV", "x", "6E+0", "MEDIUM"), ":RES:RANG?"),
    ],
)
async def test_garbage_settings_raise(rig: Rig, replies: tuple[str, ...], command: str) -> None:
    rig.expect(*zip((":FUNC?", ":RES:RANG?", ":VOLT:RANG?", ":SAMP:RATE?"), replies, strict=True))
    with pytest.raises(InstrumentProtocolError, match=command.replace("?", r"\?")):
        await rig.tester.settings()


async def test_instrument_errors_after_configure_raise(rig: Rig) -> None:
    rig.expect((":FUNC RV;:RES:RANG 3;:VOLT:RANG 60;:SAMP:RATE FAST", None))
    rig.expect(("SYST:ERR?", '-222,"Data out of range"'), NO_ERROR)
    with pytest.raises(ScpiError) as info:
        await rig.tester.configure(resistance_range_ohm=3.0, voltage_range_v=60.0, sample_rate="FAST")
    assert info.value.code == -222


async def test_open_scanner(rig: Rig) -> None:
    rig.expect((":ROUT:OPEN:ALL", None))
    await rig.tester.open_scanner()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resistance_range_ohm": 0.02}, "resistance range"),
        ({"resistance_range_ohm": 0.03, "voltage_range_v": 10.0}, "voltage range"),
        ({"resistance_range_ohm": 0.03, "sample_rate": "QUICK"}, "sample rate"),
    ],
)
async def test_configure_refuses_values_the_instrument_has_not(rig: Rig, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        await rig.tester.configure(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("slot", "position"), [(0, 1), (10, 1), (1, 0), (1, 1000)])
def test_scanner_channels_are_bounded(slot: int, position: int) -> None:
    with pytest.raises(ValueError, match="scanner"):
        scanner_channel(slot, position)


async def test_a_channel_the_scanner_cannot_have_is_refused_before_sending(rig: Rig) -> None:
    with pytest.raises(ValueError, match="scanner"):
        await rig.tester.read(5)
