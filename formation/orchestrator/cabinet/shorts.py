"""ShortWatch: the host's check for an internal short, from the data-log records of each run.

A healthy cell's terminal voltage falls little while it is charged (tens of mV as it warms), and twenty minutes
into a rest it relaxes by under a millivolt a minute. An internal short drains the cell through itself: the
voltage falls during the charge (once the short takes more than the charger gives) or keeps falling during the
rest. The instrument's limits do not see it (the voltage stays inside the window for a long time), so the host
does. The check is vectorised over one poll's records; per run it keeps the step it watches and a reference point.
"""

from __future__ import annotations

import numpy as np

from formation.instruments.program import LOG_COL

#: A charge whose voltage falls this far below its highest value in the step (V) is shorted. A healthy cell's
#: terminal voltage may sag a few tens of mV during a fast charge as it warms and its resistance falls (a formed
#: 21700 at 1C from low SOC: about 30 mV); a short that takes more than the charger gives drops it much further.
CHARGE_DROP_V = 0.100
#: A rest is judged only after this much step time (s): relaxation is fast at first.
REST_SETTLE_S = 1200.0
#: A settled rest falling faster than this (V/s, 3 mV/min) is shorted. A fresh 21700 relaxing after a 1C formation
#: charge still falls ~3.5 mV/min 10 minutes in, under 1 mV/min after 20 (the simulator's NCM preset).
REST_FALL_V_PER_S = 0.003 / 60.0
#: The fall of a rest is measured over at least this much step time (s), so that noise does not count.
REST_WINDOW_S = 120.0
#: Current (A) at or below which a record is open circuit (an output switched off reads 0 A).
OPEN_CIRCUIT_A = 1e-4
#: Current (A) above which a record is a charge: well above an offset, so a rest never counts as one.
CHARGE_MIN_A = 1e-3


