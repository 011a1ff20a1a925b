"""ChamberGate: the temperatures a job's steps ask of the chamber its cabinet stands in.

A step with ``chamber_c`` starts only once the chamber is stable at that set point (the cell rests, output off,
meanwhile); a ``chamber`` step is a host step that sets the chamber and, if asked, waits until it is stable; an
age step's K clock pauses while the chamber is out of band (the paused seconds go into ``k_paused_s`` and so
into the stored K). A set point the line cannot honour is refused at launch (``check_setpoints``), never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from formation.clock import Clock
from formation.errors import InputError
from formation.orchestrator.run import ChannelRun
from formation.recipes import Recipe
from formation.states import RunState, StartState
from formation.store.records import StepResultRecord


class ChamberPort(Protocol):
    """What the gate needs of a chamber loop (``formation.orchestrator.chamber_loop.ChamberLoop``)."""

    name: str

    @property
    def setpoint_c(self) -> float: ...

    def set_setpoint(self, setpoint_c: float) -> None: ...

    @property
    def stable(self) -> bool: ...

    @property
    def out_of_band_total_s(self) -> float: ...


def step_setpoint_c(step: Any) -> float | None:
    """The chamber temperature a step asks for: a chamber step's set point, else the step's ``chamber_c``."""
    if step is None:
        return None
    if step.kind == "chamber":
        return float(step.setpoint_c)
    value = getattr(step, "chamber_c", None)
    return None if value is None else float(value)


def check_setpoints(recipe: Recipe, cabinet: str, chamber: str | None, range_c: tuple[float, float] | None) -> None:
    """Refuse a recipe whose temperatures the cabinet cannot give: no chamber, or a set point out of its range."""
    for i, step in enumerate(recipe.steps):
        setpoint = step_setpoint_c(step)
        if setpoint is None:
            continue
        field = f"steps[{i}].{'setpoint_c' if step.kind == 'chamber' else 'chamber_c'}"
        if chamber is None:
            raise InputError(field, f"{setpoint:g} °C asked of cabinet {cabinet}, which stands in no chamber")
        if range_c is not None and not range_c[0] <= setpoint <= range_c[1]:
            raise InputError(field, f"{setpoint:g} °C is outside {range_c[0]:g}–{range_c[1]:g} °C of chamber {chamber}")


class ChamberGate:
    """Holds steps until their chamber temperature is stable, runs chamber steps, pauses K clocks."""

    def __init__(self, chamber: ChamberPort | None, clock: Clock) -> None:
        self.chamber = chamber
        self.clock = clock
        self._oob_seen_s = chamber.out_of_band_total_s if chamber is not None else 0.0

    def may_start(self, run: ChannelRun) -> bool:
        """Whether the run's next step may start now; asks the chamber for the step's temperature if needed."""
        setpoint = step_setpoint_c(run.step)
        if setpoint is None or self.chamber is None:
            return True
        if self.chamber.setpoint_c != setpoint:
            self.chamber.set_setpoint(setpoint)
            return False
        return self.chamber.stable

    def host_steps_due(self, runs: Sequence[ChannelRun]) -> list[tuple[ChannelRun, str]]:
        """Chamber steps that are over now, with their end reason (``set``, ``stable`` or ``timeout``)."""
        now = self.clock.now()
        out: list[tuple[ChannelRun, str]] = []
        for run in runs:
            if run.terminal or run.compiled is None or not run.compiled.host_step or run.step.kind != "chamber":
                continue  # hold steps are the HoldDesk's (cabinet/hostends.py)
            if run.start is not StartState.STARTED:
                run.start_host_step(now)
            step = run.step
            if self.chamber is None:  # pragma: no cover - refused at launch
                out.append((run, "no_chamber"))
                continue
            if self.chamber.setpoint_c != step.setpoint_c:
                self.chamber.set_setpoint(step.setpoint_c)
            if not step.wait:
                out.append((run, "set"))
            elif self.chamber.stable and self.chamber.setpoint_c == step.setpoint_c:
                out.append((run, "stable"))
            else:
                assert run.account.started_s is not None
                if now - run.account.started_s >= step.wait_limit_s:
                    out.append((run, "timeout"))
        return out

    def finish(self, run: ChannelRun, reason: str) -> StepResultRecord:
        """The step result of a chamber step that is over."""
        return run.finish_host_step(self.clock.now(), reason)

    def pause_k_clocks(self, runs: Sequence[ChannelRun]) -> None:
        """Add the chamber's out-of-band seconds since the last call to the pause of every age step between its
        first and last OCV checkpoint (K is measured over that span only)."""
        if self.chamber is None:
            return
        total = self.chamber.out_of_band_total_s
        delta, self._oob_seen_s = total - self._oob_seen_s, total
        if delta <= 0:
            return
        now = self.clock.now()
        for run in runs:
            step = run.step
            if (
                step is None
                or step.kind != "age"
                or run.start is not StartState.STARTED
                or run.state not in (RunState.RUNNING, RunState.PAUSED)
                or run.step_t0_host_s is None
            ):
                continue
            if step.ocv_at_s[0] <= now - run.step_t0_host_s <= step.ocv_at_s[-1]:
                run.k_paused_s += delta
