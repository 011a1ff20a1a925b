"""Typed driver of an OCV/ACIR tester speaking the BT3562 dialect, behind a scanner (docs/bt3562-dialect.md).

The tester reads a cell's 1 kHz AC resistance and its open-circuit voltage in one measurement
(``:MEASure:BATTery?`` → ``<R_ohm>,<V_v>`` in NR3). A scanner selects the rack position first: channel
``slot·1000 + position`` (:func:`scanner_channel`). One position costs one round trip (``:ROUT:CLOS (@c);:MEAS:BATT?``).

Every reply is validated before it leaves the driver: a reading beyond the range (the overflow value, ±1E+9) or one
the instrument could not take (the measurement-fault value, 1E+10: no contact) becomes a :class:`TesterReading`
with a :class:`ReadingFault` and no number; anything else that does not parse raises
:class:`~formation.errors.InstrumentProtocolError` naming the command; instrument errors raise
:class:`~formation.errors.ScpiError`; transport errors (timeout, disconnect) come from the session.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from formation.instruments.base import ScpiInstrument

#: Resistance ranges (ohm) and voltage ranges (V) of the instrument.
RESISTANCE_RANGES_OHM = (3e-3, 30e-3, 300e-3, 3.0, 30.0, 300.0, 3000.0)
VOLTAGE_RANGES_V = (6.0, 60.0)
SAMPLE_RATES = ("EXFAST", "FAST", "MEDIUM", "SLOW")
#: Overflow (±OF) and measurement fault as the instrument writes them: 1E+9 and 1E+10 on every range.
OVERFLOW = 1e9
FAULT = 1e10
#: Scanner channels: rack slot (1–9) times this, plus the position (1–999).
SLOT_WIDTH = 1000
MAX_SLOTS = 9
MAX_POSITION = 999
#: A third field of ``:MEAS:BATT?`` (the 3560-compatible reply carries the comparator's verdict).
_COMPARATOR_WORDS = frozenset({"PASS", "FAIL", "OFF", "NG", "HI", "IN", "LO"})


class ReadingFault(enum.StrEnum):
    """Why a reading carries no number."""

    NO_CONTACT = "no contact"  # the measurement-fault value: the probes touch nothing (or an empty position)
    OVER_RANGE = "over range"  # the overflow value: beyond the range set


@dataclass(frozen=True, slots=True)
class TesterReading:
    """One position's reading: resistance and voltage, or None with the fault that took their place."""

    channel: int
    resistance_ohm: float | None
    voltage_v: float | None
    resistance_fault: ReadingFault | None = None
    voltage_fault: ReadingFault | None = None

    @property
    def ok(self) -> bool:
        """Both numbers are there."""
        return self.resistance_ohm is not None and self.voltage_v is not None

    @property
    def fault(self) -> ReadingFault | None:
        """The reading's fault (no contact wins over over-range), or None."""
        faults = {self.resistance_fault, self.voltage_fault} - {None}
        if ReadingFault.NO_CONTACT in faults:
            return ReadingFault.NO_CONTACT
        return ReadingFault.OVER_RANGE if faults else None


def scanner_channel(slot: int, position: int) -> int:
    """Scanner channel of ``position`` (1–999) on the rack in scanner ``slot`` (1–9); ValueError otherwise."""
    if not (1 <= slot <= MAX_SLOTS and 1 <= position <= MAX_POSITION):
        raise ValueError(f"scanner slot must be 1-{MAX_SLOTS} and position 1-{MAX_POSITION}, got {slot}, {position}")
    return slot * SLOT_WIDTH + position


