"""The simulated formation cabinet: BT2200-dialect state machine over the cell arrays (no sockets, no clock).

Every per-channel quantity is a numpy array indexed by channel (0-based; the cell on channel k is cell k
of the population). Sequences are small Python structures, copied into per-channel parameter arrays when a
channel enters a step, so the integration loop is vectorised over all channels.
Dialect: docs/bt2200-dialect.md.

Substeps are at most ``max_dt_s`` (5 s), or ``max_rest_dt_s`` (60 s) while every running cell rests, and never
cross a step end, an ``AT`` test time or a record period. Time-rule records sit on each step's own grid
(``every_s``, ``2·every_s``, … of step time): a grid point that falls inside a substep is recorded from a probe
of those cells advanced exactly to it, so records never drift and channels out of phase cost no extra substeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from formation.instruments.program import LOG_COLUMNS, CellState, EndCode, StepMode, StepTest
from formation.sim.cells import CellPopulation
from formation.sim.datalog import DEFAULT_MAX_ROWS, DataLog
from formation.sim.scpi import scpi_error
from formation.sim.steptests import StepTestTable

MAX_SEQ = 1024
MAX_STEPS = 64
# Float slack on step-time comparisons: substeps land exactly on step ends, up to rounding.
_EPS_S = 1e-6

# The CV solve aims this far inside the clamp so that float rounding never puts a cell over it.
_CLAMP_MARGIN_V = 1e-7

_MODE_SIGN = {StepMode.REST: 0, StepMode.CHARGE: 1, StepMode.DISCHARGE: -1}
_ROWS_COLS = len(LOG_COLUMNS)


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


def instrument_channel_index(channel: int, n_channels: int) -> int:
    """BT2200 channel number (101…132, 201…) to the 0-based channel index; -224 when not on this cabinet."""
    slot, c = divmod(channel, 100)
    index = (slot - 1) * 32 + c - 1
    if slot < 1 or not 1 <= c <= 32 or index >= n_channels:
        raise scpi_error(-224)
    return index


def index_to_instrument_channel(index: int) -> int:
    """0-based channel index to the BT2200 channel number (0 → 101, 32 → 201)."""
    return (index // 32 + 1) * 100 + index % 32 + 1


class CabinetModel:
    """One simulated cabinet: cells on channels, sequences, per-channel step machines, the data log."""

    def __init__(
        self,
        n_channels: int,
        cells: CellPopulation,
        *,
        start_time_s: float,
        ambient_c: float = 25.0,
        max_dt_s: float = 5.0,
        max_rest_dt_s: float = 60.0,
        serial: str = "SIM0001",
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
        self.serial = serial
        self.watchdog_s = 0.0
        self.substeps = 0
        self.log = DataLog(max_log_rows)
        self.sequences: dict[int, list[SeqStep]] = {}
        self._id_to_index: dict[int, int] = {}
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

    # ---------- cells

    def indices(self, cell_ids: list[int]) -> np.ndarray:
        """Channel indices of defined cells, in order; -224 if any id is not defined."""
        try:
            return np.fromiter((self._id_to_index[c] for c in cell_ids), dtype=np.int64, count=len(cell_ids))
        except KeyError:
            raise scpi_error(-224) from None

    def define_cell(self, cell_id: int, channel: int) -> None:
        """``CELL:DEF``: put cell ``cell_id`` on instrument channel ``channel`` (-221 if in use)."""
        index = instrument_channel_index(channel, self.n)
        old = self._id_to_index.get(cell_id)
        for k in (old, index):
            if k is not None and self.state[k] in (CellState.RUNNING, CellState.ENABLED):
                raise scpi_error(-221)
        if old is not None:
            self._forget(old)
        if self.cell_id[index]:
            self._forget(index)
        self._id_to_index[cell_id] = index
        self.cell_id[index] = cell_id
        self.state[index] = CellState.IDLE

    def clear_cells(self, cell_ids: list[int]) -> None:
        """``CELL:DEF:CLE``: forget cells (-221 if any is running)."""
        idx = self.indices(cell_ids)
        if np.any(self.state[idx] == CellState.RUNNING):
            raise scpi_error(-221)
        for k in idx:
            self._forget(int(k))

    def _forget(self, index: int) -> None:
        self._id_to_index.pop(int(self.cell_id[index]), None)
        self.cell_id[index] = 0
        self.state[index] = CellState.UNDEFINED
        self.seq[index] = self.step[index] = 0

    # ---------- sequences

    def _editable(self, seq: int) -> None:
        bound = (self.seq == seq) & np.isin(self.state, (CellState.ENABLED, CellState.RUNNING))
        if bound.any():
            raise scpi_error(-221)

    def define_step(
        self, seq: int, step: int, mode: StepMode, duration_s: float, current_a: float, voltage_v: float
    ) -> None:
        """``SEQ:STEP:DEF``: define step ``step`` (1-based, in order; truncates later steps)."""
        self._editable(seq)
        steps = self.sequences.setdefault(seq, [])
        if not 1 <= step <= len(steps) + 1:
            raise scpi_error(-222)
        del steps[step - 1 :]
        steps.append(SeqStep(mode, duration_s, current_a, voltage_v))

    def _seq_step(self, seq: int, step: int) -> SeqStep:
        steps = self.sequences.get(seq, [])
        if not 1 <= step <= len(steps):
            raise scpi_error(-224)
        return steps[step - 1]

    def set_step_log(self, seq: int, step: int, every_s: float, every_mv: float) -> None:
        """``SEQ:STEP:LOG`` (EXT): the record rule of one step (0 disables a rule)."""
        self._editable(seq)
        target = self._seq_step(seq, step)
        target.every_s, target.every_mv = every_s, every_mv

    def define_test(self, seq: int, step: int, n: int, test: StepTest) -> None:
        """``SEQ:TEST:DEF``: test ``n`` (1–8) of a step."""
        self._editable(seq)
        self._seq_step(seq, step).tests[n] = test

    def clear_sequence(self, seq: int) -> None:
        """``SEQ:CLE``: forget a sequence (-221 while a cell is enabled on it or running it)."""
        self._editable(seq)
        self.sequences.pop(seq, None)

    def step_count(self, seq: int) -> int:
        """``SEQ:STEP:COUN?``."""
        return len(self.sequences.get(seq, []))

    # ---------- running

    def enable(self, cell_ids: list[int], seq: int) -> None:
        """``CELL:ENAB``: bind cells to a sequence (-221 if running, -224 if the sequence is empty)."""
        idx = self.indices(cell_ids)
        if np.any(self.state[idx] == CellState.RUNNING):
            raise scpi_error(-221)
        if not self.sequences.get(seq):
            raise scpi_error(-224)
        self.state[idx] = CellState.ENABLED
        self.seq[idx] = seq
        self.step[idx] = 0

    def init(self, cell_ids: list[int]) -> None:
        """``CELL:INIT``: start enabled cells at step 1 (-221 if any is not enabled)."""
        idx = self.indices(cell_ids)
        if np.any(self.state[idx] != CellState.ENABLED):
            raise scpi_error(-221)
        mask = np.zeros(self.n, dtype=bool)
        mask[idx] = True
        self.state[mask] = CellState.RUNNING
        for seq in np.unique(self.seq[mask]):
            self._enter_step(mask & (self.seq == seq), int(seq), 1)

    def abort(self, cell_ids: list[int] | None = None, code: int = EndCode.ABORT) -> None:
        """``CELL:ABORT``: stop running cells now (end record, output off, ABORTED); None means every cell."""
        mask = np.zeros(self.n, dtype=bool)
        if cell_ids is None:
            mask[:] = True
        else:
            mask[self.indices(cell_ids)] = True
        self.state[mask & (self.state == CellState.ENABLED)] = CellState.ABORTED
        running = mask & (self.state == CellState.RUNNING)
        if not running.any():
            return
        pending = running & self._pending_start
        if pending.any():
            # Started but never integrated: log its start record (0 A applied) so every step has one.
            v0 = self.cells.terminal_voltage_v(np.zeros(self.n))
            self._record(pending, np.zeros(self.n), v0, 0)
            self._pending_start[pending] = False
        self._record(running, self.current_a, self.voltage_v, code)
        self.last_end[running] = code
        self.state[running] = CellState.ABORTED
        self._output_off(running)

    def watchdog_abort(self) -> int:
        """The communication watchdog fired: abort every running cell (end code 31). Returns how many."""
        running = int(np.count_nonzero(self.state == CellState.RUNNING))
        self.abort(None, EndCode.WATCHDOG)
        return running

    def reset(self) -> None:
        """``*RST``: output off everywhere; forget cells, sequences, the log and the watchdog."""
        self._output_off(self.state == CellState.RUNNING)
        for k in np.flatnonzero(self.cell_id):
            self._forget(int(k))
        self.sequences.clear()
        self.log.clear()
        self.watchdog_s = 0.0
        self._pending_start[:] = False
        self.last_end[:] = 0

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
        end = self._tests.evaluate(run, self.step_time_s, v1, i, self.step_ah, self.cells.temperature_c)
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
        rows[:, 0] = 0.0  # rec: assigned by the log
        rows[:, 1] = self.cell_id[idx]
        rows[:, 2] = self.seq[idx]
        rows[:, 3] = self.step[idx]
        rows[:, 4] = time_s
        rows[:, 5] = step_time_s
        rows[:, 6] = v
        rows[:, 7] = i
        rows[:, 8] = ah
        rows[:, 9] = wh
        rows[:, 10] = temp_c
        rows[:, 11] = end
        self.log.append(rows)
        self._last_rec_v[idx] = v

    # ---------- queries

    def status(self, cell_ids: list[int]) -> np.ndarray:
        """``STAT:CELL:REP?`` codes (``-1`` for an id that is not defined)."""
        idx = np.fromiter((self._id_to_index.get(c, -1) for c in cell_ids), dtype=np.int64, count=len(cell_ids))
        return np.where(idx >= 0, self.state[np.maximum(idx, 0)], CellState.UNDEFINED)

    def verbose(self, cell_id: int) -> str:
        """``STAT:CELL:VERB?`` reply for one cell."""
        k = int(self.indices([cell_id])[0])
        state = CellState(int(self.state[k]))
        text = f"{state.name} seq {self.seq[k]} step {self.step[k]}"
        if state == CellState.RUNNING:
            text += f" {self.sequences[int(self.seq[k])][int(self.step[k]) - 1].mode.value}"
        elif self.last_end[k]:
            text += f" last end {EndCode.describe(int(self.last_end[k]))}"
        return (
            f"{int(state)},{self.seq[k]},{self.step[k]},{self.step_time_s[k]:.3f},{self.voltage_v[k]:.6f},"
            f"{self.current_a[k]:.6f},{self.step_ah[k]:.9g},{self.cells.temperature_c[k]:.3f},"
            f'{self.last_end[k]},"{text}"'
        )

    def truth(self, cell_id: int) -> dict[str, object]:
        """Ground truth of the cell behind ``cell_id`` (simulator only)."""
        k = int(self.indices([cell_id])[0])
        return {"cell": cell_id, "channel": index_to_instrument_channel(k), **self.cells.truth(k)}

    def truth_dcir_ohm(self, cell_id: int, current_a: float, times_s: list[float]) -> np.ndarray:
        """True ΔV/ΔI (ohm) at ``times_s`` into a ``current_a`` pulse from the present state (simulator only).

        The pulse runs on a copy of the cell at the cabinet ambient; the baseline is the present terminal voltage
        and current. -224 if the pulse current equals the present current.
        """
        k = int(self.indices([cell_id])[0])
        delta_a = current_a - float(self.current_a[k])
        if abs(delta_a) < 1e-9:
            raise scpi_error(-224)
        voltage_v = self.cells.pulse_voltage_v(k, current_a, times_s, self.ambient_c)[:, 0]
        return (voltage_v - float(self.voltage_v[k])) / delta_a

    def check_definition(self, seq: int, step: int) -> None:
        """-222 unless ``seq``/``step`` are within the instrument's ranges."""
        if not (1 <= seq <= MAX_SEQ and 1 <= step <= MAX_STEPS):
            raise scpi_error(-222)
