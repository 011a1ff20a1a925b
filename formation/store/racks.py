"""Ageing racks in the store: each cell's latest run (where it can be taken from) and where each cell sits.

Bound as :class:`~formation.store.store.Store` methods. ``rack_position`` holds one row per cell on a rack: the cell
is its key (one cell in one place) and (rack, position) is unique (one place holds one cell), so a second load of a
position or of a cell is refused by the database too, not only by the command that checks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, func, insert, select

from formation.store.models import Cell, RackPosition, Run


class _Transactional(Protocol):
    """What these functions need of the store: one transaction with errors translated."""

    def _begin(self) -> AbstractContextManager[Connection]: ...


class LatestRun(NamedTuple):
    """A cell of a lot and its latest run (None fields when it has none)."""

    cell_id: str
    run_id: int | None
    cabinet: str | None
    channel: int | None
    state: str | None


class Place(NamedTuple):
    """Where a cell sits."""

    cell_id: str
    rack: str
    position: int
    loaded_s: float


def _t(model: Any) -> Any:
    return model.__table__


def latest_runs(self: _Transactional, lot_id: str) -> list[LatestRun]:
    """Every cell of ``lot_id`` (by id) with its latest run: the highest run id, as grading takes it."""
    cell, run = _t(Cell), _t(Run)
    latest = select(run.c.cell_id, func.max(run.c.id).label("run_id")).group_by(run.c.cell_id).subquery("latest")
    stmt = (
        select(cell.c.id, run.c.id, run.c.cabinet, run.c.channel, run.c.state)
        .where(cell.c.lot_id == lot_id)
        .outerjoin(latest, latest.c.cell_id == cell.c.id)
        .outerjoin(run, run.c.id == latest.c.run_id)
        .order_by(cell.c.id)
    )
    with self._begin() as conn:
        return [LatestRun(*row) for row in conn.execute(stmt)]


def rack_places(self: _Transactional, *, rack: str | None = None, cells: Sequence[str] = ()) -> list[Place]:
    """The places on ``rack``, or of ``cells``, or every place (ordered by rack and position)."""
    table = _t(RackPosition)
    stmt = select(table.c.cell_id, table.c.rack, table.c.position, table.c.loaded_s)
    if rack is not None:
        stmt = stmt.where(table.c.rack == rack)
    if cells:
        stmt = stmt.where(table.c.cell_id.in_(list(cells)))
    with self._begin() as conn:
        return [Place(*row) for row in conn.execute(stmt.order_by(table.c.rack, table.c.position))]


def place_cells(self: _Transactional, places: Sequence[Place]) -> None:
    """Record where each cell went, all in one transaction (a taken place or a placed cell refuses them all)."""
    if not places:
        return
    with self._begin() as conn:
        conn.execute(insert(_t(RackPosition)), [p._asdict() for p in places])
