"""Field readers shared by the step builders: typed values at a field path, errors collected, not raised.

Every reader records ``(field path, reason)`` in the :class:`Context` and returns None for a bad or absent value,
so one pass reports every problem of a recipe. Paths are 0-based: ``steps[3].until.voltage_v``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from formation.bounds import MAX_CAPACITY_AH, MIN_CAPACITY_AH, MIN_RECORD_S
from formation.recipes.model import RecordRule
from formation.recipes.units import CurrentSpec, clean, fmt, is_number, parse_current, parse_duration_s

RECORD_KEYS = ("every_s", "every_mv")


@dataclass
class Context:
    """What step validation needs from the recipe head, and where errors are collected."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    nominal_ah: float | None = None
    max_voltage_v: float | None = None
    min_voltage_v: float | None = None
    max_current_a: float | None = None
    max_cell_temperature_c: float | None = None
    record: RecordRule = field(default_factory=RecordRule)

    def error(self, path: str, reason: str) -> None:
        """Record that the value at ``path`` is refused for ``reason``."""
        self.errors.append((path, reason))


def join(path: str, key: str) -> str:
    """``path.key`` (just ``key`` at the top level)."""
    return f"{path}.{key}" if path else key


def type_name(value: object) -> str:
    """The TOML/JSON name of ``value``'s type, for messages: number, string, table, array, boolean."""
    if isinstance(value, bool):
        return "boolean"
    if is_number(value):
        return "number"
    names: dict[type, str] = {str: "string", dict: "table", list: "array"}
    return names.get(type(value), type(value).__name__)


def read_table(
    value: object, path: str, allowed: tuple[str, ...], ctx: Context, required: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """``value`` as a table with only ``allowed`` keys and every ``required`` one (errors recorded)."""
    if not isinstance(value, dict):
        ctx.error(path or "<recipe>", f"expected a table, got {type_name(value)}")
        return None
    for key in value:
        if key not in allowed:
            ctx.error(join(path, str(key)), f"unknown key (expected one of: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            ctx.error(join(path, key), "missing required key")
    return value


def read_number(table: dict[str, Any], key: str, path: str, ctx: Context, *, allow_zero: bool = False) -> float | None:
    """A finite number ``> 0`` (``>= 0`` with ``allow_zero``) at ``table[key]``, or None (absent or bad)."""
    if key not in table:
        return None
    value = table[key]
    where = join(path, key)
    if not is_number(value):
        ctx.error(where, f"expected a number, got {type_name(value)}")
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        ctx.error(where, "is too large (beyond the float range)")
        return None
    if number != number or number in (float("inf"), float("-inf")):
        ctx.error(where, "must be a finite number")
    elif number < 0 or (number == 0 and not allow_zero):
        ctx.error(where, f"{fmt(number)} must be {'zero or ' if allow_zero else ''}positive")
    else:
        return clean(number)
    return None


def read_capacity_ah(table: dict[str, Any], key: str, path: str, ctx: Context) -> float | None:
    """A nominal capacity within 0.01–2000 Ah (``formation.bounds``) at ``table[key]``, or None (absent or bad)."""
    capacity_ah = read_number(table, key, path, ctx)
    if capacity_ah is not None and not MIN_CAPACITY_AH <= capacity_ah <= MAX_CAPACITY_AH:
        reason = f"{fmt(capacity_ah)} Ah is outside {fmt(MIN_CAPACITY_AH)}–{fmt(MAX_CAPACITY_AH)} Ah"
        ctx.error(join(path, key), reason)
        return None
    return capacity_ah


def read_string(table: dict[str, Any], key: str, path: str, ctx: Context) -> str | None:
    """A non-empty string at ``table[key]``, or None (absent or bad)."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        ctx.error(join(path, key), f"expected a non-empty string, got {type_name(value)}")
        return None
    return value


def read_parsed(parser: Callable[[object], Any], value: object, where: str, ctx: Context) -> Any:
    """``parser(value)``, recording its ``ValueError`` reason at ``where``."""
    try:
        return parser(value)
    except ValueError as exc:
        ctx.error(where, str(exc))
        return None


def check_voltage(volts: float | None, where: str, ctx: Context) -> None:
    """Refuse a voltage outside ``limits``: a cut-off there would race the instrument FAIL test."""
    if volts is None:
        return
    if ctx.max_voltage_v is not None and volts > ctx.max_voltage_v:
        ctx.error(where, f"{fmt(volts)} V is above limits.max_voltage_v {fmt(ctx.max_voltage_v)} V")
    elif ctx.min_voltage_v is not None and volts < ctx.min_voltage_v:
        ctx.error(where, f"{fmt(volts)} V is below limits.min_voltage_v {fmt(ctx.min_voltage_v)} V")


def resolve_a(current: CurrentSpec, ctx: Context) -> float | None:
    """``current`` in amps at the recipe's nominal capacity (None when that is unknown)."""
    if current.amps is not None:
        return current.amps
    return None if ctx.nominal_ah is None else current.resolve_a(ctx.nominal_ah)


def read_duration(table: dict[str, Any], key: str, path: str, ctx: Context) -> float | None:
    """A duration in seconds at ``table[key]``, or None (absent or bad)."""
    if key not in table:
        return None
    seconds: float | None = read_parsed(parse_duration_s, table[key], join(path, key), ctx)
    return seconds


def read_current(table: dict[str, Any], key: str, path: str, ctx: Context) -> tuple[CurrentSpec | None, float | None]:
    """A current at ``table[key]`` and its amps at nominal (None when unknown or refused above the limit)."""
    if key not in table:
        return None, None
    current: CurrentSpec | None = read_parsed(parse_current, table[key], join(path, key), ctx)
    current_a = None if current is None else resolve_a(current, ctx)
    if current_a is not None and ctx.max_current_a is not None and current_a > ctx.max_current_a:
        ctx.error(
            join(path, key),
            f"{current} is {fmt(current_a)} A, above limits.max_current_a {fmt(ctx.max_current_a)} A",
        )
        return current, None  # refused: comparisons against it would only repeat the fault
    return current, current_a


def record_rule(value: object, path: str, base: RecordRule, ctx: Context) -> RecordRule | None:
    """A record rule; keys left out inherit from ``base`` (the recipe-wide rule for a step override)."""
    table = read_table(value, path, RECORD_KEYS, ctx)
    if table is None:
        return None
    before = len(ctx.errors)
    every_s = read_number(table, "every_s", path, ctx, allow_zero=True)
    every_mv = read_number(table, "every_mv", path, ctx, allow_zero=True)
    if every_s is not None and 0 < every_s < MIN_RECORD_S:
        reason = f"{fmt(every_s)} s is below {fmt(MIN_RECORD_S)} s (0 switches the time rule off)"
        ctx.error(join(path, "every_s"), reason)
    if len(ctx.errors) > before:
        return None
    rule = RecordRule(
        every_s=base.every_s if every_s is None else every_s,
        every_mv=base.every_mv if every_mv is None else every_mv,
    )
    if rule.every_s == 0 and rule.every_mv == 0:
        ctx.error(path, "every_s and every_mv are both 0: nothing would be logged between step start and end")
        return None
    return rule
