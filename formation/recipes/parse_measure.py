"""Builders of the measurement steps, ``dcir`` (rest, then a current pulse) and ``age`` (days at open circuit).

Each builder has the signature of ``formation.recipes.parse.STEP_BUILDERS``: it reads one raw step table,
records every problem with its field path (``steps[4].sample_at[1]``) in the context and returns the step,
or None when anything was refused. Both take ``chamber_c`` (``formation.recipes.parse_chamber``).
"""

from __future__ import annotations

from typing import Any, cast, get_args

from formation.recipes.fields import (
    Context,
    join,
    read_current,
    read_duration,
    read_parsed,
    read_table,
    record_rule,
    resolve_a,
    type_name,
)
from formation.recipes.model import AgeStep, DcirDirection, DcirMethod, DcirStep, RecordRule
from formation.recipes.parse_chamber import read_chamber_c
from formation.recipes.units import CurrentSpec, fmt, format_duration, is_number, parse_duration_s

_DCIR_KEYS = (
    "id",
    "kind",
    "rest",
    "method",
    "direction",
    "current",
    "duration",
    "sample_at",
    "low_current",
    "low_duration",
    "record",
    "chamber_c",
)
_AGE_KEYS = ("id", "kind", "duration", "ocv_at", "chamber_c", "record")
_METHODS: tuple[str, ...] = get_args(DcirMethod)
_DIRECTIONS: tuple[str, ...] = get_args(DcirDirection)

#: Pulse record rule when a dcir step gives none: every second, no voltage trigger.
PULSE_RECORD = RecordRule(every_s=1.0, every_mv=0.0)
#: Pulses are sampled in time; a coarser log would miss the ``sample_at`` instants.
MAX_PULSE_EVERY_S = 1.0
#: IEC 61960-3 defaults (docs/domain.md): 0.2C for 10 s, then 1C for 1 s.
IEC_LOW_CURRENT = CurrentSpec(c_rate=0.2)
IEC_LOW_DURATION_S = 10.0
IEC_CURRENT = CurrentSpec(c_rate=1.0)
IEC_DURATION_S = 1.0


def _choice(table: dict[str, Any], key: str, path: str, choices: tuple[str, ...], ctx: Context) -> str | None:
    """``table[key]`` when it is one of ``choices``; the first choice when absent; None when refused."""
    value = table.get(key, choices[0])
    if value not in choices:
        shown = repr(value) if isinstance(value, str) else type_name(value)
        ctx.error(join(path, key), f"{shown} is not one of: {', '.join(choices)}")
        return None
    return str(value)


def _times(table: dict[str, Any], key: str, path: str, ctx: Context) -> tuple[float, ...] | None:
    """Strictly increasing durations at ``table[key]``, each refused at ``key[i]``; None when absent or bad."""
    if key not in table:
        return None
    where = join(path, key)
    value = table[key]
    if not isinstance(value, list):
        ctx.error(where, f"expected an array of durations, got {type_name(value)}")
        return None
    if not value:
        ctx.error(where, "needs at least one time")
        return None
    before = len(ctx.errors)
    times: list[float] = []
    for index, item in enumerate(value):
        seconds = read_parsed(parse_duration_s, item, f"{where}[{index}]", ctx)
        if seconds is None:
            continue
        if times and seconds <= times[-1]:
            ctx.error(
                f"{where}[{index}]",
                f"{format_duration(seconds)} is not after {key}[{index - 1}] {format_duration(times[-1])} "
                "(times must be increasing)",
            )
            continue
        times.append(seconds)
    return tuple(times) if len(ctx.errors) == before else None


def _sample_at(raw: dict[str, Any], path: str, duration_s: float | None, ctx: Context) -> tuple[float, ...] | None:
    """A single pulse's sample times: given (each within the pulse) or, when absent, the pulse end alone."""
    if "sample_at" not in raw:
        return None if duration_s is None else (duration_s,)
    times = _times(raw, "sample_at", path, ctx)
    if times is not None and duration_s is not None and times[-1] > duration_s:
        ctx.error(
            f"{path}.sample_at[{len(times) - 1}]",
            f"{format_duration(times[-1])} is after the pulse end (duration {format_duration(duration_s)})",
        )
    return times


def _default_current(spec: CurrentSpec, key: str, path: str, ctx: Context) -> tuple[CurrentSpec, float | None]:
    """An IEC 61960 default current, still refused above ``limits.max_current_a`` (saying it was the default)."""
    current_a = resolve_a(spec, ctx)
    if current_a is not None and ctx.max_current_a is not None and current_a > ctx.max_current_a:
        ctx.error(
            join(path, key),
            f"the iec61960 default {spec} is {fmt(current_a)} A, above limits.max_current_a "
            f"{fmt(ctx.max_current_a)} A: give a lower {key}",
        )
        return spec, None
    return spec, current_a


