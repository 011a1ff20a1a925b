"""What a simulated instrument reports of a true value: Gaussian noise, then its display resolution (pure numpy).

Every reading a simulated instrument answers with (the cabinet's voltages, currents and temperatures, in queries
and in its data log; the tester's resistance and voltage) goes through a :class:`Reading`. The physics never sees
the noise: step ends, limits and tests are judged on the true state, as an instrument's own control loop would
with its faster, filtered converter. docs/domain.md §5a lists the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Reading:
    """One reported quantity: noise σ (absolute, plus a share of the value) and the resolution it is rounded to."""

    noise: float = 0.0
    resolution: float = 0.0
    relative_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("noise", "resolution", "relative_noise"):
            value = getattr(self, name)
            if not (value >= 0.0 and np.isfinite(value)):
                raise ValueError(f"reading {name} must be finite and >= 0, got {value}")

    def apply(self, values: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
        """``values`` as the instrument reports them (a new array)."""
        true = np.asarray(values, dtype=float)
        sigma = self.noise + self.relative_noise * np.abs(true)
        out = true + sigma * rng.standard_normal(true.shape) if np.any(sigma) else true.copy()
        if self.resolution > 0.0:
            out = np.round(out / self.resolution) * self.resolution
        return out


@dataclass(frozen=True, slots=True)
class CabinetReadings:
    """Noise and resolution of a formation cabinet's readings (voltage V, current A, temperature °C).

    An output that is switched off reads exactly 0 A: the current noise is relative to the current.
    """

    voltage: Reading = field(default_factory=lambda: Reading(noise=20e-6, resolution=10e-6))
    current: Reading = field(default_factory=lambda: Reading(resolution=100e-6, relative_noise=1e-4))
    temperature: Reading = field(default_factory=lambda: Reading(noise=0.05, resolution=0.1))


class Reporter:
    """Applies a :class:`CabinetReadings` with its own seeded generator (None: report the truth)."""

    def __init__(self, readings: CabinetReadings | None, seed: int = 0) -> None:
        self.readings = readings
        # A stream of its own: the noise never moves the cell population's draws.
        self._rng = np.random.default_rng([seed, 0x5EAD])

    def voltage_v(self, values: np.ndarray) -> np.ndarray:
        """Reported voltages."""
        return values if self.readings is None else self.readings.voltage.apply(values, self._rng)

    def current_a(self, values: np.ndarray) -> np.ndarray:
        """Reported currents."""
        return values if self.readings is None else self.readings.current.apply(values, self._rng)

    def temperature_c(self, values: np.ndarray) -> np.ndarray:
        """Reported temperatures."""
        return values if self.readings is None else self.readings.temperature.apply(values, self._rng)
