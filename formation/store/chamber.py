"""Chamber records in the store: decimated control samples (Core batch inserts) and valve wear (upsert).

The functions take the :class:`~formation.store.Store` as ``self`` and are bound on it as methods
(``Store.add_chamber_samples`` and the others), so the facade keeps one transaction per call and one place that
translates database errors, while the chamber logic lives here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

import pandas as pd
from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from formation.store.models import ChamberSample, ValveSwitches

#: Columns of a chamber sample row handed to ``Store.add_chamber_samples``, in table order.
CHAMBER_SAMPLE_COLUMNS: tuple[str, ...] = (
    "chamber",
    "ts_s",
    "setpoint_c",
    "temperature_c",
    "sensors_c",
    "demand",
    "valves_open",
    "stable",
    "in_band",
)


class ValveWear(NamedTuple):
    """One valve's stored wear: switchings and seconds commanded open."""

    switches: int
    open_s: float


class _Transactional(Protocol):
    """What these functions need of the store: one transaction with errors translated."""

    def _begin(self) -> AbstractContextManager[Connection]: ...


def _number(value: Any) -> float | None:
    """A float for the database; NaN, None and infinities become NULL (SQLite would store NaN as NULL anyway)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _sensors_json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps([_number(v) for v in value], separators=(",", ":"))


def _valves_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return ",".join(str(int(c)) for c in sorted(value))


def sample_params(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain-Python parameters of an executemany from sample rows.

    ``sensors_c`` may be a sequence of °C (NaN for an open thermocouple) or its JSON text, ``valves_open`` a set
    of channels or the text; ``temperature_c`` NaN is stored NULL. A missing column raises KeyError naming it.
    """
    params = []
    for row in rows:
        params.append(
            {
                "chamber": str(row["chamber"]),
                "ts_s": float(row["ts_s"]),
                "setpoint_c": float(row["setpoint_c"]),
                "temperature_c": _number(row["temperature_c"]),
                "sensors_c": _sensors_json(row["sensors_c"]),
                "demand": float(row["demand"]),
                "valves_open": _valves_text(row["valves_open"]),
                "stable": bool(row["stable"]),
                "in_band": bool(row["in_band"]),
            }
        )
    return params


def add_chamber_samples(self: _Transactional, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append chamber samples (keys :data:`CHAMBER_SAMPLE_COLUMNS`) in one executemany; returns how many."""
    params = sample_params(rows)
    if not params:
        return 0
    with self._begin() as conn:
        conn.execute(insert(ChamberSample.__table__), params)  # type: ignore[attr-defined]
    return len(params)


def chamber_samples(self: _Transactional, chamber: str, since_s: float | None = None) -> pd.DataFrame:
    """A chamber's samples (from clock time ``since_s`` on), oldest first.

    Columns :data:`CHAMBER_SAMPLE_COLUMNS`: ``temperature_c`` float (NaN when no sensor was healthy), ``sensors_c``
    a list of floats per row (NaN for an open thermocouple), ``valves_open`` text, ``stable`` / ``in_band`` bool.
    """
    table = ChamberSample.__table__  # type: ignore[attr-defined]
    stmt = select(*[table.c[c] for c in CHAMBER_SAMPLE_COLUMNS]).where(table.c.chamber == chamber)
    if since_s is not None:
        stmt = stmt.where(table.c.ts_s >= since_s)
    with self._begin() as conn:
        rows = conn.execute(stmt.order_by(table.c.ts_s, table.c.id)).all()
    frame = pd.DataFrame(rows, columns=list(CHAMBER_SAMPLE_COLUMNS))
    frame["sensors_c"] = [[math.nan if v is None else float(v) for v in json.loads(t)] for t in frame["sensors_c"]]
    floats = dict.fromkeys(("ts_s", "setpoint_c", "temperature_c", "demand"), "float64")
    return frame.astype({**floats, "chamber": "object", "valves_open": "object", "stable": "bool", "in_band": "bool"})


def save_valve_switches(
    self: _Transactional,
    chamber: str,
    counts: Mapping[int, int],
    open_s: Mapping[int, float],
    now_s: float,
) -> None:
    """Store each valve's TOTAL switchings and open seconds (an upsert per chamber and channel).

    The loop loads the stored totals at start and adds its own, so the counts survive restarts.
    """
    params = [
        {
            "chamber": chamber,
            "channel": int(channel),
            "switches": int(count),
            "open_s": float(open_s.get(channel, 0.0)),
            "updated_s": float(now_s),
        }
        for channel, count in counts.items()
    ]
    if not params:
        return
    with self._begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(ValveSwitches.__table__)  # type: ignore[attr-defined]
        stmt = stmt.on_conflict_do_update(
            index_elements=["chamber", "channel"],
            set_={c: stmt.excluded[c] for c in ("switches", "open_s", "updated_s")},
        )
        conn.execute(stmt, params)


def valve_switches(self: _Transactional, chamber: str) -> dict[int, ValveWear]:
    """The stored wear per valve channel of a chamber (empty when none was stored)."""
    table = ValveSwitches.__table__  # type: ignore[attr-defined]
    stmt = select(table.c.channel, table.c.switches, table.c.open_s).where(table.c.chamber == chamber)
    with self._begin() as conn:
        rows = conn.execute(stmt.order_by(table.c.channel)).all()
    return {int(channel): ValveWear(int(switches), float(open_s)) for channel, switches, open_s in rows}
