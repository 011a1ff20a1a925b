"""Builders of the steps the host ends or judges: ``wait`` (until the cell has cooled), ``hold`` (until an operator
continues the run) and ``precheck`` (OCV window and short check before any current), and the ``dvdt_mv_per_h``
relaxation end of a rest.

Each builder has the signature of ``formation.recipes.parse.STEP_BUILDERS``: every problem is recorded with its
field path; the step is returned only when nothing was refused. Every number is finite and within the bounds
named here.
"""

from __future__ import annotations

import math
from typing import Any

from formation.recipes.fields import Context, check_voltage, join, read_duration, read_table, record_rule, type_name
from formation.recipes.model import CHAMBER_MIN_C, HOLD_DEFAULT_S, HoldStep, PrecheckStep, RecordRule, WaitStep
from formation.recipes.units import MAX_DURATION_S, clean, fmt, format_duration, is_number

_WAIT_KEYS = ("id", "kind", "below_c", "timeout", "record")
_HOLD_KEYS = ("id", "kind", "timeout", "message", "record")
_PRECHECK_KEYS = ("id", "kind", "ocv_min_v", "ocv_max_v", "rest", "max_drop_mv", "record")

#: How long a ``wait`` step waits for the cell to cool when the recipe gives no ``timeout`` (seconds).
WAIT_DEFAULT_S = 4 * 3600.0
#: Largest relaxation end: a rest whose voltage still moves faster than this is not relaxing, it is a fault.
MAX_DVDT_MV_PER_H = 1000.0
#: The dV/dt window when the recipe gives none, and its bounds (a shorter window only sees noise).
DVDT_WINDOW_DEFAULT_S = 600.0
MIN_DVDT_WINDOW_S = 60.0
#: Bounds of a pre-check: its rest, and the largest voltage drop one may allow over it.
MIN_PRECHECK_REST_S = 60.0
MAX_PRECHECK_REST_S = 86400.0
MAX_PRECHECK_DROP_MV = 1000.0
#: Longest operator message of a hold step (it is shown on one line).
MAX_MESSAGE_CHARS = 200


def _bounded(raw: dict[str, Any], key: str, path: str, lo: float, hi: float, unit: str, ctx: Context) -> float | None:
    """A finite number at ``raw[key]`` within ``lo`` … ``hi`` (lo excluded when 0), or None (absent or refused)."""
    if key not in raw:
        return None
    where = join(path, key)
    value = raw[key]
    if not is_number(value) or not math.isfinite(float(value)):
        ctx.error(where, f"expected a finite number of {unit}, got {value!r}" if is_number(value) else
                  f"expected a finite number of {unit}, got {type_name(value)}")  # fmt: skip
        return None
    number = clean(float(value))
    if number < lo or (lo == 0 and number == 0) or number > hi:
        ctx.error(where, f"{fmt(number)} {unit} is outside {'above ' if lo == 0 else ''}{fmt(lo)} … {fmt(hi)} {unit}")
        return None
    return number


def _timeout(raw: dict[str, Any], path: str, default_s: float, ctx: Context) -> float | None:
    if "timeout" not in raw:
        return default_s
    timeout_s = read_duration(raw, "timeout", path, ctx)
    if timeout_s is not None and timeout_s > MAX_DURATION_S:
        ctx.error(join(path, "timeout"), f"{fmt(timeout_s)} s is above {fmt(MAX_DURATION_S)} s, the longest duration")
        return None
    return timeout_s


def _required(raw: dict[str, Any], path: str, keys: tuple[str, ...], ctx: Context) -> None:
    for key in keys:
        if key not in raw:
            ctx.error(join(path, key), "missing required key")


def wait_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> WaitStep | None:
    """A ``wait`` step: required ``below_c`` (above -40 °C, below ``limits.max_cell_temperature_c``); ``timeout``."""
    before = len(ctx.errors)
    read_table(raw, path, _WAIT_KEYS, ctx, required=("below_c",))
    top = ctx.max_cell_temperature_c if ctx.max_cell_temperature_c is not None else 100.0
    below_c = _bounded(raw, "below_c", path, CHAMBER_MIN_C, top, "°C", ctx)
    timeout_s = _timeout(raw, path, WAIT_DEFAULT_S, ctx)
    record = record_rule(raw.get("record", {}), join(path, "record"), ctx.record, ctx)
    if len(ctx.errors) > before:
        return None
    assert below_c is not None and timeout_s is not None and record is not None
    return WaitStep(id=step_id, below_c=below_c, timeout_s=timeout_s, record=record)


