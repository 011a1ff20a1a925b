"""aurora-unicycler protocols in and out, through the ``aurora-unicycler`` package itself (its pydantic model
validates every protocol; its exporters write Neware XML, Biologic .mps and PyBaMM experiments).

Import (:func:`import_protocol`): OCV → ``rest``; CC → ``charge`` / ``discharge`` by the sign of ``rate_C`` (which
wins over ``current_mA``, as in unicycler) with its time and voltage ends; CV → a hold (CC-CV at the recipe's
``limits.max_current_a`` clamped at the voltage, as a PyBaMM ``Hold``), on the side of its end current's sign, else
of the step before; ``Tag`` / ``Loop`` → the recipe's tag / loop marks (a loop to a step number gets a tag named
``step<n>``); safety → ``limits``; record time and voltage → ``record``. Refused, one line naming the field:
impedance spectroscopy, voltage scans, ``safety.max_capacity_mAh``, ``record.current_mA``, and a protocol without
a capacity or voltage limits unless given. ``safety.delay_s`` is dropped: the instrument trips at once (stricter).

Export (:func:`recipe_to_protocol`) is the inverse on that subset; a CC-CV step (not a hold) becomes a CC step to
its CV voltage then a CV step, each with the step's duration as its time end. Every other step kind is refused
with one line naming the step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from formation.errors import RecipeError
from formation.recipes.flow import LoopMark, TagMark
from formation.recipes.model import ChargeStep, DischargeStep, Recipe, RestStep
from formation.recipes.parse import parse_recipe
from formation.recipes.units import clean

ExportFormat = Literal["unicycler", "neware", "biologic", "pybamm"]
EXPORT_FORMATS: tuple[str, ...] = ("unicycler", "neware", "biologic", "pybamm")


def _fail(field: str, reason: str, source: str) -> RecipeError:
    return RecipeError(field, reason, source=source)


def _protocol_from_dict(data: object, source: str) -> Any:
    from aurora_unicycler import CyclingProtocol
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise _fail("", "a unicycler protocol is a JSON object (record, safety, method)", source)
    try:
        return CyclingProtocol.from_dict(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-union")))
        raise _fail(where, f"refused by aurora-unicycler: {first['msg']}", source) from None
    except ValueError as exc:
        raise _fail("", f"refused by aurora-unicycler: {exc}", source) from None


def _current_spec(rate_c: float | None, current_ma: float | None) -> tuple[dict[str, float], float]:
    """The recipe's current (canonical form) and its sign (+1 charge, -1 discharge); rate_C wins, as in unicycler."""
    if rate_c is not None and rate_c != 0:
        return {"c_rate": clean(abs(rate_c))}, 1.0 if rate_c > 0 else -1.0
    assert current_ma is not None  # unicycler requires one of them
    return {"a": clean(abs(current_ma) / 1000.0)}, 1.0 if current_ma > 0 else -1.0


