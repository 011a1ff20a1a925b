"""LogDrain: the data-log cursor of one cabinet, from the instrument's log to the sample writer.

The log is acknowledged only up to what the writer committed (decision 0002); records read but not yet committed
come again on the next read and are dropped here, so nothing is stored twice and nothing is lost if the host
dies. ``read_rec`` (the last record handed to the writer) moves only once records are handed off.
"""

from __future__ import annotations

import numpy as np

from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import LOG_COL, empty_log_block
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.writer import QUEUE_BLOCKS, SampleWriter
from formation.store import Store

#: Records per DATA:LOG? query; a backlog is drained in several queries within one cycle.
LOG_BLOCK_ROWS = 100_000


class LogDrain:
    """Reads new data-log records in blocks and hands sample blocks to a bounded writer."""

    def __init__(self, cycler: Bt2200Cycler, store: Store, ledger: JobLedger, name: str) -> None:
        self.cycler = cycler
        self.store = store
        self.ledger = ledger
        self.name = name
        self.read_rec = 0
        self.records_total = 0
        self.writer: SampleWriter | None = None
        #: Whether the last read went to the end of the instrument's log (False while the database is behind).
        self.read_to_end = False
        self._backlog_alarmed = False
        self._refused_alarmed = False

    def open(self, read_rec: int) -> None:
        """Start draining after record ``read_rec`` (idempotent for the writer)."""
        self.read_rec = read_rec
        if self.writer is None:
            self.writer = SampleWriter(self.store, read_rec, name=f"{self.name}-samples")
            self.writer.start()

    @property
    def committed_rec(self) -> int:
        """The last record committed to the store (the resume point written with the journal)."""
        return self.writer.committed_rec if self.writer is not None else self.read_rec

    async def read(self) -> tuple[np.ndarray, int]:
        """The records after the last one handed off, and the number of the last one read.

        With the database behind, nothing is read (the instrument keeps the records) and an alarm is raised once.
        """
        assert self.writer is not None
        last_read = self.read_rec
        await self._alarm_if_refused(self.writer.last_error)
        if self.writer.pending >= QUEUE_BLOCKS - 1:
            if not self._backlog_alarmed:
                self._backlog_alarmed = True
                await self.ledger.alarm(
                    "warning", "store_backlog", f"sample writes are behind ({self.writer.pending} blocks)"
                )
            self.read_to_end = False
            return empty_log_block(), last_read
        self._backlog_alarmed = False
        self.read_to_end = False  # until the loop below has read a short (final) block
        cursor = self.writer.committed_rec + 1
        blocks = []
        while True:
            block = await self.cycler.read_log(cursor, LOG_BLOCK_ROWS)
            if len(block):
                cursor = int(block[-1, LOG_COL["rec"]]) + 1
                fresh = block[block[:, LOG_COL["rec"]] > last_read]
                if len(fresh):
                    blocks.append(fresh)
                    last_read = int(fresh[-1, LOG_COL["rec"]])
            if len(block) < LOG_BLOCK_ROWS:
                self.read_to_end = True
                break
        records = np.concatenate(blocks) if blocks else empty_log_block()
        self.records_total += len(records)
        return records, last_read

    async def _alarm_if_refused(self, error: str | None) -> None:
        """One alarm per spell of refused sample writes (a full disk, a database away), not one per retry."""
        if error is None:
            self._refused_alarmed = False
        elif not self._refused_alarmed:
            self._refused_alarmed = True
            await self.ledger.alarm(
                "warning", "store_refused", f"sample writes refused, retrying; records wait on the instrument: {error}"
            )

    async def hand_off(self, samples: np.ndarray, last_read: int) -> None:
        """Queue a sample block whose records end at ``last_read``; the cursor moves past them."""
        assert self.writer is not None
        await self.writer.submit(samples, last_read)
        self.read_rec = last_read

    async def flush(self) -> None:
        """Wait until every handed-off block is committed."""
        if self.writer is not None:
            await self.writer.flush()

    async def close(self, timeout_s: float) -> None:
        """Write what is queued (at most ``timeout_s``) and stop the writer."""
        if self.writer is not None:
            await self.writer.close(timeout_s=timeout_s)
