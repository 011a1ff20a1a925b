"""Is the chamber at its set point? In-band and out-of-band time, stability, and the out-of-band alarm.

Each interval between two updates is booked to the state seen at its start (what was known during it). An
unknown temperature (NaN: no healthy sensor) counts as out of band. The out-of-band total is what pauses the
K-value clock of an age step; the alarm is for losing the band once the chamber had been stable, so moving to a
new set point is not an alarm (an optional settle timeout covers a chamber that never gets there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from formation.chamber._checks import non_negative, positive


@dataclass(frozen=True)
class StabilityStatus:
    """Where the chamber stands after one update; ``*_for_s`` are the current runs, ``*_total_s`` since reset."""

    in_band: bool
    stable: bool
    in_band_for_s: float
    out_of_band_for_s: float
    in_band_total_s: float
    out_of_band_total_s: float
    #: Out of band for at least ``alarm_delay_s`` after having been stable at this set point.
    out_of_band_alarm: bool
    #: Not yet stable ``settle_timeout_s`` after the set point was given (never, without a timeout).
    settle_alarm: bool


class StabilityDetector:
    """Stable once |T − SP| <= ``band_c`` continuously for ``hold_s``; a set-point change starts over."""

    def __init__(
        self,
        band_c: float,
        hold_s: float,
        *,
        alarm_delay_s: float = 300.0,
        settle_timeout_s: float | None = None,
    ) -> None:
        self.band_c = positive("band_c", band_c)
        self.hold_s = non_negative("hold_s", hold_s)
        self.alarm_delay_s = non_negative("alarm_delay_s", alarm_delay_s)
        self.settle_timeout_s = None if settle_timeout_s is None else positive("settle_timeout_s", settle_timeout_s)
        self.reset()

    def reset(self) -> None:
        """Forget everything, totals included."""
        self._t = 0.0
        self._last_now_s: float | None = None
        self._setpoint_c: float | None = None
        self._in_band: bool | None = None
        self._run_start = 0.0
        self._setpoint_at = 0.0
        self._been_stable = False
        self.in_band_total_s = 0.0
        self.out_of_band_total_s = 0.0

    def update(self, temperature_c: float, setpoint_c: float, now_s: float) -> StabilityStatus:
        """Book the time since the last update, then judge ``temperature_c`` against ``setpoint_c`` at ``now_s``."""
        if self._last_now_s is not None and math.isfinite(now_s):
            dt_s = max(0.0, now_s - self._last_now_s)
            self._t += dt_s
            if self._in_band:
                self.in_band_total_s += dt_s
            elif self._in_band is not None:
                self.out_of_band_total_s += dt_s
        if math.isfinite(now_s):
            self._last_now_s = now_s
        in_band = math.isfinite(temperature_c) and abs(temperature_c - setpoint_c) <= self.band_c
        if setpoint_c != self._setpoint_c:
            self._setpoint_c = setpoint_c
            self._setpoint_at = self._t
            self._been_stable = False
            self._in_band = None  # starts a new run below
        if in_band != self._in_band:
            self._in_band = in_band
            self._run_start = self._t
        run_s = self._t - self._run_start
        stable = in_band and run_s >= self.hold_s
        self._been_stable = self._been_stable or stable
        out_for_s = 0.0 if in_band else run_s
        settling_s = self._t - self._setpoint_at
        return StabilityStatus(
            in_band=in_band,
            stable=stable,
            in_band_for_s=run_s if in_band else 0.0,
            out_of_band_for_s=out_for_s,
            in_band_total_s=self.in_band_total_s,
            out_of_band_total_s=self.out_of_band_total_s,
            out_of_band_alarm=self._been_stable and not in_band and out_for_s >= self.alarm_delay_s,
            settle_alarm=(
                self.settle_timeout_s is not None and not self._been_stable and settling_s >= self.settle_timeout_s
            ),
        )