def protocol_to_raw(
    protocol: Any,
    source: str,
    *,
    name: str | None = None,
    capacity_ah: float | None = None,
    max_voltage_v: float | None = None,
    min_voltage_v: float | None = None,
) -> dict[str, Any]:
    """The raw recipe table (as TOML would give it) of a validated unicycler protocol; RecipeError for what has
    no equivalent, naming the protocol field (``method[4]``)."""
    from aurora_unicycler import ConstantCurrent, ConstantVoltage, Loop, OpenCircuitVoltage, Tag

    sample, safety, record = protocol.sample, protocol.safety, protocol.record
    if capacity_ah is None:
        if sample.capacity_mAh is None:
            raise _fail(
                "sample.capacity_mAh", "missing: the recipe needs a nominal capacity (give --capacity-ah)", source
            )
        capacity_ah = clean(sample.capacity_mAh / 1000.0)
    limits: dict[str, Any] = {}
    for key, given, theirs, option in (
        ("max_voltage_v", max_voltage_v, safety.max_voltage_V, "--max-voltage"),
        ("min_voltage_v", min_voltage_v, safety.min_voltage_V, "--min-voltage"),
    ):
        value = given if given is not None else theirs
        if value is None:
            field = "safety." + ("max_voltage_V" if key.startswith("max") else "min_voltage_V")
            raise _fail(field, f"missing: the recipe needs a voltage limit (give {option})", source)
        limits[key] = clean(float(value))
    currents = [abs(c) for c in (safety.max_current_mA, safety.min_current_mA) if c is not None]
    if currents:
        limits["max_current_a"] = clean(max(currents) / 1000.0)
    if safety.max_capacity_mAh:
        raise _fail("safety.max_capacity_mAh", "no equivalent: the recipe has no capacity limit across steps", source)
    if record.current_mA is not None:
        raise _fail("record.current_mA", "no equivalent: the recipe logs on time and voltage changes only", source)
    hold_a = limits.get("max_current_a", clean(2.0 * capacity_ah))
    tag_before = {
        int(s.loop_to) - 1: f"step{int(s.loop_to)}"
        for s in protocol.method
        if isinstance(s, Loop) and isinstance(s.loop_to, int)
    }
    steps: list[dict[str, Any]] = []
    side = 1.0
    for i, step in enumerate(protocol.method):
        if i in tag_before:
            steps.append({"kind": "tag", "tag": tag_before[i]})
        step_id = step.id or f"m{i + 1}"
        match step:
            case OpenCircuitVoltage():
                steps.append({"id": step_id, "kind": "rest", "until": {"duration": step.until_time_s}})
            case ConstantCurrent():
                current, side = _current_spec(step.rate_C, step.current_mA)
                until: dict[str, Any] = {}
                if step.until_time_s:
                    until["duration"] = step.until_time_s
                if step.until_voltage_V:
                    until["voltage_v"] = step.until_voltage_V
                kind = "charge" if side > 0 else "discharge"
                steps.append({"id": step_id, "kind": kind, "current": current, "until": until})
            case ConstantVoltage():
                until = {}
                if step.until_rate_C:
                    until["current"] = {"c_rate": clean(abs(step.until_rate_C))}
                    side = 1.0 if step.until_rate_C > 0 else -1.0
                elif step.until_current_mA:
                    until["current"] = {"a": clean(abs(step.until_current_mA) / 1000.0)}
                    side = 1.0 if step.until_current_mA > 0 else -1.0
                if step.until_time_s:
                    until["duration"] = step.until_time_s
                steps.append({"id": step_id, "kind": "charge" if side > 0 else "discharge", "current": {"a": hold_a},
                              "cv_voltage_v": step.voltage_V, "until": until})  # fmt: skip
            case Tag():
                steps.append({"kind": "tag", "tag": step.tag})
            case Loop():
                tag = step.loop_to if isinstance(step.loop_to, str) else f"step{int(step.loop_to)}"
                steps.append({"kind": "loop", "loop_to": tag, "cycle_count": step.cycle_count})
            case _:
                raise _fail(f"method[{i}]", f"{step.step} has no equivalent in the recipe language", source)
    out: dict[str, Any] = {
        "name": name or (sample.name if sample.name and sample.name != "$NAME" else Path(source).stem),
        "version": "1",
        "nominal_capacity_ah": capacity_ah,
        "limits": limits,
        "record": {"every_s": record.time_s, "every_mv": clean(record.voltage_V * 1000.0) if record.voltage_V else 0},
        "steps": steps,
    }
    return out


