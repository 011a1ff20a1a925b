"""The four times of the line, named in one place (docs/architecture.md, "Time bases").

- **Clock time**: ``Clock.now()``, unix seconds, wall or scaled (``ScaledClock``). Every ``*_s`` column of the
  store, recipe durations, poll periods and checkpoint due times are clock time.
- **Wall time**: :func:`wall_s` (monotonic). It paces loops (a poll never sleeps less than a few ms of it),
  bounds VISA timeouts, measures how long a link has been down (the instrument's communication watchdog counts
  wall seconds too), and spaces writer retries. It never goes into a stored value; only cabinet leases store the
  wall date (:func:`unix_wall_s`), because processes at different clock scales share them.
- **Instrument time**: the ``time_s`` column of the instrument's data-log records: the plant's clock, at the same
  scale as the host's, possibly offset from it (another process, another machine). Stored samples keep it, so
  curves keep their resolution at any scale.
- **Host anchor of a step** (``ChannelRun.step_t0_host_s``): the host clock reading at which the instrument
  started the step: :func:`anchor_s` from the instrument–host clock offset measured at connect
  (``cabinet/clocksync.py``), else :func:`host_anchor_s` from the newest drained record. Age checkpoints are
  scheduled on it and converted back to step time with it, on the live path and after a resume alike, so a clock
  offset between host and instrument cancels.
"""

from __future__ import annotations

import time

#: Wall time for durations (monotonic seconds): link-loss timers, pacing. Not a date.
wall_s = time.monotonic
#: Wall time as a date (unix seconds): cabinet leases, shared by processes whatever their clock scale.
unix_wall_s = time.time


def host_anchor_s(host_now_s: float, instrument_latest_s: float, instrument_event_s: float) -> float:
    """The host clock reading at which an instrument event happened.

    ``instrument_latest_s`` is the instrument time of the newest record the host holds (read just now), so
    ``instrument_latest_s - instrument_event_s`` is how long ago, in clock seconds, the event happened.
    """
    return host_now_s - (instrument_latest_s - instrument_event_s)


def anchor_s(instrument_event_s: float, offset_s: float) -> float:
    """The host clock reading at which an instrument event happened, from the measured clock offset
    (``instrument − host``): exact however old the newest record is (an age step logging once an hour)."""
    return instrument_event_s - offset_s


def event_anchor_s(offset_s: float | None, host_now_s: float, instrument_latest_s: float, event_s: float) -> float:
    """The host clock reading of an instrument event: :func:`anchor_s` with a measured offset, else
    :func:`host_anchor_s` from the newest drained record."""
    if offset_s is not None:
        return anchor_s(event_s, offset_s)
    return host_anchor_s(host_now_s, instrument_latest_s, event_s)