def _last_group(
    runs_of: np.ndarray, key: np.ndarray, t_s: np.ndarray, n_runs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per run present in ``runs_of``: its last record's position and step key, a mask of the records of that
    step *instance* (the trailing run of records with its key and a rising step time), and the position of the
    instance's first record in this poll.

    A key (sequence, step) comes back when the instrument reuses a sequence: the same program in every cycle of
    a repeat block, or a recycled sequence number. Its step time starting again from zero tells the instances
    apart, so a later charge never inherits an earlier one's peak, within one poll as across polls.
    """
    order = np.argsort(runs_of, kind="stable")  # records of each run, in the instrument's order
    r, k, t = runs_of[order], key[order], t_s[order]
    boundary = np.ones(len(r), dtype=bool)
    boundary[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1]) | (t[1:] < t[:-1])
    segment = np.cumsum(boundary)
    last_sorted = np.flatnonzero(np.r_[r[1:] != r[:-1], True])
    in_last = segment == segment[last_sorted][np.searchsorted(r[last_sorted], r)]
    first_sorted = np.flatnonzero(boundary & in_last)
    same = np.empty(len(r), dtype=bool)
    same[order] = in_last
    last_pos, first_pos = order[last_sorted], order[first_sorted]
    last_key = np.full(n_runs, np.nan)
    last_key[runs_of[last_pos]] = key[last_pos]
    return last_pos, last_key, same, first_pos


class ShortWatch:
    """Flags runs whose records show an internal short (a falling charge, a rest that keeps falling)."""

    def __init__(self) -> None:
        self._size = 0
        self._charge_key = np.empty(0)
        self._charge_t_s = np.empty(0)  # step time of the last charge record seen: a smaller one is a new step
        self._charge_peak_v = np.empty(0)
        self._rest_key = np.empty(0)
        self._rest_t_s = np.empty(0)
        self._rest_v = np.empty(0)

    def _grow(self, n_runs: int) -> None:
        if n_runs <= self._size:
            return
        extra = n_runs - self._size
        self._charge_key = np.concatenate([self._charge_key, np.full(extra, np.nan)])
        self._charge_t_s = np.concatenate([self._charge_t_s, np.full(extra, np.inf)])
        self._charge_peak_v = np.concatenate([self._charge_peak_v, np.full(extra, -np.inf)])
        self._rest_key = np.concatenate([self._rest_key, np.full(extra, np.nan)])
        self._rest_t_s = np.concatenate([self._rest_t_s, np.zeros(extra)])
        self._rest_v = np.concatenate([self._rest_v, np.zeros(extra)])
        self._size = n_runs

    def check(self, records: np.ndarray, idx: np.ndarray, n_runs: int) -> np.ndarray:
        """Indices of the runs (into the supervisor's list) whose records in this poll show a short."""
        self._grow(n_runs)
        if not len(records):
            return np.empty(0, dtype=np.int64)
        key = records[:, LOG_COL["seq"]] * 65536.0 + records[:, LOG_COL["step"]]
        current_a = records[:, LOG_COL["current_a"]]
        charging = current_a > CHARGE_MIN_A
        resting = (np.abs(current_a) <= OPEN_CIRCUIT_A) & (records[:, LOG_COL["step_time_s"]] >= REST_SETTLE_S)
        shorted = [
            self._charge(idx[charging], key[charging], records[charging], n_runs),
            self._rest(idx[resting], key[resting], records[resting], n_runs),
        ]
        return np.unique(np.concatenate(shorted)).astype(np.int64)

    def _charge(self, runs_of: np.ndarray, key: np.ndarray, rows: np.ndarray, n_runs: int) -> np.ndarray:
        if not len(rows):
            return np.empty(0, dtype=np.int64)
        v, t_s = rows[:, LOG_COL["voltage_v"]], rows[:, LOG_COL["step_time_s"]]
        last_pos, last_key, same, first_pos = _last_group(runs_of, key, t_s, n_runs)
        present = runs_of[last_pos]
        # The peak carries over from earlier polls only within the same step instance: same key, the instance's
        # first record here is its first in this poll, and its step time goes on from the last one seen.
        continues = np.zeros(n_runs, dtype=bool)
        first_t = np.full(n_runs, -np.inf)
        first_t[runs_of[first_pos]] = t_s[first_pos]
        continues[present] = (self._charge_key[present] == last_key[present]) & (
            first_t[present] >= self._charge_t_s[present]
        )
        peak = np.where(continues, self._charge_peak_v[:n_runs], -np.inf)
        np.maximum.at(peak, runs_of[same], v[same])
        self._charge_key[present] = last_key[present]
        self._charge_t_s[present] = t_s[last_pos]
        self._charge_peak_v[present] = peak[present]
        # The last record comes after (or is) the peak: a drop below it is a fall during the charge.
        return present[v[last_pos] < peak[present] - CHARGE_DROP_V]

    def _rest(self, runs_of: np.ndarray, key: np.ndarray, rows: np.ndarray, n_runs: int) -> np.ndarray:
        if not len(rows):
            return np.empty(0, dtype=np.int64)
        t_s, v = rows[:, LOG_COL["step_time_s"]], rows[:, LOG_COL["voltage_v"]]
        last_pos, last_key, _, first_pos = _last_group(runs_of, key, t_s, n_runs)
        present = runs_of[last_pos]
        # A new step (another key, or the same key started again) starts from its first settled record here.
        first_t = np.full(n_runs, -np.inf)
        first_t[runs_of[first_pos]] = t_s[first_pos]
        first_pos_of = np.zeros(n_runs, dtype=np.int64)
        first_pos_of[runs_of[first_pos]] = first_pos
        first_pos = first_pos_of[present]
        fresh = (self._rest_key[present] != last_key[present]) | (first_t[present] < self._rest_t_s[present])
        self._rest_key[present] = last_key[present]
        self._rest_t_s[present] = np.where(fresh, t_s[first_pos], self._rest_t_s[present])
        self._rest_v[present] = np.where(fresh, v[first_pos], self._rest_v[present])
        span_s = t_s[last_pos] - self._rest_t_s[present]
        judged = span_s >= REST_WINDOW_S
        fall_v_per_s = (self._rest_v[present] - v[last_pos]) / np.maximum(span_s, REST_WINDOW_S)
        # The window slides once judged, so a short that starts late in a long rest is still seen.
        moved = present[judged]
        self._rest_t_s[moved] = t_s[last_pos][judged]
        self._rest_v[moved] = v[last_pos][judged]
        return present[judged & (fall_v_per_s > REST_FALL_V_PER_S)]
