"""The per-channel step machines of the simulated cabinet, integrated in time, writing the data log.

Every per-channel quantity is a numpy array indexed by channel (0-based; the cell on channel k is cell k
of the population). Sequences are small Python structures, copied into per-channel parameter arrays when a
channel enters a step, so the integration loop is vectorised over all channels.

Substeps are at most ``max_dt_s`` (5 s), or ``max_rest_dt_s`` (60 s) while every running cell rests, and never
cross a step end, an ``AT`` test time or a record period. Time-rule records sit on each step's own grid
(``every_s``, ``2·every_s``, … of step time): a grid point that falls inside a substep is recorded from a probe
of those cells advanced exactly to it, so records never drift and channels out of phase cost no extra substeps.
The command-level state (cells, sequences, running) is :class:`formation.sim.cycler.CabinetModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from formation.sim.cells import CellPopulation
from formation.sim.datalog import DEFAULT_MAX_ROWS, DataLog
from formation.sim.readings import Reporter
from formation.sim.steptests import StepTestTable
from formation.sim.wire import LOG_COL, LOG_COLUMNS, CellState, EndCode, StepMode, StepTest

MAX_STEPS = 64
# Float slack on step-time comparisons: substeps land exactly on step ends, up to rounding.
_EPS_S = 1e-6

# The CV solve aims this far inside the clamp so that float rounding never puts a cell over it.
_CLAMP_MARGIN_V = 1e-7

_MODE_SIGN = {StepMode.REST: 0, StepMode.CHARGE: 1, StepMode.DISCHARGE: -1}
_ROWS_COLS = len(LOG_COLUMNS)
_COL = LOG_COL


@dataclass
class SeqStep:
    """One instrument step of a downloaded sequence (mutable while no cell uses the sequence)."""

    mode: StepMode
    duration_s: float
    current_a: float
    voltage_v: float
    every_s: float = 60.0
    every_mv: float = 5.0
    tests: dict[int, StepTest] = field(default_factory=dict)


class StepEngine:
    """Per-channel step machines over a cell population: step entry, integration, step ends, records."""

    def __init__(
        self,
        n_channels: int,
        cells: CellPopulation,
        *,
        start_time_s: float,
        ambient_c: float = 25.0,
        max_dt_s: float = 5.0,
        max_rest_dt_s: float = 60.0,
        max_log_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if cells.n != n_channels:
            raise ValueError(f"population has {cells.n} cells for {n_channels} channels")
        if not 0.0 < max_dt_s <= max_rest_dt_s:
            raise ValueError(f"need 0 < max_dt_s <= max_rest_dt_s, got {max_dt_s} and {max_rest_dt_s}")
        self.n = n_channels
        self.cells = cells
        self.time_s = float(start_time_s)
        self.ambient_c = ambient_c
        self.max_dt_s = max_dt_s
        self.max_rest_dt_s = max_rest_dt_s
        self.substeps = 0
        self.log = DataLog(max_log_rows)
        #: What the instrument reports (noise, resolution); the truth unless the plant sets readings.
        self.reporter = Reporter(None)
        self.sequences: dict[int, list[SeqStep]] = {}
        n = n_channels
        self.cell_id = np.zeros(n, dtype=np.int64)
        self.state = np.full(n, CellState.UNDEFINED, dtype=np.int8)
        self.seq = np.zeros(n, dtype=np.int64)
        self.step = np.zeros(n, dtype=np.int64)
        self.step_time_s = np.zeros(n)
        self.step_ah = np.zeros(n)
        self.step_wh = np.zeros(n)
        self.last_end = np.zeros(n, dtype=np.int64)
        self.current_a = np.zeros(n)
        self.voltage_v = np.asarray(cells.terminal_voltage_v(np.zeros(n)), dtype=np.float64).copy()
        self._last_rec_v = np.zeros(n)
        # Step time of each channel's next time-rule record (inf: no time rule).
        self._next_rec_st = np.full(n, np.inf)
        self._pending_start = np.zeros(n, dtype=bool)
        # Parameters of each channel's current step.
        self._mode = np.zeros(n, dtype=np.int8)
        self._dur_s = np.zeros(n)
        self._i_a = np.zeros(n)
        self._clamp_v = np.zeros(n)
        self._every_s = np.zeros(n)
        self._every_mv = np.zeros(n)
        self._tests = StepTestTable(n)

    def _output_off(self, mask: np.ndarray) -> None:
        self._mode[mask] = 0
        self.current_a[mask] = 0.0
        v = self.cells.terminal_voltage_v(self.current_a)
        self.voltage_v[mask] = v[mask]

    def _enter_step(self, mask: np.ndarray, seq: int, step: int) -> None:
        s = self.sequences[seq][step - 1]
        self.step[mask] = step
        self._mode[mask] = _MODE_SIGN[s.mode]
        self._dur_s[mask] = s.duration_s
        self._i_a[mask] = s.current_a
        # A rest step has no clamp; keep the array finite for the vectorised CV solve.
        self._clamp_v[mask] = s.voltage_v
        self._every_s[mask] = s.every_s
        self._every_mv[mask] = s.every_mv
        self._next_rec_st[mask] = s.every_s if s.every_s > 0 else np.inf
        self._tests.load(mask, s.tests)
        self.step_time_s[mask] = 0.0
        self.step_ah[mask] = 0.0
        self.step_wh[mask] = 0.0
        self._pending_start[mask] = True

    # ---------- integration

    def advance_to(self, t_s: float) -> None:
        """Integrate every channel from the model's time to ``t_s`` (clock seconds) in bounded substeps."""
        while t_s - self.time_s > 1e-9:
            remaining = t_s - self.time_s
            dt = self._next_dt(remaining)
            self._substep(dt)
            if dt == remaining:
                self.time_s = t_s  # no rounding drift against the caller's clock

    def _next_dt(self, remaining: float) -> float:
        run = self.state == CellState.RUNNING
        # Open circuit everywhere (running cells rest, the rest is off): every state integrates exactly.
        resting = not np.any(self._mode[run])
        dt = min(self._rest_dt_s(run) if resting else self.max_dt_s, remaining)
        if not run.any():
            return dt
        st = self.step_time_s[run]
        dt = min(dt, float(np.min(self._dur_s[run] - st)))
        every = self._every_s[run]
        every = every[every > 0]
        if every.size:
            dt = min(dt, float(every.min()))
        dt = min(dt, self._tests.time_to_next_at_s(run, self.step_time_s))
        return max(dt, _EPS_S)

    def _rest_dt_s(self, run: np.ndarray) -> float:
        """Longest substep while all rest: ``max_rest_dt_s``, shortened so an ``every_mv`` rule still sees each mV."""
        watch = run & (self._every_mv > 0)
        if not watch.any():
            return self.max_rest_dt_s
        rate_v_per_s = self.cells.open_circuit_rate_v_per_s(self.ambient_c)[watch]
        with np.errstate(divide="ignore"):
            mv_dt_s = float(np.min(self._every_mv[watch] * 1e-3 / rate_v_per_s))
        # Never below the ordinary substep: early relaxation is logged exactly as in any other step.
        return min(self.max_rest_dt_s, max(self.max_dt_s, mv_dt_s))

    def _applied_current(self, run: np.ndarray, dt: float) -> np.ndarray:
        """CC current, or the CV current that puts the terminal voltage on the clamp at the substep's end."""
        mode = np.where(run, self._mode, 0)
        i_cc = mode * self._i_a
        if not np.any(mode):
            return i_cc
        target = np.where(mode != 0, self._clamp_v - mode * _CLAMP_MARGIN_V, self.voltage_v)
        i_cv = self.cells.current_for_voltage_a(target, dt)
        charge = np.minimum(np.maximum(i_cv, 0.0), i_cc)
        discharge = np.maximum(np.minimum(i_cv, 0.0), i_cc)
        return np.where(mode > 0, charge, np.where(mode < 0, discharge, 0.0))

    def _substep(self, dt: float) -> None:
        run = self.state == CellState.RUNNING
        i = self._applied_current(run, dt)
        v0 = self.cells.terminal_voltage_v(i)
        starts = self._pending_start & run
        if starts.any():
            self._record(starts, i, v0, 0, step_time_zero=True)
            self._pending_start[starts] = False
        inside = run & (self._next_rec_st < self.step_time_s + dt - _EPS_S)
        if inside.any():
            self._record_inside(inside, i, v0)
        v1 = np.asarray(self.cells.step(dt, i, self.ambient_c), dtype=np.float64)
        self.substeps += 1
        self.time_s += dt
        self.step_time_s[run] += dt
        # Current is constant over the substep (exact Ah); energy by the trapezoid of the voltage.
        self.step_ah += i * (dt / 3600.0)
        self.step_wh += i * (v0 + v1) * (dt / 7200.0)
        self.current_a = i
        self.voltage_v = v1
        if not run.any():
            return
        end = self._tests.evaluate(run, self.step_time_s, v1, i, self.step_ah, self.step_wh, self.cells.temperature_c)
        timed = run & (end == 0) & (self.step_time_s >= self._dur_s - _EPS_S)
        end[timed] = EndCode.TIME
        ended = end != 0
        due_t = run & (self.step_time_s >= self._next_rec_st - _EPS_S)
        due_v = run & (self._every_mv > 0) & (np.abs(v1 - self._last_rec_v) * 1000.0 >= self._every_mv)
        periodic = ~ended & (due_t | due_v)
        if periodic.any():
            self._record(periodic, i, v1, 0)
        if due_t.any():
            # An ended step's grid is reset when it enters its next step.
            self._next_rec_st[due_t] = self._grid_after(self.step_time_s[due_t], self._every_s[due_t])
        if ended.any():
            self._finish_steps(ended, end, i, v1)

    @staticmethod
    def _grid_after(step_time_s: np.ndarray, every_s: np.ndarray) -> np.ndarray:
        """The first record-grid point (a multiple of ``every_s``) after ``step_time_s``."""
        return (np.floor((step_time_s + _EPS_S) / every_s) + 1.0) * every_s

    def _record_inside(self, mask: np.ndarray, i: np.ndarray, v0: np.ndarray) -> None:
        """Record cells whose grid point falls inside this substep, from a probe advanced exactly to it."""
        idx = np.flatnonzero(mask)
        grid_s = self._next_rec_st[idx]
        part_s = np.maximum(grid_s - self.step_time_s[idx], 0.0)
        probe = self.cells.clone(idx)
        i_part = i[idx]
        v_part = np.asarray(probe.step(part_s, i_part, self.ambient_c), dtype=np.float64)
        self._append(
            idx,
            time_s=self.time_s + part_s,
            step_time_s=grid_s,
            v=v_part,
            i=i_part,
            ah=self.step_ah[idx] + i_part * (part_s / 3600.0),
            wh=self.step_wh[idx] + i_part * (v0[idx] + v_part) * (part_s / 7200.0),
            temp_c=probe.temperature_c,
            end=0,
        )
        self._next_rec_st[idx] = self._grid_after(grid_s, self._every_s[idx])

    def _finish_steps(self, ended: np.ndarray, end: np.ndarray, i: np.ndarray, v: np.ndarray) -> None:
        self._record(ended, i, v, end)
        self.last_end[ended] = end[ended]
        failed = ended & (end > EndCode.FAIL_BASE) & (end < EndCode.ABORT)
        self.state[failed] = CellState.FAIL
        moving = ended & ~failed
        done = np.zeros(self.n, dtype=bool)
        for key in np.unique(self.seq[moving] * (MAX_STEPS + 1) + self.step[moving]):
            seq, step = divmod(int(key), MAX_STEPS + 1)
            group = moving & (self.seq == seq) & (self.step == step)
            if step < len(self.sequences.get(seq, [])):
                self._enter_step(group, seq, step + 1)
            else:
                done |= group
        self.state[done] = CellState.DONE
        self._output_off(failed | done)

    def _record(
        self,
        mask: np.ndarray,
        i: np.ndarray,
        v: np.ndarray,
        end: np.ndarray | int,
        *,
        step_time_zero: bool = False,
    ) -> None:
        idx = np.flatnonzero(mask)
        self._append(
            idx,
            time_s=self.time_s,
            step_time_s=0.0 if step_time_zero else self.step_time_s[idx],
            v=v[idx],
            i=i[idx],
            ah=0.0 if step_time_zero else self.step_ah[idx],
            wh=0.0 if step_time_zero else self.step_wh[idx],
            temp_c=self.cells.temperature_c[idx],
            end=end if isinstance(end, int) else end[idx],
        )

    def _append(
        self,
        idx: np.ndarray,
        *,
        time_s: float | np.ndarray,
        step_time_s: float | np.ndarray,
        v: np.ndarray,
        i: np.ndarray,
        ah: float | np.ndarray,
        wh: float | np.ndarray,
        temp_c: np.ndarray,
        end: int | np.ndarray,
    ) -> None:
        """Append one record per channel in ``idx`` (values already per ``idx``) to the data log."""
        rows = np.empty((idx.size, _ROWS_COLS))
        rows[:, _COL["rec"]] = 0.0  # rec: assigned by the log
        rows[:, _COL["cell"]] = self.cell_id[idx]
        rows[:, _COL["seq"]] = self.seq[idx]
        rows[:, _COL["step"]] = self.step[idx]
        rows[:, _COL["time_s"]] = time_s
        rows[:, _COL["step_time_s"]] = step_time_s
        rows[:, _COL["voltage_v"]] = self.reporter.voltage_v(v)
        rows[:, _COL["current_a"]] = self.reporter.current_a(i)
        rows[:, _COL["step_ah"]] = ah
        rows[:, _COL["step_wh"]] = wh
        rows[:, _COL["temp_c"]] = self.reporter.temperature_c(temp_c)
        rows[:, _COL["end"]] = end
        self.log.append(rows)
        self._last_rec_v[idx] = v  # the voltage rule judges the truth, as the instrument's own converter would
