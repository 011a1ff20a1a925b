"""Launch inputs from the user: the cells file and channel lists, refused before anything starts."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from formation.errors import CellsFileError, InputError

CELLS_COLUMNS = ("cell_id", "lot", "nominal_capacity_ah")


@dataclass(frozen=True, slots=True)
class CellEntry:
    """One cell to form: its serial, its lot and its nominal capacity."""

    cell_id: str
    lot: str
    nominal_capacity_ah: float


def load_cells_file(path: str | Path) -> list[CellEntry]:
    """Read a cells CSV (cell_id, lot, nominal_capacity_ah); CellsFileError names the line and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CellsFileError("", f"cannot read cells file: {exc.strerror}", source=str(p)) from exc
    return parse_cells_csv(text, source=str(p))


def parse_cells_csv(text: str, source: str = "<cells>") -> list[CellEntry]:
    """Parse cells CSV text; duplicates, blanks and non-positive capacities are refused."""
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CELLS_COLUMNS if c not in header]
    if missing:
        raise CellsFileError("header", f"missing column(s) {', '.join(missing)}", source=source)
    cells: list[CellEntry] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        cell_id, lot, cap_text = row["cell_id"], row["lot"], row["nominal_capacity_ah"]
        if not cell_id:
            raise CellsFileError(f"line {lineno}.cell_id", "empty", source=source)
        if cell_id in seen:
            raise CellsFileError(
                f"line {lineno}.cell_id",
                f"duplicate cell id {cell_id!r} (first on line {seen[cell_id]})",
                source=source,
            )
        if not lot:
            raise CellsFileError(f"line {lineno}.lot", "empty", source=source)
        try:
            cap = float(cap_text)
        except ValueError:
            raise CellsFileError(
                f"line {lineno}.nominal_capacity_ah", f"{cap_text!r} is not a number", source=source
            ) from None
        if not math.isfinite(cap) or cap <= 0:
            raise CellsFileError(f"line {lineno}.nominal_capacity_ah", f"{cap_text} must be > 0", source=source)
        seen[cell_id] = lineno
        cells.append(CellEntry(cell_id, lot, cap))
    if not cells:
        raise CellsFileError("", "no cells", source=source)
    return cells


def parse_channel_list(text: str, n_channels: int, field: str = "channels") -> list[int]:
    """Parse "1-32", "1,3,5-8" into sorted logical channels, each within 1..n_channels, no repeats."""
    channels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
                if hi < lo:
                    raise InputError(field, f"range {part!r} runs backwards")
                channels.extend(range(lo, hi + 1))
            else:
                channels.append(int(part))
        except ValueError:
            raise InputError(field, f"{part!r} is not a channel number or range") from None
    if not channels:
        raise InputError(field, "no channels given")
    outside = [c for c in channels if not 1 <= c <= n_channels]
    if outside:
        raise InputError(field, f"channel {outside[0]} is outside the cabinet (1-{n_channels})")
    if len(set(channels)) != len(channels):
        raise InputError(field, "a channel is listed twice")
    return sorted(channels)


def format_channel_list(channels: list[int]) -> str:
    """The compact form of a channel list: [1,2,3,7] -> "1-3,7"."""
    parts: list[str] = []
    ordered = sorted(channels)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)