def hold_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> HoldStep | None:
    """A ``hold`` step: optional ``timeout`` (default 24 h) and one-line ``message`` for the operator."""
    before = len(ctx.errors)
    read_table(raw, path, _HOLD_KEYS, ctx)
    timeout_s = _timeout(raw, path, HOLD_DEFAULT_S, ctx)
    message = raw.get("message", "")
    if not isinstance(message, str):
        ctx.error(join(path, "message"), f"expected a string, got {type_name(message)}")
    elif "\n" in message or len(message) > MAX_MESSAGE_CHARS:
        ctx.error(join(path, "message"), f"one line of at most {MAX_MESSAGE_CHARS} characters")
    record = record_rule(raw.get("record", {}), join(path, "record"), ctx.record, ctx)
    if len(ctx.errors) > before:
        return None
    assert timeout_s is not None and record is not None and isinstance(message, str)
    return HoldStep(id=step_id, timeout_s=timeout_s, message=message.strip(), record=record)


def precheck_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> PrecheckStep | None:
    """A ``precheck`` step: OCV window inside the recipe limits, ``rest`` (1 min … 1 d), ``max_drop_mv``."""
    before = len(ctx.errors)
    read_table(raw, path, _PRECHECK_KEYS, ctx, required=("ocv_min_v", "ocv_max_v", "rest", "max_drop_mv"))
    ocv_min_v = _bounded(raw, "ocv_min_v", path, 0.0, 5.0, "V", ctx)
    ocv_max_v = _bounded(raw, "ocv_max_v", path, 0.0, 5.0, "V", ctx)
    check_voltage(ocv_min_v, join(path, "ocv_min_v"), ctx)
    check_voltage(ocv_max_v, join(path, "ocv_max_v"), ctx)
    if ocv_min_v is not None and ocv_max_v is not None and ocv_min_v >= ocv_max_v:
        ctx.error(join(path, "ocv_min_v"), f"{fmt(ocv_min_v)} V is not below ocv_max_v {fmt(ocv_max_v)} V")
    rest_s = read_duration(raw, "rest", path, ctx)
    if rest_s is not None and not MIN_PRECHECK_REST_S <= rest_s <= MAX_PRECHECK_REST_S:
        span = f"{format_duration(MIN_PRECHECK_REST_S)} … {format_duration(MAX_PRECHECK_REST_S)}"
        ctx.error(join(path, "rest"), f"{format_duration(rest_s)} is outside {span} (the short check's rest)")
    max_drop_mv = _bounded(raw, "max_drop_mv", path, 0.0, MAX_PRECHECK_DROP_MV, "mV", ctx)
    record = record_rule(raw.get("record", {}), join(path, "record"), ctx.record, ctx)
    if len(ctx.errors) > before:
        return None
    assert ocv_min_v is not None and ocv_max_v is not None and rest_s is not None
    assert max_drop_mv is not None and record is not None
    return PrecheckStep(
        id=step_id, ocv_min_v=ocv_min_v, ocv_max_v=ocv_max_v, rest_s=rest_s, max_drop_mv=max_drop_mv, record=record
    )


def read_dvdt(value: dict[str, Any], path: str, ctx: Context) -> tuple[float | None, float | None]:
    """``dvdt_mv_per_h`` and its ``dvdt_window`` (s) from a rest's ``until`` table; (None, None) when absent."""
    if "dvdt_mv_per_h" not in value:
        if "dvdt_window" in value:
            ctx.error(join(path, "dvdt_window"), "only with dvdt_mv_per_h (the window of the dV/dt end)")
        return None, None
    dvdt = _bounded(value, "dvdt_mv_per_h", path, 0.0, MAX_DVDT_MV_PER_H, "mV/h", ctx)
    window_s = read_duration(value, "dvdt_window", path, ctx) if "dvdt_window" in value else DVDT_WINDOW_DEFAULT_S
    if window_s is not None and window_s < MIN_DVDT_WINDOW_S:
        ctx.error(join(path, "dvdt_window"), f"{format_duration(window_s)} is below {fmt(MIN_DVDT_WINDOW_S)} s")
        window_s = None
    return dvdt, window_s


def check_dvdt_rest(
    duration_s: float | None, window_s: float | None, record: RecordRule, path: str, ctx: Context
) -> None:
    """A dV/dt end needs a window shorter than the rest and a record rule that logs several points in it."""
    if window_s is None:
        return
    if duration_s is not None and window_s >= duration_s:
        ctx.error(
            f"{path}.until.dvdt_window",
            f"{format_duration(window_s)} is not shorter than the rest ({format_duration(duration_s)}): never judged",
        )
    if record.every_s == 0 or record.every_s * 3 > window_s:
        ctx.error(
            f"{path}.record.every_s",
            f"a dV/dt end over {format_duration(window_s)} needs a record at least every {fmt(window_s / 3)} s",
        )
