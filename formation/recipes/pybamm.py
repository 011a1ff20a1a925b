"""PyBaMM experiment strings as recipe steps, so protocols prototyped in PyBaMM run unchanged on the line.

Accepted (case-insensitive; durations in s/min/h/d or their long forms; currents in A, mA, C, C/n):

    Charge at C/20 for 2 hours or until 3.4 V       Discharge at 1A for 10 minutes
    Charge at 1 C until 4.2 V                       Discharge at C/5 until 2.5 V
    Hold at 4.2 V until C/50                        Rest for 1 hour [or until 3.3 V]

A string becomes the same raw step table a TOML step would be, so it is validated (and hashed) identically.

``Hold at V`` is a pure CV step in PyBaMM. A cycler only has CC-with-voltage-clamp, so a hold becomes a
CC-CV step at the recipe's ``limits.max_current_a`` clamped at V: if the cell already sits at V, the clamp
engages at once and it is a pure CV hold; if not, it gets there at the fastest current the recipe allows,
as PyBaMM's ideal CV would.
Its direction is that of the nearest preceding charge/discharge step (charge when there is none), so
``Discharge ... until 2.5 V`` then ``Hold at 2.5 V until C/50`` is a discharge-side hold.
"""

from __future__ import annotations

import re
from typing import Any

from formation.recipes.units import parse_current, parse_duration_s, parse_voltage_text

_TAIL = r"(?:\s+for\s+(?P<dur>.+?))?(?:\s+(?:or\s+)?until\s+(?P<until>.+))?"
_CURRENT_STEP = re.compile(rf"(?P<verb>charge|discharge)\s+at\s+(?P<at>.+?){_TAIL}")
_HOLD = re.compile(rf"hold\s+at\s+(?P<at>.+?){_TAIL}")
_REST = re.compile(rf"rest{_TAIL}")
_OR = re.compile(r"\s+or\s+(?:until\s+)?")

EXPECTED = (
    "expected 'Charge|Discharge at <current> [for <duration>] [or until <voltage|current>]', "
    "'Hold at <voltage> V [for <duration>] [or until <current>]' "
    "or 'Rest for <duration> [or until <voltage>]'"
)


def _until(match: re.Match[str]) -> dict[str, Any]:
    until: dict[str, Any] = {}
    if match.group("dur"):
        until["duration"] = parse_duration_s(match.group("dur"))
    if match.group("until"):
        for condition in _OR.split(match.group("until")):
            key = "voltage_v" if condition.rstrip().endswith("v") else "current"
            if key in until:
                raise ValueError(f"two {key} ends in one step")
            if key == "voltage_v":
                until[key] = parse_voltage_text(condition)
            else:
                until[key] = parse_current(condition).to_canonical()
    return until


def parse_experiment_step(
    text: str, *, previous_kind: str | None = None, hold_current_a: float | None = None
) -> dict[str, Any]:
    """The raw step table (``kind``, ``current``, ``cv_voltage_v``, ``until``) of one PyBaMM string.

    ``previous_kind`` is the kind of the nearest preceding charge/discharge step (a ``Hold``'s direction),
    ``hold_current_a`` the current a ``Hold`` uses (the recipe's max current). Raises ``ValueError``.
    """
    normal = " ".join(text.lower().split()).rstrip(".")
    if match := _REST.fullmatch(normal):
        return {"kind": "rest", "until": _until(match)}
    if match := _CURRENT_STEP.fullmatch(normal):
        at = match.group("at")
        if at.endswith("w"):
            raise ValueError("power steps (W) are not supported")
        if at.endswith("v"):
            raise ValueError("a voltage step is written 'Hold at <voltage> V ...'")
        return {
            "kind": match.group("verb"),
            "current": parse_current(at).to_canonical(),
            "until": _until(match),
        }
    if match := _HOLD.fullmatch(normal):
        if hold_current_a is None:
            raise ValueError("a Hold step needs valid limits.max_current_a (or nominal_capacity_ah) for its current")
        return {
            "kind": "discharge" if previous_kind == "discharge" else "charge",
            "current": {"a": hold_current_a},
            "cv_voltage_v": parse_voltage_text(match.group("at")),
            "until": _until(match),
        }
    raise ValueError(EXPECTED)
