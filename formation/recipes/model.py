"""The recipe model: frozen, typed steps and the recipe that orders them, with their canonical JSON form.

Steps are data; the orchestrator dispatches on their type (``match step: case ChargeStep(): ...``).
To add a kind, add its dataclass here, extend the ``Step`` union, and register its builder in
``formation.recipes.parse.STEP_BUILDERS``.

Flow: ``tag`` / ``loop`` marks repeat a block of steps (``formation.recipes.flow``); ``Recipe.steps`` holds the
steps unrolled, as a run goes through them, with ``Recipe.cycles`` their cycle numbers and ``Recipe.layout`` the
steps as written. Host-judged kinds: ``wait`` (cell cooled), ``hold`` (operator), ``precheck`` (OCV and short).

Temperature: a ``chamber`` step (:class:`ChamberStep`) sets the chamber the cells stand in; ``chamber_c`` on any
other step holds that step until the chamber is stable at that temperature. Both are optional in the canonical
form (a recipe without them hashes as it did before they existed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from formation.canonical import canonical_json, content_sha256
from formation.recipes.flow import FlowMark

# Re-exported: the record rule and the host-judged steps belong to the model (formation/recipes/host_steps.py).
from formation.recipes.host_steps import (
    CHAMBER_WAIT_DEFAULT_S as CHAMBER_WAIT_DEFAULT_S,
)
from formation.recipes.host_steps import (
    DEFAULT_EVERY_MV as DEFAULT_EVERY_MV,
)
from formation.recipes.host_steps import (
    DEFAULT_EVERY_S as DEFAULT_EVERY_S,
)
from formation.recipes.host_steps import (
    HOLD_DEFAULT_S as HOLD_DEFAULT_S,
)
from formation.recipes.host_steps import (
    ChamberStep,
    HoldStep,
    PrecheckStep,
    RecordRule,
    WaitStep,
)
from formation.recipes.units import CurrentSpec, fmt, format_duration

#: ``limits.max_current_a`` when a recipe leaves it out: this many C of the nominal capacity.
DEFAULT_MAX_C_RATE = 2.0
#: ``limits.max_cell_temperature_c`` when a recipe leaves it out.
DEFAULT_MAX_CELL_TEMPERATURE_C = 60.0
#: Range of a chamber set point (``setpoint_c``, ``chamber_c``), °C: outside it a value is a typo. A set point must
#: also be below ``limits.max_cell_temperature_c`` (the cells would trip the instrument's temperature FAIL test).
CHAMBER_MIN_C = -40.0
CHAMBER_MAX_C = 100.0


DcirMethod = Literal["single", "iec61960"]
DcirDirection = Literal["discharge", "charge"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Recipe-wide safety limits, compiled into instrument FAIL tests and re-checked by the host.

    ``max_current_a`` defaults to 2C of the recipe's nominal capacity when the recipe leaves it out, and
    ``max_cell_temperature_c`` to 60 °C; the parsed value is always set.
    """

    max_voltage_v: float
    min_voltage_v: float
    max_cell_temperature_c: float
    max_current_a: float

    def to_canonical(self) -> dict[str, float]:
        """The canonical JSON form."""
        return {
            "max_voltage_v": self.max_voltage_v,
            "min_voltage_v": self.min_voltage_v,
            "max_cell_temperature_c": self.max_cell_temperature_c,
            "max_current_a": self.max_current_a,
        }


