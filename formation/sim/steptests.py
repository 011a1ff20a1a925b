"""The end tests of each channel's current step, held as per-channel slot arrays and evaluated vectorised."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from formation.sim.wire import EndCode, StepTest, TestAction, TestType
from formation.sim.wire import TestWhen as When

MAX_TESTS = 8
# Float slack on step-time comparisons: substeps land exactly on test times, up to rounding.
_EPS_S = 1e-6

_TYPE_CODE = {t: i + 1 for i, t in enumerate(TestType)}  # 0 = no test in that slot
_GE_TYPE = np.array([False] + [t.value.endswith("_GE") for t in TestType])
# Row of the compared quantity in ``evaluate``'s stack, per type code (row 0: empty slot).
_QUANTITY_ROW = {"VOLT": 1, "CURR": 2, "AMPH": 3, "WATTH": 4, "POWER": 5, "TEMP": 6, "STEPTIME": 7}
_TYPE_ROW = np.array([0] + [_QUANTITY_ROW[t.value.rsplit("_", 1)[0]] for t in TestType], dtype=np.int64)
_WHEN_CODE = {When.AT: 0, When.AFTER: 1, When.BEFORE: 2}


class StepTestTable:
    """Up to :data:`MAX_TESTS` tests per channel (``SEQ:TEST:DEF``); FAIL tests win over NEXT tests."""

    def __init__(self, n_channels: int) -> None:
        n = n_channels
        self.n = n
        self._type = np.zeros((n, MAX_TESTS), dtype=np.int64)
        self._value = np.zeros((n, MAX_TESTS))
        self._when = np.zeros((n, MAX_TESTS), dtype=np.int8)
        self._at_s = np.zeros((n, MAX_TESTS))
        self._fail = np.zeros((n, MAX_TESTS), dtype=bool)
        self._at_done = np.zeros((n, MAX_TESTS), dtype=bool)
        self._rows = np.arange(n)[:, None]

    def load(self, mask: np.ndarray, tests: Mapping[int, StepTest]) -> None:
        """Give the channels in ``mask`` the tests of the step they enter (slot n = test n, 1-based)."""
        t_type = np.zeros(MAX_TESTS, dtype=np.int64)
        t_value, t_at = np.zeros(MAX_TESTS), np.zeros(MAX_TESTS)
        t_when, t_fail = np.zeros(MAX_TESTS, dtype=np.int8), np.zeros(MAX_TESTS, dtype=bool)
        for n, test in tests.items():
            t_type[n - 1] = _TYPE_CODE[test.type]
            t_value[n - 1], t_at[n - 1] = test.value, test.at_s
            t_when[n - 1], t_fail[n - 1] = _WHEN_CODE[test.when], test.action == TestAction.FAIL
        self._type[mask], self._value[mask], self._at_s[mask] = t_type, t_value, t_at
        self._when[mask], self._fail[mask] = t_when, t_fail
        self._at_done[mask] = False

    def time_to_next_at_s(self, run: np.ndarray, step_time_s: np.ndarray) -> float:
        """Step time until the nearest pending ``AT`` test of a running channel (inf when none)."""
        at_pending = (self._when[run] == 0) & (self._type[run] > 0) & ~self._at_done[run]
        if not at_pending.any():
            return float("inf")
        to_at = (self._at_s[run] - step_time_s[run][:, None])[at_pending]
        to_at = to_at[to_at > _EPS_S]
        return float(to_at.min()) if to_at.size else float("inf")

    def evaluate(
        self,
        run: np.ndarray,
        step_time_s: np.ndarray,
        voltage_v: np.ndarray,
        current_a: np.ndarray,
        step_ah: np.ndarray,
        step_wh: np.ndarray,
        temperature_c: np.ndarray,
    ) -> np.ndarray:
        """End code per channel from its tests now (FAIL before NEXT), 0 when none holds."""
        end = np.zeros(self.n, dtype=np.int64)
        active = run[:, None] & (self._type > 0)
        if not active.any():
            return end
        st = step_time_s[:, None]
        reached = st >= self._at_s - _EPS_S
        when = self._when
        at_due = active & (when == 0) & ~self._at_done & reached
        self._at_done |= at_due
        eligible = at_due | (active & (((when == 1) & reached) | ((when == 2) & ~reached)))
        if not eligible.any():
            return end
        abs_i = np.abs(current_a)
        quantity = np.stack(
            (
                np.zeros(self.n),
                voltage_v,
                abs_i,
                np.abs(step_ah),
                np.abs(step_wh),
                np.abs(voltage_v * current_a),
                temperature_c,
                step_time_s,
            )
        )
        # _TYPE_ROW maps each slot's type code to its quantity's row, so one fancy index picks every test's value.
        value = quantity[_TYPE_ROW[self._type], self._rows]
        holds = eligible & np.where(_GE_TYPE[self._type], value >= self._value, value <= self._value)
        if not holds.any():
            return end
        fail = holds & self._fail
        nxt = holds & ~self._fail
        end = np.where(nxt.any(axis=1), EndCode.NEXT_BASE + 1 + nxt.argmax(axis=1), 0)
        return np.where(fail.any(axis=1), EndCode.FAIL_BASE + 1 + fail.argmax(axis=1), end)
