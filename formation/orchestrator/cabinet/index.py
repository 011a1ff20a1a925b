"""RunIndex: a job's runs and the per-run arrays the hot path reads, so a poll has no Python loop over runs."""

from __future__ import annotations

import numpy as np

from formation.instruments.program import LOG_COL, channel_to_cell_id
from formation.orchestrator.run import ChannelRun

#: Log columns copied into a sample block, after the run id and before the step index (store.write_samples).
SAMPLE_SOURCE = ("rec", "time_s", "step_time_s", "voltage_v", "current_a", "step_ah", "temp_c")
SAMPLE_WIDTH = len(SAMPLE_SOURCE) + 4  # run id, step index, cycle number and instrument sub-step besides


class RunIndex:
    """Lookups from instrument cell id and run id to the run, kept in step with each run's cursor."""

    def __init__(self, n_channels: int) -> None:
        self.runs: list[ChannelRun] = []
        self._run_by_cell = np.full(channel_to_cell_id(n_channels) + 1, -1, dtype=np.int64)
        self._index_of: dict[int, int] = {}
        self._run_ids = np.empty(0)
        self._step_idx = np.empty(0)
        self._cycle = np.empty(0)
        self._needs_records = np.empty(0, dtype=bool)

    def set_runs(self, runs: list[ChannelRun]) -> None:
        """Index ``runs`` (the job's, in launch order)."""
        self.runs = runs
        for i, run in enumerate(runs):
            self._run_by_cell[channel_to_cell_id(run.channel)] = i
        self._index_of = {r.run_id: i for i, r in enumerate(runs)}
        self._run_ids = np.array([r.run_id for r in runs], dtype=np.float64)
        self._step_idx = np.array([max(r.step_index, 0) for r in runs], dtype=np.float64)
        self._cycle = np.array([r.cycle for r in runs], dtype=np.float64)
        self._needs_records = np.array([r.needs_records for r in runs], dtype=bool)

    def get(self, run_id: int) -> ChannelRun | None:
        """The run with this id, if it belongs to the job."""
        i = self._index_of.get(run_id)
        return self.runs[i] if i is not None else None

    def step_changed(self, run: ChannelRun) -> None:
        """Keep the arrays in step after ``run`` moved its cursor."""
        i = self._index_of[run.run_id]
        self._step_idx[i] = max(run.step_index, 0)
        self._cycle[i] = run.cycle
        self._needs_records[i] = run.needs_records

    def locate(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The records of this job's cells and, for each, the index of its run (records of other cells dropped)."""
        cells = records[:, LOG_COL["cell"]].astype(np.int64)
        in_range = (cells >= 0) & (cells < len(self._run_by_cell))
        idx = np.where(in_range, self._run_by_cell[np.clip(cells, 0, len(self._run_by_cell) - 1)], -1)
        mine = idx >= 0
        return records[mine], idx[mine]

    def samples(self, records: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The sample block of located records: run id, rec, time, step index, step time, V, A, Ah, °C, cycle and
        the instrument sub-step (a dcir's rest 1, its pulse 2: a step cut by a crash is measured from them)."""
        if not len(records):
            return np.empty((0, SAMPLE_WIDTH))
        cols = [LOG_COL[c] for c in SAMPLE_SOURCE]
        return np.column_stack(
            [
                self._run_ids[idx],
                records[:, cols[0]],
                records[:, cols[1]],
                self._step_idx[idx],
                records[:, cols[2:]],
                self._cycle[idx],
                records[:, LOG_COL["step"]],
            ]
        )

    def note_latest(self, records: np.ndarray, idx: np.ndarray) -> None:
        """Each run's latest reading, for displays and the host checks."""
        last_pos = len(idx) - 1 - np.unique(idx[::-1], return_index=True)[1]
        for pos in last_pos:
            run = self.runs[idx[pos]]
            row = records[pos]
            run.last_voltage_v = float(row[LOG_COL["voltage_v"]])
            run.last_current_a = float(row[LOG_COL["current_a"]])
            run.last_temperature_c = float(row[LOG_COL["temp_c"]])
            run.last_ts_s = float(row[LOG_COL["time_s"]])

    def capture(self, records: np.ndarray, idx: np.ndarray) -> None:
        """Keep the records of runs whose current step is computed from them (dcir pulses, age OCV)."""
        mask = self._needs_records[idx]
        if not mask.any():
            return
        sel_idx, sel_rows = idx[mask], records[mask]
        for i in np.unique(sel_idx):
            self.runs[i].captured.append(sel_rows[sel_idx == i])
