"""ChannelRun: one cell's pass through a recipe on one channel — an explicit state machine with a journal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from formation.errors import StateError
from formation.instruments.program import LOG_COL, EndCode
from formation.orchestrator import metrics
from formation.orchestrator.compile import CompiledStep
from formation.recipes import Recipe


class RunState(StrEnum):
    """Where a run is; terminal states are DONE, FAULTED and ABORTED."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    DONE = "done"
    FAULTED = "faulted"
    ABORTED = "aborted"


ALLOWED_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.ABORTED, RunState.FAULTED}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.ABORTING, RunState.DONE, RunState.FAULTED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.ABORTING, RunState.FAULTED, RunState.ABORTED}),
    RunState.ABORTING: frozenset({RunState.ABORTED, RunState.FAULTED}),
    RunState.DONE: frozenset(),
    RunState.FAULTED: frozenset(),
    RunState.ABORTED: frozenset(),
}
TERMINAL_STATES = frozenset({RunState.DONE, RunState.FAULTED, RunState.ABORTED})

#: End codes after which the sequence stops on the instrument whatever step it was in.
_STOPPING_CODES = {EndCode.ABORT, EndCode.WATCHDOG, EndCode.FAULT}


@dataclass
class StepAccount:
    """Per-step accounting accumulated from the instrument's start and end records."""

    started_s: float | None = None
    start_voltage_v: float | None = None
    ah: float = 0.0
    wh: float = 0.0
    duration_s: float = 0.0


