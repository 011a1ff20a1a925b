"""The ageing room of a site file: ``[[testers]]`` (OCV/ACIR testers and the racks their scanners reach) and
``[[racks]]`` (positions, the chamber a rack stands in). Read by :mod:`formation.config`.

```toml
[[testers]]
name = "tester1"
resource = "TCPIP0::127.0.0.1::5027::SOCKET"
racks = ["rack1"]              # scanner slots 1, 2, … in this order
resistance_range_ohm = 0.3     # 3m, 30m, 300m, 3, 30, 300 or 3000 Ω: the smallest that holds the cells
[[racks]]
name = "rack1"
positions = 256
chamber = "chamber1"           # a [[chambers]] name: the stage set points of an ageing plan go to it
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from formation.errors import ConfigError

#: The tester's ranges and rates (docs/bt3562-dialect.md), and the site's bounds.
RESISTANCE_RANGES_OHM = (3e-3, 30e-3, 300e-3, 3.0, 30.0, 300.0, 3000.0)
SAMPLE_RATES = ("EXFAST", "FAST", "MEDIUM", "SLOW")
MAX_SLOTS = 9
MAX_POSITIONS = 999
TIMEOUT_BOUNDS_S = (0.1, 60.0)
_TESTER_KEYS = {"name", "resource", "racks", "timeout_s", "resistance_range_ohm", "sample_rate"}
_RACK_KEYS = {"name", "positions", "chamber"}


@dataclass(frozen=True)
class TesterSite:
    """One OCV/ACIR tester as the host reaches it, and the racks behind its scanner (slot order)."""

    name: str
    resource: str
    racks: tuple[str, ...]
    timeout_s: float = 5.0
    resistance_range_ohm: float = 0.3
    sample_rate: str = "MEDIUM"

    def slot(self, rack: str) -> int:
        """Scanner slot (1-based) of ``rack``."""
        return self.racks.index(rack) + 1


@dataclass(frozen=True)
class RackSite:
    """One ageing rack: its positions and the chamber it stands in (None: room air, no set points)."""

    name: str
    positions: int = 256
    chamber: str | None = None


def _name(value: Any, path: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip() or "," in value or '"' in value or not value.isprintable():
        raise ConfigError(path, f"{value!r} is not a name (printable, no comma or quote)", source=source)
    return value


def _table(value: Any, path: str, allowed: set[str], source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"{value!r} is not a table", source=source)
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})", source=source)
    for req in ("name", "resource", "racks") if "resource" in allowed else ("name",):
        if req not in value:
            raise ConfigError(f"{path}.{req}", "missing", source=source)
    return value


def _listed(value: Any, path: str, source: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, f"{value!r} is not an array of tables ([[{path}]])", source=source)
    return value


def parse_racks(value: Any, chambers: Sequence[str], source: str) -> tuple[RackSite, ...]:
    """``[[racks]]``: names unique, 1–999 positions, a known chamber."""
    racks: list[RackSite] = []
    for i, raw in enumerate(_listed(value, "racks", source)):
        where = f"racks[{i}]"
        table = _table(raw, where, _RACK_KEYS, source)
        name = _name(table["name"], f"{where}.name", source)
        if any(r.name == name for r in racks):
            raise ConfigError(f"{where}.name", f"duplicate rack name {name!r}", source=source)
        positions = table.get("positions", 256)
        if isinstance(positions, bool) or not isinstance(positions, int) or not 1 <= positions <= MAX_POSITIONS:
            raise ConfigError(f"{where}.positions", f"{positions!r} is not an integer within 1–999", source=source)
        chamber = table.get("chamber")
        if chamber is not None and chamber not in chambers:
            known = ", ".join(chambers) or "none"
            raise ConfigError(f"{where}.chamber", f"no chamber named {chamber!r} (known: {known})", source=source)
        racks.append(RackSite(name, positions, chamber))
    return tuple(racks)


def parse_testers(value: Any, racks: Sequence[RackSite], source: str) -> tuple[TesterSite, ...]:
    """``[[testers]]``: names unique, 1–9 known racks each, every rack behind one tester at most."""
    testers: list[TesterSite] = []
    known = {r.name for r in racks}
    reached: dict[str, str] = {}
    for i, raw in enumerate(_listed(value, "testers", source)):
        where = f"testers[{i}]"
        table = _table(raw, where, _TESTER_KEYS, source)
        name = _name(table["name"], f"{where}.name", source)
        if any(t.name == name for t in testers):
            raise ConfigError(f"{where}.name", f"duplicate tester name {name!r}", source=source)
        resource = table["resource"]
        if not isinstance(resource, str) or not resource.strip():
            raise ConfigError(f"{where}.resource", f"{resource!r} is not a VISA resource", source=source)
        listed = table["racks"]
        if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_SLOTS:
            raise ConfigError(f"{where}.racks", f"{listed!r} is not a list of 1–{MAX_SLOTS} rack names", source=source)
        for rack in listed:
            if rack not in known:
                names = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"{where}.racks", f"no rack named {rack!r} (known: {names})", source=source)
            if rack in reached:
                raise ConfigError(f"{where}.racks", f"rack {rack!r} is already behind {reached[rack]}", source=source)
            reached[rack] = name
        timeout_s = table.get("timeout_s", 5.0)
        low, high = TIMEOUT_BOUNDS_S
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not low <= timeout_s <= high:
            raise ConfigError(
                f"{where}.timeout_s", f"{timeout_s!r} is not a number within {low:g}–{high:g}", source=source
            )
        r_range = table.get("resistance_range_ohm", 0.3)
        if not isinstance(r_range, int | float) or not any(math.isclose(r_range, r) for r in RESISTANCE_RANGES_OHM):
            ranges = ", ".join(f"{r:g}" for r in RESISTANCE_RANGES_OHM)
            raise ConfigError(f"{where}.resistance_range_ohm", f"{r_range!r} is not one of {ranges}", source=source)
        rate = table.get("sample_rate", "MEDIUM")
        if rate not in SAMPLE_RATES:
            raise ConfigError(
                f"{where}.sample_rate", f"{rate!r} is not one of {', '.join(SAMPLE_RATES)}", source=source
            )
        r_value = next(r for r in RESISTANCE_RANGES_OHM if math.isclose(r_range, r))
        testers.append(TesterSite(name, resource, tuple(listed), float(timeout_s), r_value, rate))
    return tuple(testers)
