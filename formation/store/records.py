"""Typed step results: what the orchestrator hands the store and what grading reads back.

A step's measurements (DCIR of a pulse, OCV checkpoints and K-value of an age step) travel as these frozen
dataclasses; the store keeps them as the JSON of ``StepResult.details`` (the format is documented in
docs/measurement-steps.md) and this module is the one place that writes and reads that JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DcirMeasurement:
    """DCIR of one pulse: ΔV/ΔI in mΩ at each reported time (``"10"`` for 10 s, ``"iec"`` for IEC 61960)."""

    dcir_mohm: dict[str, float]
    baseline_v: float
    pulse_current_a: float
    temperature_c: float
    method: str = "single"
    direction: str = "discharge"
    pulse_s: float = float("nan")
    soc: float = float("nan")
    low_current_a: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys of a dcir step's details."""
        out: dict[str, Any] = {
            "dcir_mohm": dict(self.dcir_mohm),
            "baseline_v": self.baseline_v,
            "pulse_current_a": self.pulse_current_a,
            "temperature_c": self.temperature_c,
            "method": self.method,
            "direction": self.direction,
            "pulse_s": self.pulse_s,
            "soc": self.soc,
        }
        if self.low_current_a is not None:
            out["low_current_a"] = self.low_current_a
        return out


@dataclass(frozen=True, slots=True)
class AgeMeasurement:
    """OCV checkpoints of an age step (step time s, volts, ``timer`` or ``log``) and the K-value from them."""

    ocv_at_s: tuple[float, ...]
    ocv_v: tuple[float, ...]
    ocv_source: tuple[str, ...]
    k_mv_per_day: float
    temperature_c: float
    #: Seconds of the step the K clock did not count (its chamber was out of band).
    k_paused_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys of an age step's details (``k_paused_s`` only when the clock paused)."""
        out: dict[str, Any] = {
            "ocv_at_s": [round(t, 3) for t in self.ocv_at_s],
            "ocv_v": [round(v, 6) for v in self.ocv_v],
            "ocv_source": list(self.ocv_source),
            "k_mv_per_day": self.k_mv_per_day,
            "temperature_c": self.temperature_c,
        }
        if self.k_paused_s > 0:
            out["k_paused_s"] = round(self.k_paused_s, 3)
        return out


@dataclass(frozen=True, slots=True)
class PrecheckMeasurement:
    """A pre-check: OCV at the start, voltage drop over the rest (mV, positive when falling) and the verdict."""

    ocv_v: float
    drop_mv: float
    rejected: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys of a precheck step's details (``rejected`` is the reason, empty for a good cell)."""
        return {"precheck_ocv_v": self.ocv_v, "precheck_drop_mv": self.drop_mv, "rejected": self.rejected}


Measurement = DcirMeasurement | AgeMeasurement | PrecheckMeasurement


