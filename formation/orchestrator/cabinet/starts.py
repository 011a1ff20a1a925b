"""Step starts and their confirmation: the guard against starting a step (a charge) twice.

Every run carries a :class:`~formation.states.StartState` with its own transition table
(``formation.states.START_TRANSITIONS``):

    AWAITING ──send──► SENT ──reply──► STARTED ──step ended──► AWAITING (next step)
                         │ no reply
                         ▼
    (host restart) ──► UNSURE ──instrument RUNNING, or a start record──► STARTED
                         │ instrument DONE/FAIL with a sequence          │
                         ▼                                               │
                    WAIT_RECORD ──start record in the next drain─────────┘
                         │ no start record after one drain
                         └──► AWAITING ──► (sent again: it never reached the instrument)

A run whose start is in doubt is never sent again before the instrument has been asked: a running cell runs this
step (the previous step ended before this one could be started); a cell showing a finished sequence may have run
this step already or only the one before, and the next drain of the data log tells which by its start record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from formation.instruments.program import CellState, StepProgram
from formation.orchestrator.run import ChannelRun
from formation.states import START_IN_DOUBT, RunState, StartState

log = logging.getLogger(__name__)


class StartPort(Protocol):
    """What starting steps needs of a cycler driver (``Bt2200Cycler`` provides it)."""

    async def load_program(self, program: StepProgram) -> int: ...

    def forget_program(self, program: StepProgram) -> None: ...

    async def start(self, channels: Sequence[int], seq_id: int) -> None: ...

    async def step_positions(self, channels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...

    async def status(self, channels: Sequence[int]) -> np.ndarray: ...


def _started(run: ChannelRun, seq_id: int | None) -> None:
    run.seq_id = seq_id
    run.start_transition(StartState.STARTED)
    if run.state is RunState.PENDING:
        run.transition(RunState.RUNNING)


class StepStarter:
    """Starts every run whose step is not started, in groups of identical programs, never one twice."""

    def __init__(self, cycler: StartPort) -> None:
        self.cycler = cycler

    def start_record(self, run: ChannelRun, seq_id: int) -> None:
        """The drain brought the current step's start record (of sequence ``seq_id``): a start in doubt is
        confirmed."""
        if run.start in START_IN_DOUBT:
            _started(run, seq_id or run.seq_id)
        elif run.start is StartState.AWAITING:
            log.warning("run %s: a start record for a step the host has not started (ignored)", run.run_id)

    async def start_pending(
        self,
        runs: Sequence[ChannelRun],
        *,
        drained: bool = True,
        may_start: Callable[[ChannelRun], bool] | None = None,
    ) -> list[ChannelRun]:
        """Start what is due; returns the runs whose start state changed (to journal).

        ``may_start`` holds back runs whose step is not ready (its chamber temperature not yet stable); host steps
        (no instrument program) are never started here. ``drained``: the data log was read to its end since the
        last call. Without such a drain (the database is
        behind) a run waiting for its start record keeps waiting: the record may be on the instrument, unread.
        An instrument error on the start leaves its runs UNSURE and propagates: they are resolved next poll.
        """
        groups: dict[StepProgram, list[ChannelRun]] = {}
        for run in runs:
            if run.start is StartState.STARTED or run.terminal or run.state is RunState.ABORTING:
                continue
            assert run.compiled is not None
            if run.compiled.host_step:
                continue
            # A start in doubt is resolved whatever the chamber does: only fresh starts wait for it.
            if run.start is StartState.AWAITING and may_start is not None and not may_start(run):
                continue
            groups.setdefault(run.compiled.program, []).append(run)
        touched: list[ChannelRun] = []
        for program, group in groups.items():
            touched.extend(group)
            # The driver caches downloaded programs (and may reuse an old sequence id), so always ask it.
            seq_id = await self.cycler.load_program(program)
            await self._resolve_doubt(group, seq_id, drained)
            send = [r for r in group if r.start is StartState.AWAITING]
            if not send:
                continue
            for run in send:
                run.start_transition(StartState.SENT)
            try:
                await self.cycler.start([r.channel for r in send], seq_id)
            except BaseException:
                # The command may have reached the instrument before the reply was lost.
                for run in send:
                    run.start_transition(StartState.UNSURE)
                # And the sequence may not be what the host thinks it downloaded: download it again next time.
                self.cycler.forget_program(program)
                raise
            for run in send:
                _started(run, seq_id)
        return touched

    async def _resolve_doubt(self, group: list[ChannelRun], seq_id: int, drained: bool) -> None:
        """Ask the instrument about every run of ``group`` whose start is in doubt, and move each on."""
        doubt = [r for r in group if r.start in START_IN_DOUBT and (drained or r.start is not StartState.WAIT_RECORD)]
        if not doubt:
            return
        channels = [r.channel for r in doubt]
        seqs, _ = await self.cycler.step_positions(channels)
        codes = await self.cycler.status(channels)
        for run, seq, code in zip(doubt, seqs.tolist(), codes.tolist(), strict=True):
            if run.start is StartState.SENT:
                run.start_transition(StartState.UNSURE)
            if run.program_t0_s is not None or code == CellState.RUNNING:
                # The previous step ended before this one is started, so a running cell runs this step, whatever
                # its sequence id (a re-attached host does not know the ids the old process allocated).
                _started(run, int(seq) or seq_id)
            elif code in (CellState.DONE, CellState.FAIL) and seq != 0 and run.start is StartState.UNSURE:
                # Maybe this step ran and ended already, maybe only the one before: starting now could repeat a
                # charge. The next drain brings this step's start record if it ran.
                run.start_transition(StartState.WAIT_RECORD)
            else:
                # Idle, enabled, aborted — or a finished sequence with no start record after one drain: this
                # step never reached the instrument.
                run.start_transition(StartState.AWAITING)
