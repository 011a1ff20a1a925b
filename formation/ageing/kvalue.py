"""K-value by regression (pure numpy): a least-squares line through every valid OCV reading of the fit window.

Per cell, the OCV readings taken after the relaxation window are first corrected to a reference temperature with
the cell's dOCV/dT (``V − dV/dT · (T − T_ref)``: a cell read 0.4 K warm reads low on an NCM cell whose OCV falls
0.1 mV/K), then fit with ``V = a + b·t``. K = −b in mV/day (positive: the voltage falls), with the slope's standard
error ``s / √Sxx`` (s² = residual sum of squares / (n − 2)). A cell with fewer valid readings than the plan's
minimum gets a reason instead of a number. Every cell is fit at once: masked sums over a (cells × readings) array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_S_PER_DAY = 86400.0


@dataclass(frozen=True)
class KFit:
    """Per cell (arrays of one length): K and its standard error (mV/day, NaN when not fit), the readings used, the
    fit window (clock seconds of the first and last reading used), their mean temperature, and why not fit."""

    k_mv_per_day: np.ndarray
    k_se_mv_per_day: np.ndarray
    n_points: np.ndarray
    window_start_s: np.ndarray
    window_end_s: np.ndarray
    temperature_c: np.ndarray
    reason: np.ndarray


def fit_k(
    t_s: np.ndarray,
    ocv_v: np.ndarray,
    temperature_c: np.ndarray,
    *,
    reference_c: float = 25.0,
    ocv_temp_coeff_mv_per_k: float = 0.0,
    min_points: int = 3,
) -> KFit:
    """Fit K for every row (cell) of the (cells × readings) arrays; NaN marks a reading that is not valid.

    A reading counts when its time and OCV are finite, and its temperature too when there is a temperature
    coefficient to correct with. ``min_points`` (≥ 3, so the standard error exists) readings are needed per cell.
    """
    if min_points < 3:
        raise ValueError(f"min_points must be >= 3 (a standard error needs a residual), got {min_points}")
    t = np.atleast_2d(np.asarray(t_s, dtype=np.float64))
    v = np.atleast_2d(np.asarray(ocv_v, dtype=np.float64))
    temp = np.atleast_2d(np.asarray(temperature_c, dtype=np.float64))
    if not t.shape == v.shape == temp.shape:
        raise ValueError(f"t_s, ocv_v and temperature_c must have one shape, got {t.shape}, {v.shape}, {temp.shape}")
    coeff_v_per_k = ocv_temp_coeff_mv_per_k / 1000.0
    valid = np.isfinite(t) & np.isfinite(v)
    if coeff_v_per_k != 0.0:
        valid &= np.isfinite(temp)
    corrected = v - coeff_v_per_k * np.where(np.isfinite(temp), temp - reference_c, 0.0)
    w = valid.astype(np.float64)
    n = w.sum(axis=1)
    safe_n = np.where(n > 0, n, 1.0)
    # Times in days from each cell's first reading keep the sums well conditioned.
    start = np.min(np.where(valid, t, np.inf), axis=1)
    t0 = np.where(np.isfinite(start), start, 0.0)
    days = np.where(valid, (t - t0[:, None]) / _S_PER_DAY, 0.0)
    y = np.where(valid, corrected, 0.0)
    mean_t = (w * days).sum(axis=1) / safe_n
    mean_y = (w * y).sum(axis=1) / safe_n
    dt = np.where(valid, days - mean_t[:, None], 0.0)
    dy = np.where(valid, y - mean_y[:, None], 0.0)
    sxx = (dt * dt).sum(axis=1)
    sxy = (dt * dy).sum(axis=1)
    enough = (n >= min_points) & (sxx > 0.0)
    slope = np.where(enough, sxy / np.where(sxx > 0.0, sxx, 1.0), np.nan)
    residual = np.where(valid, dy - slope[:, None] * dt, 0.0)
    ssr = (residual * residual).sum(axis=1)
    dof = np.where(n > 2, n - 2.0, 1.0)
    se = np.where(enough, np.sqrt(ssr / dof) / np.sqrt(np.where(sxx > 0.0, sxx, 1.0)), np.nan)
    temps = np.where(valid & np.isfinite(temp), temp, 0.0)
    n_temp = (valid & np.isfinite(temp)).sum(axis=1)
    mean_temp = np.where(n_temp > 0, temps.sum(axis=1) / np.where(n_temp > 0, n_temp, 1), np.nan)
    start = np.where(n > 0, start, np.nan)
    end = np.where(n > 0, np.max(np.where(valid, t, -np.inf), axis=1), np.nan)
    reason = np.full(n.shape, "", dtype=object)
    short = ~enough
    if short.any():
        counts = n[short].astype(np.int64)
        reason[short] = [
            f"K: {c} valid reading(s) after the relaxation window, needs {min_points}" for c in counts.tolist()
        ]
    return KFit(
        k_mv_per_day=-slope * 1000.0,
        k_se_mv_per_day=se * 1000.0,
        n_points=n.astype(np.int64),
        window_start_s=start,
        window_end_s=end,
        temperature_c=mean_temp,
        reason=reason,
    )