def _pulse_record(raw: dict[str, Any], path: str, ctx: Context) -> RecordRule | None:
    where = join(path, "record")
    value = raw.get("record", {})
    if isinstance(value, dict) and is_number(value.get("every_s")) and value["every_s"] == 0:
        ctx.error(f"{where}.every_s", "must be > 0: DCIR is read at sample_at times, so the pulse logs in time")
        return None
    rule = record_rule(value, where, PULSE_RECORD, ctx)
    if rule is not None and rule.every_s > MAX_PULSE_EVERY_S:
        reason = f"{fmt(rule.every_s)} s is above {fmt(MAX_PULSE_EVERY_S)} s: the pulse would be logged too coarsely"
        ctx.error(f"{where}.every_s", reason)
        return None
    return rule


def dcir_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> DcirStep | None:
    """A ``dcir`` step: required ``rest``; a ``single`` pulse or the ``iec61960`` two-step pulse."""
    before = len(ctx.errors)
    read_table(raw, path, _DCIR_KEYS, ctx, required=("rest",))
    rest_s = read_duration(raw, "rest", path, ctx)
    method = _choice(raw, "method", path, _METHODS, ctx)
    direction = _choice(raw, "direction", path, _DIRECTIONS, ctx)
    current, current_a = read_current(raw, "current", path, ctx)
    duration_s = read_duration(raw, "duration", path, ctx)
    low_current: CurrentSpec | None = None
    low_duration_s: float | None = None
    sample_at_s: tuple[float, ...] | None = ()
    if method == "single":
        for key in ("low_current", "low_duration"):
            if key in raw:
                ctx.error(join(path, key), "only for method 'iec61960' (a single pulse has one current)")
        for key in ("current", "duration"):
            if key not in raw:
                ctx.error(join(path, key), "missing required key (a single pulse needs its current and duration)")
        sample_at_s = _sample_at(raw, path, duration_s, ctx)
    elif method == "iec61960":
        if "sample_at" in raw:
            ctx.error(f"{path}.sample_at", "not allowed with method 'iec61960' (R is taken at the end of each pulse)")
        if "current" not in raw:
            current, current_a = _default_current(IEC_CURRENT, "current", path, ctx)
        if "duration" not in raw:
            duration_s = IEC_DURATION_S
        low_current, low_a = read_current(raw, "low_current", path, ctx)
        if "low_current" not in raw:
            low_current, low_a = _default_current(IEC_LOW_CURRENT, "low_current", path, ctx)
        low_duration_s = read_duration(raw, "low_duration", path, ctx) if "low_duration" in raw else IEC_LOW_DURATION_S
        if low_a is not None and current_a is not None and low_a >= current_a:
            ctx.error(
                f"{path}.low_current",
                f"{low_current} ({fmt(low_a)} A) is not below current {current} ({fmt(current_a)} A): "
                "R = ΔU/ΔI needs the second pulse to be the higher current",
            )
    record = _pulse_record(raw, path, ctx)
    chamber_c = read_chamber_c(raw, path, ctx)
    if len(ctx.errors) > before:
        return None
    assert rest_s is not None and current is not None and duration_s is not None and sample_at_s is not None
    assert method is not None and direction is not None and record is not None
    return DcirStep(
        id=step_id,
        rest_s=rest_s,
        method=cast(DcirMethod, method),
        direction=cast(DcirDirection, direction),
        current=current,
        duration_s=duration_s,
        sample_at_s=sample_at_s,
        low_current=low_current,
        low_duration_s=low_duration_s,
        record=record,
        chamber_c=chamber_c,
    )


def age_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> AgeStep | None:
    """An ``age`` step: open circuit for ``duration``, OCV at ``ocv_at`` (>= 2 checkpoints, the last <= duration)."""
    before = len(ctx.errors)
    read_table(raw, path, _AGE_KEYS, ctx, required=("duration", "ocv_at"))
    duration_s = read_duration(raw, "duration", path, ctx)
    ocv_at_s = _times(raw, "ocv_at", path, ctx)
    if ocv_at_s is not None and len(ocv_at_s) < 2:
        ctx.error(f"{path}.ocv_at", "needs at least 2 checkpoints: the K-value is the OCV slope between them")
    elif ocv_at_s is not None and duration_s is not None and ocv_at_s[-1] > duration_s:
        ctx.error(
            f"{path}.ocv_at[{len(ocv_at_s) - 1}]",
            f"{format_duration(ocv_at_s[-1])} is after the step end (duration {format_duration(duration_s)})",
        )
    chamber_c = read_chamber_c(raw, path, ctx)
    record = record_rule(raw.get("record", {}), f"{path}.record", ctx.record, ctx)
    if len(ctx.errors) > before:
        return None
    assert duration_s is not None and ocv_at_s is not None and record is not None
    return AgeStep(id=step_id, duration_s=duration_s, ocv_at_s=ocv_at_s, chamber_c=chamber_c, record=record)