def import_protocol(path: str | Path, **options: Any) -> Recipe:
    """Read a unicycler protocol JSON file into a validated recipe (options as for :func:`protocol_to_raw`)."""
    path = Path(path)
    source = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail("", f"cannot read the file: {exc}", source) from None
    except json.JSONDecodeError as exc:
        raise _fail("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source) from None
    protocol = _protocol_from_dict(data, source)
    return parse_recipe(protocol_to_raw(protocol, source, **options), source)


def _no_equivalent(index: int, what: str, source: str) -> RecipeError:
    return _fail(f"steps[{index}]", f"{what} has no unicycler equivalent", source)


def _signed(step: ChargeStep | DischargeStep) -> tuple[float | None, float | None]:
    sign = 1.0 if isinstance(step, ChargeStep) else -1.0
    if step.current.c_rate is not None:
        return sign * step.current.c_rate, None
    assert step.current.amps is not None
    return None, clean(sign * step.current.amps * 1000.0)


def recipe_to_protocol(recipe: Recipe) -> Any:
    """The unicycler protocol of ``recipe`` (validated by unicycler's model); RecipeError naming the first step
    that has no equivalent."""
    from aurora_unicycler import (
        ConstantCurrent,
        ConstantVoltage,
        CyclingProtocol,
        Loop,
        OpenCircuitVoltage,
        RecordParams,
        SafetyParams,
        SampleParams,
        Tag,
    )

    source = recipe.source
    method: list[Any] = []
    hold_a = recipe.limits.max_current_a
    for i, item in enumerate(recipe.layout or recipe.steps):
        if isinstance(item, TagMark):
            method.append(Tag(tag=item.tag))
            continue
        if isinstance(item, LoopMark):
            method.append(Loop(loop_to=item.loop_to, cycle_count=item.cycle_count))
            continue
        if getattr(item, "chamber_c", None) is not None:
            raise _no_equivalent(i, "a chamber temperature (chamber_c)", source)
        if getattr(item, "record", recipe.record) != recipe.record:
            raise _no_equivalent(i, "a record rule of its own", source)
        match item:
            case RestStep(until=until) if until.voltage_v is None and until.dvdt_mv_per_h is None:
                assert until.duration_s is not None
                method.append(OpenCircuitVoltage(id=item.id, until_time_s=until.duration_s))
            case ChargeStep() | DischargeStep() if item.until.charge_ah is None and item.until.charge_fraction is None:
                until = item.until
                sign = 1.0 if isinstance(item, ChargeStep) else -1.0
                if item.cv_voltage_v is None:
                    rate, ma = _signed(item)
                    cc = {"until_time_s": until.duration_s, "until_voltage_V": until.voltage_v}
                    method.append(ConstantCurrent(id=item.id, rate_C=rate, current_mA=ma, **cc))
                    continue
                is_hold = item.current.amps is not None and item.current.amps == hold_a and until.voltage_v is None
                cv_id = item.id
                if not is_hold:
                    rate, ma = _signed(item)
                    cc = {"until_time_s": until.duration_s, "until_voltage_V": item.cv_voltage_v}
                    method.append(ConstantCurrent(id=item.id, rate_C=rate, current_mA=ma, **cc))
                    cv_id = f"{item.id}.cv"
                taper = until.current
                method.append(
                    ConstantVoltage(
                        id=cv_id,
                        voltage_V=item.cv_voltage_v,
                        until_time_s=until.duration_s,
                        until_rate_C=sign * taper.c_rate if taper is not None and taper.c_rate is not None else None,
                        until_current_mA=clean(sign * taper.amps * 1000.0)
                        if taper is not None and taper.amps is not None
                        else None,
                    )
                )
            case _:
                raise _no_equivalent(i, f"a {item.kind} step like {item.id!r}", source)
    return CyclingProtocol(
        sample=SampleParams(name=recipe.name, capacity_mAh=clean(recipe.nominal_capacity_ah * 1000.0)),
        record=RecordParams(
            time_s=recipe.record.every_s, voltage_V=recipe.record.every_mv / 1000.0 if recipe.record.every_mv else None
        ),
        safety=SafetyParams(
            max_voltage_V=recipe.limits.max_voltage_v,
            min_voltage_V=recipe.limits.min_voltage_v,
            max_current_mA=clean(recipe.limits.max_current_a * 1000.0),
            min_current_mA=clean(-recipe.limits.max_current_a * 1000.0),
        ),
        method=method,
    )


def export_recipe(recipe: Recipe, to: str) -> str:
    """``recipe`` in a cycler's format through aurora-unicycler: unicycler JSON, Neware XML, Biologic .mps, or a
    PyBaMM experiment (one step per line)."""
    if to not in EXPORT_FORMATS:
        raise _fail("--to", f"unknown format {to!r} (expected one of: {', '.join(EXPORT_FORMATS)})", recipe.source)
    protocol = recipe_to_protocol(recipe)
    if recipe.record.every_s == 0:
        raise _fail("record.every_s", "0: a unicycler protocol always records in time", recipe.source)
    match to:
        case "unicycler":
            return str(protocol.to_json())
        case "neware":
            return str(protocol.to_neware_xml(sample_name=recipe.name))
        case "biologic":
            return str(protocol.to_biologic_mps(sample_name=recipe.name))
    return "\n".join(protocol.to_pybamm_experiment()) + "\n"
