"""What a step's end means for its run, and a job's end for the job: the supervisor's decisions after the
instrument reports an end code (pure apart from the alarms it raises through the ledger)."""

from __future__ import annotations

from collections.abc import Sequence

from formation.instruments.program import EndCode
from formation.orchestrator.cabinet.hostends import judged_stop
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.run import ChannelRun
from formation.states import JobState, RunState


async def next_step(run: ChannelRun, code: int, n_steps: int, ledger: JobLedger) -> int | None:
    """After a recipe step ended with instrument end ``code``: the index of the run's next step, or None when the
    run ended (done, aborted, faulted by the instrument or by a host-judged end; alarms raised through ``ledger``)."""
    if code == EndCode.ABORT and run.host_end is not None:
        code = EndCode.TIME  # the host ended a judged step on purpose: the run goes on
    if code == EndCode.ABORT:
        if run.state is not RunState.ABORTING:
            run.transition(RunState.ABORTING)
        run.transition(RunState.ABORTED)
        return None
    if code == EndCode.WATCHDOG or code == EndCode.FAULT or EndCode.FAIL_BASE < code < EndCode.ABORT:
        reason = run.end_reason or EndCode.describe(code)
        run.transition(RunState.FAULTED)
        await ledger.alarm(
            "critical",
            "instrument_stop",
            f"{run.cell_id}: cell stopped by the instrument ({reason}) in step {run.step.id}",
            run=run,
        )
        return None
    if run.state is RunState.ABORTING:
        run.transition(RunState.ABORTED)
        return None
    if await judged_stop(run, ledger):
        return None
    if run.end_reason == "backstop":
        await ledger.alarm(
            "warning", "backstop", f"{run.cell_id}: step {run.step.id} ended on its time backstop", run=run
        )
    nxt = run.step_index + 1
    if nxt >= n_steps:
        run.step_index = nxt
        run.transition(RunState.DONE)
        return None
    return nxt


def job_end_state(runs: Sequence[ChannelRun]) -> JobState:
    """The state a job ends in, from its runs' states."""
    states = {r.state for r in runs}
    if states <= {RunState.DONE}:
        return JobState.DONE
    if all(r.terminal for r in runs):
        return JobState.ABORTED if RunState.ABORTED in states else JobState.FAULTED
    return JobState.INTERRUPTED
