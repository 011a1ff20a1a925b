"""OCV(SOC) reference tables per chemistry and a uniform-grid lookup table (pure numpy, no I/O).

The reference points are the published parameter sets quoted in DOMAIN.md. They are resampled once onto a
uniform SOC grid so that a lookup over a whole cell population is a handful of array operations (an index,
a fraction and two ``take``\\s) instead of a binary search per cell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: SOC break points (fraction) of the reference tables.
SOC_POINTS = np.array([0, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 100], dtype=float) / 100.0

#: OCV (V) at :data:`SOC_POINTS`: NMC811/graphite (LG M50, 5 Ah) and LFP/graphite (2.3 Ah).
OCV_POINTS_V: dict[str, np.ndarray] = {
    "NCM": np.array(
        [2.509, 2.719, 3.034, 3.216, 3.347, 3.479, 3.610, 3.741, 3.848, 3.945, 4.034, 4.099, 4.126, 4.165, 4.200]
    ),
    "LFP": np.array(
        [2.049, 2.116, 2.215, 2.381, 2.713, 3.045, 3.241, 3.252, 3.263, 3.278, 3.304, 3.314, 3.317, 3.353, 3.600]
    ),
}

#: The grid spans a little beyond 0–100 % so that abuse (over-charge, over-discharge) still moves the voltage.
GRID_SOC_MIN = -0.05
GRID_SOC_MAX = 1.05
GRID_SOC_STEP = 0.001


class UniformTable:
    """A function of SOC sampled on a uniform grid; linear interpolation, clamped at the grid ends."""

    def __init__(
        self,
        values: np.ndarray,
        *,
        soc_min: float = GRID_SOC_MIN,
        soc_step: float = GRID_SOC_STEP,
    ) -> None:
        self.values = np.ascontiguousarray(values, dtype=float)
        # Per-cell increments; the last one is 0 so that an index clamped to the end returns the end value.
        self.deltas = np.append(np.diff(self.values), 0.0)
        self.soc_min = soc_min
        self.soc_step = soc_step
        self._inv_step = 1.0 / soc_step
        self._x_max = float(len(self.values) - 1)

    @classmethod
    def from_function(cls, soc_to_value: Callable[[np.ndarray], np.ndarray]) -> UniformTable:
        """Sample ``soc_to_value`` (a vectorised function of SOC) on the package grid."""
        return cls(soc_to_value(grid_soc()))

    def locate(self, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid index and fraction within the grid cell for each SOC (clamped to the grid)."""
        x = (soc - self.soc_min) * self._inv_step
        np.clip(x, 0.0, self._x_max, out=x)
        index = x.astype(np.intp)
        x -= index
        return index, x

    def at(self, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """Interpolated values at a location returned by :meth:`locate`."""
        return self.values.take(index) + frac * self.deltas.take(index)

    def slope_at(self, index: np.ndarray) -> np.ndarray:
        """Derivative with respect to SOC (per unit SOC) of the grid cell at ``index``."""
        return self.deltas.take(index) * self._inv_step

    def __call__(self, soc: np.ndarray | float) -> np.ndarray:
        """Interpolated values at ``soc``."""
        index, frac = self.locate(np.array(soc, dtype=float, ndmin=1))
        return self.at(index, frac)


def grid_soc() -> np.ndarray:
    """The SOC grid every :class:`UniformTable` of this package is sampled on."""
    n = round((GRID_SOC_MAX - GRID_SOC_MIN) / GRID_SOC_STEP) + 1
    return GRID_SOC_MIN + GRID_SOC_STEP * np.arange(n)


def ocv_table(chemistry: str, soc_offset: float = 0.0) -> UniformTable:
    """OCV(SOC) of ``chemistry`` ("NCM" or "LFP"), extended linearly beyond the table by its end slopes.

    ``soc_offset`` puts the cell's 0 % SOC at that SOC of the reference table (0–100 % then spans the rest of
    the table): a cell type whose usable window starts above the reference cell's low tail.
    """
    try:
        ocv_v = OCV_POINTS_V[chemistry]
    except KeyError:
        raise ValueError(f"no OCV table for chemistry {chemistry!r}; known: {sorted(OCV_POINTS_V)}") from None
    if not 0.0 <= soc_offset < 1.0:
        raise ValueError(f"soc_offset must be within [0, 1), got {soc_offset}")
    table_soc = soc_offset + (1.0 - soc_offset) * grid_soc()
    values = np.interp(table_soc, SOC_POINTS, ocv_v)
    # Beyond the table the voltage keeps moving at the end-segment slope (real cells crash below 0 % and
    # climb above 100 %), so that a simulated over-charge or over-discharge trips voltage limits.
    slope_lo = (ocv_v[1] - ocv_v[0]) / (SOC_POINTS[1] - SOC_POINTS[0])
    slope_hi = (ocv_v[-1] - ocv_v[-2]) / (SOC_POINTS[-1] - SOC_POINTS[-2])
    below = table_soc < 0.0
    above = table_soc > 1.0
    values[below] = ocv_v[0] + slope_lo * table_soc[below]
    values[above] = ocv_v[-1] + slope_hi * (table_soc[above] - 1.0)
    return UniformTable(values)


def soc_from_ocv(chemistry: str, ocv_v: np.ndarray | float) -> np.ndarray:
    """Inverse of the reference table within 0–100 % (the OCV is clamped to the table's range)."""
    return np.interp(np.asarray(ocv_v, dtype=float), OCV_POINTS_V[chemistry], SOC_POINTS)