@dataclass(frozen=True, slots=True)
class StepDetails:
    """What a step result carries besides Ah/Wh/voltages: end code, SOC and its measurement, if any."""

    end_code: int
    seq_id: int | None = None
    soc_start: float | None = None
    soc_end: float | None = None
    measurement: Measurement | None = None
    #: Why a dcir/age step that ran to its end gave no measurement.
    error: str | None = None
    #: Keys of a stored details JSON this version does not model (kept so nothing read is dropped).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The storage form: one flat JSON object with sorted keys."""
        out: dict[str, Any] = dict(self.extra)
        out.update(end_code=self.end_code, seq_id=self.seq_id)
        if self.measurement is not None:
            out.update(self.measurement.to_dict())
        if self.error is not None:
            out["error"] = self.error
        if self.soc_start is not None:
            out["soc_start"] = round(self.soc_start, 6)
        if self.soc_end is not None:
            out["soc_end"] = round(self.soc_end, 6)
        return json.dumps(out, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> StepDetails:
        """Read stored details back; absent or malformed JSON gives empty details (no measurement)."""
        try:
            data = json.loads(text) if text else {}
        except (TypeError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            end_code=_int(data.pop("end_code", 0)),
            seq_id=_int_or_none(data.pop("seq_id", None)),
            soc_start=_float_or_none(data.pop("soc_start", None)),
            soc_end=_float_or_none(data.pop("soc_end", None)),
            measurement=_measurement(data),
            error=data.pop("error", None) if isinstance(data.get("error"), str) else None,
            extra=data,
        )

    def metric(self, name: str, at: str | None = None) -> float:
        """One grading metric from the measurement (NaN where the step did not give it)."""
        m = self.measurement
        if name == "dcir_mohm" and isinstance(m, DcirMeasurement):
            return _number(m.dcir_mohm.get(at)) if at is not None else math.nan
        if name == "k_mv_per_day" and isinstance(m, AgeMeasurement):
            return _number(m.k_mv_per_day)
        if name == "ocv_v" and isinstance(m, AgeMeasurement) and m.ocv_v:
            return _number(m.ocv_v[-1])  # the last checkpoint
        if name == "ocv_v" and isinstance(m, PrecheckMeasurement):
            return _number(m.ocv_v)  # the OCV the pre-check found before any current
        return math.nan


@dataclass(frozen=True, slots=True)
class StepResultRecord:
    """One finished recipe step of one run, as the orchestrator accounted it (a ``StepResult`` row)."""

    run_id: int
    step_index: int
    step_id: str
    kind: str
    started_s: float
    ended_s: float
    duration_s: float
    ah: float
    wh: float
    start_voltage_v: float
    end_voltage_v: float
    end_reason: str
    details: StepDetails
    #: The step's cycle number (``Recipe.cycles``); 0 outside any repeat block.
    cycle: int = 0

    def to_row(self) -> dict[str, Any]:
        """The row for the ``StepResult`` table (details as their JSON)."""
        return {
            "run_id": self.run_id,
            "step_index": self.step_index,
            "step_id": self.step_id,
            "kind": self.kind,
            "started_s": self.started_s,
            "ended_s": self.ended_s,
            "duration_s": self.duration_s,
            "ah": self.ah,
            "wh": self.wh,
            "start_voltage_v": self.start_voltage_v,
            "end_voltage_v": self.end_voltage_v,
            "end_reason": self.end_reason,
            "details": self.details.to_json(),
            "cycle": self.cycle,
        }


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else 0


def _int_or_none(value: object) -> int | None:
    return _int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _floats(value: object) -> tuple[float, ...]:
    return tuple(_number(v) for v in value) if isinstance(value, list) else ()


def _measurement(data: dict[str, Any]) -> Measurement | None:
    """Pop the keys of a dcir or an age measurement out of ``data`` (whichever it holds)."""
    if isinstance(data.get("dcir_mohm"), dict):
        values = {str(k): _number(v) for k, v in data.pop("dcir_mohm").items()}
        low = data.pop("low_current_a", None)
        return DcirMeasurement(
            dcir_mohm=values,
            baseline_v=_number(data.pop("baseline_v", None)),
            pulse_current_a=_number(data.pop("pulse_current_a", None)),
            temperature_c=_number(data.pop("temperature_c", None)),
            method=str(data.pop("method", "single")),
            direction=str(data.pop("direction", "discharge")),
            pulse_s=_number(data.pop("pulse_s", None)),
            soc=_number(data.pop("soc", None)),
            low_current_a=_float_or_none(low),
        )
    if "precheck_ocv_v" in data:
        rejected = data.pop("rejected", "")
        return PrecheckMeasurement(
            ocv_v=_number(data.pop("precheck_ocv_v")),
            drop_mv=_number(data.pop("precheck_drop_mv", None)),
            rejected=rejected if isinstance(rejected, str) else "",
        )
    if "k_mv_per_day" in data or isinstance(data.get("ocv_v"), list):
        sources = data.pop("ocv_source", [])
        return AgeMeasurement(
            ocv_at_s=_floats(data.pop("ocv_at_s", [])),
            ocv_v=_floats(data.pop("ocv_v", [])),
            ocv_source=tuple(str(s) for s in sources) if isinstance(sources, list) else (),
            k_mv_per_day=_number(data.pop("k_mv_per_day", None)),
            temperature_c=_number(data.pop("temperature_c", None)),
            k_paused_s=_float_or_none(data.pop("k_paused_s", None)) or 0.0,
        )
    return None
