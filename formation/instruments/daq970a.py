"""Typed driver of a chamber's data acquisition unit speaking the DAQ970A dialect (docs/daq970a-dialect.md).

The chamber is read through thermocouples on a multiplexer and driven through on/off valves on an actuator
module. Channels handed to the driver are INSTRUMENT channels (``<slot><2-digit channel>``: 101, 301); lists are
compressed into ranges, so every sensor is read with ONE query and the whole valve array set with one line.

Valves: closing an actuator channel (``ROUT:CLOS``) energises a normally-closed solenoid valve, so an OPEN valve
is a CLOSED relay. :meth:`Daq970aChamber.valve_states` reads the relays back (``ROUT:CLOS?``): what the DAQ set,
not where a (possibly stuck) valve actually is; :meth:`Daq970aChamber.valve_positions` reads the valves' open end
switches on digital input ports (``SENS:DIG:DATA:BYTE?``), where the chamber has them wired.

Every reply is validated before it leaves the driver: garbage raises
:class:`~formation.errors.InstrumentProtocolError` naming the command; an instrument error raises
:class:`~formation.errors.ScpiError`; transport errors come from the session.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from formation.instruments.base import ScpiInstrument
from formation.instruments.bt2200 import compress_ids
from formation.instruments.scpi import ScpiSession

#: Thermocouple types of the public ``MEAS:TEMP?`` set.
TC_TYPES = ("B", "E", "J", "K", "N", "R", "S", "T")
#: SCPI overload value (+9.9E+37): what an open thermocouple reads. Anything this large is "no reading".
OVERLOAD = 9.9e37
_OVERLOAD_MIN = 9.0e37
#: Temperatures a thermocouple can report (°C): the widest span of the public types (type K −270 to 1372 °C,
#: type B up to 1820 °C); anything else in a reply is garbage, not a temperature.
TEMPERATURE_RANGE_C = (-270.0, 1820.0)
#: Slots of the mainframe and channels per slot number (``<slot><cc>``, cc 01–99).
SLOTS = range(1, 4)


class Daq970aChamber(ScpiInstrument):
    """Async driver of one chamber DAQ (thermocouples and valve relays) over an :class:`ScpiSession`."""

    def __init__(self, session: ScpiSession, *, tc_type: str = "K") -> None:
        if tc_type not in TC_TYPES:
            raise ValueError(f"thermocouple type must be one of {', '.join(TC_TYPES)}, got {tc_type!r}")
        super().__init__(session)
        self.tc_type = tc_type

    # -- common commands -------------------------------------------------------------------------

    async def reset(self) -> None:
        """``*RST`` then ``*OPC?``: every relay open, so every valve closed."""
        await self.session.write("*RST", retry=True)
        reply = await self.session.query("*OPC?")
        if reply != "1":
            raise self._garbage(f"*OPC? answered {reply!r}", "*OPC?")

    # -- thermocouples ---------------------------------------------------------------------------

    async def read_temperatures_c(self, channels: Sequence[int]) -> np.ndarray:
        """``MEAS:TEMP? TC,<type>,(@<channels>)``: one float64 °C per channel, in order; NaN for an open
        thermocouple (the overload value +9.9E+37)."""
        cmd = f"MEAS:TEMP? TC,{self.tc_type},{self._list(channels)}"
        values = self._floats(await self.session.query(cmd), len(channels), cmd)
        overload = np.abs(values) >= _OVERLOAD_MIN
        low, high = TEMPERATURE_RANGE_C
        readings = values[~overload]
        if np.any(readings < low) or np.any(readings > high):
            raise self._garbage(f"temperature outside [{low:g}, {high:g}] °C", cmd)
        return np.where(overload, np.nan, values)

    # -- valves ----------------------------------------------------------------------------------

    async def set_valves(self, open_channels: Sequence[int], closed_channels: Sequence[int]) -> None:
        """Open and close valves in one line: ``ROUT:OPEN (@<closed>);ROUT:CLOS (@<open>)``, then the error queue.

        Relays are released before others are energised, so the array never has more valves open than before or
        after. Setting absolute states is idempotent, so the line is resent after a reconnect.
        """
        both = set(open_channels) & set(closed_channels)
        if both:
            raise ValueError(f"channels both opened and closed: {sorted(both)}")
        parts = []
        if closed_channels:
            parts.append(f"ROUT:OPEN {self._list(closed_channels)}")
        if open_channels:
            parts.append(f"ROUT:CLOS {self._list(open_channels)}")
        if not parts:
            return
        line = ";".join(parts)
        await self.session.write(line, retry=True)
        await self.session.raise_on_errors(line)

    async def valve_states(self, channels: Sequence[int]) -> np.ndarray:
        """``ROUT:CLOS? (@<channels>)``: one bool per channel, True = relay closed = valve driven open."""
        cmd = f"ROUT:CLOS? {self._list(channels)}"
        reply = await self.session.query(cmd)
        fields = [f.strip() for f in reply.split(",")]
        if len(fields) != len(channels):
            raise self._garbage(f"{len(fields)} values for {len(channels)} channels", cmd)
        if any(f not in ("0", "1") for f in fields):
            raise self._garbage(f"relay states are not 0/1: {reply[:80]!r}", cmd)
        return np.array([f == "1" for f in fields], dtype=bool)

    async def valve_positions(self, ports: Sequence[int], count: int) -> np.ndarray:
        """``SENS:DIG:DATA:BYTE? (@<ports>)``: the first ``count`` end-switch bits, port after port (bit 0 first),
        True = valve open. The ports' eight bits each must cover ``count`` valves (ValueError otherwise)."""
        if not 0 < count <= 8 * len(ports):
            raise ValueError(f"{len(ports)} digital ports read at most {8 * len(ports)} valves, not {count}")
        cmd = f"SENS:DIG:DATA:BYTE? {self._list(ports)}"
        reply = await self.session.query(cmd)
        fields = [f.strip() for f in reply.split(",")]
        if len(fields) != len(ports):
            raise self._garbage(f"{len(fields)} values for {len(ports)} ports", cmd)
        if any(not f.isdigit() or int(f) > 255 for f in fields):
            raise self._garbage(f"port values are not bytes 0-255: {reply[:80]!r}", cmd)
        bits = [(int(f) >> k) & 1 for f in fields for k in range(8)]
        return np.array(bits[:count], dtype=bool)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _list(channels: Sequence[int]) -> str:
        """``(@101:104,110)`` in request order; ValueError for an empty list or a malformed channel number."""
        for ch in channels:
            slot, cc = divmod(int(ch), 100)
            if int(ch) != ch or slot not in SLOTS or not 1 <= cc <= 99:
                raise ValueError(f"DAQ channels are <slot 1-3><01-99>, got {ch!r}")
        return compress_ids(channels)
