"""The instrument–host clock offset, measured when a supervisor connects (docs/architecture.md, "Time bases").

The instrument's clock (``SYST:DATE?;SYST:TIME?``, the clock its data log's ``time_s`` comes from) is read a few
times between two host clock readings; the reading with the shortest round trip gives the offset
``instrument − host`` at the midpoint, good to half that round trip (in clock seconds: at ×1000 a 2 ms round trip
is 1 s). Step anchors and age checkpoints use it (:func:`formation.orchestrator.timebase.anchor_s`), so a host whose
clock started elsewhere (another process, a restart at a scaled clock, another machine) still places an instrument
event on its own clock. An instrument that cannot tell its time leaves the offset unknown: anchors then fall back to
the newest drained record (:func:`formation.orchestrator.timebase.host_anchor_s`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from formation.clock import Clock
from formation.errors import InstrumentError

log = logging.getLogger(__name__)

#: Readings taken; the one with the shortest round trip wins.
READINGS = 3


class TimePort(Protocol):
    """What the measurement needs of a cycler driver (``Bt2200Cycler`` provides it)."""

    async def instrument_time_s(self) -> float: ...

    async def clear_status(self) -> None: ...


async def measure_offset_s(cycler: TimePort, clock: Clock, name: str) -> float | None:
    """``instrument clock − host clock`` in seconds, or None when the instrument does not tell its time."""
    best: tuple[float, float] | None = None
    try:
        for _ in range(READINGS):
            before = clock.now()
            instrument_s = await cycler.instrument_time_s()
            after = clock.now()
            if best is None or after - before < best[0]:
                best = (after - before, instrument_s - (before + after) / 2.0)
    except InstrumentError as exc:
        log.warning("%s: instrument clock not read (%s); anchors use the newest drained record", name, exc)
        await cycler.clear_status()  # an unknown query leaves its error in the queue: not the next command's
        return best[1] if best is not None else None
    assert best is not None
    return best[1]
