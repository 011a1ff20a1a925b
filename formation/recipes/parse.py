"""Validation of raw recipe data (a dict from TOML or JSON) into a :class:`Recipe`, collecting every error.

A bad recipe is refused before anything starts: :func:`parse_recipe` raises one ``RecipeError`` for the
first problem, with the full list of ``(field, reason)`` pairs in its ``errors`` attribute so the CLI can
print all of them. Field paths are 0-based: ``steps[3].until.voltage_v``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn, cast

from formation.errors import RecipeError
from formation.recipes.fields import (
    Context,
    check_voltage,
    join,
    read_capacity_ah,
    read_current,
    read_number,
    read_parsed,
    read_string,
    read_table,
    record_rule,
    resolve_a,
    type_name,
)
from formation.recipes.flow import FlowMark, LoopMark, TagMark, check_blocks, read_mark, unroll
from formation.recipes.model import (
    DEFAULT_MAX_C_RATE,
    DEFAULT_MAX_CELL_TEMPERATURE_C,
    NO_CURRENT_KINDS,
    ChargeStep,
    DischargeStep,
    Limits,
    Recipe,
    RecordRule,
    RestStep,
    Step,
    Until,
)
from formation.recipes.parse_chamber import CHAMBER_TEXT_REASON, chamber_step, read_chamber_c
from formation.recipes.parse_host import check_dvdt_rest, hold_step, precheck_step, read_dvdt, wait_step
from formation.recipes.parse_measure import age_step, dcir_step
from formation.recipes.pybamm import parse_experiment_step
from formation.recipes.units import clean, fmt, parse_charge, parse_current, parse_duration_s, parse_percent

#: No lithium-ion cell is charged above this; a larger limit is a typo (42 for 4.2), not a recipe.
MAX_CELL_VOLTAGE_V = 5.0

_TOP_KEYS = (
    "name",
    "version",
    "chemistry",
    "description",
    "nominal_capacity_ah",
    "limits",
    "record",
    "resume",
    "steps",
)
#: What a re-attached host does with a cell its instrument's watchdog stopped while no host was there.
AFTER_WATCHDOG = ("fault", "resume")
_LIMIT_KEYS = ("max_voltage_v", "min_voltage_v", "max_cell_temperature_c", "max_current_a")
_CURRENT_STEP_KEYS = ("id", "kind", "current", "cv_voltage_v", "until", "record", "chamber_c")
_CURRENT_STEP_ENDS = ("duration", "voltage_v", "current", "charge", "soc")
_REST_KEYS = ("id", "kind", "until", "record", "chamber_c")
_REST_ENDS = ("duration", "voltage_v", "dvdt_mv_per_h", "dvdt_window")
#: Every end key of the language, so a rest-only end on a charge says so instead of "unknown key".
_ALL_ENDS = (*_CURRENT_STEP_ENDS, "dvdt_mv_per_h", "dvdt_window")
_TEXT_STEP_KEYS = ("text", "id", "record", "chamber_c")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: Step kinds planned but not built yet (docs/architecture.md); refused with a clear reason until then. None now:
#: ``chamber`` was the last (``formation.recipes.parse_chamber``).
UNSUPPORTED_KINDS: tuple[str, ...] = ()


# -- recipe head -------------------------------------------------------------------------------------------


def _limits(value: object, ctx: Context) -> Limits | None:
    table = read_table(value, "limits", _LIMIT_KEYS, ctx, required=("max_voltage_v", "min_voltage_v"))
    if table is None:
        return None
    before = len(ctx.errors)
    max_v = read_number(table, "max_voltage_v", "limits", ctx)
    min_v = read_number(table, "min_voltage_v", "limits", ctx)
    if max_v is not None and max_v > MAX_CELL_VOLTAGE_V:
        ctx.error("limits.max_voltage_v", f"{fmt(max_v)} V is above {fmt(MAX_CELL_VOLTAGE_V)} V (no Li-ion cell)")
        max_v = None
    if max_v is not None and min_v is not None and min_v >= max_v:
        ctx.error("limits.min_voltage_v", f"{fmt(min_v)} V is not below limits.max_voltage_v {fmt(max_v)} V")
        min_v = None
    temp_c = read_number(table, "max_cell_temperature_c", "limits", ctx)
    max_a = read_number(table, "max_current_a", "limits", ctx)
    if max_a is None and "max_current_a" not in table and ctx.nominal_ah is not None:
        max_a = clean(DEFAULT_MAX_C_RATE * ctx.nominal_ah)
    ctx.max_voltage_v, ctx.min_voltage_v, ctx.max_current_a = max_v, min_v, max_a
    ctx.max_cell_temperature_c = DEFAULT_MAX_CELL_TEMPERATURE_C if temp_c is None else temp_c
    if len(ctx.errors) > before or max_v is None or min_v is None or max_a is None:
        return None
    return Limits(
        max_voltage_v=max_v,
        min_voltage_v=min_v,
        max_cell_temperature_c=DEFAULT_MAX_CELL_TEMPERATURE_C if temp_c is None else temp_c,
        max_current_a=max_a,
    )


# -- steps -------------------------------------------------------------------------------------------------


def _until(value: object, path: str, kind: str, ctx: Context) -> Until | None:
    allowed = _REST_ENDS if kind == "rest" else _CURRENT_STEP_ENDS
    if not isinstance(value, dict):
        ctx.error(path, f"expected a table, got {type_name(value)}")
        return None
    before = len(ctx.errors)
    for key in value:
        if key in _ALL_ENDS and key not in allowed:
            ctx.error(join(path, key), f"not an end of a {kind} step (allowed: {', '.join(allowed)})")
        elif key not in allowed:
            ctx.error(join(path, key), f"unknown key (expected one of: {', '.join(allowed)})")
    duration_s = (
        read_parsed(parse_duration_s, value["duration"], f"{path}.duration", ctx) if "duration" in value else None
    )
    voltage_v = read_number(value, "voltage_v", path, ctx)
    check_voltage(voltage_v, f"{path}.voltage_v", ctx)
    current = read_parsed(parse_current, value["current"], f"{path}.current", ctx) if "current" in value else None
    charge_ah, charge_fraction = None, None
    if "charge" in value and "soc" in value:
        ctx.error(f"{path}.soc", "give charge or soc, not both")
    elif "charge" in value:
        charge_ah, charge_fraction = read_parsed(parse_charge, value["charge"], f"{path}.charge", ctx) or (
            None,
            None,
        )
    elif "soc" in value:
        charge_fraction = read_parsed(_soc, value["soc"], f"{path}.soc", ctx)
    dvdt, dvdt_window_s = read_dvdt(value, path, ctx) if kind == "rest" else (None, None)
    if len(ctx.errors) > before:
        return None
    return Until(duration_s, voltage_v, current, charge_ah, charge_fraction, dvdt, dvdt_window_s)


def _soc(value: object) -> float:
    fraction = parse_percent(value)
    if fraction is None:
        raise ValueError(f"expected a charge throughput share of nominal such as '30%', got {value!r}")
    return fraction


def _current_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> Step | None:
    kind = raw["kind"]
    before = len(ctx.errors)
    read_table(raw, path, _CURRENT_STEP_KEYS, ctx, required=("current",))
    current, current_a = read_current(raw, "current", path, ctx)
    cv_v = read_number(raw, "cv_voltage_v", path, ctx)
    check_voltage(cv_v, f"{path}.cv_voltage_v", ctx)
    if "until" not in raw:
        ctx.error(f"{path}.until", f"missing: a {kind} step needs an end (duration, voltage_v, charge or current)")
        return None
    until = _until(raw["until"], f"{path}.until", kind, ctx)
    if until is not None:
        _check_ends(until, kind, current_a, cv_v, f"{path}.until", ctx)
    record = record_rule(raw.get("record", {}), f"{path}.record", ctx.record, ctx)
    chamber_c = read_chamber_c(raw, path, ctx)
    if len(ctx.errors) > before or current is None or until is None or record is None:
        return None
    cls = ChargeStep if kind == "charge" else DischargeStep
    return cls(id=step_id, current=current, cv_voltage_v=cv_v, until=until, record=record, chamber_c=chamber_c)


def _check_ends(until: Until, kind: str, current_a: float | None, cv_v: float | None, path: str, ctx: Context) -> None:
    """Refuse a charge/discharge whose ends cannot be trusted to end it."""
    if until.is_empty():
        ctx.error(path, f"a {kind} step needs an end: duration, voltage_v, charge or (with cv_voltage_v) current")
        return
    if until.current is not None and cv_v is None:
        ctx.error(f"{path}.current", "a taper-current end needs cv_voltage_v (a CC step holds its current)")
    if cv_v is not None and until.current is None and until.duration_s is None:
        ctx.error(path, "a CC-CV step needs a taper current or a duration end (the CV hold may never end otherwise)")
    if cv_v is not None and until.voltage_v is not None:
        never = until.voltage_v >= cv_v if kind == "charge" else until.voltage_v <= cv_v
        if never:
            side = "at or above" if kind == "charge" else "at or below"
            reason = f"{fmt(until.voltage_v)} V is {side} cv_voltage_v {fmt(cv_v)} V"
            ctx.error(f"{path}.voltage_v", f"{reason}: the CV hold never reaches it")
    if until.current is not None and current_a is not None:
        taper_a = resolve_a(until.current, ctx)
        if taper_a is not None and taper_a >= current_a:
            ctx.error(
                f"{path}.current",
                f"taper {until.current} ({fmt(taper_a)} A) is not below the step current {fmt(current_a)} A",
            )


def _rest_step(raw: dict[str, Any], path: str, step_id: str, ctx: Context) -> Step | None:
    before = len(ctx.errors)
    read_table(raw, path, _REST_KEYS, ctx)
    until = _until(raw.get("until", {}), f"{path}.until", "rest", ctx)
    if until is not None and until.duration_s is None:
        ctx.error(f"{path}.until.duration", "a rest step needs a duration end")
    record = record_rule(raw.get("record", {}), f"{path}.record", ctx.record, ctx)
    if until is not None and record is not None:
        check_dvdt_rest(until.duration_s, until.dvdt_window_s, record, path, ctx)
    chamber_c = read_chamber_c(raw, path, ctx)
    if len(ctx.errors) > before or until is None or record is None:
        return None
    return RestStep(id=step_id, until=until, record=record, chamber_c=chamber_c)


#: Step kind -> builder ``(raw table, path, id, context) -> step or None``. A new kind registers here.
STEP_BUILDERS: dict[str, Callable[[dict[str, Any], str, str, Context], Step | None]] = {
    "charge": _current_step,
    "discharge": _current_step,
    "rest": _rest_step,
    "dcir": dcir_step,
    "age": age_step,
    "chamber": chamber_step,
    "wait": wait_step,
    "hold": hold_step,
    "precheck": precheck_step,
}
#: Marks between steps (``formation.recipes.flow``): a repeat block's start and end.
MARK_KINDS = ("tag", "loop")


def _expand_text(raw: dict[str, Any], path: str, previous_kind: str | None, ctx: Context) -> dict[str, Any] | None:
    """The raw table of a PyBaMM ``text`` step (carrying its ``id``, ``record`` and ``chamber_c``), or None."""
    for key in raw:
        if key not in _TEXT_STEP_KEYS:
            ctx.error(join(path, str(key)), "not allowed beside text (a text step takes only id, record and chamber_c)")
    text = raw["text"]
    if not isinstance(text, str):
        ctx.error(f"{path}.text", f"expected a string, got {type_name(text)}")
        return None
    try:
        expanded = parse_experiment_step(text, previous_kind=previous_kind, hold_current_a=ctx.max_current_a)
    except ValueError as exc:
        ctx.error(f"{path}.text", f"cannot read {text!r}: {exc}")
        return None
    expanded.update({key: raw[key] for key in _TEXT_STEP_KEYS[1:] if key in raw})
    return expanded


def _step(raw: object, index: int, previous_kind: str | None, ctx: Context) -> tuple[str | None, Step | None]:
    """The id (given or ``step{n}``) and the step at ``steps[index]``; the step is None when it is invalid."""
    path = f"steps[{index}]"
    if not isinstance(raw, dict):
        ctx.error(path, f"expected a table, got {type_name(raw)}")
        return None, None
    step_id = read_string(raw, "id", path, ctx) if "id" in raw else f"step{index + 1}"
    if step_id is not None and not _ID.fullmatch(step_id):
        ctx.error(f"{path}.id", f"{step_id!r} is not a valid id (letters, digits, '_', '.', '-')")
        step_id = None
    if "text" in raw and raw.get("kind") == "chamber":
        ctx.error(f"{path}.text", CHAMBER_TEXT_REASON)
        return step_id, None
    if "text" in raw:
        expanded = _expand_text(raw, path, previous_kind, ctx)
        if expanded is None:
            return step_id, None
        raw = expanded
    kind = raw.get("kind")
    kinds = ", ".join((*STEP_BUILDERS, *MARK_KINDS))
    if kind is None:
        ctx.error(f"{path}.kind", f"missing required key ({kinds}; or a PyBaMM text)")
    elif not isinstance(kind, str):
        ctx.error(f"{path}.kind", f"expected a string, got {type_name(kind)}")
    elif kind in UNSUPPORTED_KINDS:
        ctx.error(f"{path}.kind", f"step kind {kind!r} is not supported yet (supported: {', '.join(STEP_BUILDERS)})")
    elif kind not in STEP_BUILDERS:
        ctx.error(f"{path}.kind", f"unknown step kind {kind!r} (expected one of: {kinds})")
    elif step_id is not None:
        return step_id, STEP_BUILDERS[kind](raw, path, step_id, ctx)
    return step_id, None


def _steps(value: object, ctx: Context) -> tuple[Step | FlowMark, ...]:
    """The steps and repeat marks as written (``Recipe.layout``)."""
    if not isinstance(value, list):
        ctx.error("steps", f"expected an array of step tables, got {type_name(value)}")
        return ()
    if not value:
        ctx.error("steps", "a recipe needs at least one step")
    steps: list[Step | FlowMark] = []
    placed: list[tuple[str, object]] = []
    first_index: dict[str, int] = {}
    previous_kind: str | None = None
    current_at: int | None = None  # the first step that moves current
    for index, raw in enumerate(value):
        if isinstance(raw, dict) and raw.get("kind") in MARK_KINDS and "text" not in raw:
            mark = read_mark(raw, f"steps[{index}]", ctx.errors)
            placed.append((f"steps[{index}]", mark))
            if mark is not None:
                steps.append(mark)
            continue
        step_id, step = _step(raw, index, previous_kind, ctx)
        placed.append((f"steps[{index}]", step))
        if step is not None and step.kind not in NO_CURRENT_KINDS and current_at is None:
            current_at = index
        if step is not None and step.kind == "precheck" and current_at is not None:
            ctx.error(f"steps[{index}].kind", f"a precheck comes before any current (steps[{current_at}] moves some)")
        if step_id is not None:
            if step_id in first_index:
                ctx.error(
                    f"steps[{index}].id",
                    f"duplicate id {step_id!r} (first used by steps[{first_index[step_id]}])",
                )
            first_index.setdefault(step_id, index)
        if step is not None:
            steps.append(step)
            if step.kind in ("charge", "discharge"):
                previous_kind = step.kind
    check_blocks(placed, ctx.errors)
    if not any(not isinstance(item, TagMark | LoopMark) for item in steps) and value and not ctx.errors:
        ctx.error("steps", "a recipe needs at least one step besides its tag and loop marks")
    return tuple(steps)


def parse_recipe(data: object, source: str = "<recipe>", *, source_text: str | None = None) -> Recipe:
    """Validate raw recipe data (as loaded from TOML or JSON) into a :class:`Recipe`.

    Raises ``RecipeError`` for the first problem, with every ``(field, reason)`` in its ``errors`` attribute.
    ``source_text`` is kept as :attr:`Recipe.source_text` (the canonical JSON when not given).
    """
    ctx = Context()
    table = read_table(data, "", _TOP_KEYS, ctx, required=("name", "nominal_capacity_ah", "steps"))
    if table is None:
        _raise(ctx, source)
    name = read_string(table, "name", "", ctx)
    version = read_string(table, "version", "", ctx) if "version" in table else "1"
    chemistry = read_string(table, "chemistry", "", ctx)
    description = table.get("description", "")
    if not isinstance(description, str):
        ctx.error("description", f"expected a string, got {type_name(description)}")
    ctx.nominal_ah = read_capacity_ah(table, "nominal_capacity_ah", "", ctx)
    limits = _limits(table.get("limits", {}), ctx)
    record = record_rule(table.get("record", {}), "record", RecordRule(), ctx)
    ctx.record = record or RecordRule()
    after_watchdog = _after_watchdog(table.get("resume", {}), ctx)
    layout = _steps(table["steps"], ctx) if "steps" in table else ()
    if ctx.errors:
        _raise(ctx, source)
    unrolled, cycles = unroll(layout)
    steps = cast(tuple[Step, ...], unrolled)  # unroll drops the marks
    has_marks = any(isinstance(item, TagMark | LoopMark) for item in layout)
    assert name is not None and version is not None and ctx.nominal_ah is not None
    assert limits is not None and record is not None and isinstance(description, str)
    recipe = Recipe(
        name=name,
        version=version,
        chemistry=chemistry,
        nominal_capacity_ah=ctx.nominal_ah,
        limits=limits,
        record=record,
        steps=steps,
        description=description,
        source=source,
        cycles=cycles if has_marks else (),
        layout=layout if has_marks else (),
        after_watchdog=after_watchdog,
    )
    return replace(recipe, source_text=recipe.canonical_json() if source_text is None else source_text)


def _after_watchdog(value: object, ctx: Context) -> str:
    """``[resume] after_watchdog``: ``fault`` (the default) or ``resume`` (the step goes on with what is left)."""
    table = read_table(value, "resume", ("after_watchdog",), ctx)
    if table is None:
        return AFTER_WATCHDOG[0]
    choice = table.get("after_watchdog", AFTER_WATCHDOG[0])
    if not isinstance(choice, str) or choice not in AFTER_WATCHDOG:
        shown = repr(choice) if isinstance(choice, str) else type_name(choice)
        ctx.error("resume.after_watchdog", f"{shown} is not one of: {', '.join(AFTER_WATCHDOG)}")
        return AFTER_WATCHDOG[0]
    return choice


def _raise(ctx: Context, source: str) -> NoReturn:
    field_path, reason = ctx.errors[0]
    error = RecipeError(field_path, reason, source=source)
    error.errors = list(ctx.errors)
    raise error
