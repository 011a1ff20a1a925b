"""Simulated ageing racks: positions holding cells moved from a cabinet, at open circuit (pure: no I/O, no clock).

A cell moved onto a rack takes its whole state with it (charge, SEI growth, leak, relaxation, hysteresis,
temperature): :meth:`RackModel.load` receives a one-cell copy from the cabinet's population
(:meth:`formation.sim.cycler.CabinetModel.take_cell`) and joins it to the rack's own vectorised population. The rack
integrates every cell at 0 A towards its ambient: the chamber air when it stands in a chamber (the plant's
``ChamberGroup`` sets :attr:`RackModel.ambient_c`), else its own ``ambient_c``.

Each position has a fixed contact resistance (log-normal, drawn from the rack's seed): what the tester's probes
add to a cell's 1 kHz resistance there. docs/bt3562-dialect.md, "Simulation notes".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formation.sim.cells import CellPopulation
from formation.sim.scpi import scpi_error

#: Most positions one rack may have (the scanner addresses a position with three digits).
MAX_POSITIONS = 999
_EPS_S = 1e-9


@dataclass(frozen=True, slots=True)
class RackSpec:
    """How to simulate one ageing rack: positions, where it stands, its contact resistances' seed."""

    name: str
    positions: int = 256
    #: Name of the chamber the rack stands in, or None (its cells then follow ``ambient_c``).
    chamber: str | None = None
    ambient_c: float = 25.0
    seed: int = 0
    #: Probe contact resistance per position: log-normal median (ohm) and sigma of its log.
    contact_median_ohm: float = 20e-6
    contact_sigma_log: float = 0.5
    #: Longest integration step (s): the temperature-dependent rates are frozen within one.
    max_dt_s: float = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.positions <= MAX_POSITIONS:
            raise ValueError(f"rack {self.name!r}: positions must be within 1..{MAX_POSITIONS}, got {self.positions}")
        if not (self.contact_median_ohm >= 0.0 and self.contact_sigma_log >= 0.0):
            raise ValueError(f"rack {self.name!r}: contact resistance figures must be >= 0")
        if not 0.0 < self.max_dt_s <= 3600.0:
            raise ValueError(f"rack {self.name!r}: max_dt_s must be within (0, 3600]")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a rack's cell came from: cabinet, BT2200 channel, the cell id it had there, when it was moved."""

    cabinet: str
    channel: int
    cell_id: int
    loaded_s: float


class RackModel:
    """One rack: positions 1…N, the cells on them (one population), their origins, integrated at open circuit."""

    def __init__(self, spec: RackSpec, *, start_time_s: float, ambient_c: float | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.positions = spec.positions
        self.time_s = float(start_time_s)
        self.ambient_c = spec.ambient_c if ambient_c is None else float(ambient_c)
        rng = np.random.default_rng([spec.seed, 0xACE])
        self.contact_ohm: np.ndarray = spec.contact_median_ohm * np.exp(
            spec.contact_sigma_log * np.clip(rng.standard_normal(spec.positions), -3.0, 3.0)
        )
        #: Index of the cell on each position (0-based position) in :attr:`cells`, or -1 when empty.
        self.slot: np.ndarray = np.full(spec.positions, -1, dtype=np.int64)
        self.cells: CellPopulation | None = None
        self.origins: dict[int, Origin] = {}

    # --- loading ------------------------------------------------------------------------------------------

    def check_position(self, position: int) -> int:
        """0-based index of a 1-based ``position``; -222 when the rack has no such position."""
        if not 1 <= position <= self.positions:
            raise scpi_error(-222)
        return position - 1

    def occupied(self, position: int) -> bool:
        """Whether a cell sits on ``position`` (1-based)."""
        return bool(self.slot[self.check_position(position)] >= 0)

    def load(self, position: int, cell: CellPopulation, origin: Origin) -> None:
        """Put the one-cell population ``cell`` on ``position`` (-221 if taken, -224 if of another preset)."""
        k = self.check_position(position)
        if self.slot[k] >= 0:
            raise scpi_error(-221)
        if cell.n != 1:
            raise ValueError("a rack position holds one cell")
        if self.cells is not None and cell.preset != self.cells.preset:
            raise scpi_error(-224)
        self.slot[k] = 0 if self.cells is None else self.cells.n
        self.cells = cell if self.cells is None else CellPopulation.join([self.cells, cell])
        self.origins[position] = origin

    def unload(self, position: int) -> CellPopulation:
        """Take the cell off ``position`` (-221 if empty): its one-cell copy, state and all."""
        k = self.check_position(position)
        index = int(self.slot[k])
        if index < 0 or self.cells is None:
            raise scpi_error(-221)
        taken = self.cells.clone(index)
        keep = np.flatnonzero(np.arange(self.cells.n) != index)
        self.cells = self.cells.clone(keep) if keep.size else None
        self.slot[k] = -1
        self.slot[self.slot > index] -= 1
        self.origins.pop(position, None)
        return taken

    def cell_index(self, position: int) -> int | None:
        """Index in :attr:`cells` of the cell on ``position``, or None when empty."""
        index = int(self.slot[self.check_position(position)])
        return None if index < 0 else index

    # --- integration --------------------------------------------------------------------------------------

    def advance_to(self, t_s: float) -> None:
        """Integrate every cell at open circuit from the rack's time to ``t_s`` (clock seconds)."""
        if self.cells is None:
            self.time_s = max(self.time_s, float(t_s))
            return
        while t_s - self.time_s > _EPS_S:
            dt = min(self.spec.max_dt_s, t_s - self.time_s)
            self.cells.step(dt, 0.0, self.ambient_c)
            self.time_s = t_s if dt == t_s - self.time_s else self.time_s + dt

    def truth(self, position: int) -> dict[str, object]:
        """Ground truth of the cell on ``position`` and where it came from (-221 when empty)."""
        index = self.cell_index(position)
        if index is None or self.cells is None:
            raise scpi_error(-221)
        origin = self.origins[position]
        return {
            "rack": self.name,
            "position": position,
            "cabinet": origin.cabinet,
            "channel": origin.channel,
            "cell": origin.cell_id,
            "loaded_s": origin.loaded_s,
            "contact_ohm": float(self.contact_ohm[position - 1]),
            **self.cells.truth(index),
        }
