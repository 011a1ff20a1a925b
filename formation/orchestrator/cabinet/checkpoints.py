"""CheckpointBook: the OCV checkpoints of a cabinet's age steps, scheduled as persistent timers and measured in
one batched voltage query per poll.

A checkpoint is due at the step's host anchor plus its offset (clock time, formation.orchestrator.timebase); the
timer that fires it lives in the line's database, so a restarted host still takes each checkpoint once. What the
timer hands over is only *which* reading is due; the reading itself is taken here, in the next poll.
"""

from __future__ import annotations

from formation.clock import Clock
from formation.instruments.bt2200 import Bt2200Cycler
from formation.orchestrator.cabinet.index import RunIndex
from formation.orchestrator.run import ChannelRun
from formation.orchestrator.timers import LineTimers


class CheckpointBook:
    """Schedules a cabinet's checkpoints and takes the readings that are due; the timers' target."""

    def __init__(self, name: str, cycler: Bt2200Cycler, clock: Clock, timers: LineTimers | None) -> None:
        self.name = name
        self.cycler = cycler
        self.clock = clock
        self.timers = timers
        self.job_id: int | None = None
        self._due: list[tuple[int, int, int]] = []

    def attach(self, job_id: int) -> None:
        """Receive this job's checkpoints, including any that fired while no host was attached."""
        self.job_id = job_id
        if self.timers is not None:
            self.timers.register(self.name, self)

    def detach(self) -> None:
        """Stop receiving checkpoints."""
        if self.timers is not None:
            self.timers.unregister(self.name, self)

    def schedule(self, run: ChannelRun) -> None:
        """Schedule every checkpoint of the age step ``run`` has just started, on the step's host anchor."""
        if self.timers is None or self.job_id is None or run.step_t0_host_s is None:
            return
        for k, at_s in enumerate(run.step.ocv_at_s):
            self.timers.schedule_checkpoint(
                self.name, self.job_id, run.run_id, run.step_index, k, run.step_t0_host_s + at_s
            )

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None:
        """A checkpoint timer fired: measure that cell's OCV in the next poll (batched with any others due)."""
        if job_id == self.job_id:
            self._due.append((run_id, step_index, k))

    @property
    def any_due(self) -> bool:
        """Whether a reading waits for the next poll."""
        return bool(self._due)

    async def measure_due(self, index: RunIndex) -> None:
        """One batched voltage query for every run whose checkpoint is due and which is still in that step."""
        due, self._due = self._due, []
        targets: list[tuple[ChannelRun, int]] = []
        for run_id, step_index, k in due:
            run = index.get(run_id)
            if run is not None and run.step_index == step_index and not run.terminal and not run.awaiting_start:
                targets.append((run, k))
        if not targets:
            return
        measured = await self.cycler.measure([r.channel for r, _ in targets])
        now = self.clock.now()
        for (run, k), volts in zip(targets, measured.voltage_v, strict=True):
            run.checkpoints[k] = (now, float(volts))
