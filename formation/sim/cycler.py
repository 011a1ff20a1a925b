"""The simulated formation cabinet: BT2200-dialect command-level state over the step engine (no sockets, no clock).

Cells defined on channels, downloaded sequences, enabling, starting and aborting cells, status queries and the
simulator-only ground truth; the per-channel integration is :class:`formation.sim.engine.StepEngine`.
Dialect: docs/bt2200-dialect.md.
"""

from __future__ import annotations

import numpy as np

from formation.sim.cells import CellPopulation
from formation.sim.datalog import DEFAULT_MAX_ROWS
from formation.sim.engine import MAX_STEPS, SeqStep, StepEngine
from formation.sim.scpi import scpi_error
from formation.sim.wire import CellState, EndCode, StepMode, StepTest

__all__ = ["MAX_SEQ", "MAX_STEPS", "CabinetModel", "index_to_instrument_channel", "instrument_channel_index"]

MAX_SEQ = 1024


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


class CabinetModel(StepEngine):
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
        super().__init__(
            n_channels,
            cells,
            start_time_s=start_time_s,
            ambient_c=ambient_c,
            max_dt_s=max_dt_s,
            max_rest_dt_s=max_rest_dt_s,
            max_log_rows=max_log_rows,
        )
        self.serial = serial
        self.watchdog_s = 0.0
        self._id_to_index: dict[int, int] = {}
        #: Channels whose cell was moved out (to an ageing rack): it cannot be moved twice.
        self.vacant: np.ndarray = np.zeros(n_channels, dtype=bool)

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

    def clear_all_sequences(self) -> None:
        """``SEQ:CLE 0``: forget every sequence (-221, and nothing cleared, while any cell is enabled or running)."""
        if np.isin(self.state, (CellState.ENABLED, CellState.RUNNING)).any():
            raise scpi_error(-221)
        self.sequences.clear()

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
        voltage_v = float(self.reporter.voltage_v(self.voltage_v[k : k + 1])[0])
        current_a = float(self.reporter.current_a(self.current_a[k : k + 1])[0])
        temp_c = float(self.reporter.temperature_c(self.cells.temperature_c[k : k + 1])[0])
        return (
            f"{int(state)},{self.seq[k]},{self.step[k]},{self.step_time_s[k]:.3f},{voltage_v:.6f},"
            f"{current_a:.6f},{self.step_ah[k]:.9g},{temp_c:.3f},"
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

    def take_cell(self, index: int) -> CellPopulation:
        """Move the cell on channel ``index`` (0-based) out: a one-cell copy of its whole state.

        -221 while it is enabled or running, or when it was moved out before.
        """
        if self.state[index] in (CellState.RUNNING, CellState.ENABLED) or self.vacant[index]:
            raise scpi_error(-221)
        self.vacant[index] = True
        return self.cells.clone(index)

    def check_definition(self, seq: int, step: int) -> None:
        """-222 unless ``seq``/``step`` are within the instrument's ranges."""
        if not (1 <= seq <= MAX_SEQ and 1 <= step <= MAX_STEPS):
            raise scpi_error(-222)
