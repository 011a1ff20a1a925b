"""ShortWatch: the host's internal-short check on data-log records, pure (numpy blocks in, run indices out)."""

from __future__ import annotations

import numpy as np

from formation.instruments.program import LOG_COL, LOG_COLUMNS
from formation.orchestrator.cabinet.shorts import CHARGE_DROP_V, REST_FALL_V_PER_S, REST_SETTLE_S, ShortWatch


def _block(
    run_v: dict[int, list[float]], *, step: int, t0_s: float, every_s: float, current_a: float
) -> tuple[np.ndarray, np.ndarray]:
    """Records of several runs, interleaved in time as the instrument logs them; and their run indices."""
    rows, idx = [], []
    n = max(len(v) for v in run_v.values())
    for k in range(n):
        for run, volts in run_v.items():
            if k < len(volts):
                row = np.zeros(len(LOG_COLUMNS))
                row[LOG_COL["seq"]], row[LOG_COL["step"]] = 1, step
                row[LOG_COL["step_time_s"]] = t0_s + k * every_s
                row[LOG_COL["voltage_v"]], row[LOG_COL["current_a"]] = volts[k], current_a
                rows.append(row)
                idx.append(run)
    return np.array(rows), np.array(idx)


def test_a_charge_that_falls_below_its_peak_is_flagged_across_polls() -> None:
    watch = ShortWatch()
    rising = [3.60 + 0.001 * k for k in range(10)]
    records, idx = _block({0: rising, 1: rising}, step=1, t0_s=0.0, every_s=30.0, current_a=2.5)
    assert watch.check(records, idx, 2).tolist() == []
    # Next poll: run 1 falls a little (noise, heating), run 0 falls past the threshold below its earlier peak.
    fall = [rising[-1] - CHARGE_DROP_V - 0.002]
    noise = [rising[-1] - 0.005]
    records, idx = _block({0: fall, 1: noise}, step=1, t0_s=300.0, every_s=30.0, current_a=2.5)
    assert watch.check(records, idx, 2).tolist() == [0]


def test_a_new_charge_step_starts_a_new_peak() -> None:
    watch = ShortWatch()
    records, idx = _block({0: [4.10, 4.10]}, step=1, t0_s=0.0, every_s=30.0, current_a=2.5)
    assert watch.check(records, idx, 1).tolist() == []
    # A later charge (after a discharge) starts lower: not a fall within a step.
    records, idx = _block({0: [3.50, 3.51]}, step=3, t0_s=0.0, every_s=30.0, current_a=2.5)
    assert watch.check(records, idx, 1).tolist() == []


def test_a_settled_rest_that_keeps_falling_is_flagged_and_relaxation_is_not() -> None:
    watch = ShortWatch()
    fast = REST_FALL_V_PER_S * 30.0 * 2.0  # twice the limit, per 30 s record
    slow = REST_FALL_V_PER_S * 30.0 * 0.3
    shorted = [3.9 - fast * k for k in range(10)]
    relaxing = [3.9 - slow * k for k in range(10)]
    # Early in the rest (before it settles) even a fast fall is relaxation.
    records, idx = _block({0: shorted, 1: relaxing}, step=2, t0_s=0.0, every_s=30.0, current_a=0.0)
    assert watch.check(records, idx, 2).tolist() == []
    records, idx = _block({0: shorted, 1: relaxing}, step=2, t0_s=REST_SETTLE_S, every_s=30.0, current_a=0.0)
    assert watch.check(records, idx, 2).tolist() == [0]


def test_a_rest_fall_is_judged_over_a_window_spanning_polls() -> None:
    watch = ShortWatch()
    step_v = REST_FALL_V_PER_S * 30.0 * 2.0
    flagged: list[int] = []
    for k in range(8):  # one record per poll
        records, idx = _block(
            {0: [3.9 - step_v * k]}, step=2, t0_s=REST_SETTLE_S + 30.0 * k, every_s=30.0, current_a=0.0
        )
        flagged += watch.check(records, idx, 1).tolist()
    assert flagged and set(flagged) == {0}


def test_the_same_sequence_in_a_later_cycle_is_a_new_charge_across_polls_and_within_one() -> None:
    """A repeat block runs the same program (same sequence and step) every cycle: its step time starts again."""
    watch = ShortWatch()
    first, idx = _block({0: [4.00, 4.10, 4.20]}, step=1, t0_s=0.0, every_s=600.0, current_a=2.5)
    assert watch.check(first, idx, 1).tolist() == []
    later, idx = _block({0: [3.55, 3.60]}, step=1, t0_s=0.0, every_s=30.0, current_a=2.5)
    assert watch.check(later, idx, 1).tolist() == []  # cycle 2 starts below cycle 1's peak: no fall
    # One poll holding the end of one instance and the start of the next (a fast clock, a slow poll).
    watch = ShortWatch()
    end, i1 = _block({0: [4.18, 4.20]}, step=1, t0_s=3000.0, every_s=30.0, current_a=2.5)
    start, i2 = _block({0: [3.55, 3.56]}, step=1, t0_s=0.0, every_s=30.0, current_a=2.5)
    assert watch.check(np.vstack([end, start]), np.r_[i1, i2], 1).tolist() == []
    # ... while a real fall inside the later instance is still caught.
    fall, idx = _block({0: [3.56 - CHARGE_DROP_V - 0.002]}, step=1, t0_s=90.0, every_s=30.0, current_a=2.5)
    assert watch.check(fall, idx, 1).tolist() == [0]


def test_the_same_rest_again_starts_a_new_window() -> None:
    watch = ShortWatch()
    slow = REST_FALL_V_PER_S * 30.0 * 0.3
    rest, idx = _block({0: [4.00 - slow * k for k in range(20)]}, step=2, t0_s=REST_SETTLE_S, every_s=30.0, current_a=0)
    assert watch.check(rest, idx, 1).tolist() == []
    # The next cycle's rest after a discharge sits 0.5 V lower: not a fall of the earlier rest.
    again, idx = _block({0: [3.50, 3.50]}, step=2, t0_s=REST_SETTLE_S, every_s=120.0, current_a=0)
    assert watch.check(again, idx, 1).tolist() == []
