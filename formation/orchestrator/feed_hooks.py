"""What the line tells the status feed: payloads built from the supervisor's runs and the chamber loop's steps.

The hooks run on the control path, so they only read what the control code already holds (each run's state,
cursor and latest reading, kept by :class:`~formation.orchestrator.cabinet.index.RunIndex`; the chamber's last
control step) and hand a payload to the :class:`~formation.feed.sink.FeedSink`, which never blocks. Aggregated
states are rate-limited in wall time to the feed's ``interval_s``, whatever the clock scale: a display looks at
them with human eyes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from formation.feed.payloads import CabinetState, ChamberState, ChannelState, FeedEvent, state_counts
from formation.orchestrator.run import ChannelRun
from formation.states import TERMINAL_RUN_STATES, JobState, RunState

if TYPE_CHECKING:
    from formation.chamber import ControlStep
    from formation.config import ChamberSite
    from formation.feed.sink import FeedSink

log = logging.getLogger(__name__)

#: A state is due once this share of the interval has passed: a loop that polls at the feed interval, give or
#: take its jitter, publishes at every poll instead of every other one.
INTERVAL_SLACK = 0.9


def _reading(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _step_fields(run: ChannelRun) -> tuple[int | None, str | None, str | None]:
    step = run.step
    if step is None:
        return None, None, None
    return run.step_index, str(step.id), str(step.kind)


class CabinetFeed:
    """The feed of one cabinet: aggregated state every ``interval_s``, channels and events on change."""

    def __init__(self, sink: FeedSink, cabinet: str, n_channels: int) -> None:
        self.sink = sink
        self.cabinet = cabinet
        self.n_channels = n_channels
        self._seen: dict[int, tuple[RunState, int]] = {}
        self._next_wall_s = -math.inf

    def observe(self, runs: Sequence[ChannelRun], job_id: int | None, *, force: bool = False) -> None:
        """After a poll: channels whose run state or step changed, their events, and the cabinet when due."""
        try:
            self._changes(runs, job_id)
            now = time.monotonic()
            if force or now >= self._next_wall_s:
                self._next_wall_s = now + INTERVAL_SLACK * self.sink.interval_s
                self.sink.publish_cabinet(self.cabinet_state(runs))
        except Exception:  # the feed must never stop supervision: a bug here is logged, not raised
            log.exception("feed: cabinet %s state not published", self.cabinet)

    def cabinet_state(self, runs: Sequence[ChannelRun]) -> CabinetState:
        """Every channel of the cabinet; channels without a run of this job are ``idle``."""
        n = max(self.n_channels, max((r.channel for r in runs), default=0))
        by_channel = {r.channel: r for r in runs}
        channels = list(range(1, n + 1))
        rows = [by_channel.get(ch) for ch in channels]
        steps = [_step_fields(r) if r is not None else (None, None, None) for r in rows]
        states = [r.state.value if r is not None else "idle" for r in rows]
        return CabinetState(
            cabinet=self.cabinet,
            channels=channels,
            state=states,  # type: ignore[arg-type]
            step_index=[s[0] for s in steps],
            step_id=[s[1] for s in steps],
            step_kind=[s[2] for s in steps],
            cell_id=[r.cell_id if r is not None else None for r in rows],
            voltage_v=[r.last_voltage_v if r is not None else None for r in rows],
            current_a=[r.last_current_a if r is not None else None for r in rows],
            temperature_c=[r.last_temperature_c if r is not None else None for r in rows],
            counts=state_counts(states),  # type: ignore[arg-type]
        )

    def _changes(self, runs: Sequence[ChannelRun], job_id: int | None) -> None:
        for run in runs:
            now = (run.state, run.step_index)
            before = self._seen.get(run.run_id)
            if before == now:
                continue
            self._seen[run.run_id] = now
            self.sink.publish_channel(self.channel_state(run, job_id))
            if run.state in TERMINAL_RUN_STATES:
                if before is None or before[0] not in TERMINAL_RUN_STATES:
                    self._run_end(run, job_id)
            elif before is not None and before[1] != now[1] and run.step is not None:
                self.sink.publish_event(
                    FeedEvent(
                        event="step",
                        code=str(run.step.kind),
                        message=f"{run.cell_id}: step {run.step_index} {run.step.id} ({run.step.kind})",
                        cabinet=self.cabinet,
                        channel=run.channel,
                        cell_id=run.cell_id,
                        run_id=run.run_id,
                        job_id=job_id,
                        step_id=str(run.step.id),
                    )
                )

    def channel_state(self, run: ChannelRun, job_id: int | None) -> ChannelState:
        """One channel's state now."""
        index, step_id, kind = _step_fields(run)
        return ChannelState(
            cabinet=self.cabinet,
            channel=run.channel,
            state=run.state.value,
            step_index=index,
            step_id=step_id,
            step_kind=kind,
            cell_id=run.cell_id,
            run_id=run.run_id,
            job_id=job_id,
            voltage_v=run.last_voltage_v,
            current_a=run.last_current_a,
            temperature_c=run.last_temperature_c,
        )

    def _run_end(self, run: ChannelRun, job_id: int | None) -> None:
        reason = f" ({run.end_reason})" if run.end_reason else ""
        self.sink.publish_event(
            FeedEvent(
                event="run_end",
                severity="info" if run.state is RunState.DONE else "warning",
                code=run.state.value,
                message=f"{run.cell_id}: run {run.run_id} {run.state.value}{reason}",
                cabinet=self.cabinet,
                channel=run.channel,
                cell_id=run.cell_id,
                run_id=run.run_id,
                job_id=job_id,
            )
        )

    def alarm(self, severity: str, code: str, message: str, run: ChannelRun | None, job_id: int | None) -> None:
        """An alarm the ledger raised (and stored, or tried to)."""
        try:
            self.sink.publish_event(
                FeedEvent(
                    event="alarm",
                    severity=severity,  # type: ignore[arg-type]
                    code=code,
                    message=message,
                    cabinet=self.cabinet,
                    channel=run.channel if run else None,
                    cell_id=run.cell_id if run else None,
                    run_id=run.run_id if run else None,
                    job_id=job_id,
                )
            )
        except Exception:
            log.exception("feed: alarm %s not published", code)

    def job_end(self, job_id: int | None, state: JobState, runs: Sequence[ChannelRun]) -> None:
        """The job closed: a last cabinet state and the job's end."""
        self.observe(runs, job_id, force=True)
        try:
            counts = state_counts([r.state.value for r in runs])
            summary = ", ".join(f"{n} {s}" for s, n in counts.items())
            self.sink.publish_event(
                FeedEvent(
                    event="job_end",
                    severity="info" if state is JobState.DONE else "warning",
                    code=state.value,
                    message=f"job {job_id} on {self.cabinet} {state.value}: {summary}",
                    cabinet=self.cabinet,
                    job_id=job_id,
                )
            )
        except Exception:
            log.exception("feed: end of job %s not published", job_id)


