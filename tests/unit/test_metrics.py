"""DCIR and K-value from instrument records: synthetic records with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from formation.instruments.program import LOG_COLUMNS
from formation.orchestrator.metrics import dcir_iec61960, dcir_single, k_value_mv_per_day, ocv_from_log


def _rows(step: int, times: np.ndarray, volts: np.ndarray, amps: float, t0: float = 0.0) -> np.ndarray:
    rows = np.zeros((len(times), len(LOG_COLUMNS)))
    rows[:, LOG_COLUMNS.index("step")] = step
    rows[:, LOG_COLUMNS.index("step_time_s")] = times
    rows[:, LOG_COLUMNS.index("time_s")] = t0 + times
    rows[:, LOG_COLUMNS.index("voltage_v")] = volts
    rows[:, LOG_COLUMNS.index("current_a")] = amps
    rows[:, LOG_COLUMNS.index("temp_c")] = 25.0
    return rows


def test_single_pulse_dcir_at_each_sample_time() -> None:
    r0, r1, tau = 0.015, 0.006, 8.0
    rest = _rows(1, np.array([0.0, 900.0, 1800.0]), np.array([3.70, 3.70, 3.70]), 0.0)
    t = np.arange(0.0, 19.0)
    v = 3.70 - 5.0 * (r0 + r1 * (1 - np.exp(-t / tau)))
    pulse = _rows(2, t, v, -5.0, t0=1800.0)
    out = dcir_single(np.vstack([rest, pulse]), [1.0, 10.0, 18.0, 9.5])
    dcir = out.dcir_mohm
    assert isinstance(dcir, dict)
    for t_s in (1.0, 10.0, 18.0):
        assert dcir[f"{t_s:g}"] == pytest.approx((r0 + r1 * (1 - np.exp(-t_s / tau))) * 1000.0, rel=1e-9)
    # Between records: linear interpolation.
    r_at = [(r0 + r1 * (1 - np.exp(-x / tau))) * 1000.0 for x in (9.0, 10.0)]
    assert dcir["9.5"] == pytest.approx(sum(r_at) / 2, rel=1e-9)
    assert out.baseline_v == 3.70 and out.pulse_current_a == -5.0


def test_iec61960_two_step() -> None:
    rest = _rows(1, np.array([0.0, 600.0]), np.array([3.7, 3.7]), 0.0)
    low = _rows(2, np.array([0.0, 10.0]), np.array([3.69, 3.684]), -1.0)
    high = _rows(3, np.array([0.0, 1.0]), np.array([3.62, 3.60]), -5.0)
    out = dcir_iec61960(np.vstack([rest, low, high]))
    assert out.dcir_mohm == {"iec": pytest.approx((3.684 - 3.60) / (5.0 - 1.0) * 1000.0)}


def test_missing_pulse_is_an_error() -> None:
    rest = _rows(1, np.array([0.0, 600.0]), np.array([3.7, 3.7]), 0.0)
    with pytest.raises(ValueError, match="pulse"):
        dcir_single(rest, [10.0])


def test_k_value_and_ocv_from_log() -> None:
    days = np.arange(0, 8) * 86400.0
    ocv = 3.6 - 0.0005 * days / 86400.0  # 0.5 mV/day down
    rows = _rows(1, days, ocv, 0.0, t0=1000.0)
    checkpoints = ocv_from_log(rows, 1000.0, [86400.0, 7 * 86400.0])
    assert checkpoints == pytest.approx([3.5995, 3.5965])
    assert k_value_mv_per_day([86400.0, 7 * 86400.0], checkpoints) == pytest.approx(0.5)
    # A paused K clock (chamber out of band) does not count.
    assert k_value_mv_per_day([0.0, 2 * 86400.0], [3.6, 3.599], paused_s=86400.0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        k_value_mv_per_day([0.0], [3.6])
