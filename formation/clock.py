"""Clocks: wall time, or simulated time running ``scale`` times faster than the wall.

One clock object is shared by every loop of a process (simulator and orchestrator alike), so that
periods written in clock seconds mean the same thing everywhere.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

#: A loop never sleeps less than this much wall time; it stretches its period and uses the real ``dt``.
MIN_WALL_SLEEP_S = 0.002


@runtime_checkable
class Clock(Protocol):
    """Time source for every loop: ``now()`` in unix seconds of clock time, ``sleep()`` in clock seconds."""

    scale: float

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time."""

    scale: float = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ScaledClock:
    """Simulated time, ``scale`` times faster than the wall, starting at ``start`` (unix seconds)."""

    def __init__(self, scale: float, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"clock scale must be positive, got {scale}")
        self.scale = float(scale)
        self._start = time.time() if start is None else float(start)
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds / self.scale, MIN_WALL_SLEEP_S))

    def wall_seconds(self, clock_seconds: float) -> float:
        """How long ``clock_seconds`` of clock time take on the wall."""
        return clock_seconds / self.scale


def make_clock(scale: float) -> Clock:
    """A wall clock for ``scale == 1``, a scaled clock otherwise."""
    return WallClock() if scale == 1.0 else ScaledClock(scale)