class ChamberFeed:
    """The feed of one chamber: its state every ``interval_s`` of wall time, at once when band or stability
    change, and its alarms."""

    def __init__(self, sink: FeedSink, site: ChamberSite) -> None:
        self.sink = sink
        self.site = site
        self._heating = frozenset(site.heating_valves)
        self._next_wall_s = -math.inf
        self._last_flags: tuple[bool, bool, bool, float] | None = None

    def step(self, step: ControlStep, readings: Mapping[int, float]) -> None:
        """After a control step: publish when due or when the chamber's condition changed."""
        try:
            flags = (step.in_band, step.stable, step.fail_safe, step.setpoint_c)
            now = time.monotonic()
            if flags == self._last_flags and now < self._next_wall_s:
                return
            self._last_flags = flags
            self._next_wall_s = now + INTERVAL_SLACK * self.sink.interval_s
            opened = sorted(step.command.open)
            self.sink.publish_chamber(
                ChamberState(
                    chamber=self.site.name,
                    setpoint_c=step.setpoint_c,
                    temperature_c=_reading(step.temperature_c),
                    temperatures_c={str(s): _reading(readings.get(s, math.nan)) for s in self.site.sensors},
                    heating_open=[c for c in opened if c in self._heating],
                    cooling_open=[c for c in opened if c not in self._heating],
                    band_c=self.site.band_c,
                    in_band=step.in_band,
                    stable=step.stable,
                    fail_safe=step.fail_safe,
                    demand=step.demand,
                )
            )
        except Exception:
            log.exception("feed: chamber %s state not published", self.site.name)

    def alarm(self, severity: str, code: str, message: str) -> None:
        """A chamber alarm."""
        try:
            self.sink.publish_event(
                FeedEvent(event="alarm", severity=severity, code=code, message=message, chamber=self.site.name)  # type: ignore[arg-type]
            )
        except Exception:
            log.exception("feed: chamber alarm %s not published", code)
