"""PollPacer: a supervisor's polls at a fixed rate on a grid, late polls measured and missed ones counted (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PollPacer:
    """Due times one interval apart (not an interval after the previous poll ended), in the caller's seconds.

    A poll that starts more than one interval after its due time is *missed*: counted once, and the grid moves on
    by whole intervals, so a stall is never followed by a burst of catch-up polls.
    """

    interval_s: float
    due_s: float
    missed: int = 0

    @classmethod
    def starting(cls, now_s: float, interval_s: float, phase: float | None = None) -> PollPacer:
        """A pacer whose first poll is due now, or (``phase`` 0-1) at that fraction of the interval on the grid
        of multiples of ``interval_s``, so pacers given different phases take turns."""
        if not interval_s > 0.0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        due_s = now_s
        if phase is not None:
            due_s += (phase * interval_s - now_s) % interval_s
        return cls(interval_s, due_s)

    def wait_s(self, now_s: float) -> float:
        """Seconds until the next poll is due (0 when it is due or late)."""
        return max(0.0, self.due_s - now_s)

    def begin(self, now_s: float) -> float:
        """A poll starts at ``now_s``: returns how late it is; a whole interval late counts as missed."""
        late_s = max(0.0, now_s - self.due_s)
        if late_s > self.interval_s:
            self.missed += 1
            self.due_s += self.interval_s * (late_s // self.interval_s)
        return late_s

    def done(self) -> None:
        """The poll is over: the next one is due one interval after this one was."""
        self.due_s += self.interval_s
