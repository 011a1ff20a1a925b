"""EventQueue: a FIFO of serialised events that keeps a bounded part in memory and spills the rest to disk.

Why not a bounded deque that drops, or an unbounded one: events (alarms, completions) must never be dropped while
the process lives, but a broker that is down for a week at a busy line must not grow the orchestrator's memory
without limit either. So the first ``memory_cap`` events wait in a deque, and while that is full every newer event
is appended to an anonymous temporary file (one JSON line each, written straight away: a few microseconds, on
the caller's thread) and read back, in order, as the deque drains. Only a full disk can lose an event; that is
counted in ``lost`` and logged, never raised into the caller.
"""

from __future__ import annotations

import logging
import tempfile
from collections import deque
from typing import IO

log = logging.getLogger(__name__)

#: Events held in memory before newer ones spill to disk.
DEFAULT_MEMORY_CAP = 10_000


class EventQueue:
    """First in, first out; ``peek``/``pop`` at the head, ``put`` at the tail. Not thread-safe (one event loop)."""

    def __init__(self, memory_cap: int = DEFAULT_MEMORY_CAP) -> None:
        if memory_cap < 1:
            raise ValueError("memory_cap: must be at least 1")
        self.memory_cap = memory_cap
        self._memory: deque[bytes] = deque()
        self._spill: IO[bytes] | None = None
        self._spilled = 0  # events in the file not yet read back
        self._read_at = 0  # file offset of the next event to read back
        #: Events that went to disk since the queue was made (a measure of how long the broker was away).
        self.spilled_total = 0
        #: Events lost because the spill file could not be written (a full disk).
        self.lost = 0

    def __len__(self) -> int:
        return len(self._memory) + self._spilled

    @property
    def spilled(self) -> int:
        """Events waiting on disk now."""
        return self._spilled

    def put(self, event: bytes) -> None:
        """Append one serialised event (it must not contain a newline: compact JSON never does)."""
        if b"\n" in event:
            raise ValueError("event: a serialised event may not contain a newline")
        if self._spilled == 0 and len(self._memory) < self.memory_cap:
            self._memory.append(event)
            return
        try:
            if self._spill is None:
                # Lives as long as the queue (closed in close()), so no with-block.
                self._spill = tempfile.TemporaryFile(prefix="formation-feed-events-")  # noqa: SIM115
            self._spill.seek(0, 2)
            self._spill.write(event + b"\n")
        except OSError as exc:
            self.lost += 1
            log.error("feed: event lost, the spill file cannot be written (%d lost so far): %s", self.lost, exc)
            return
        self._spilled += 1
        self.spilled_total += 1

    def peek(self, n: int) -> list[bytes]:
        """Up to ``n`` events from the head, oldest first, without removing them."""
        self._refill()
        return [self._memory[i] for i in range(min(n, len(self._memory)))]

    def pop(self, n: int) -> None:
        """Remove ``n`` events from the head (those ``peek`` returned and that were delivered)."""
        for _ in range(min(n, len(self._memory))):
            self._memory.popleft()
        self._refill()

    def _refill(self) -> None:
        """Move spilled events back into memory once the deque has room, in their order."""
        if not self._spilled or self._spill is None or len(self._memory) >= self.memory_cap:
            return
        self._spill.flush()
        self._spill.seek(self._read_at)
        while self._spilled and len(self._memory) < self.memory_cap:
            line = self._spill.readline()
            if not line.endswith(b"\n"):  # cannot happen unless the file was cut: keep what is whole
                break
            self._memory.append(line[:-1])
            self._spilled -= 1
        self._read_at = self._spill.tell()
        if self._spilled == 0:
            # Everything read back: start the file afresh so it does not grow across outages.
            self._spill.seek(0)
            self._spill.truncate()
            self._read_at = 0

    def close(self) -> None:
        """Remove the spill file (the events in it are gone with the process anyway)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
