"""Typed records that cross the orchestrator's module boundaries instead of raw data-log rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formation.instruments.program import LOG_COL


@dataclass(frozen=True, slots=True)
class EndRecord:
    """The record that ends an instrument step: what the step did and why it ended."""

    time_s: float
    voltage_v: float
    step_ah: float
    step_wh: float
    step_time_s: float
    #: The instrument step (1-based) of the sequence that ended.
    sub_step: int
    end_code: int

    @classmethod
    def from_log_row(cls, row: np.ndarray) -> EndRecord:
        """The end record held in one data-log row."""
        return cls(
            time_s=float(row[LOG_COL["time_s"]]),
            voltage_v=float(row[LOG_COL["voltage_v"]]),
            step_ah=float(row[LOG_COL["step_ah"]]),
            step_wh=float(row[LOG_COL["step_wh"]]),
            step_time_s=float(row[LOG_COL["step_time_s"]]),
            sub_step=int(row[LOG_COL["step"]]),
            end_code=int(row[LOG_COL["end"]]),
        )
