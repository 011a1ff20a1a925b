"""The states of a run and of a job, each with its table of allowed transitions.

They are the orchestrator's state machines and the store's vocabulary at once (the ``state`` columns of ``Run``
and ``Job`` hold these values), so they live here, below both. ``ChannelRun`` raises
:class:`~formation.errors.StateError` on an illegal run or start transition (a bug, never swallowed); the store
only moves a job along ``JOB_TRANSITIONS``.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """Where one cell's run is; terminal states are DONE, FAULTED and ABORTED."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTING = "aborting"
    DONE = "done"
    FAULTED = "faulted"
    ABORTED = "aborted"


RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.ABORTED, RunState.FAULTED}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.ABORTING, RunState.DONE, RunState.FAULTED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.ABORTING, RunState.FAULTED, RunState.ABORTED}),
    RunState.ABORTING: frozenset({RunState.ABORTED, RunState.FAULTED}),
    RunState.DONE: frozenset(),
    RunState.FAULTED: frozenset(),
    RunState.ABORTED: frozenset(),
}
TERMINAL_RUN_STATES = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)


class StartState(StrEnum):
    """Whether the step a run's cursor points at has been started on the instrument: the guard against
    starting a step (a charge) twice. A host that is not sure asks the instrument before it starts anything."""

    #: Not sent: safe to start.
    AWAITING = "awaiting"
    #: The start command is on its way; its reply has not come back.
    SENT = "sent"
    #: Unknown whether the start reached the instrument (its reply was lost, or the host restarted).
    UNSURE = "unsure"
    #: The instrument shows a finished sequence on the channel (this step's, or the one before): the next drain
    #: shows whether this step's start record exists.
    WAIT_RECORD = "wait_record"
    #: Confirmed running on the instrument (reply, start record, or the instrument's own status).
    STARTED = "started"


START_TRANSITIONS: dict[StartState, frozenset[StartState]] = {
    StartState.AWAITING: frozenset({StartState.SENT, StartState.UNSURE}),
    StartState.SENT: frozenset({StartState.STARTED, StartState.UNSURE}),
    StartState.UNSURE: frozenset({StartState.STARTED, StartState.WAIT_RECORD, StartState.AWAITING}),
    StartState.WAIT_RECORD: frozenset({StartState.STARTED, StartState.AWAITING}),
    # The step ended: the cursor moves to the next step, not yet sent.
    StartState.STARTED: frozenset({StartState.AWAITING}),
}
#: States in which the step may already be on the instrument although the host has not seen it start.
START_IN_DOUBT = frozenset({StartState.SENT, StartState.UNSURE, StartState.WAIT_RECORD})


class JobState(StrEnum):
    """Where one launch (a recipe on a set of channels of one cabinet) is.

    ``queued``: written by ``formation run launch`` for the daemon (``formation serve``), which claims it when its
    cabinet is free and its start time has come. ``interrupted``: the host closed the job with runs unfinished
    (Ctrl-C after the aborts were not all confirmed, a crash noticed at the next start, a database down at the end,
    a daemon stopped with SIGTERM); ``formation run resume`` or the next daemon takes it up again.
    """

    QUEUED = "queued"
    RUNNING = "running"
    ABORTING = "aborting"
    INTERRUPTED = "interrupted"
    DONE = "done"
    ABORTED = "aborted"
    FAULTED = "faulted"


_JOB_ENDS = frozenset({JobState.DONE, JobState.ABORTED, JobState.FAULTED, JobState.INTERRUPTED})
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # A queued job that never started is aborted (run abort) without touching an instrument.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.ABORTED}),
    JobState.RUNNING: _JOB_ENDS | {JobState.ABORTING},
    # Runs that all finished before the abort reached them end the job as done.
    JobState.ABORTING: _JOB_ENDS,
    # Nobody supervises an interrupted job: `run abort` switches its channels off but leaves it for a resume,
    # which settles the runs (an `aborting` job would hold its cabinet with no process to finish it).
    JobState.INTERRUPTED: frozenset({JobState.RUNNING}) | _JOB_ENDS,
    JobState.DONE: frozenset(),
    JobState.ABORTED: frozenset(),
    JobState.FAULTED: frozenset(),
}
#: A job in one of these states holds its cabinet: one job per cabinet (they share the data log and sequences).
ACTIVE_JOB_STATES = frozenset({JobState.RUNNING, JobState.ABORTING})
#: Jobs `formation run resume` may take up.
RESUMABLE_JOB_STATES = frozenset({JobState.RUNNING, JobState.ABORTING, JobState.INTERRUPTED})


def job_states_leading_to(new: JobState) -> frozenset[JobState]:
    """Every state from which a job may move to ``new`` (the guard of a conditional update in the store)."""
    return frozenset(old for old, nxt in JOB_TRANSITIONS.items() if new in nxt)
