"""ChannelRun: one cell's pass through a recipe on one channel — an explicit state machine with a journal."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from formation.errors import StateError
from formation.instruments.program import LOG_COL, EndCode
from formation.orchestrator import metrics
from formation.orchestrator.compile import CompiledStep, compile_step, remaining_step
from formation.orchestrator.records import EndRecord
from formation.recipes import Recipe
from formation.states import (
    RUN_TRANSITIONS,
    START_TRANSITIONS,
    TERMINAL_RUN_STATES,
    RunState,
    StartState,
)
from formation.store.records import (
    AgeMeasurement,
    Measurement,
    PrecheckMeasurement,
    StepDetails,
    StepResultRecord,
)

__all__ = ["ALLOWED_TRANSITIONS", "ChannelRun", "RunState", "StartState", "StepAccount"]


#: The run-state table, kept under its old name for readers of this module.
ALLOWED_TRANSITIONS = RUN_TRANSITIONS

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
    #: Whether the current step was started on the instrument (formation.states.START_TRANSITIONS).
    start: StartState = StartState.AWAITING
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
    #: Why the host ended the current step early (``dvdt``, ``temperature``): its abort record ends the step so.
    host_end: str | None = None
    #: Why a finished pre-check rejected the cell (None: not rejected).
    rejected: str | None = None
    #: The job's continue count when the current hold step started: a larger count releases it.
    hold_seen: int | None = None
    #: Instrument time of the start record of the program now running the step (None: not seen yet). Differs from
    #: ``account.started_s`` once a step cut by the watchdog was restarted with what was left of it.
    program_t0_s: float | None = None
    #: Instrument time of the watchdog end record after which the current step was last restarted, and how often.
    restart_s: float | None = None
    restarts: int = 0
    #: (Ah, Wh, s) the step had done when it was last restarted (journalled: a re-attached host counts from it).
    carried: tuple[float, float, float] | None = None

    # -- state machine -------------------------------------------------------------------------------------
    def transition(self, new: RunState) -> None:
        """Move to ``new``; an illegal transition raises StateError (a bug, never swallowed)."""
        if new is self.state:
            return
        if new not in RUN_TRANSITIONS[self.state]:
            raise StateError(f"run {self.run_id} ({self.cell_id}): illegal transition {self.state} -> {new}")
        self.state = new

    def start_transition(self, new: StartState) -> None:
        """Move the start confirmation of the current step to ``new``; an illegal move raises StateError."""
        if new is self.start:
            return
        if new not in START_TRANSITIONS[self.start]:
            raise StateError(f"run {self.run_id} ({self.cell_id}): illegal start transition {self.start} -> {new}")
        self.start = new

    @property
    def awaiting_start(self) -> bool:
        """True until the current step is confirmed started on the instrument."""
        return self.start is not StartState.STARTED

    @property
    def terminal(self) -> bool:
        """True once the run is done, faulted or aborted."""
        return self.state in TERMINAL_RUN_STATES

    @property
    def soc(self) -> float:
        """The host's SOC estimate (coulomb count from the last full discharge), 0–1."""
        return self.soc_ah / (self.capacity_ref_ah or self.nominal_capacity_ah)

    @property
    def needs_records(self) -> bool:
        """Whether the current step's result is computed from its records (so the supervisor keeps them)."""
        step = self.step
        judged = self.compiled is not None and self.compiled.host_judged
        return step is not None and (step.kind in ("dcir", "age") or judged)

    @property
    def cycle(self) -> int:
        """The cycle number of the current step (0 outside any repeat block)."""
        return self.recipe.cycle_of(self.step_index)

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
        # A new step is never on the instrument yet (the previous one ended, or nothing ran).
        self.start = StartState.AWAITING
        self.account = StepAccount()
        self.captured = []
        self.checkpoints = {}
        self.step_t0_host_s = None
        self.k_paused_s = 0.0
        self.host_end = None
        self.hold_seen = None
        self.program_t0_s = None
        self.restart_s = None
        self.restarts = 0
        self.carried = None

    def note_start(self, time_s: float, voltage_v: float) -> bool:
        """The instrument's start record of the current step's program (step time 0 on its first instrument step).
        True when it starts the step itself, False when it starts what was left of it after a restart."""
        self.program_t0_s = time_s
        if self.account.started_s is None:
            self.account.started_s = time_s
            self.account.start_voltage_v = voltage_v
            return True
        return False

    def restart_after_watchdog(self, end: EndRecord) -> bool:
        """The instrument's watchdog stopped this step (no host was there): account what it did and point the run
        at what is left of it (``remaining_step``), not yet started. False when nothing is left to run.

        The same end record read twice (a host that died before it was stored) is applied once.
        """
        if self.restart_s is not None and end.time_s <= self.restart_s:
            return True
        acc = self.account
        done = (acc.ah + end.step_ah, acc.wh + end.step_wh, acc.duration_s + end.step_time_s)
        if self.remainder(*done) is None:
            return False
        self.apply_restart(end.time_s, self.restarts + 1, done)
        if self.start is StartState.STARTED:
            self.start_transition(StartState.AWAITING)
        else:
            self.start = StartState.AWAITING  # a start in doubt: the watchdog end proves the program ran and stopped
        return True

    def remainder(self, ah: float, wh: float, duration_s: float) -> CompiledStep | None:
        """What is left of the current step after ``duration_s`` and ``ah`` (None: nothing)."""
        return remaining_step(compile_step(self.step, self.recipe, self.nominal_capacity_ah), duration_s, ah)

    def apply_restart(self, restart_s: float, restarts: int, done: tuple[float, float, float]) -> None:
        """Point the step at what is left of it after ``done`` = (Ah, Wh, s), cut at instrument time ``restart_s``."""
        self.account.ah, self.account.wh, self.account.duration_s = done
        self.compiled = self.remainder(*done)
        self.restart_s, self.restarts, self.carried = restart_s, restarts, done
        self.seq_id = None
        self.program_t0_s = None
        if self.step.kind == "dcir":
            self.captured = []  # the sequence runs again whole: its resistance comes from the new pulse

    def note_end(self, end: EndRecord) -> StepResultRecord | None:
        """Account an instrument step's end record; return the step result when the recipe step is over."""
        code = end.end_code
        acc = self.account
        acc.ah += end.step_ah
        acc.wh += end.step_wh
        acc.duration_s += end.step_time_s
        assert self.compiled is not None
        n_steps = len(self.compiled.program.steps)
        finished = code in _STOPPING_CODES or EndCode.FAIL_BASE < code < EndCode.ABORT or end.sub_step >= n_steps
        if not finished:
            return None
        started_s = acc.started_s if acc.started_s is not None else end.time_s - acc.duration_s
        reason = self.compiled.end_reason(code)
        if code == EndCode.ABORT and self.host_end is not None:
            reason = self.host_end  # the host ended the step on purpose (its dV/dt or temperature end)
        self.end_reason = reason
        self.steps_done += 1
        step = self.step
        soc_start = self.soc
        measurement: Measurement | None = None
        error: str | None = None
        try:
            if step.kind == "precheck" and reason == "duration":
                measurement = self._precheck(step, end.voltage_v)
            else:
                measurement = self._step_measurement(step, reason, acc.started_s)
        except ValueError as exc:
            error = str(exc)
        self._account_soc(step, reason, acc.ah)
        details = StepDetails(
            end_code=code,
            seq_id=self.seq_id,
            soc_start=soc_start,
            soc_end=self.soc,
            measurement=measurement,
            error=error,
        )
        return StepResultRecord(
            run_id=self.run_id,
            step_index=self.step_index,
            step_id=step.id,
            kind=step.kind,
            started_s=started_s,
            ended_s=end.time_s,
            duration_s=acc.duration_s,
            ah=acc.ah,
            wh=acc.wh,
            start_voltage_v=acc.start_voltage_v if acc.start_voltage_v is not None else float("nan"),
            end_voltage_v=end.voltage_v,
            end_reason=reason,
            details=details,
            cycle=self.cycle,
        )

    def _precheck(self, step: Any, end_v: float) -> PrecheckMeasurement:
        """Judge a pre-check from its start and end records: OCV in the window, drop over the rest small enough."""
        ocv_v = self.account.start_voltage_v
        if ocv_v is None:
            raise ValueError("precheck: no start record (the OCV was not logged)")
        drop_mv = (ocv_v - end_v) * 1000.0
        reason = ""
        if ocv_v < step.ocv_min_v:
            reason = f"OCV {ocv_v:.4g} V below {step.ocv_min_v:g} V"
        elif ocv_v > step.ocv_max_v:
            reason = f"OCV {ocv_v:.4g} V above {step.ocv_max_v:g} V"
        elif drop_mv > step.max_drop_mv:
            reason = f"voltage fell {drop_mv:.3g} mV in {step.rest_s:g} s at rest (max {step.max_drop_mv:g} mV): short?"
        self.rejected = reason or None
        return PrecheckMeasurement(ocv_v=ocv_v, drop_mv=drop_mv, rejected=reason)

    def start_host_step(self, now_s: float) -> None:
        """A host step (no instrument program) starts at once: nothing goes to the instrument, so nothing can
        reach it twice; the cell rests with its output off meanwhile."""
        self.start_transition(StartState.SENT)
        self.start_transition(StartState.STARTED)
        if self.state is RunState.PENDING:
            self.transition(RunState.RUNNING)
        self.account.started_s = now_s
        self.step_t0_host_s = now_s

    def finish_host_step(self, now_s: float, reason: str) -> StepResultRecord:
        """The step result of a finished host step (host clock times, no charge moved)."""
        started_s = self.account.started_s if self.account.started_s is not None else now_s
        self.end_reason = reason
        self.steps_done += 1
        step = self.step
        return StepResultRecord(
            run_id=self.run_id,
            step_index=self.step_index,
            step_id=step.id,
            kind=step.kind,
            started_s=started_s,
            ended_s=now_s,
            duration_s=now_s - started_s,
            ah=0.0,
            wh=0.0,
            start_voltage_v=self.last_voltage_v,
            end_voltage_v=self.last_voltage_v,
            end_reason=reason,
            details=StepDetails(end_code=EndCode.NONE, seq_id=None, soc_start=self.soc, soc_end=self.soc),
            cycle=self.cycle,
        )

    def _step_measurement(self, step: Any, reason: str, started_s: float | None) -> Measurement | None:
        """DCIR or OCV/K-value of a finished dcir or age step (only when it ran to its end)."""
        if step.kind not in ("dcir", "age") or reason != "duration":
            return None
        rows = np.concatenate(self.captured) if self.captured else np.empty((0, len(LOG_COL)))
        if step.kind == "dcir":
            pulse = (
                metrics.dcir_iec61960(rows)
                if step.method == "iec61960"
                else metrics.dcir_single(rows, step.sample_at_s)
            )
            return dataclasses.replace(
                pulse, method=step.method, direction=step.direction, pulse_s=step.duration_s, soc=round(self.soc, 6)
            )
        # age: timer-measured checkpoints where the timers caught the cell in this step, else the data log.
        if started_s is None and not len(rows):
            raise ValueError("age: no record of the step (neither its start nor any reading)")
        start = started_s if started_s is not None else float(rows[0, LOG_COL["time_s"]])
        from_log = metrics.ocv_from_log(rows, start, step.ocv_at_s) if len(rows) else []
        times, volts, sources = [], [], []
        for k, at_s in enumerate(step.ocv_at_s):
            if k in self.checkpoints:
                # A timer reading is host clock time: step time is measured from the step's host anchor.
                t, v = self.checkpoints[k]
                times.append(t - (self.step_t0_host_s if self.step_t0_host_s is not None else t - at_s))
                volts.append(v)
                sources.append("timer")
            elif from_log:
                times.append(at_s)
                volts.append(from_log[k])
                sources.append("log")
        k_value = metrics.k_value_mv_per_day(times, volts, paused_s=self.k_paused_s)
        return AgeMeasurement(
            ocv_at_s=tuple(times),
            ocv_v=tuple(volts),
            ocv_source=tuple(sources),
            k_mv_per_day=k_value,
            temperature_c=float(rows[-1, LOG_COL["temp_c"]]) if len(rows) else float("nan"),
            k_paused_s=self.k_paused_s,
        )

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
                "start": self.start.value,
                "started_s": self.account.started_s,
                "start_voltage_v": self.account.start_voltage_v,
                "ah": self.account.ah,
                "wh": self.account.wh,
                "duration_s": self.account.duration_s,
                "soc_ah": self.soc_ah,
                "capacity_ref_ah": self.capacity_ref_ah,
                "host_end": self.host_end,
                "hold_seen": self.hold_seen,
                "restart_s": self.restart_s,
                "restarts": self.restarts,
                "carried": list(self.carried) if self.carried is not None else None,
            },
            sort_keys=True,
        )
