"""Per-step measurements computed from instrument records (pure numpy): DCIR, OCV checkpoints, K-value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from formation.instruments.program import LOG_COL
from formation.store.records import DcirMeasurement

_STEP = LOG_COL["step"]
_T = LOG_COL["step_time_s"]
_V = LOG_COL["voltage_v"]
_I = LOG_COL["current_a"]
_TIME = LOG_COL["time_s"]
_END = LOG_COL["end"]
_TEMP = LOG_COL["temp_c"]

SECONDS_PER_DAY = 86_400.0


def _at(rows: np.ndarray, t_s: float, col: int) -> float:
    """Value of ``col`` at step time ``t_s``: the record at that time, else linear between its neighbours."""
    t = rows[:, _T]
    exact = np.nonzero(np.abs(t - t_s) < 1e-6)[0]
    if len(exact):
        return float(rows[exact[-1], col])
    return float(np.interp(t_s, t, rows[:, col]))


def dcir_single(rows: np.ndarray, sample_at_s: Sequence[float]) -> DcirMeasurement:
    """DCIR = ΔV/ΔI at each pulse time, from a (baseline rest, pulse) sequence's records, in mΩ.

    The baseline is the rest's end record (voltage and current just before the pulse).
    """
    rest = rows[rows[:, _STEP] == 1]
    pulse = rows[rows[:, _STEP] == 2]
    if not len(rest) or len(pulse) < 2:
        raise ValueError("dcir: the log lacks the baseline rest or the pulse")
    v0, i0 = float(rest[-1, _V]), float(rest[-1, _I])
    values: dict[str, float] = {}
    for t_s in sample_at_s:
        v, i = _at(pulse, t_s, _V), _at(pulse, t_s, _I)
        values[f"{t_s:g}"] = (v - v0) / (i - i0) * 1000.0
    return DcirMeasurement(
        dcir_mohm=values,
        baseline_v=v0,
        pulse_current_a=float(pulse[0, _I]),
        temperature_c=float(pulse[0, _TEMP]),
    )


def dcir_iec61960(rows: np.ndarray) -> DcirMeasurement:
    """IEC 61960 two-step DCIR: R = (U2 − U1) / (I2 − I1) at the ends of the low and the high pulse, in mΩ."""
    low = rows[rows[:, _STEP] == 2]
    high = rows[rows[:, _STEP] == 3]
    rest = rows[rows[:, _STEP] == 1]
    if not len(low) or not len(high):
        raise ValueError("dcir: the log lacks one of the two pulses")
    u1, i1 = float(low[-1, _V]), float(low[-1, _I])
    u2, i2 = float(high[-1, _V]), float(high[-1, _I])
    return DcirMeasurement(
        dcir_mohm={"iec": (u2 - u1) / (i2 - i1) * 1000.0},
        baseline_v=float(rest[-1, _V]) if len(rest) else float("nan"),
        pulse_current_a=i2,
        temperature_c=float(low[0, _TEMP]),
        method="iec61960",
        low_current_a=i1,
    )


def ocv_from_log(rows: np.ndarray, started_s: float, at_s: Sequence[float]) -> list[float]:
    """Open-circuit voltages at ``started_s + at_s`` interpolated from an age step's records."""
    t = rows[:, _TIME]
    return [float(np.interp(started_s + a, t, rows[:, _V])) for a in at_s]


def k_value_mv_per_day(times_s: Sequence[float], ocv_v: Sequence[float], paused_s: float = 0.0) -> float:
    """K = (OCV_first − OCV_last) / (t_last − t_first), mV/day; ``paused_s`` is time that must not count."""
    if len(times_s) < 2:
        raise ValueError("a K-value needs at least two OCV checkpoints")
    elapsed_s = float(times_s[-1]) - float(times_s[0]) - paused_s
    if elapsed_s <= 0:
        raise ValueError("OCV checkpoints span no time")
    return (float(ocv_v[0]) - float(ocv_v[-1])) * 1000.0 / (elapsed_s / SECONDS_PER_DAY)
