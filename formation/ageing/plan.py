"""Ageing plans: stages of a held chamber (set point, duration) and the checkpoints where a rack is read (pure).

A plan is TOML in the recipe language's spelling (durations ``"3d"``, ``"12h"``)::

    name = "ncm21700-hot-then-room"
    version = "1"
    [k_value]                     # K by regression over the checkpoints of one stage after its relaxation window
    stage = "room"
    after = "1d"
    reference_c = 25.0
    ocv_temp_coeff_mv_per_k = -0.1
    [[ageing]]
    id = "hot"
    setpoint_c = 45.0
    duration = "3d"
    checkpoints = ["0h", "1d", "2d", "3d"]   # from the stage's start, within the stage
    [[ageing]]
    id = "room"
    setpoint_c = 25.0
    duration = "7d"
    checkpoints = ["1d", "2d", "3d", "4d", "5d", "6d", "7d"]

A bad plan raises :class:`~formation.errors.PlanError` naming the field (``ageing[1].checkpoints[2]``) and the
reason. Whether a site's chamber can hold the set points is checked against the site (:func:`check_setpoints`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formation.bounds import is_file, printable, read_input_text, toml_document
from formation.canonical import canonical_json, content_sha256
from formation.errors import PlanError
from formation.recipes.units import parse_duration_s

#: Bounds of a plan (docs/inputs.md): stage durations, the whole plan, set points, checkpoints, the K window.
MIN_STAGE_S = 600.0
MAX_PLAN_S = 90 * 86400.0
MIN_SETPOINT_C, MAX_SETPOINT_C = -40.0, 100.0
MAX_STAGES = 20
MAX_CHECKPOINTS = 500
MAX_NAME = 200
MIN_K_POINTS, MAX_K_POINTS = 3, MAX_CHECKPOINTS
MAX_OCV_TEMP_COEFF_MV_PER_K = 5.0
#: Two checkpoints closer than this (seconds) are one reading taken twice.
MIN_CHECKPOINT_GAP_S = 60.0
_TOP_KEYS = frozenset({"name", "version", "description", "k_value", "ageing"})
_STAGE_KEYS = frozenset({"id", "setpoint_c", "duration", "checkpoints"})
_K_KEYS = frozenset({"stage", "after", "reference_c", "ocv_temp_coeff_mv_per_k", "min_points"})
_ZERO = re.compile(r"\s*[+]?0*(\.0*)?\s*[a-z]*\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: the chamber held at ``setpoint_c`` for ``duration_s``; checkpoints in seconds from its start."""

    id: str
    setpoint_c: float
    duration_s: float
    checkpoints_s: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One reading of the rack: its index in the plan, its stage, and when (seconds from the plan's start)."""

    k: int
    stage: int
    at_s: float


@dataclass(frozen=True, slots=True)
class KWindow:
    """How K is fit: over the checkpoints of ``stage`` at least ``after_s`` into it, corrected to ``reference_c``."""

    stage: str
    after_s: float
    reference_c: float = 25.0
    ocv_temp_coeff_mv_per_k: float = 0.0
    min_points: int = MIN_K_POINTS


@dataclass(frozen=True, slots=True)
class AgeingPlan:
    """A validated ageing plan with a content hash."""

    name: str
    version: str
    stages: tuple[Stage, ...]
    k_window: KWindow
    description: str = ""

    @property
    def duration_s(self) -> float:
        """The whole plan, seconds."""
        return sum(s.duration_s for s in self.stages)

    def stage_start_s(self, index: int) -> float:
        """Seconds from the plan's start to the start of stage ``index``."""
        return sum(s.duration_s for s in self.stages[:index])

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint in time order, numbered 0, 1, … across the stages."""
        out: list[Checkpoint] = []
        for i, stage in enumerate(self.stages):
            start_s = self.stage_start_s(i)
            out.extend(Checkpoint(0, i, start_s + at_s) for at_s in stage.checkpoints_s)
        return [Checkpoint(k, c.stage, c.at_s) for k, c in enumerate(out)]

    def stage_at(self, elapsed_s: float) -> int:
        """The stage in force ``elapsed_s`` after the start (the last one after the end)."""
        start_s = 0.0
        for i, stage in enumerate(self.stages):
            start_s += stage.duration_s
            if elapsed_s < start_s:
                return i
        return len(self.stages) - 1

    def k_checkpoints(self) -> list[Checkpoint]:
        """The checkpoints K is fit over: those of the K stage at least ``after_s`` into it."""
        index = self.stage_index(self.k_window.stage)
        start_s = self.stage_start_s(index)
        return [c for c in self.checkpoints() if c.stage == index and c.at_s - start_s >= self.k_window.after_s]

    def stage_index(self, stage_id: str) -> int:
        """Index of the stage called ``stage_id`` (ValueError when none)."""
        for i, stage in enumerate(self.stages):
            if stage.id == stage_id:
                return i
        raise ValueError(f"no stage {stage_id!r}")

    def to_canonical(self) -> dict[str, Any]:
        """Plain data that :func:`parse_plan` reads back into the same plan (durations in seconds)."""
        k = self.k_window
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "k_value": {
                "stage": k.stage,
                "after": k.after_s,
                "reference_c": k.reference_c,
                "ocv_temp_coeff_mv_per_k": k.ocv_temp_coeff_mv_per_k,
                "min_points": k.min_points,
            },
            "ageing": [
                {"id": s.id, "setpoint_c": s.setpoint_c, "duration": s.duration_s, "checkpoints": list(s.checkpoints_s)}
                for s in self.stages
            ],
        }
        if self.description:
            out["description"] = self.description
        return out

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, durations in seconds."""
        return canonical_json(self.to_canonical())

    @property
    def sha256(self) -> str:
        """Hex sha256 of the canonical JSON, stored with every ageing job."""
        return content_sha256(self.to_canonical())


def _fail(field: str, reason: str, source: str) -> PlanError:
    return PlanError(field, reason, source=source)


def _text(value: object, field: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(field, f"must be a non-empty string, got {value!r}", source)
    text = value.strip()
    if len(text) > MAX_NAME or printable(text) != text:
        raise _fail(field, f"must be at most {MAX_NAME} printable characters", source)
    return text


def _number(value: object, field: str, low: float, high: float, unit: str, source: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(field, f"must be a number, got {value!r}", source)
    try:
        number = float(value)
    except OverflowError:
        raise _fail(field, "is too large (beyond the float range)", source) from None
    if not math.isfinite(number):
        raise _fail(field, f"must be a finite number, got {value!r}", source)
    if not low <= number <= high:
        raise _fail(field, f"{number:g}{unit} is outside {low:g}–{high:g}{unit}", source)
    return number


def _duration(value: object, field: str, source: str, *, zero: bool = False) -> float:
    if zero and (value == 0 or (isinstance(value, str) and _ZERO.fullmatch(value) and any(c.isdigit() for c in value))):
        return 0.0
    try:
        return parse_duration_s(value)
    except ValueError as exc:
        raise _fail(field, str(exc), source) from None


def _keys(table: Mapping[str, Any], allowed: frozenset[str], where: str, source: str) -> None:
    for key in table:
        if key not in allowed:
            field = f"{where}.{key}" if where else str(key)
            raise _fail(field, f"unknown key (allowed: {', '.join(sorted(allowed))})", source)


def _parse_stage(index: int, table: object, source: str) -> Stage:
    where = f"ageing[{index}]"
    if not isinstance(table, Mapping):
        raise _fail(where, "expected an [[ageing]] table (id, setpoint_c, duration, checkpoints)", source)
    _keys(table, _STAGE_KEYS, where, source)
    for key in ("id", "setpoint_c", "duration"):
        if key not in table:
            raise _fail(f"{where}.{key}", "required", source)
    stage_id = _text(table["id"], f"{where}.id", source)
    setpoint_c = _number(table["setpoint_c"], f"{where}.setpoint_c", MIN_SETPOINT_C, MAX_SETPOINT_C, " °C", source)
    duration_s = _duration(table["duration"], f"{where}.duration", source)
    if not MIN_STAGE_S <= duration_s <= MAX_PLAN_S:
        raise _fail(f"{where}.duration", f"{duration_s:g} s is outside {MIN_STAGE_S:g}–{MAX_PLAN_S:g} s", source)
    raw = table.get("checkpoints", [])
    if not isinstance(raw, list):
        raise _fail(f"{where}.checkpoints", f'expected a list of durations such as ["0h", "1d"], got {raw!r}', source)
    if len(raw) > MAX_CHECKPOINTS:
        raise _fail(f"{where}.checkpoints", f"{len(raw)} checkpoints is above {MAX_CHECKPOINTS}", source)
    points: list[float] = []
    for j, value in enumerate(raw):
        field = f"{where}.checkpoints[{j}]"
        at_s = _duration(value, field, source, zero=True)
        if at_s > duration_s:
            raise _fail(field, f"{value!r} is outside the stage ({duration_s:g} s long)", source)
        if points and at_s <= points[-1]:
            raise _fail(field, f"{value!r} is not after the checkpoint before it", source)
        if points and at_s - points[-1] < MIN_CHECKPOINT_GAP_S:
            raise _fail(field, f"{value!r} is less than {MIN_CHECKPOINT_GAP_S:g} s after the one before it", source)
        points.append(at_s)
    return Stage(stage_id, setpoint_c, duration_s, tuple(points))


def _parse_k(data: object, stages: Sequence[Stage], source: str) -> KWindow:
    table: Mapping[str, Any] = {} if data is None else data if isinstance(data, Mapping) else {"": data}
    if "" in table:
        raise _fail(
            "k_value", "expected a [k_value] table (stage, after, reference_c, ocv_temp_coeff_mv_per_k)", source
        )
    _keys(table, _K_KEYS, "k_value", source)
    ids = [s.id for s in stages]
    stage = _text(table["stage"], "k_value.stage", source) if "stage" in table else ids[-1]
    if stage not in ids:
        raise _fail("k_value.stage", f"no stage {stage!r} in the plan (stages: {', '.join(ids)})", source)
    duration_s = stages[ids.index(stage)].duration_s
    after_s = _duration(table["after"], "k_value.after", source, zero=True) if "after" in table else 0.0
    if after_s >= duration_s:
        raise _fail("k_value.after", f"{after_s:g} s is not within stage {stage!r} ({duration_s:g} s long)", source)
    reference_c = (
        _number(table["reference_c"], "k_value.reference_c", MIN_SETPOINT_C, MAX_SETPOINT_C, " °C", source)
        if "reference_c" in table
        else 25.0
    )
    limit = MAX_OCV_TEMP_COEFF_MV_PER_K
    coeff = (
        _number(table["ocv_temp_coeff_mv_per_k"], "k_value.ocv_temp_coeff_mv_per_k", -limit, limit, " mV/K", source)
        if "ocv_temp_coeff_mv_per_k" in table
        else 0.0
    )
    min_points = MIN_K_POINTS
    if "min_points" in table:
        value = table["min_points"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail("k_value.min_points", f"must be an integer, got {value!r}", source)
        min_points = int(_number(value, "k_value.min_points", MIN_K_POINTS, MAX_K_POINTS, "", source))
    window = KWindow(stage, after_s, reference_c, coeff, min_points)
    in_window = [at for at in stages[ids.index(stage)].checkpoints_s if at >= after_s]
    if len(in_window) < min_points:
        raise _fail(
            "k_value",
            f"stage {stage!r} has {len(in_window)} checkpoint(s) at or after {after_s:g} s, K needs {min_points}",
            source,
        )
    return window


def parse_plan(data: object, source: str = "<plan>") -> AgeingPlan:
    """Validate a plan given as plain data (parsed TOML/JSON); PlanError on the first problem."""
    if not isinstance(data, Mapping):
        raise _fail("", "a plan is a table with name, version, [k_value] and [[ageing]] stages", source)
    _keys(data, _TOP_KEYS, "", source)
    name = _text(data.get("name"), "name", source)
    version = data.get("version", "1")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = f"{version:g}"
    version = _text(version, "version", source)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", f"must be a string, got {description!r}", source)
    raw = data.get("ageing")
    if not isinstance(raw, list) or not raw:
        raise _fail("ageing", "required: at least one [[ageing]] stage (id, setpoint_c, duration, checkpoints)", source)
    if len(raw) > MAX_STAGES:
        raise _fail("ageing", f"{len(raw)} stages is above {MAX_STAGES}", source)
    stages = tuple(_parse_stage(i, table, source) for i, table in enumerate(raw))
    seen: dict[str, int] = {}
    for i, stage in enumerate(stages):
        if stage.id in seen:
            raise _fail(f"ageing[{i}].id", f"duplicate stage id {stage.id!r} (also ageing[{seen[stage.id]}])", source)
        seen[stage.id] = i
    total_s = sum(s.duration_s for s in stages)
    if total_s > MAX_PLAN_S:
        raise _fail("ageing", f"the stages last {total_s:g} s, above {MAX_PLAN_S:g} s (90 days)", source)
    for i in range(1, len(stages)):
        previous = stages[i - 1]
        if previous.checkpoints_s and stages[i].checkpoints_s:
            gap_s = previous.duration_s - previous.checkpoints_s[-1] + stages[i].checkpoints_s[0]
            if gap_s < MIN_CHECKPOINT_GAP_S:
                reason = f"is less than {MIN_CHECKPOINT_GAP_S:g} s after the last checkpoint of ageing[{i - 1}]"
                raise _fail(f"ageing[{i}].checkpoints[0]", reason, source)
    if not any(s.checkpoints_s for s in stages):
        raise _fail("ageing", "the plan has no checkpoint: give each stage its checkpoints", source)
    window = _parse_k(data.get("k_value"), stages, source)
    return AgeingPlan(name, version, stages, window, description.strip())


def loads_plan(text: str, source: str = "<plan>") -> AgeingPlan:
    """Parse a plan from TOML text."""
    return parse_plan(toml_document(text, lambda field, reason: _fail(field, reason, source)), source)


def load_plan(path: str | Path) -> AgeingPlan:
    """Read and validate a plan file (TOML)."""
    p = Path(path)
    text = read_input_text(p, "plan file", lambda field, reason: _fail(field, reason, str(p)))
    return loads_plan(text, str(p))


_LIBRARY = Path(__file__).with_name("library")


def builtin_plans() -> list[str]:
    """Names of the built-in plans."""
    return sorted(p.stem for p in _LIBRARY.glob("*.toml"))


def resolve_plan(name_or_path: str | Path) -> AgeingPlan:
    """A plan by path, else the built-in plan of that name; PlanError otherwise."""
    if is_file(name_or_path):
        return load_plan(name_or_path)
    if str(name_or_path) in builtin_plans():
        return load_plan(_LIBRARY / f"{name_or_path}.toml")
    known = ", ".join(builtin_plans()) or "none"
    raise _fail("--plan", f"no file {printable(str(name_or_path))!r} and no built-in plan of that name ({known})", "")


def check_setpoints(plan: AgeingPlan, chamber: str | None, low_c: float | None, high_c: float | None) -> None:
    """Refuse a plan whose stage set points the rack's chamber cannot hold (or any set point without a chamber)."""
    for i, stage in enumerate(plan.stages):
        field = f"ageing[{i}].setpoint_c"
        if chamber is None or low_c is None or high_c is None:
            raise _fail(field, f"{stage.setpoint_c:g} °C needs a chamber, and the rack stands in none", plan.name)
        if not low_c <= stage.setpoint_c <= high_c:
            reason = f"{stage.setpoint_c:g} °C is outside {low_c:g}–{high_c:g} °C of chamber {chamber}"
            raise _fail(field, reason, plan.name)
