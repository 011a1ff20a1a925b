"""The data-log record rule and the steps the host carries out or judges with the output off: ``chamber`` (set
the chamber, wait until it is stable), ``wait`` (until the cell has cooled), ``hold`` (until an operator continues)
and ``precheck`` (OCV window and a short check before any current). Part of the recipe model
(:mod:`formation.recipes.model` re-exports every name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

#: The dialect's default record rule (``SEQ:STEP:LOG`` never set): every 60 s or every 5 mV.
DEFAULT_EVERY_S = 60.0
DEFAULT_EVERY_MV = 5.0
#: How long a waiting ``chamber`` step waits for a stable chamber when the recipe gives no ``timeout`` (seconds);
#: the orchestrator applies it and faults the run when the chamber is not stable by then.
CHAMBER_WAIT_DEFAULT_S = 4 * 3600.0
#: How long a ``hold`` step waits for an operator when the recipe gives no ``timeout`` (seconds).
HOLD_DEFAULT_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RecordRule:
    """Data log rule: a record every ``every_s`` s or ``every_mv`` mV, whichever first (0 = off)."""

    every_s: float = DEFAULT_EVERY_S
    every_mv: float = DEFAULT_EVERY_MV

    def to_canonical(self) -> dict[str, float]:
        """The canonical JSON form."""
        return {"every_s": self.every_s, "every_mv": self.every_mv}


@dataclass(frozen=True, slots=True)
class ChamberStep:
    """Set the chamber to ``setpoint_c``; with ``wait``, the step ends once the chamber is stable there.

    A host step: nothing runs on the instrument, the cells rest with their output off (``record`` is the rule
    they log at meanwhile). ``timeout_s`` bounds the wait (None = :data:`CHAMBER_WAIT_DEFAULT_S`, applied by the
    orchestrator); the parser refuses a timeout without ``wait``. A chamber step has no ``until``, no current and
    no ``chamber_c``.
    """

    id: str
    setpoint_c: float
    wait: bool = True
    timeout_s: float | None = None
    record: RecordRule = field(default_factory=RecordRule)

    kind: ClassVar[str] = "chamber"

    @property
    def wait_limit_s(self) -> float | None:
        """How long the step waits at most for a stable chamber: ``timeout_s`` or the default; None without wait."""
        if not self.wait:
            return None
        return CHAMBER_WAIT_DEFAULT_S if self.timeout_s is None else self.timeout_s

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form (``timeout`` only when given)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "setpoint_c": self.setpoint_c,
            "wait": self.wait,
            "record": self.record.to_canonical(),
        }
        if self.timeout_s is not None:
            out["timeout"] = self.timeout_s
        return out


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Open circuit until the cell is below ``below_c`` (host-evaluated from the log), at most ``timeout_s``.

    The instrument rests the cell for ``timeout_s`` (its backstop); a cell still too warm then faults its run.
    """

    id: str
    below_c: float
    timeout_s: float
    record: RecordRule = field(default_factory=RecordRule)

    kind: ClassVar[str] = "wait"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "below_c": self.below_c,
            "timeout": self.timeout_s,
            "record": self.record.to_canonical(),
        }


@dataclass(frozen=True, slots=True)
class HoldStep:
    """Output off until an operator runs ``formation run continue JOB`` (or ``timeout_s``, which faults the run).

    A host step: nothing runs on the instrument. ``message`` tells the operator what to do (degas, re-clamp).
    """

    id: str
    timeout_s: float = HOLD_DEFAULT_S
    message: str = ""
    record: RecordRule = field(default_factory=RecordRule)

    kind: ClassVar[str] = "hold"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form (``message`` only when given)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "timeout": self.timeout_s,
            "record": self.record.to_canonical(),
        }
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True, slots=True)
class PrecheckStep:
    """Screen before any current: OCV within ``ocv_min_v``–``ocv_max_v``, then a ``rest_s`` open-circuit rest
    whose voltage drop must stay below ``max_drop_mv`` (an internal short drains the cell). A cell that fails is
    rejected: its run ends (faulted, with the reason) and its channel is free."""

    id: str
    ocv_min_v: float
    ocv_max_v: float
    rest_s: float
    max_drop_mv: float
    record: RecordRule = field(default_factory=RecordRule)

    kind: ClassVar[str] = "precheck"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "ocv_min_v": self.ocv_min_v,
            "ocv_max_v": self.ocv_max_v,
            "rest": self.rest_s,
            "max_drop_mv": self.max_drop_mv,
            "record": self.record.to_canonical(),
        }