@dataclass
class ChannelRun:
    """One cell on one channel going through a recipe; the supervisor drives it from log records."""

    run_id: int
    cell_id: str
    lot: str
    channel: int
    nominal_capacity_ah: float
    recipe: Recipe
    state: RunState = RunState.PENDING
    step_index: int = -1
    compiled: CompiledStep | None = None
    seq_id: int | None = None
    awaiting_start: bool = False
    start_attempted: bool = False
    account: StepAccount = field(default_factory=StepAccount)
    end_reason: str | None = None
    last_voltage_v: float = float("nan")
    last_current_a: float = float("nan")
    last_temperature_c: float = float("nan")
    last_ts_s: float = float("nan")
    steps_done: int = 0
    #: Net Ah since the last full discharge (the 0 % reference), and the capacity that SOC is reckoned against.
    soc_ah: float = 0.0
    capacity_ref_ah: float | None = None
    #: Records of the current step, kept only for steps whose result needs them (dcir, age).
    captured: list[np.ndarray] = field(default_factory=list)
    #: OCV checkpoints measured by the timers in the current age step: index -> (host clock s, volts).
    checkpoints: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: The host clock's reading at the current step's start (host and instrument clocks may differ by an offset).
    step_t0_host_s: float | None = None
    #: Age-step seconds during which the chamber was out of band: the K clock pauses (the chamber loop adds them).
    k_paused_s: float = 0.0

    # -- state machine -------------------------------------------------------------------------------------
    def transition(self, new: RunState) -> None:
        """Move to ``new``; an illegal transition raises StateError (a bug, never swallowed)."""
        if new is self.state:
            return
        if new not in ALLOWED_TRANSITIONS[self.state]:
            raise StateError(f"run {self.run_id} ({self.cell_id}): illegal transition {self.state} -> {new}")
        self.state = new

    @property
    def terminal(self) -> bool:
        """True once the run is done, faulted or aborted."""
        return self.state in TERMINAL_STATES

    @property
    def soc(self) -> float:
        """The host's SOC estimate (coulomb count from the last full discharge), 0–1."""
        return self.soc_ah / (self.capacity_ref_ah or self.nominal_capacity_ah)

    @property
    def needs_records(self) -> bool:
        """Whether the current step's result is computed from its records (so the supervisor keeps them)."""
        step = self.step
        return step is not None and step.kind in ("dcir", "age")

    @property
    def step(self) -> Any:
        """The recipe step the run is in (None before the first or after the last)."""
        if 0 <= self.step_index < len(self.recipe.steps):
            return self.recipe.steps[self.step_index]
        return None

    # -- step cursor ---------------------------------------------------------------------------------------
    def begin_step(self, index: int, compiled: CompiledStep) -> None:
        """Point the cursor at step ``index``; the supervisor starts it on the instrument."""
        self.step_index = index
        self.compiled = compiled
        self.seq_id = None
        self.awaiting_start = True
        self.start_attempted = False
        self.account = StepAccount()
        self.captured = []
        self.checkpoints = {}
        self.step_t0_host_s = None
        self.k_paused_s = 0.0

    def note_start_record(self, row: Any) -> None:
        """A record with step time 0 on the sequence's first instrument step: the step has begun."""
        if self.account.started_s is None:
            self.account.started_s = float(row[LOG_COL["time_s"]])
            self.account.start_voltage_v = float(row[LOG_COL["voltage_v"]])

    def note_end_record(self, row: Any) -> dict[str, Any] | None:
        """Account an instrument step's end record; return the StepResult row when the recipe step is over."""
        code = int(row[LOG_COL["end"]])
        acc = self.account
        acc.ah += float(row[LOG_COL["step_ah"]])
        acc.wh += float(row[LOG_COL["step_wh"]])
        acc.duration_s += float(row[LOG_COL["step_time_s"]])
        assert self.compiled is not None
        n_steps = len(self.compiled.program.steps)
        finished = (
            code in _STOPPING_CODES or EndCode.FAIL_BASE < code < EndCode.ABORT or int(row[LOG_COL["step"]]) >= n_steps
        )
        if not finished:
            return None
        ended_s = float(row[LOG_COL["time_s"]])
        started_s = acc.started_s if acc.started_s is not None else ended_s - acc.duration_s
        reason = self.compiled.end_reason(code)
        self.end_reason = reason
        self.steps_done += 1
        step = self.step
        details: dict[str, Any] = {"end_code": code, "seq_id": self.seq_id}
        soc_start = self.soc
        try:
            details.update(self._step_measurements(step, reason, acc.started_s))
        except ValueError as exc:
            details["error"] = str(exc)
        self._account_soc(step, reason, acc.ah)
        details["soc_start"] = round(soc_start, 6)
        details["soc_end"] = round(self.soc, 6)
        return {
            "run_id": self.run_id,
            "step_index": self.step_index,
            "step_id": step.id,
            "kind": step.kind,
            "started_s": started_s,
            "ended_s": ended_s,
            "duration_s": acc.duration_s,
            "ah": acc.ah,
            "wh": acc.wh,
            "start_voltage_v": acc.start_voltage_v if acc.start_voltage_v is not None else float("nan"),
            "end_voltage_v": float(row[LOG_COL["voltage_v"]]),
            "end_reason": reason,
            "details": json.dumps(details, sort_keys=True),
        }

    def _step_measurements(self, step: Any, reason: str, started_s: float | None) -> dict[str, Any]:
        """DCIR or OCV/K-value of a finished dcir or age step (only when it ran to its end)."""
        if step.kind not in ("dcir", "age") or reason != "duration":
            return {}
        rows = np.concatenate(self.captured) if self.captured else np.empty((0, len(LOG_COL)))
        if step.kind == "dcir":
            out = (
                metrics.dcir_iec61960(rows)
                if step.method == "iec61960"
                else metrics.dcir_single(rows, step.sample_at_s)
            )
            out.update(method=step.method, direction=step.direction, pulse_s=step.duration_s, soc=round(self.soc, 6))
            return out
        # age: timer-measured checkpoints where the timers caught the cell in this step, else the data log.
        start = started_s if started_s is not None else float(rows[0, LOG_COL["time_s"]])
        from_log = metrics.ocv_from_log(rows, start, step.ocv_at_s) if len(rows) else []
        times, volts, sources = [], [], []
        for k, at_s in enumerate(step.ocv_at_s):
            if k in self.checkpoints:
                t, v = self.checkpoints[k]
                times.append(t - (self.step_t0_host_s if self.step_t0_host_s is not None else t - at_s))
                volts.append(v)
                sources.append("timer")
            elif from_log:
                times.append(at_s)
                volts.append(from_log[k])
                sources.append("log")
        k_value = metrics.k_value_mv_per_day(times, volts, paused_s=self.k_paused_s)
        return {
            "ocv_at_s": [round(t, 3) for t in times],
            "ocv_v": [round(v, 6) for v in volts],
            "ocv_source": sources,
            "k_mv_per_day": k_value,
            "temperature_c": float(rows[-1, LOG_COL["temp_c"]]) if len(rows) else float("nan"),
        }

    def _account_soc(self, step: Any, reason: str, ah: float) -> None:
        self.soc_ah += ah
        if step.kind == "discharge" and reason == "voltage":
            # Discharged to the cut-off: this is the 0 % reference, and a deep one measures the capacity.
            if -ah > 0.5 * self.nominal_capacity_ah:
                self.capacity_ref_ah = -ah
            self.soc_ah = 0.0

    def journal(self) -> str:
        """The resume point as JSON: enough for a restarted host to re-attach without repeating a charge."""
        return json.dumps(
            {
                "step_index": self.step_index,
                "seq_id": self.seq_id,
                "awaiting_start": self.awaiting_start,
                "started_s": self.account.started_s,
                "start_voltage_v": self.account.start_voltage_v,
                "ah": self.account.ah,
                "wh": self.account.wh,
                "duration_s": self.account.duration_s,
                "soc_ah": self.soc_ah,
                "capacity_ref_ah": self.capacity_ref_ah,
            },
            sort_keys=True,
        )
