"""Vectorised equivalent-circuit cell population (pure: no I/O, no clock). INTERFACE SKELETON — to be filled in.

One numpy array per quantity across all cells. Sign convention: current > 0 charges the cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellPreset:
    """Nominal parameters of one cell type (chemistry, capacity, resistances, thermal, limits)."""

    name: str
    chemistry: str  # "LFP" | "NCM"
    nominal_capacity_ah: float
    # ... (the implementer adds OCV table, R0, RC, thermal, SEI, leak, spreads)


PRESETS: dict[str, CellPreset] = {}  # "ncm21700-5ah", "lfp-280ah"


class CellPopulation:
    """State of ``n`` cells of one preset; deterministic under ``seed``."""

    def __init__(
        self,
        preset: CellPreset,
        n: int,
        *,
        seed: int = 0,
        formed: bool = False,
        initial_soc: float | np.ndarray = 0.0,
        ambient_c: float = 25.0,
        defect_fraction: float = 0.03,
    ) -> None:
        raise NotImplementedError

    n: int
    soc: np.ndarray
    temperature_c: np.ndarray
    capacity_ah: np.ndarray

    def ocv_v(self) -> np.ndarray:
        """Open-circuit voltage of every cell now."""
        raise NotImplementedError

    def terminal_voltage_v(self, current_a: np.ndarray) -> np.ndarray:
        """Terminal voltage of every cell if ``current_a`` flowed now (no state change)."""
        raise NotImplementedError

    def current_for_voltage_a(self, target_v: np.ndarray, dt_s: float) -> np.ndarray:
        """Current that brings each cell's terminal voltage to ``target_v`` at the end of a ``dt_s`` step."""
        raise NotImplementedError

    def step(self, dt_s: float, current_a: np.ndarray, ambient_c: float | np.ndarray) -> np.ndarray:
        """Advance every cell by ``dt_s`` at ``current_a``; return the terminal voltage at the end."""
        raise NotImplementedError

    def truth(self, index: int) -> dict[str, float]:
        """Ground truth of one cell for tests (capacity_ah, soc, r0_ohm, r1_ohm, tau1_s, leak_a, ...)."""
        raise NotImplementedError
