"""Launch inputs from the user: the cells file and channel lists, refused before anything starts."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from formation.bounds import MAX_CAPACITY_AH, MAX_ID_CHARS, MIN_CAPACITY_AH, read_input_text
from formation.errors import CellsFileError, InputError

CELLS_COLUMNS = ("cell_id", "lot", "nominal_capacity_ah")
#: Where csv.DictReader puts the fields of a row beyond the header's.
_EXTRA = "\x00extra"


@dataclass(frozen=True, slots=True)
class CellEntry:
    """One cell to form: its serial, its lot and its nominal capacity."""

    cell_id: str
    lot: str
    nominal_capacity_ah: float


def load_cells_file(path: str | Path) -> list[CellEntry]:
    """Read a cells CSV (cell_id, lot, nominal_capacity_ah); CellsFileError names the line and field."""
    p = Path(path)
    text = read_input_text(
        p, "cells file", lambda field, reason: CellsFileError(field, reason, source=str(p)), encoding="utf-8-sig"
    )
    return parse_cells_csv(text, source=str(p))


def parse_cells_csv(text: str, source: str = "<cells>") -> list[CellEntry]:
    """Parse cells CSV text; duplicates, blanks, extra fields, odd ids and capacities outside bounds are refused."""
    try:
        return _parse_cells(text, source)
    except csv.Error as exc:  # a field beyond the csv module's limit (128 KiB), a NUL byte, a stray quote
        raise CellsFileError("", f"not a readable CSV file: {exc}", source=source) from None


def _parse_cells(text: str, source: str) -> list[CellEntry]:
    reader = csv.DictReader(text.splitlines(), restkey=_EXTRA)
    header = [(h or "").strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CELLS_COLUMNS if c not in header]
    if missing:
        raise CellsFileError("header", f"missing column(s) {', '.join(missing)}", source=source)
    cells: list[CellEntry] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(reader, start=2):
        if raw.get(_EXTRA):
            raise CellsFileError(
                f"line {lineno}",
                f"{len(header) + len(raw[_EXTRA])} fields, the header has {len(header)}",
                source=source,
            )
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k != _EXTRA}
        if not any(row.values()):
            continue
        cell_id, lot, cap_text = row["cell_id"], row["lot"], row["nominal_capacity_ah"]
        for key, value in (("cell_id", cell_id), ("lot", lot)):
            if len(value) > MAX_ID_CHARS or not value.isprintable():
                reason = (
                    f"longer than {MAX_ID_CHARS} characters" if len(value) > MAX_ID_CHARS else "has control characters"
                )
                raise CellsFileError(f"line {lineno}.{key}", reason, source=source)
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
        if not MIN_CAPACITY_AH <= cap <= MAX_CAPACITY_AH:
            reason = f"{cap_text} Ah is outside {MIN_CAPACITY_AH:g}–{MAX_CAPACITY_AH:g} Ah"
            raise CellsFileError(f"line {lineno}.nominal_capacity_ah", reason, source=source)
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
        lo_text, dash, hi_text = part.partition("-")
        numbers = [t.strip() for t in ((lo_text, hi_text) if dash else (lo_text,))]
        # ASCII digits only: int() also takes "٣" and "1_0".
        if not all(t.isascii() and t.isdigit() for t in numbers):
            raise InputError(field, f"{part!r} is not a channel number or range")
        # Checked as text first, so "1-99999999999" is refused before anything is expanded.
        for number in numbers:
            if len(number.lstrip("0")) > len(str(n_channels)):
                raise InputError(field, f"channel {number[:20]} is outside the cabinet (1-{n_channels})")
        lo = int(numbers[0])
        hi = int(numbers[-1])
        if hi < lo:
            raise InputError(field, f"range {part!r} runs backwards")
        if lo < 1 or hi > n_channels:
            first_outside = lo if not 1 <= lo <= n_channels else n_channels + 1
            raise InputError(field, f"channel {first_outside} is outside the cabinet (1-{n_channels})")
        if len(channels) + hi - lo + 1 > n_channels:
            raise InputError(field, "a channel is listed twice")  # more channels than the cabinet has
        channels.extend(range(lo, hi + 1))
    if not channels:
        raise InputError(field, "no channels given")
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
