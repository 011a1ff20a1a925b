"""SampleWriter: sample blocks go to the store on a worker thread behind a bounded queue.

Control never waits on the database unless the queue is full (back-pressure, bounded memory). The writer
reports the highest record number it has committed; the supervisor acknowledges the instrument's data log only
up to that record, so records not yet in the database stay on the instrument and survive a host crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np

from formation.errors import StoreError
from formation.store import Store

log = logging.getLogger(__name__)

#: Blocks waiting to be written before `submit` makes the poll wait.
QUEUE_BLOCKS = 32
#: Wall seconds between background checkpoints of an SQLite write-ahead log.
CHECKPOINT_S = 2.0
#: Pause before retrying a write the database refused (wall seconds).
RETRY_S = 1.0


class SampleWriter:
    """Writes sample blocks in order on a worker thread; an async context manager."""

    def __init__(self, store: Store, committed_rec: int = 0, *, name: str = "samples") -> None:
        self.store = store
        self.committed_rec = committed_rec
        self.name = name
        self.blocks_written = 0
        self.rows_written = 0
        self.write_wall_s: list[float] = []
        self.failures = 0
        #: Why the database refused the block being written (None once a write succeeds again).
        self.last_error: str | None = None
        self._queue: asyncio.Queue[tuple[np.ndarray, int]] = asyncio.Queue(QUEUE_BLOCKS)
        self._task: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SampleWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the writer task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-writer")
            self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name=f"{self.name}-checkpoint")

    async def submit(self, block: np.ndarray, last_rec: int) -> None:
        """Queue a block whose highest record is ``last_rec``; waits only when the queue is full."""
        await self._queue.put((block, last_rec))

    async def flush(self) -> None:
        """Wait until every queued block is committed."""
        await self._queue.join()

    @property
    def pending(self) -> int:
        """Blocks queued and not yet committed."""
        return self._queue.qsize()

    async def close(self, timeout_s: float | None = None) -> None:
        """Write what is queued (waiting at most ``timeout_s``), then stop the tasks.

        Blocks given up on are not lost: they were never acknowledged on the instrument.
        """
        if self._task is None:
            return
        if not self._task.done():
            try:
                await asyncio.wait_for(self.flush(), timeout_s)
            except TimeoutError:
                log.error("%d sample block(s) not written; they stay on the instrument", self.pending)
        for task in (self._task, self._checkpointer):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = self._checkpointer = None

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_S)  # wall time: this paces disk work, not the process
            try:
                await asyncio.to_thread(self.store.checkpoint)
            except Exception as exc:  # a failed checkpoint only leaves the log longer
                log.warning("checkpoint failed: %s", exc)

    async def _run(self) -> None:
        while True:
            block, last_rec = await self._queue.get()
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        if len(block):
                            await asyncio.to_thread(self.store.write_samples, block)
                    except Exception as exc:
                        # Keep the block and retry: the records stay unacknowledged on the instrument meanwhile.
                        # Any exception, not only StoreError: a writer that died would leave flush() waiting.
                        self.failures += 1
                        self.last_error = str(exc)
                        log.warning("sample write failed, retrying: %s", exc, exc_info=not isinstance(exc, StoreError))
                        await asyncio.sleep(RETRY_S)
                        continue
                    break
                self.last_error = None
                self.write_wall_s.append(time.perf_counter() - t0)
                if len(self.write_wall_s) > 10_000:
                    del self.write_wall_s[:5_000]
                self.blocks_written += 1
                self.rows_written += len(block)
                self.committed_rec = max(self.committed_rec, last_rec)
            finally:
                self._queue.task_done()