class Bt3562Tester(ScpiInstrument):
    """Async driver of one BT3562-class tester and its scanner over an :class:`ScpiSession`."""

    # -- common commands -------------------------------------------------------------------------

    async def reset(self) -> None:
        """``*RST`` then ``*OPC?``: RV function, default ranges, scanner open."""
        await self.session.write("*RST", retry=True)
        reply = await self.session.query("*OPC?")
        if reply != "1":
            raise self._garbage(f"*OPC? answered {reply!r}", "*OPC?")

    async def configure(
        self, *, resistance_range_ohm: float, voltage_range_v: float = 6.0, sample_rate: str = "MEDIUM"
    ) -> None:
        """Resistance and voltage together (``:FUNC RV``), the ranges and the sampling rate, then the error queue.

        The ranges are the instrument's (ValueError for another value): pick the smallest that holds the cells.
        """
        if resistance_range_ohm not in RESISTANCE_RANGES_OHM:
            raise ValueError(f"resistance range must be one of {RESISTANCE_RANGES_OHM}, got {resistance_range_ohm}")
        if voltage_range_v not in VOLTAGE_RANGES_V:
            raise ValueError(f"voltage range must be one of {VOLTAGE_RANGES_V}, got {voltage_range_v}")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample rate must be one of {SAMPLE_RATES}, got {sample_rate!r}")
        line = f":FUNC RV;:RES:RANG {resistance_range_ohm:g};:VOLT:RANG {voltage_range_v:g};:SAMP:RATE {sample_rate}"
        await self.session.write(line, retry=True)
        await self.session.raise_on_errors(line)

    async def settings(self) -> tuple[str, float, float, str]:
        """Function, resistance range (ohm), voltage range (V) and sampling rate, read back.

        One query per line: the public manual calls a query followed by ``;`` and another command a query error.
        """
        function = await self.session.query(":FUNC?")
        r_text = await self.session.query(":RES:RANG?")
        v_text = await self.session.query(":VOLT:RANG?")
        rate = await self.session.query(":SAMP:RATE?")
        try:
            r_range, v_range = float(r_text), float(v_text)
        except ValueError as exc:
            raise self._garbage(f"range is not a number: {r_text!r} / {v_text!r}", ":RES:RANG?") from exc
        if not any(math.isclose(r_range, r) for r in RESISTANCE_RANGES_OHM) or v_range not in VOLTAGE_RANGES_V:
            raise self._garbage(f"unknown range {r_text!r} / {v_text!r}", ":RES:RANG?")
        if function not in ("RESISTANCE", "VOLTAGE", "RV") or rate not in SAMPLE_RATES:
            raise self._garbage(f"unknown function or rate {function!r} / {rate!r}", ":FUNC?")
        return function, r_range, v_range, rate

    # -- measuring -------------------------------------------------------------------------------

    async def read(self, channel: int) -> TesterReading:
        """Close scanner ``channel`` and read it: ``:ROUT:CLOS (@<channel>);:MEAS:BATT?`` in one round trip."""
        slot, position = divmod(channel, SLOT_WIDTH)
        scanner_channel(slot, position)  # ValueError for a channel the scanner cannot have
        cmd = f":ROUT:CLOS (@{channel});:MEAS:BATT?"
        reply = await self.session.query(cmd)
        return self._parse_battery(reply, channel, cmd)

    async def read_positions(self, channels: Sequence[int]) -> list[TesterReading]:
        """Read every channel in order (one round trip each); a fault is a reading, not an exception."""
        return [await self.read(channel) for channel in channels]

    async def open_scanner(self) -> None:
        """``:ROUT:OPEN:ALL``: no position connected."""
        await self.session.write(":ROUT:OPEN:ALL", retry=True)

    # -- parsing ---------------------------------------------------------------------------------

    def _parse_battery(self, reply: str, channel: int, cmd: str) -> TesterReading:
        fields = [f.strip() for f in reply.split(",")]
        if len(fields) == 3 and fields[2].upper() in _COMPARATOR_WORDS:
            fields = fields[:2]  # a 3560-compatible reply: the comparator verdict is not ours
        if len(fields) != 2:
            raise self._garbage(f"{len(fields)} fields, expected <R>,<V>: {reply[:80]!r}", cmd)
        try:
            # The instrument pads with blanks where a sign or a leading zero would be.
            r, v = float(fields[0].replace(" ", "")), float(fields[1].replace(" ", ""))
        except ValueError as exc:
            raise self._garbage(f"reply is not numeric: {reply[:80]!r}", cmd) from exc
        if not (math.isfinite(r) and math.isfinite(v)):
            raise self._garbage(f"non-finite value: {reply[:80]!r}", cmd)
        r_value, r_fault = self._classify(r)
        v_value, v_fault = self._classify(v)
        if r_value is not None and not 0.0 <= r_value <= 3100.0:
            raise self._garbage(f"resistance {r_value!r} ohm outside 0-3100", cmd)
        if v_value is not None and not abs(v_value) <= 62.0:
            raise self._garbage(f"voltage {v_value!r} V outside ±62", cmd)
        return TesterReading(channel, r_value, v_value, r_fault, v_fault)

    @staticmethod
    def _classify(value: float) -> tuple[float | None, ReadingFault | None]:
        """A number, or the fault the instrument wrote instead (fault 1E+10, overflow ±1E+9)."""
        if abs(value) >= 0.99 * FAULT:
            return None, ReadingFault.NO_CONTACT
        if abs(value) >= 0.99 * OVERFLOW:
            return None, ReadingFault.OVER_RANGE
        return value, None
