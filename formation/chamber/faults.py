"""Stuck valves: a valve whose read-back disagrees with its command, or a side that does not move the chamber.

Two checks, both against the command that was in force since the previous update (the one the read-back and
the temperature respond to):

- read-back: the DAQ reports which valve relays are energised (``ROUT:CLOS?``); a valve whose state disagrees
  with its command on ``readback_samples`` consecutive updates is stuck (one sample of lag is normal);
- response: when every valve of a side has been commanded open for ``response_s`` (a few dead times), the
  temperature must have moved at least ``min_change_c`` the right way since then. This names the side, not the
  valve, and cannot see one stuck valve among several open ones; a set point beyond what the chamber can reach
  also trips it, which deserves the alarm as much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from formation.chamber._checks import positive
from formation.chamber.valves import ValveCommand
from formation.errors import ConfigError

Side = Literal["heating", "cooling"]


@dataclass(frozen=True)
class ValveFault:
    """A valve (``channel``) or a whole side (``channel`` None) that does not act, and why."""

    side: Side
    channel: int | None
    reason: str


class StuckValveDetector:
    """Read-back and response checks for one chamber's heating and cooling valves."""

    def __init__(
        self,
        heating_channels: Sequence[int],
        cooling_channels: Sequence[int],
        *,
        response_s: float = 300.0,
        min_change_c: float = 0.5,
        readback_samples: int = 2,
    ) -> None:
        self.heating_channels = tuple(heating_channels)
        self.cooling_channels = tuple(cooling_channels)
        self.response_s = positive("response_s", response_s)
        self.min_change_c = positive("min_change_c", min_change_c)
        if isinstance(readback_samples, bool) or not isinstance(readback_samples, int) or readback_samples < 1:
            raise ConfigError("readback_samples", f"must be an integer >= 1, got {readback_samples!r}")
        self.readback_samples = readback_samples
        self._mismatch = dict.fromkeys(self.heating_channels + self.cooling_channels, 0)
        # Per side: (local time, temperature) when the side became fully open.
        self._full_since: dict[Side, tuple[float, float] | None] = {"heating": None, "cooling": None}
        self._t = 0.0
        self._last_now_s: float | None = None

    def update(
        self,
        command: ValveCommand,
        readback_open: frozenset[int] | None,
        temperature_c: float,
        now_s: float,
        out_of_service: frozenset[int] = frozenset(),
    ) -> tuple[ValveFault, ...]:
        """Faults active now. ``command`` is the command in force since the last update; ``readback_open`` the
        valves reading open (None: no read-back this time); ``temperature_c`` NaN skips the response check;
        ``out_of_service`` valves (already found stuck) leave the response check to the others of their side.
        """
        if self._last_now_s is not None and math.isfinite(now_s):
            self._t += max(0.0, now_s - self._last_now_s)
        if math.isfinite(now_s):
            self._last_now_s = now_s
        faults = list(self._readback(command, readback_open))
        sides: tuple[tuple[Side, tuple[int, ...]], ...] = (
            ("heating", self.heating_channels),
            ("cooling", self.cooling_channels),
        )
        for side, channels in sides:
            in_service = tuple(c for c in channels if c not in out_of_service)
            fault = self._response(side, in_service, command, temperature_c)
            if fault is not None:
                faults.append(fault)
        return tuple(faults)

    def _readback(self, command: ValveCommand, readback_open: frozenset[int] | None) -> list[ValveFault]:
        if readback_open is None:
            return []
        faults = []
        for channel in self._mismatch:
            commanded = channel in command.open
            if commanded == (channel in readback_open):
                self._mismatch[channel] = 0
                continue
            self._mismatch[channel] += 1
            if self._mismatch[channel] >= self.readback_samples:
                side: Side = "heating" if channel in self.heating_channels else "cooling"
                state = "commanded open, reads closed" if commanded else "commanded closed, reads open"
                faults.append(ValveFault(side, channel, f"{state} ({self._mismatch[channel]} samples)"))
        return faults

    def _response(
        self, side: Side, channels: tuple[int, ...], command: ValveCommand, temperature_c: float
    ) -> ValveFault | None:
        if not channels or not command.open.issuperset(channels):
            self._full_since[side] = None
            return None
        if not math.isfinite(temperature_c):
            return None
        since = self._full_since[side]
        if since is None:
            self._full_since[side] = (self._t, temperature_c)
            return None
        open_s = self._t - since[0]
        change_c = (temperature_c - since[1]) * (1.0 if side == "heating" else -1.0)
        if open_s < self.response_s or change_c >= self.min_change_c:
            return None
        direction = "rise" if side == "heating" else "fall"
        return ValveFault(
            side, None, f"all {side} valves open {open_s:.0f} s, temperature {direction} {change_c:+.2f} °C only"
        )