@dataclass(frozen=True, slots=True)
class Until:
    """End conditions of a step, OR'ed: the step ends on the first that holds (None = not used).

    ``voltage_v`` is reached rising on a charge, falling on a discharge; ``current`` is the CV taper end;
    ``charge_ah`` / ``charge_fraction`` end on the step's charge throughput (absolute, or a share of nominal).
    """

    duration_s: float | None = None
    voltage_v: float | None = None
    current: CurrentSpec | None = None
    charge_ah: float | None = None
    charge_fraction: float | None = None
    #: Rest only: ends once |dV/dt| over the last ``dvdt_window_s`` falls below this (host-evaluated, mV/h).
    dvdt_mv_per_h: float | None = None
    dvdt_window_s: float | None = None

    def charge_limit_ah(self, nominal_capacity_ah: float) -> float | None:
        """The throughput end in Ah for a cell of ``nominal_capacity_ah``, or None when there is none."""
        if self.charge_ah is not None:
            return self.charge_ah
        if self.charge_fraction is not None:
            return self.charge_fraction * nominal_capacity_ah
        return None

    def is_empty(self) -> bool:
        """True when no end condition is set."""
        return all(
            value is None
            for value in (self.duration_s, self.voltage_v, self.current, self.charge_ah, self.charge_fraction)
        )

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form (only the conditions in use)."""
        out: dict[str, Any] = {}
        if self.duration_s is not None:
            out["duration"] = self.duration_s
        if self.voltage_v is not None:
            out["voltage_v"] = self.voltage_v
        if self.current is not None:
            out["current"] = self.current.to_canonical()
        if self.charge_ah is not None:
            out["charge"] = {"ah": self.charge_ah}
        if self.charge_fraction is not None:
            out["charge"] = {"fraction": self.charge_fraction}
        if self.dvdt_mv_per_h is not None:
            out["dvdt_mv_per_h"] = self.dvdt_mv_per_h
            out["dvdt_window"] = self.dvdt_window_s
        return out

    def describe(self) -> str:
        """``2h or 3.4 V or C/20 or 30% charge``."""
        parts = []
        if self.voltage_v is not None:
            parts.append(f"{fmt(self.voltage_v)} V")
        if self.current is not None:
            parts.append(f"I < {self.current}")
        if self.charge_ah is not None:
            parts.append(f"{fmt(self.charge_ah)} Ah")
        if self.charge_fraction is not None:
            parts.append(f"{fmt(self.charge_fraction * 100)}% of nominal")
        if self.dvdt_mv_per_h is not None and self.dvdt_window_s is not None:
            parts.append(f"|dV/dt| < {fmt(self.dvdt_mv_per_h)} mV/h over {format_duration(self.dvdt_window_s)}")
        if self.duration_s is not None:
            parts.append(format_duration(self.duration_s))
        return " or ".join(parts)


@dataclass(frozen=True, slots=True)
class _CurrentStep:
    """Shared shape of charge and discharge: CC at ``current``, or CC-CV when ``cv_voltage_v`` is set.

    ``chamber_c`` (every step kind but ``chamber`` has it): the chamber is set to this temperature and must be
    stable at it before the step starts; None = no requirement.
    """

    id: str
    current: CurrentSpec
    cv_voltage_v: float | None
    until: Until
    record: RecordRule
    chamber_c: float | None = None

    kind: ClassVar[str] = ""

    @property
    def is_cccv(self) -> bool:
        """True for a CC-CV step (a constant-voltage hold at ``cv_voltage_v`` after the CC phase)."""
        return self.cv_voltage_v is not None

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "current": self.current.to_canonical(),
            "until": self.until.to_canonical(),
            "record": self.record.to_canonical(),
        }
        if self.cv_voltage_v is not None:
            out["cv_voltage_v"] = self.cv_voltage_v
        return _with_chamber_c(out, self.chamber_c)


@dataclass(frozen=True, slots=True)
class ChargeStep(_CurrentStep):
    """Charge at ``current`` (CC), holding ``cv_voltage_v`` once reached when set (CC-CV)."""

    kind: ClassVar[str] = "charge"


@dataclass(frozen=True, slots=True)
class DischargeStep(_CurrentStep):
    """Discharge at ``current`` (CC), holding ``cv_voltage_v`` once reached when set (CC-CV)."""

    kind: ClassVar[str] = "discharge"


@dataclass(frozen=True, slots=True)
class RestStep:
    """Open circuit until ``until`` (a duration always; a voltage optionally), logging relaxation.

    ``chamber_c``: the chamber must be stable at this temperature before the step starts (None = no requirement).
    """

    id: str
    until: Until
    record: RecordRule
    chamber_c: float | None = None

    kind: ClassVar[str] = "rest"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "until": self.until.to_canonical(),
            "record": self.record.to_canonical(),
        }
        return _with_chamber_c(out, self.chamber_c)


@dataclass(frozen=True, slots=True)
class DcirStep:
    """Rest ``rest_s`` (recipe record rule), then a current pulse; DCIR = ΔV/ΔI at each ``sample_at_s``.

    ``single``: one pulse of ``current`` for ``duration_s`` (HPPC style), sampled at ``sample_at_s``.
    ``iec61960``: ``low_current`` for ``low_duration_s``, then ``current`` for ``duration_s``;
    R = (U1 − U2) / (I2 − I1) at the end of each pulse, so ``sample_at_s`` is empty.
    ``record`` applies to the pulses only. ``chamber_c``: the chamber must be stable at this temperature before
    the step (its baseline rest) starts; None = no requirement.
    """

    id: str
    rest_s: float
    method: DcirMethod
    direction: DcirDirection
    current: CurrentSpec
    duration_s: float
    sample_at_s: tuple[float, ...]
    low_current: CurrentSpec | None
    low_duration_s: float | None
    record: RecordRule
    chamber_c: float | None = None

    kind: ClassVar[str] = "dcir"

    @property
    def total_s(self) -> float:
        """Rest plus pulse time: how long the step runs."""
        return self.rest_s + (self.low_duration_s or 0.0) + self.duration_s

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form (iec61960 has ``low_*`` and no ``sample_at``)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "rest": self.rest_s,
            "method": self.method,
            "direction": self.direction,
            "current": self.current.to_canonical(),
            "duration": self.duration_s,
            "record": self.record.to_canonical(),
        }
        if self.method == "single":
            out["sample_at"] = list(self.sample_at_s)
        if self.low_current is not None:
            out["low_current"] = self.low_current.to_canonical()
        if self.low_duration_s is not None:
            out["low_duration"] = self.low_duration_s
        return _with_chamber_c(out, self.chamber_c)


@dataclass(frozen=True, slots=True)
class AgeStep:
    """Open circuit for ``duration_s`` at an optional chamber setpoint, reading OCV at each ``ocv_at_s``.

    The K-value (mV/day) comes from the first and last checkpoint. ``chamber_c``, as on every step: the chamber
    must be stable at this temperature before the step starts (None = whatever the chamber or cabinet is at).
    """

    id: str
    duration_s: float
    ocv_at_s: tuple[float, ...]
    chamber_c: float | None
    record: RecordRule

    kind: ClassVar[str] = "age"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "duration": self.duration_s,
            "ocv_at": list(self.ocv_at_s),
            "record": self.record.to_canonical(),
        }
        return _with_chamber_c(out, self.chamber_c)


def _with_chamber_c(out: dict[str, Any], chamber_c: float | None) -> dict[str, Any]:
    """``out`` with ``chamber_c`` added when set: a step without it keeps the canonical form (and hash) it had."""
    if chamber_c is not None:
        out["chamber_c"] = chamber_c
    return out


Step = ChargeStep | DischargeStep | RestStep | DcirStep | AgeStep | ChamberStep | WaitStep | HoldStep | PrecheckStep
#: Kinds that never move current (a pre-check must come before any step not in this set).
NO_CURRENT_KINDS = frozenset({"rest", "age", "chamber", "wait", "hold", "precheck"})


def describe_step(step: Step) -> str:
    """One human line for tables: ``charge C/5 CC-CV 3.65 V until I < C/20 or 8h``, ``age 7d, OCV at 1d, 7d``,
    ``rest 1h at 45 °C`` (a step with ``chamber_c``), ``set chamber to 45 °C and wait until stable (≤ 4h)``."""
    chamber_c = getattr(step, "chamber_c", None)
    where = "" if chamber_c is None else f" at {fmt(chamber_c)} °C"
    match step:
        case ChargeStep() | DischargeStep():
            mode = f" CC-CV {fmt(step.cv_voltage_v)} V" if step.cv_voltage_v is not None else ""
            return f"{step.kind} {step.current}{mode}{where} until {step.until.describe()}"
        case RestStep(until=Until(voltage_v=None, dvdt_mv_per_h=None, duration_s=duration_s)) if duration_s:
            return f"rest {format_duration(duration_s)}{where}"
        case RestStep():
            return f"rest{where} until {step.until.describe()}"
        case DcirStep(method="iec61960", low_current=low, low_duration_s=low_s) if low is not None and low_s:
            pulses = f"{low} {format_duration(low_s)} then {step.current} {format_duration(step.duration_s)}"
            return f"dcir iec61960{where} {step.direction} {pulses} after {format_duration(step.rest_s)} rest"
        case DcirStep():
            at = ", ".join(format_duration(t) for t in step.sample_at_s)
            pulse = f"{step.current} {format_duration(step.duration_s)}"
            return f"dcir{where} {step.direction} {pulse} after {format_duration(step.rest_s)} rest, at {at}"
        case AgeStep():
            at = ", ".join(format_duration(t) for t in step.ocv_at_s)
            return f"age {format_duration(step.duration_s)}{where}, OCV at {at}"
        case ChamberStep(wait_limit_s=limit_s):
            if limit_s is None:
                return f"set chamber to {fmt(step.setpoint_c)} °C and go on (no wait)"
            return f"set chamber to {fmt(step.setpoint_c)} °C and wait until stable (≤ {format_duration(limit_s)})"
        case WaitStep():
            return f"wait until the cell is below {fmt(step.below_c)} °C (≤ {format_duration(step.timeout_s)})"
        case HoldStep():
            what = f": {step.message}" if step.message else ""
            return f"hold, output off, until `formation run continue` (≤ {format_duration(step.timeout_s)}){what}"
        case PrecheckStep():
            return (
                f"precheck OCV {fmt(step.ocv_min_v)}–{fmt(step.ocv_max_v)} V, drop < {fmt(step.max_drop_mv)} mV "
                f"over {format_duration(step.rest_s)} rest"
            )
    raise TypeError(f"not a recipe step: {step!r}")  # pragma: no cover - the union is exhaustive


@dataclass(frozen=True, slots=True)
class Recipe:
    """A validated recipe: ordered steps, recipe-wide limits and record rule, and its content hash."""

    name: str
    version: str
    chemistry: str | None
    nominal_capacity_ah: float
    limits: Limits
    record: RecordRule
    steps: tuple[Step, ...]
    description: str = ""
    source_text: str = field(default="", compare=False, repr=False)
    source: str = field(default="<recipe>", compare=False)
    #: The cycle number of each of ``steps`` (iterations of repeat blocks numbered 1, 2, … across the recipe;
    #: 0 outside any block). Empty: every step is 0.
    cycles: tuple[int, ...] = ()
    #: The steps as written, with their ``tag`` / ``loop`` marks; ``steps`` is this unrolled, so a step of a
    #: three-cycle block is in ``steps`` three times. Empty: ``steps`` as written (no repeat block).
    layout: tuple[Step | FlowMark, ...] = ()
    #: ``[resume] after_watchdog``: a cell the instrument's watchdog stopped while no host was there is ``fault``ed
    #: (the default) or its step ``resume``d with what is left of its time and charge.
    after_watchdog: str = "fault"

    def cycle_of(self, index: int) -> int:
        """The cycle number of ``steps[index]`` (0 outside any repeat block)."""
        return self.cycles[index] if 0 <= index < len(self.cycles) else 0

    def to_canonical(self) -> dict[str, Any]:
        """The canonical form as plain data (``parse_recipe`` accepts it back and gives the same hash)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "nominal_capacity_ah": self.nominal_capacity_ah,
            "limits": self.limits.to_canonical(),
            "record": self.record.to_canonical(),
            "steps": [item.to_canonical() for item in (self.layout or self.steps)],
        }
        if self.chemistry is not None:
            out["chemistry"] = self.chemistry
        if self.description:
            out["description"] = self.description
        if self.after_watchdog != "fault":  # the default is left out, so recipes without it keep their hash
            out["resume"] = {"after_watchdog": self.after_watchdog}
        return out

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, durations in seconds, currents as ``{"a": x}`` or ``{"c_rate": x}``."""
        return canonical_json(self.to_canonical())

    @property
    def sha256(self) -> str:
        """Hex sha256 of :meth:`canonical_json`, recorded with every run."""
        return content_sha256(self.to_canonical())

    def step(self, step_id: str) -> Step:
        """The step with id ``step_id`` (KeyError if none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


def chamber_setpoints(recipe: Recipe) -> tuple[float, ...]:
    """Every chamber temperature ``recipe`` asks for, °C, in step order: a ``chamber`` step's ``setpoint_c``, any
    other step's ``chamber_c`` (repeats kept; empty when the recipe asks for none)."""
    setpoints: list[float] = []
    for step in recipe.steps:
        setpoint_c = step.setpoint_c if isinstance(step, ChamberStep) else getattr(step, "chamber_c", None)
        if setpoint_c is not None:
            setpoints.append(setpoint_c)
    return tuple(setpoints)
