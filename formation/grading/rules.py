"""Grading rules: which step gives each metric, and the ordered grades with their bounds (TOML, validated).

Pure: nothing here touches the store. A bad rules file raises :class:`~formation.errors.RulesError` naming the
field (``grades[1].dcir_mohm.max_sigma``) and the reason; the CLI turns it into exit code 2.

Order checks between grades (the first grade whose every bound holds wins, so grades run best first):

- *unreachable*: a later grade whose bounds are, kind by kind, at least as tight as an earlier grade's on every
  metric the earlier grade bounds. The earlier grade then accepts every cell the later one would.
- *out of order*: on a metric where both grades give absolute bounds (``min``/``max``), the later grade's band
  must contain the earlier one's: each later grade relaxes. A later ``min`` above, or ``max`` below, the
  earlier grade's (or one the earlier grade does not have) is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from formation.bounds import is_file, read_input_text, toml_document
from formation.canonical import canonical_json, content_sha256
from formation.errors import RulesError
from formation.recipes.units import parse_duration_s

#: The metrics a rules file can grade on, in report order.
METRICS: tuple[str, ...] = ("capacity_ah", "dcir_mohm", "k_mv_per_day", "ocv_v", "acir_mohm")

#: The grade of every cell that matches no grade, lacks a metric or whose run did not finish well.
NG = "NG"

#: Keys of a bound table: absolute, lot-median deviation, and robust-sigma bounds.
BOUND_KEYS: tuple[str, ...] = (
    "min",
    "max",
    "max_dev",
    "max_dev_pct",
    "max_sigma",
    "max_sigma_above",
    "max_sigma_below",
)

_SOURCE_KEYS: dict[str, frozenset[str]] = {
    "capacity_ah": frozenset({"step", "cycle"}),
    "dcir_mohm": frozenset({"step", "at", "cycle"}),
    "k_mv_per_day": frozenset({"step", "cycle", "from"}),
    "ocv_v": frozenset({"step", "cycle", "from"}),
    "acir_mohm": frozenset({"from"}),
}
#: Where a metric comes from: a cabinet run's step result (the default), or the cell's ageing on a rack (K by
#: regression, the last OCV and ACIR of the latest ageing job that has a valid value: ``from = "ageing"``).
FROM_CABINET, FROM_AGEING = "cabinet", "ageing"
#: Which of a step's results a metric reads when the step runs in several cycles of a repeat block: the last
#: (the default, and the only one a step outside any block has), the first, or the one of a given cycle number.
CYCLE_LAST, CYCLE_FIRST = "last", "first"
#: Largest cycle number a rules file may name (cycle numbers run on across the blocks of a recipe).
MAX_CYCLE = 1_000_000
_TOP_KEYS = frozenset({"name", "version", "description", "metrics", "grades"})


@dataclass(frozen=True, slots=True)
class MetricSource:
    """Where a metric comes from: the recipe step id, for DCIR the pulse-time key (``"10"`` or ``"iec"``), and
    which cycle's result of that step (``"last"``, ``"first"`` or a cycle number ≥ 1)."""

    metric: str
    step: str
    at: str | None = None
    cycle: str | int = CYCLE_LAST
    origin: str = FROM_CABINET

    def to_canonical(self) -> dict[str, str | int]:
        """The canonical JSON form (``cycle`` and ``from`` only when not the default: older rules keep their hash)."""
        if self.origin == FROM_AGEING:
            return {"from": FROM_AGEING}
        out: dict[str, str | int] = {"step": self.step}
        if self.at is not None:
            out["at"] = self.at
        if self.cycle != CYCLE_LAST:
            out["cycle"] = self.cycle
        return out


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bounds of one grade on one metric; every bound given must hold."""

    min: float | None = None
    max: float | None = None
    max_dev: float | None = None
    max_dev_pct: float | None = None
    max_sigma: float | None = None
    max_sigma_above: float | None = None
    max_sigma_below: float | None = None

    def to_canonical(self) -> dict[str, float]:
        """The bounds that are set, by key."""
        return {k: v for k in BOUND_KEYS if (v := getattr(self, k)) is not None}

    @property
    def has_absolute(self) -> bool:
        """True when ``min`` or ``max`` is given."""
        return self.min is not None or self.max is not None

    @property
    def has_relative(self) -> bool:
        """True when any lot-relative bound is given."""
        return any(getattr(self, k) is not None for k in BOUND_KEYS[2:])

    def constraints(self) -> dict[str, float]:
        """Each constraint kind with a value where smaller means tighter (``min`` is negated)."""
        out: dict[str, float] = {}
        if self.min is not None:
            out["min"] = -self.min
        if self.max is not None:
            out["max"] = self.max
        if self.max_dev is not None:
            out["dev"] = self.max_dev
        if self.max_dev_pct is not None:
            out["dev_pct"] = self.max_dev_pct
        upper = [v for v in (self.max_sigma, self.max_sigma_above) if v is not None]
        lower = [v for v in (self.max_sigma, self.max_sigma_below) if v is not None]
        if upper:
            out["sigma_above"] = min(upper)
        if lower:
            out["sigma_below"] = min(lower)
        return out


@dataclass(frozen=True, slots=True)
class GradeRule:
    """One grade: its name and its bounds per metric."""

    name: str
    bounds: Mapping[str, Bounds]

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        return {"name": self.name, **{m: b.to_canonical() for m, b in self.bounds.items()}}


@dataclass(frozen=True, slots=True)
class Rules:
    """A validated rules file: metric sources and grades in order, with a content hash."""

    name: str
    version: str
    metrics: Mapping[str, MetricSource]
    grades: tuple[GradeRule, ...]
    description: str = ""
    source: str = field(default="<rules>", compare=False)

    def to_canonical(self) -> dict[str, Any]:
        """The canonical form as plain data (``parse_rules`` accepts it back and gives the same hash)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "metrics": {m: s.to_canonical() for m, s in self.metrics.items()},
            "grades": [g.to_canonical() for g in self.grades],
        }
        if self.description:
            out["description"] = self.description
        return out

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, bounds as floats, DCIR pulse time as its details key."""
        return canonical_json(self.to_canonical())

    @property
    def sha256(self) -> str:
        """Hex sha256 of :meth:`canonical_json`, stored with every grade."""
        return content_sha256(self.to_canonical())

    @property
    def grade_names(self) -> tuple[str, ...]:
        """Grade names in order, then NG."""
        return (*(g.name for g in self.grades), NG)

    @property
    def used_metrics(self) -> tuple[str, ...]:
        """The metrics some grade bounds, in METRICS order."""
        return tuple(m for m in METRICS if any(m in g.bounds for g in self.grades))


def _fail(field_path: str, reason: str, source: str) -> RulesError:
    return RulesError(field_path, reason, source=source)


def _number(value: object, field_path: str, source: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _fail(field_path, f"must be a number, got {value!r}", source)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        raise _fail(field_path, "is too large (beyond the float range)", source) from None
    if not finite:
        raise _fail(field_path, f"must be a finite number, got {value!r}", source)
    return float(value)


def _text(data: Mapping[str, Any], key: str, source: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        reason = "required: a non-empty string" if value is None else f"must be a non-empty string, got {value!r}"
        raise _fail(key, reason, source)
    return value.strip()


def _parse_pulse_key(value: object, field_path: str, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() == "iec":
        return "iec"
    try:
        seconds = parse_duration_s(value)
    except ValueError as exc:
        raise _fail(field_path, f"{exc} (or 'iec' for an IEC 61960 two-step pulse)", source) from None
    return f"{seconds:g}"  # the key format of StepResult.details["dcir_mohm"]


def _parse_cycle(value: object, field_path: str, source: str) -> str | int:
    if isinstance(value, str) and value.strip().lower() in (CYCLE_LAST, CYCLE_FIRST):
        return value.strip().lower()
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_CYCLE:
            raise _fail(field_path, f"cycle {value} is outside 1 … {MAX_CYCLE} (cycles are numbered from 1)", source)
        return value
    raise _fail(field_path, f"expected 'last', 'first' or a cycle number (1, 2, …), got {value!r}", source)


def _parse_metrics(data: object, source: str) -> dict[str, MetricSource]:
    if not isinstance(data, Mapping) or not data:
        raise _fail("metrics", "required: a [metrics.<name>] table per metric, e.g. [metrics.capacity_ah]", source)
    out: dict[str, MetricSource] = {}
    for metric, table in data.items():
        where = f"metrics.{metric}"
        if metric not in _SOURCE_KEYS:
            raise _fail(where, f"unknown metric (known: {', '.join(METRICS)})", source)
        if not isinstance(table, Mapping):
            raise _fail(where, 'expected a table such as { step = "capacity" }', source)
        for key in table:
            if key not in _SOURCE_KEYS[metric]:
                allowed = ", ".join(sorted(_SOURCE_KEYS[metric]))
                raise _fail(f"{where}.{key}", f"unknown key (allowed: {allowed})", source)
        origin = table.get("from", FROM_CABINET)
        if origin not in (FROM_CABINET, FROM_AGEING):
            raise _fail(f"{where}.from", f"expected 'cabinet' or 'ageing', got {origin!r}", source)
        if metric == "acir_mohm" and origin != FROM_AGEING:
            raise _fail(f"{where}.from", "required: 'ageing' (the tester on the rack reads ACIR)", source)
        if origin == FROM_AGEING:
            if set(table) != {"from"}:
                raise _fail(f"{where}.from", "an ageing metric takes no step, cycle or at", source)
            out[metric] = MetricSource(metric, "", None, CYCLE_LAST, FROM_AGEING)
            continue
        step = table.get("step")
        if not isinstance(step, str) or not step.strip():
            raise _fail(f"{where}.step", "required: the id of the recipe step that gives this metric", source)
        at = None
        if metric == "dcir_mohm":
            if "at" not in table:
                raise _fail(f"{where}.at", "required: the pulse time to grade on, e.g. '10s' (or 'iec')", source)
            at = _parse_pulse_key(table["at"], f"{where}.at", source)
        cycle = _parse_cycle(table["cycle"], f"{where}.cycle", source) if "cycle" in table else CYCLE_LAST
        out[metric] = MetricSource(metric, step.strip(), at, cycle)
    # Canonical order, so that the hash does not depend on the order of the tables in the file.
    return {m: out[m] for m in METRICS if m in out}


def _parse_bounds(table: object, where: str, source: str) -> Bounds:
    if not isinstance(table, Mapping) or not table:
        raise _fail(where, "expected a table of bounds such as { min = 4.9 } or { max_sigma = 3 }", source)
    values: dict[str, float] = {}
    for key, raw in table.items():
        if key not in BOUND_KEYS:
            raise _fail(f"{where}.{key}", f"unknown bound (allowed: {', '.join(BOUND_KEYS)})", source)
        value = _number(raw, f"{where}.{key}", source)
        if key.startswith("max_") and value <= 0:
            raise _fail(f"{where}.{key}", f"must be positive, got {raw!r}", source)
        values[key] = value
    lo, hi = values.get("min"), values.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise _fail(f"{where}.min", f"min {lo:g} is above max {hi:g}", source)
    return Bounds(**values)


def _parse_grade(index: int, data: object, metrics: Mapping[str, MetricSource], source: str) -> GradeRule:
    where = f"grades[{index}]"
    if not isinstance(data, Mapping):
        raise _fail(where, "expected a [[grades]] table", source)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{where}.name", "required: a non-empty string", source)
    name = name.strip()
    if name.upper() == NG:
        raise _fail(f"{where}.name", f"'{NG}' is reserved for cells that match no grade", source)
    bounds: dict[str, Bounds] = {}
    for key, table in data.items():
        if key == "name":
            continue
        if key not in METRICS:
            raise _fail(f"{where}.{key}", f"unknown metric (known: {', '.join(METRICS)})", source)
        if key not in metrics:
            raise _fail(f"{where}.{key}", f'no source for this metric: add [metrics.{key}] step = "..."', source)
        bounds[key] = _parse_bounds(table, f"{where}.{key}", source)
    if not bounds:
        raise _fail(where, f"grade {name!r} has no bounds: give at least one metric", source)
    return GradeRule(name, {m: bounds[m] for m in METRICS if m in bounds})


def _accepts_all_of(earlier: GradeRule, later: GradeRule) -> bool:
    """True when, kind by kind, ``later`` is at least as tight as ``earlier`` on every metric ``earlier`` bounds."""
    for metric, bounds in earlier.bounds.items():
        if metric not in later.bounds:
            return False
        later_cons = later.bounds[metric].constraints()
        for kind, value in bounds.constraints().items():
            if kind not in later_cons or later_cons[kind] > value:
                return False
    return True


def _check_order(grades: tuple[GradeRule, ...], source: str) -> None:
    for j, later in enumerate(grades):
        for i, earlier in enumerate(grades[:j]):
            if later.name == earlier.name:
                raise _fail(f"grades[{j}].name", f"duplicate grade name {later.name!r} (also grades[{i}])", source)
            if _accepts_all_of(earlier, later):
                raise _fail(
                    f"grades[{j}]",
                    f"grades[{j}] {later.name!r} is unreachable: grades[{i}] {earlier.name!r} already accepts "
                    "every cell it would",
                    source,
                )
            for metric, lb in later.bounds.items():
                eb = earlier.bounds.get(metric)
                if eb is None or not (eb.has_absolute and lb.has_absolute):
                    continue
                for key, tighter in (("min", lambda a, b: a > b), ("max", lambda a, b: a < b)):
                    mine, theirs = getattr(lb, key), getattr(eb, key)
                    if mine is None or not (theirs is None or tighter(mine, theirs)):
                        continue
                    theirs_text = f"{key} {theirs:g}" if theirs is not None else f"no {key}"
                    raise _fail(
                        f"grades[{j}].{metric}.{key}",
                        f"grades[{j}] {later.name!r} is out of order: {key} {mine:g} is tighter than grades[{i}] "
                        f"{earlier.name!r} ({theirs_text}); a later grade must relax the absolute bands of earlier "
                        "ones",
                        source,
                    )


def parse_rules(data: object, source: str = "<rules>") -> Rules:
    """Validate rules given as plain data (parsed TOML/JSON); raises RulesError on the first problem."""
    if not isinstance(data, Mapping):
        raise _fail("", "a rules file is a table with name, version, [metrics.*] and [[grades]]", source)
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(str(key), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})", source)
    name = _text(data, "name", source)
    version = data.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        version = f"{version:g}"  # TOML `version = 1` is harmless: read it as text
    version = _text({"version": version}, "version", source)
    description = _text(data, "description", source, required=False)
    metrics = _parse_metrics(data.get("metrics"), source)
    raw_grades = data.get("grades")
    if not isinstance(raw_grades, list) or not raw_grades:
        raise _fail("grades", "required: at least one [[grades]] table, best grade first", source)
    grades = tuple(_parse_grade(i, g, metrics, source) for i, g in enumerate(raw_grades))
    _check_order(grades, source)
    return Rules(name, version, metrics, grades, description, source)


def loads_rules(text: str, source: str = "<rules>") -> Rules:
    """Parse rules from TOML text."""
    return parse_rules(toml_document(text, lambda field, reason: _fail(field, reason, source)), source)


def load_rules(path: str | Path) -> Rules:
    """Read and validate a rules file (TOML)."""
    path = Path(path)
    text = read_input_text(path, "rules file", lambda field, reason: _fail(field, reason, str(path)))
    return loads_rules(text, str(path))


_LIBRARY = Path(__file__).with_name("library")


def builtin_rules() -> list[str]:
    """Names of the built-in rules files (one per built-in recipe, named after it)."""
    return sorted(p.stem for p in _LIBRARY.glob("*.toml"))


def resolve_rules(name_or_path: str | Path) -> Rules:
    """A rules file by path, else the built-in rules of that name (e.g. a built-in recipe's name)."""
    path = Path(name_or_path)
    if is_file(path):
        return load_rules(path)
    if str(name_or_path) in builtin_rules():
        return load_rules(_LIBRARY / f"{name_or_path}.toml")
    known = ", ".join(builtin_rules())
    raise _fail("rules", f"no file {str(name_or_path)!r} and no built-in rules of that name (built-in: {known})", "")
