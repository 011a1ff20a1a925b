"""An in-memory cabinet double for the supervisor's parts: no socket, no physics, every command counted.

Not the simulator (that is formation/sim, over TCP) and not a mock: a small state table per channel with the
cycler driver's method names, and switches to lose a reply or refuse a command, so a test can put a part through
the failures it must survive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from formation.errors import InstrumentTimeout
from formation.instruments.bt2200 import Measurement
from formation.instruments.program import LOG_COLUMNS, CellState, StepProgram


class CabinetDouble:
    """Per channel: state code, sequence and step; a data log; programs by content; counted starts and aborts."""

    def __init__(self, channels: int = 8) -> None:
        self.state = {ch: CellState.ENABLED for ch in range(1, channels + 1)}
        self.seq = dict.fromkeys(range(1, channels + 1), 0)
        self.programs: dict[StepProgram, int] = {}
        #: (channel, seq) -> how many times a start reached the instrument.
        self.starts: Counter[tuple[int, int]] = Counter()
        self.aborts: Counter[int] = Counter()
        self.log: list[np.ndarray] = []
        self.voltage_v = 3.7
        #: The next start is carried out, then its reply is lost.
        self.lose_next_start_reply = False
        #: The next start is lost on the way (never carried out).
        self.drop_next_start = False
        self.fail_aborts = 0
        self.forgot_programs = 0
        #: Programs the host stopped trusting after a failed start (``forget_program``).
        self.forgotten: list[StepProgram] = []

    async def load_program(self, program: StepProgram) -> int:
        return self.programs.setdefault(program, len(self.programs) + 1)

    def forget_program(self, program: StepProgram) -> None:
        self.forgotten.append(program)

    async def start(self, channels: Sequence[int], seq_id: int) -> None:
        if self.drop_next_start:
            self.drop_next_start = False
            raise InstrumentTimeout("no reply", command="CELL:INIT")
        for ch in channels:
            self.starts[(ch, seq_id)] += 1
            self.state[ch] = CellState.RUNNING
            self.seq[ch] = seq_id
        if self.lose_next_start_reply:
            self.lose_next_start_reply = False
            raise InstrumentTimeout("no reply", command="CELL:INIT")

    def finish(self, channel: int) -> None:
        """The running step of ``channel`` ended on the instrument."""
        self.state[channel] = CellState.DONE

    async def step_positions(self, channels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        seqs = np.array([self.seq[ch] for ch in channels], dtype=np.int64)
        return seqs, np.where(seqs > 0, 1, 0)

    async def status(self, channels: Sequence[int]) -> np.ndarray:
        return np.array([int(self.state[ch]) for ch in channels], dtype=np.int64)

    async def abort(self, channels: Sequence[int]) -> None:
        if self.fail_aborts:
            self.fail_aborts -= 1
            raise InstrumentTimeout("no reply", command="CELL:ABORT")
        for ch in channels:
            self.aborts[ch] += 1
            if self.state[ch] in (CellState.RUNNING, CellState.ENABLED):
                self.state[ch] = CellState.ABORTED

    def forget_programs(self) -> None:
        self.forgot_programs += 1

    async def measure(self, channels: Sequence[int]) -> Measurement:
        n = len(channels)
        v = np.full(n, self.voltage_v)
        return Measurement(v, np.zeros(n), np.zeros(n), np.full(n, 25.0))

    def add_record(self, **values: float) -> None:
        """Append a data-log record (``rec`` numbered in order unless given)."""
        row = np.zeros(len(LOG_COLUMNS))
        row[LOG_COLUMNS.index("rec")] = len(self.log) + 1
        for k, v in values.items():
            row[LOG_COLUMNS.index(k)] = v
        self.log.append(row)

    async def read_log(self, from_rec: int, max_rows: int = 100_000) -> np.ndarray:
        rows = [r for r in self.log if r[0] >= from_rec][:max_rows]
        return np.array(rows) if rows else np.empty((0, len(LOG_COLUMNS)))
