"""PID controller for a chamber: signed demand in [-1, +1] (+ heat, − cool) from set point and measurement.

Pure: no clock reads. Each update gets the real elapsed ``dt_s``, so an irregular or stretched control period
integrates correctly. Anti-windup by conditional integration (the integral never pushes the output past a
limit), derivative on the filtered measurement (no kick on set-point changes), and set-point weighting that
makes set-point changes bumpless by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from formation.chamber._checks import finite, non_negative, positive
from formation.errors import ConfigError

#: The demand range: +1 every heating valve open, -1 every cooling valve open.
OUTPUT_MIN = -1.0
OUTPUT_MAX = 1.0


@dataclass(frozen=True)
class PidTuning:
    """PID gains: ``kc`` demand per °C of error (> 0), integral time ``ti_s``, derivative time ``td_s`` (0 = PI)."""

    kc: float
    ti_s: float
    td_s: float = 0.0

    def __post_init__(self) -> None:
        positive("kc", self.kc)
        positive("ti_s", self.ti_s)
        non_negative("td_s", self.td_s)


def _clamp(value: float) -> float:
    return min(OUTPUT_MAX, max(OUTPUT_MIN, value))


class PidController:
    """Positional PID with conditional integration, filtered derivative on measurement, set-point weighting.

    ``setpoint_weight`` b is the share of a set-point step that reaches the output at once: 0 (default) makes
    set-point changes bumpless (the integral carries the change), 1 is the textbook error-driven P term.
    ``derivative_filter`` N sets the derivative's filter time constant to ``td_s / N``.
    """

    def __init__(self, tuning: PidTuning, *, setpoint_weight: float = 0.0, derivative_filter: float = 10.0) -> None:
        if not isinstance(tuning, PidTuning):
            raise ConfigError("tuning", f"must be a PidTuning, got {type(tuning).__name__}")
        weight = finite("setpoint_weight", setpoint_weight)
        if not 0.0 <= weight <= 1.0:
            raise ConfigError("setpoint_weight", f"must be within [0, 1], got {weight:g}")
        self._tuning = tuning
        self._weight = weight
        self._filter_n = positive("derivative_filter", derivative_filter)
        self.reset()

    @property
    def tuning(self) -> PidTuning:
        """The gains in use."""
        return self._tuning

    @property
    def output(self) -> float:
        """The last demand returned (0 before the first update)."""
        return self._output

    @property
    def integral(self) -> float:
        """The integral term in demand units: at steady state, the load the chamber needs."""
        return self._i

    def reset(self, integral: float = 0.0) -> None:
        """Forget all history; the next update starts with ``integral`` as the load estimate (clamped to ±1)."""
        self._i = _clamp(float(integral)) if math.isfinite(integral) else 0.0
        self._output = 0.0
        self._d = 0.0
        self._setpoint_c: float | None = None
        self._pv_filtered_c: float | None = None
        self._last_error_c: float | None = None

    def retune(self, tuning: PidTuning) -> None:
        """Take new gains without a jump in the output (the integral absorbs the change of the P term)."""
        if self._last_error_c is not None:
            self._i += (self._tuning.kc - tuning.kc) * self._last_error_c
        self._tuning = tuning

    def update(self, setpoint_c: float, measured_c: float, dt_s: float) -> float:
        """The demand in [-1, +1] for this sample; ``dt_s`` <= 0 (or not finite) integrates nothing.

        A non-finite set point or measurement changes nothing and returns the last output: the caller decides
        what a missing measurement means (``ChamberController`` goes fail-safe).
        """
        setpoint_c, measured_c, dt_s = float(setpoint_c), float(measured_c), float(dt_s)
        if not (math.isfinite(setpoint_c) and math.isfinite(measured_c)):
            return self._output
        kc, ti_s, td_s = self._tuning.kc, self._tuning.ti_s, self._tuning.td_s
        if self._setpoint_c is not None and setpoint_c != self._setpoint_c:
            # Only b of the step reaches the output now; the integral takes over the rest as the error persists.
            self._i -= kc * (1.0 - self._weight) * (setpoint_c - self._setpoint_c)
        self._setpoint_c = setpoint_c
        error_c = setpoint_c - measured_c
        p = kc * error_c
        step = math.isfinite(dt_s) and dt_s > 0.0
        if self._pv_filtered_c is None:
            self._pv_filtered_c = measured_c
        elif step:
            self._d = self._derivative(measured_c, dt_s, kc, td_s)
            self._integrate(kc * dt_s / ti_s * error_c, p + self._d)
        self._last_error_c = error_c
        self._output = _clamp(p + self._i + self._d)
        return self._output

    def _derivative(self, measured_c: float, dt_s: float, kc: float, td_s: float) -> float:
        assert self._pv_filtered_c is not None
        previous = self._pv_filtered_c
        filter_s = td_s / self._filter_n
        # Backward-Euler filter: stable for any dt, so a stretched period cannot make it ring.
        self._pv_filtered_c = previous + dt_s / (filter_s + dt_s) * (measured_c - previous)
        if td_s == 0.0:
            return 0.0
        return -kc * td_s * (self._pv_filtered_c - previous) / dt_s

    def _integrate(self, increment: float, p_plus_d: float) -> None:
        # Conditional integration: integrate toward a limit only up to the point where the output reaches it,
        # so a long saturation (start-up, door open) leaves no windup to unwind afterwards.
        candidate = self._i + increment
        if increment > 0.0:
            self._i = min(candidate, max(self._i, OUTPUT_MAX - p_plus_d))
        elif increment < 0.0:
            self._i = max(candidate, min(self._i, OUTPUT_MIN - p_plus_d))
