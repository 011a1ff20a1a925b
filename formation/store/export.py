"""Export a cell's samples as a Battery Data Format (BDF) file, one file per cell.

Column labels are the BDF preferred labels of ontology release 1.2.0 (Battery Data Alliance, README of
the ``batterydf`` package, "Required / Recommended / Optional quantities"): required ``Test Time / s``,
``Voltage / V``, ``Current / A`` (positive charges the cell, as in our data log); recommended
``Unix Time / s``, ``Cycle Count / 1`` (monotonically increasing: the recipe's cycle number, 1, 2, … across its
repeat blocks, carried on through the steps after a block, 0 before the first) and ``Step Count / 1`` (never
resets); optional ``Step Index / 1`` (the 1-based record
counter *within* a step, not a program step id), ``Step Time / s``, ``Temperature T1 / degC`` (an auxiliary
sensor: our cell thermocouple, so not ``Ambient Temperature``) and ``Step Net Capacity / Ah`` (signed,
resets every step). ``Unix Time / s`` is clock time: simulated time when the plant ran on a scaled clock.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from formation.errors import InputError, StoreError
from formation.store.store import Store

#: BDF preferred labels written, in column order.
BDF_COLUMNS: tuple[str, ...] = (
    "Test Time / s",
    "Voltage / V",
    "Current / A",
    "Unix Time / s",
    "Cycle Count / 1",
    "Step Count / 1",
    "Step Index / 1",
    "Step Time / s",
    "Temperature T1 / degC",
    "Step Net Capacity / Ah",
)

FORMATS: tuple[str, ...] = ("csv", "parquet")


def _records_within_step(step_index: np.ndarray) -> np.ndarray:
    """1-based position of each record within its run of equal step indices."""
    n = len(step_index)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new_step = np.empty(n, dtype=bool)
    new_step[0] = True
    new_step[1:] = step_index[1:] != step_index[:-1]
    starts = np.flatnonzero(new_step)
    segment = np.cumsum(new_step) - 1
    return np.arange(n, dtype=np.int64) - starts[segment] + 1


def _cycle_count(samples: pd.DataFrame) -> np.ndarray:
    """BDF's monotonically increasing cycle index: the recipe's cycle number (1, 2, … across its repeat blocks),
    carried on through the steps between and after blocks (0 before the first block; all 0 without blocks)."""
    if "cycle" not in samples:
        return np.zeros(len(samples), dtype=np.int64)
    cycle = samples["cycle"].to_numpy(dtype=np.int64)
    return np.maximum.accumulate(cycle) if len(cycle) else cycle


def bdf_frame(samples: pd.DataFrame) -> pd.DataFrame:
    """The BDF table of one run's samples (as returned by :meth:`Store.samples`, in record order)."""
    ts_s = samples["ts_s"].to_numpy(dtype=np.float64)
    step_index = samples["step_index"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "Test Time / s": ts_s - ts_s[0] if len(ts_s) else ts_s,
            "Voltage / V": samples["voltage_v"].to_numpy(),
            "Current / A": samples["current_a"].to_numpy(),
            "Unix Time / s": ts_s,
            "Cycle Count / 1": _cycle_count(samples),
            "Step Count / 1": step_index + 1,
            "Step Index / 1": _records_within_step(step_index),
            "Step Time / s": samples["step_time_s"].to_numpy(),
            "Temperature T1 / degC": samples["temperature_c"].to_numpy(),
            "Step Net Capacity / Ah": samples["ah"].to_numpy(),
        },
        columns=list(BDF_COLUMNS),
    )


def export_cell_bdf(store: Store, cell_id: str, path: str | Path, run_id: int | None = None, fmt: str = "csv") -> Path:
    """Write a cell's samples (its latest run unless ``run_id``) as a BDF file at ``path``; returns the path.

    Raises StoreError for an unknown cell, a run of another cell or a run without samples, and InputError for
    an unknown format or Parquet without pyarrow installed.
    """
    if fmt not in FORMATS:
        raise InputError("fmt", f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise InputError("fmt", "Parquet export needs pyarrow, which is not installed; use csv")
    if store.cell(cell_id) is None:
        raise StoreError(f"no such cell {cell_id!r}")
    runs = store.cell_runs(cell_id)
    if run_id is None:
        if not runs:
            raise StoreError(f"cell {cell_id!r} has no runs")
        run_id = runs[-1].id
    elif run_id not in {r.id for r in runs}:
        raise StoreError(f"run {run_id} is not a run of cell {cell_id!r}")
    assert run_id is not None  # every stored run has an id
    samples = store.samples(run_id, with_cycle=True)
    if samples.empty:
        raise StoreError(f"run {run_id} of cell {cell_id!r} has no samples")
    frame = bdf_frame(samples)
    out = Path(path)
    if fmt == "csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return out
