"""The instrument-side data log: numbered records, bounded, acknowledged by the host's next read.

Records are rows of float64 in :data:`formation.sim.wire.LOG_COLUMNS` order, kept in one growable
array (appends are a slice copy, not a Python object per row).
"""

from __future__ import annotations

import numpy as np

from formation.sim.wire import LOG_COL, LOG_COLUMNS

#: Unacknowledged records kept before the oldest are dropped (docs/bt2200-dialect.md).
DEFAULT_MAX_ROWS = 2_000_000
_N_COLS = len(LOG_COLUMNS)
_INITIAL_ROWS = 4096
_FORMAT_OF: dict[str, str] = {
    "rec": "%d",
    "cell": "%d",
    "seq": "%d",
    "step": "%d",
    "time_s": "%.3f",
    "step_time_s": "%.3f",
    "voltage_v": "%.6f",
    "current_a": "%.6f",
    "step_ah": "%.9g",
    "step_wh": "%.9g",
    "temp_c": "%.3f",
    "end": "%d",
}
#: ``DATA:LOG?`` text format of each column, in :data:`LOG_COLUMNS` order.
LOG_FORMATS: tuple[str, ...] = tuple(_FORMAT_OF[name] for name in LOG_COLUMNS)


class DataLog:
    """Bounded FIFO of log records with record numbers (``rec``) that start at 1."""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self.clear()

    def clear(self) -> None:
        """Forget every record; numbering restarts at 1 (``*RST``)."""
        self._buf = np.empty((min(_INITIAL_ROWS, self.max_rows), _N_COLS), dtype=np.float64)
        self._head = 0  # row of the oldest kept record
        self._tail = 0  # one past the newest
        self._head_rec = 1  # rec of the row at _head
        self.lost = 0

    @property
    def next_rec(self) -> int:
        """The rec the next appended record will get."""
        return self._head_rec + (self._tail - self._head)

    def __len__(self) -> int:
        return self._tail - self._head

    def append(self, rows: np.ndarray) -> None:
        """Append records (shape ``(k, 12)``); their ``rec`` column is assigned here."""
        k = rows.shape[0]
        if k == 0:
            return
        if k > self.max_rows:
            self.lost += k - self.max_rows
            self._head_rec += k - self.max_rows  # those recs were issued and lost at once
            rows = rows[-self.max_rows :]
            k = self.max_rows
        overflow = len(self) + k - self.max_rows
        if overflow > 0:
            self._head += overflow
            self._head_rec += overflow
            self.lost += overflow
        self._reserve(k)
        first = self.next_rec
        dst = self._buf[self._tail : self._tail + k]
        dst[:] = rows
        dst[:, LOG_COL["rec"]] = np.arange(first, first + k, dtype=np.float64)
        self._tail += k

    def _reserve(self, k: int) -> None:
        if self._tail + k <= self._buf.shape[0]:
            return
        live = len(self)
        capacity = self._buf.shape[0]
        # Headroom above max_rows: a full log compacts once per max_rows/4 appended rows, not per append.
        limit = self.max_rows + self.max_rows // 4 + 1
        if live + k > capacity // 2 and capacity < limit:
            capacity = min(max(2 * capacity, live + k), limit)
        new = np.empty((capacity, _N_COLS), dtype=np.float64) if capacity != self._buf.shape[0] else self._buf
        new[:live] = self._buf[self._head : self._tail]  # overlapping copy is safe: numpy buffers it
        self._buf, self._head, self._tail = new, 0, live

    def acknowledge(self, below_rec: int) -> None:
        """Discard every record with rec < ``below_rec``."""
        drop = min(max(below_rec - self._head_rec, 0), len(self))
        self._head += drop
        self._head_rec += drop
        if self._head == self._tail:
            self._head = self._tail = 0

    def read(self, from_rec: int, max_rows: int) -> np.ndarray:
        """Acknowledge rec < ``from_rec`` and return a copy of up to ``max_rows`` records from there on."""
        self.acknowledge(from_rec)
        n = min(max(max_rows, 0), len(self))
        return self._buf[self._head : self._head + n].copy()


_ROW_FORMAT = ",".join(LOG_FORMATS) + "\n"


def format_records(rows: np.ndarray) -> str:
    """CSV text of records with the fixed per-column formats, every line ending in ``\\n``."""
    if rows.shape[0] == 0:
        return ""
    # One %-format over the whole block runs the per-row loop in C: about twice as fast as np.savetxt.
    return (_ROW_FORMAT * rows.shape[0]) % tuple(rows.ravel().tolist())
