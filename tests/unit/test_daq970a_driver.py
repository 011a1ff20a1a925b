"""Daq970aChamber: the exact command/response pairs of every driver method, and garbage refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from formation.errors import InstrumentProtocolError, ScpiError
from formation.instruments import Daq970aChamber
from formation.instruments.scpi import ScpiSession
from formation.instruments.scripted import Reply, ScriptedInstrument

NO_ERROR = ("SYST:ERR?", '+0,"No error"')
TCS = [101, 102, 103, 104]
VALVES = list(range(301, 309))


class Rig:
    """A driver on a scripted instrument; ``expect`` appends exchanges, the fixture checks they were all sent."""

    def __init__(self) -> None:
        self.inst = ScriptedInstrument()
        session = ScpiSession(
            "TCPIP0::scripted::5025::SOCKET", timeout_s=0.2, name="chamber1", resource_factory=self.inst.open
        )
        self.daq = Daq970aChamber(session)

    def expect(self, *exchanges: tuple[str, Reply]) -> None:
        for command, reply in exchanges:
            self.inst.expect(command, reply)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    async with r.daq:
        yield r
    r.inst.assert_done()


async def test_identify_and_reset(rig: Rig) -> None:
    rig.expect(("*IDN?", "Formation,DAQ970A-SIM,SIM-ch1,0.1.0"), ("*RST", None), ("*OPC?", "1"))
    assert await rig.daq.identify() == "Formation,DAQ970A-SIM,SIM-ch1,0.1.0"
    await rig.daq.reset()


@pytest.mark.parametrize(("command", "reply"), [("*IDN?", "25.01"), ("*OPC?", "0")])
async def test_identify_and_reset_refuse_garbage(rig: Rig, command: str, reply: str) -> None:
    if command == "*OPC?":
        rig.expect(("*RST", None))
    rig.expect((command, reply))
    with pytest.raises(InstrumentProtocolError, match=command.replace("*", r"\*").replace("?", r"\?")):
        await (rig.daq.identify() if command == "*IDN?" else rig.daq.reset())


async def test_every_sensor_is_read_in_one_query(rig: Rig) -> None:
    rig.expect(("MEAS:TEMP? TC,K,(@101:104)", "+2.50100000E+01,+2.49900000E+01,+4.50000000E+01,-1.25000000E+00"))
    values = await rig.daq.read_temperatures_c(TCS)
    assert values.dtype == np.float64
    assert values.tolist() == [25.01, 24.99, 45.0, -1.25]
    rig.expect(("MEAS:TEMP? TC,K,(@104,101:102)", "+2.5E+01,+2.6E+01,+2.7E+01"))
    assert (await rig.daq.read_temperatures_c([104, 101, 102])).tolist() == [25.0, 26.0, 27.0]  # request order


@pytest.mark.parametrize("overload", ["+9.9E+37", "+9.90000000E+37", "9.9e37", "-9.9E+37"])
async def test_an_open_thermocouple_reads_nan(rig: Rig, overload: str) -> None:
    rig.expect(("MEAS:TEMP? TC,K,(@101:104)", f"+2.501E+01,{overload},+2.499E+01,+2.5E+01"))
    values = await rig.daq.read_temperatures_c(TCS)
    assert np.isnan(values[1]) and not np.isnan(values[[0, 2, 3]]).any()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("?!@#garbage#@!?", "not numeric"),
        ("+2.5E+01,+2.5E+01,+2.5E+01", "3 values for 4 channels"),
        ("+2.5E+01,+2.5E+01,+2.5E+01,+2.5E+01,+2.5E+01", "5 values for 4 channels"),
        ("+2.5E+01,nan,+2.5E+01,+2.5E+01", "non-finite"),
        ("+2.5E+01,inf,+2.5E+01,+2.5E+01", "non-finite"),
        ("+2.5E+01,-3.0E+02,+2.5E+01,+2.5E+01", "outside"),
        ("+2.5E+01,+5.0E+03,+2.5E+01,+2.5E+01", "outside"),
        ("", "not numeric"),
    ],
)
async def test_garbage_temperatures_are_protocol_errors(rig: Rig, reply: str, why: str) -> None:
    rig.expect(("MEAS:TEMP? TC,K,(@101:104)", reply))
    with pytest.raises(InstrumentProtocolError, match=why) as info:
        await rig.daq.read_temperatures_c(TCS)
    assert info.value.command == "MEAS:TEMP? TC,K,(@101:104)" and info.value.cabinet == "chamber1"


async def test_the_thermocouple_type_is_part_of_the_query() -> None:
    inst = ScriptedInstrument([("MEAS:TEMP? TC,T,(@101)", "+2.5E+01")])
    session = ScpiSession("TCPIP0::scripted::5025::SOCKET", timeout_s=0.2, resource_factory=inst.open)
    async with Daq970aChamber(session, tc_type="T") as daq:
        assert (await daq.read_temperatures_c([101])).tolist() == [25.0]
    inst.assert_done()
    with pytest.raises(ValueError, match="thermocouple type"):
        Daq970aChamber(session, tc_type="X")


async def test_set_valves_is_one_line_release_before_energise(rig: Rig) -> None:
    rig.expect(("ROUT:OPEN (@303:308);ROUT:CLOS (@301:302)", None), NO_ERROR)
    await rig.daq.set_valves([301, 302], [303, 304, 305, 306, 307, 308])
    rig.expect(("ROUT:CLOS (@305:308)", None), NO_ERROR)
    await rig.daq.set_valves([305, 306, 307, 308], [])
    rig.expect(("ROUT:OPEN (@301:308)", None), NO_ERROR)
    await rig.daq.set_valves([], VALVES)
    await rig.daq.set_valves([], [])  # nothing to do: nothing sent


async def test_set_valves_raises_the_instrument_error(rig: Rig) -> None:
    rig.expect(("ROUT:CLOS (@309)", None), ("SYST:ERR?", '-222,"Data out of range"'), NO_ERROR)
    with pytest.raises(ScpiError) as info:
        await rig.daq.set_valves([309], [])
    assert (info.value.code, info.value.command) == (-222, "ROUT:CLOS (@309)")


async def test_valve_states_read_every_relay_in_one_query(rig: Rig) -> None:
    rig.expect(("ROUT:CLOS? (@301:308)", "1,1,0,0,0,0,0,1"))
    states = await rig.daq.valve_states(VALVES)
    assert states.dtype == np.bool_
    assert states.tolist() == [True, True, False, False, False, False, False, True]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("1,1,0,0,0,0,0", "7 values for 8"),
        ("1,1,0,0,0,0,0,2", "not 0/1"),
        ("1,1,0,0,0,0,0,x", "not 0/1"),
        ("", "1 values for 8"),
    ],
)
async def test_garbage_valve_states_are_protocol_errors(rig: Rig, reply: str, why: str) -> None:
    rig.expect(("ROUT:CLOS? (@301:308)", reply))
    with pytest.raises(InstrumentProtocolError, match=why):
        await rig.daq.valve_states(VALVES)


async def test_valve_positions_read_the_end_switches_of_every_valve_in_one_query(rig: Rig) -> None:
    rig.expect(("SENS:DIG:DATA:BYTE? (@201:202)", "131,2"))  # 0b10000011, 0b00000010
    positions = await rig.daq.valve_positions([201, 202], 10)
    assert positions.dtype == np.bool_
    assert positions.tolist() == [True, True, False, False, False, False, False, True, False, True]


@pytest.mark.parametrize(("reply", "why"), [("3", "1 values for 2"), ("3,256", "not bytes"), ("3,-1", "not bytes")])
async def test_garbage_valve_positions_are_protocol_errors(rig: Rig, reply: str, why: str) -> None:
    rig.expect(("SENS:DIG:DATA:BYTE? (@201:202)", reply))
    with pytest.raises(InstrumentProtocolError, match=why):
        await rig.daq.valve_positions([201, 202], 9)


async def test_more_valves_than_end_switch_bits_is_refused_before_sending(rig: Rig) -> None:
    with pytest.raises(ValueError, match="at most 8 valves"):
        await rig.daq.valve_positions([201], 9)


@pytest.mark.parametrize("channels", [[], [100], [401], [1001], [310, 0], [101.5]])
async def test_bad_channel_lists_are_refused_before_sending(rig: Rig, channels: list[int]) -> None:
    with pytest.raises(ValueError):
        await rig.daq.read_temperatures_c(channels)
    with pytest.raises(ValueError):
        await rig.daq.valve_states(channels)
    if channels:
        with pytest.raises(ValueError):
            await rig.daq.set_valves(channels, [])


async def test_a_valve_both_opened_and_closed_is_refused(rig: Rig) -> None:
    with pytest.raises(ValueError, match="both"):
        await rig.daq.set_valves([301, 302], [302, 303])
