"""Temperatures in a recipe: the ``chamber`` step builder and the ``chamber_c`` key every other step may carry.

A ``chamber`` step sets the chamber to ``setpoint_c`` and, with ``wait`` (the default), ends once the chamber is
stable there (at most ``timeout``); ``chamber_c`` on a step holds that step until the chamber is stable at that
temperature. Both set points are finite, within :data:`CHAMBER_MIN_C` … :data:`CHAMBER_MAX_C` and below
``limits.max_cell_temperature_c``. Errors are recorded with their field path in the context, as by every builder
of ``formation.recipes.parse.STEP_BUILDERS``.
"""

from __future__ import annotations

import math
from typing import Any

from formation.recipes.fields import Context, join, read_duration, record_rule, type_name
from formation.recipes.model import CHAMBER_MAX_C, CHAMBER_MIN_C, ChamberStep
from formation.recipes.units import MAX_DURATION_S, clean, fmt, is_number

_CHAMBER_KEYS = ("id", "kind", "setpoint_c", "wait", "timeout", "record")
#: Keys of other step kinds a chamber step refuses, with the reason (``text`` is refused by the parser itself).
CHAMBER_REFUSED_KEYS: dict[str, str] = {
    "until": "a chamber step has no end condition: it ends when the chamber is stable (wait = true) or at once "
    "(wait = false)",
    "current": "a chamber step moves no current: the cells rest with their output off",
    "chamber_c": "a chamber step gives its temperature as setpoint_c",
}
#: Reason a chamber step written as a PyBaMM ``text`` is refused.
CHAMBER_TEXT_REASON = "a chamber step has no PyBaMM text: give setpoint_c (and wait, timeout) as keys"


def check_setpoint(value: object, where: str, ctx: Context) -> float | None:
    """A chamber set point in °C at ``where``: finite, within the chamber range and below the cell limit."""
    if not is_number(value):
        ctx.error(where, f"expected a finite number of °C, got {type_name(value)}")
        return None
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        ctx.error(where, f"expected a finite number of °C, got {number!r}")
        return None
    setpoint_c = clean(number)
    span = f"chamber set points are {fmt(CHAMBER_MIN_C)} … {fmt(CHAMBER_MAX_C)} °C"
    if setpoint_c < CHAMBER_MIN_C:
        ctx.error(where, f"{fmt(setpoint_c)} °C is below {fmt(CHAMBER_MIN_C)} °C ({span})")
    elif setpoint_c > CHAMBER_MAX_C:
        ctx.error(where, f"{fmt(setpoint_c)} °C is above {fmt(CHAMBER_MAX_C)} °C ({span})")
    elif ctx.max_cell_temperature_c is not None and setpoint_c >= ctx.max_cell_temperature_c:
        limit = fmt(ctx.max_cell_temperature_c)
        ctx.error(where, f"{fmt(setpoint_c)} °C is not below limits.max_cell_temperature_c {limit} °C")
    else:
        return setpoint_c
    return None


def read_chamber_c(raw: dict[str, Any], path: str, ctx: Context) -> float | None:
    """A step's ``chamber_c`` (None when absent or refused)."""
    if "chamber_c" not in raw:
        return None
    return check_setpoint(raw["chamber_c"], join(path, "chamber_c"), ctx)


def _read_wait(raw: dict[str, Any], path: str, ctx: Context) -> bool | None:
    value = raw.get("wait", True)
    if not isinstance(value, bool):
        ctx.error(join(path, "wait"), f"expected a boolean (true or false), got {type_name(value)}")
        return None
    return value


def _read_timeout(raw: dict[str, Any], path: str, wait: bool | None, ctx: Context) -> float | None:
    if "timeout" not in raw:
        return None
    where = join(path, "timeout")
    if wait is False:
        ctx.error(where, "only with wait = true (a chamber step that does not wait has nothing to time out)")
        return None
    timeout_s = read_duration(raw, "timeout", path, ctx)
    if timeout_s is not None and timeout_s > MAX_DURATION_S:
        ctx.error(where, f"{fmt(timeout_s)} s is above {fmt(MAX_DURATION_S)} s, the longest duration the line takes")
        return None
    return timeout_s


def chamber_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> ChamberStep | None:
    """A ``chamber`` step: required ``setpoint_c``; ``wait`` (default true); ``timeout`` (with wait only)."""
    before = len(ctx.errors)
    for key in raw:
        if key in CHAMBER_REFUSED_KEYS:
            ctx.error(join(path, str(key)), CHAMBER_REFUSED_KEYS[key])
        elif key not in _CHAMBER_KEYS:
            ctx.error(join(path, str(key)), f"unknown key (expected one of: {', '.join(_CHAMBER_KEYS)})")
    setpoint_c: float | None = None
    if "setpoint_c" not in raw:
        ctx.error(join(path, "setpoint_c"), "missing required key (the chamber temperature, °C)")
    else:
        setpoint_c = check_setpoint(raw["setpoint_c"], join(path, "setpoint_c"), ctx)
    wait = _read_wait(raw, path, ctx)
    timeout_s = _read_timeout(raw, path, wait, ctx)
    record = record_rule(raw.get("record", {}), join(path, "record"), ctx.record, ctx)
    if len(ctx.errors) > before:
        return None
    assert setpoint_c is not None and wait is not None and record is not None
    return ChamberStep(id=step_id, setpoint_c=setpoint_c, wait=wait, timeout_s=timeout_s, record=record)
