"""OCV(SOC) reference tables per chemistry and a piecewise-linear curve for vectorised lookup (pure numpy).

The reference points follow published parameter sets (docs/domain.md, "OCV reference curves": where they come
from and how closely they follow them). A lookup over a whole population is one ``np.interp`` over ~17 break
points (measured faster than a uniform-grid index/fraction/take chain for a few hundred cells), and the segment
slope is one ``searchsorted`` and one ``take``.
"""

from __future__ import annotations

import numpy as np

#: SOC break points (fraction) of the reference tables.
SOC_POINTS = np.array([0, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 100], dtype=float) / 100.0

#: OCV (V) at :data:`SOC_POINTS`: NMC811/graphite (LG M50, 5 Ah) and LFP/graphite (2.3 Ah).
OCV_POINTS_V: dict[str, np.ndarray] = {
    "NCM": np.array(
        [
            2.509,
            2.719,
            3.034,
            3.216,
            3.347,
            3.479,
            3.610,
            3.741,
            3.848,
            3.945,
            4.034,
            4.099,
            4.126,
            4.165,
            4.200,
        ]
    ),
    "LFP": np.array(
        [
            2.049,
            2.116,
            2.215,
            2.381,
            2.713,
            3.045,
            3.241,
            3.252,
            3.263,
            3.278,
            3.304,
            3.314,
            3.317,
            3.353,
            3.600,
        ]
    ),
}

#: The curve spans a little beyond 0–100 % so that abuse (over-charge, over-discharge) still moves the
#: voltage; beyond these SOCs it is clamped.
CURVE_SOC_MIN = -0.05
CURVE_SOC_MAX = 1.05


class OcvCurve:
    """Piecewise-linear OCV(SOC) of one cell type, clamped outside its break points."""

    def __init__(self, soc: np.ndarray, ocv_v: np.ndarray) -> None:
        self.soc = np.ascontiguousarray(soc, dtype=float)
        self.ocv_v_points = np.ascontiguousarray(ocv_v, dtype=float)
        if self.soc.shape != self.ocv_v_points.shape or np.any(np.diff(self.soc) <= 0.0):
            raise ValueError("OCV break points must be strictly increasing and match the voltages")
        # A zero slope pads each side, so searchsorted(side="right") indexes it directly, clamping included.
        segment_slopes = np.diff(self.ocv_v_points) / np.diff(self.soc)
        self._slopes = np.concatenate(([0.0], segment_slopes, [0.0]))

    def __call__(self, soc: np.ndarray | float) -> np.ndarray:
        """OCV (V) at ``soc``."""
        return np.interp(soc, self.soc, self.ocv_v_points)

    def slope_v(self, soc: np.ndarray | float) -> np.ndarray:
        """dOCV/dSOC (V per unit SOC) of the segment holding ``soc`` (0 where the curve is clamped)."""
        return self._slopes.take(np.searchsorted(self.soc, soc, side="right"))

    def soc_at(self, ocv_v: np.ndarray | float) -> np.ndarray:
        """Inverse: the SOC whose OCV is ``ocv_v`` (clamped to the curve's range)."""
        return np.interp(ocv_v, self.ocv_v_points, self.soc)


def _reference_v(chemistry: str, table_soc: np.ndarray) -> np.ndarray:
    """The reference table at ``table_soc``, extended linearly by its end-segment slopes."""
    try:
        ocv_v = OCV_POINTS_V[chemistry]
    except KeyError:
        raise ValueError(f"no OCV table for chemistry {chemistry!r}; known: {sorted(OCV_POINTS_V)}") from None
    values = np.interp(table_soc, SOC_POINTS, ocv_v)
    # Real cells crash below 0 % and climb above 100 %; keep moving at the end slopes so limits trip.
    slope_lo = (ocv_v[1] - ocv_v[0]) / (SOC_POINTS[1] - SOC_POINTS[0])
    slope_hi = (ocv_v[-1] - ocv_v[-2]) / (SOC_POINTS[-1] - SOC_POINTS[-2])
    below = table_soc < 0.0
    above = table_soc > 1.0
    values[below] = ocv_v[0] + slope_lo * table_soc[below]
    values[above] = ocv_v[-1] + slope_hi * (table_soc[above] - 1.0)
    return values


def ocv_curve(chemistry: str, soc_offset: float = 0.0) -> OcvCurve:
    """OCV(SOC) of ``chemistry`` ("NCM" or "LFP") over ``CURVE_SOC_MIN``…``CURVE_SOC_MAX``.

    ``soc_offset`` puts the cell's 0 % SOC at that SOC of the reference table (0–100 % then spans the rest of
    the table): a cell type whose usable window starts above the reference cell's low tail.
    """
    if not 0.0 <= soc_offset < 1.0:
        raise ValueError(f"soc_offset must be within [0, 1), got {soc_offset}")
    span = 1.0 - soc_offset
    cell_soc = (SOC_POINTS - soc_offset) / span
    inside = (cell_soc > CURVE_SOC_MIN) & (cell_soc < CURVE_SOC_MAX)
    soc = np.concatenate(([CURVE_SOC_MIN], cell_soc[inside], [CURVE_SOC_MAX]))
    return OcvCurve(soc, _reference_v(chemistry, soc_offset + span * soc))
