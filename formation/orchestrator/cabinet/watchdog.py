"""The recipe's policy for a cell its instrument's watchdog stopped while no host was there.

The instrument's communication watchdog (``SYST:COMM:WDOG``) switches every running cell off when no host has
spoken for ``watchdog_s``: the step ends with end code 31. ``[resume] after_watchdog = "fault"`` (the default)
faults the run, as any instrument stop. ``"resume"`` restarts the step with what is left of it
(:func:`formation.orchestrator.compile.remaining_step`): the remaining time and charge, the same clamp and FAIL
tests, so a restarted charge never passes the recipe's voltage limit nor the step's charge; a finished step is never
run again, and a dcir runs its sequence again whole (a cut pulse has no resistance).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from formation.instruments.program import EndCode, StepTest, TestAction, TestType
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.orchestrator.records import EndRecord
from formation.orchestrator.run import ChannelRun
from formation.states import RunState


def may_resume(run: ChannelRun, end: EndRecord) -> bool:
    """Whether the recipe asks for this watchdog-stopped step to go on, and the run can."""
    return (
        end.end_code == EndCode.WATCHDOG
        and run.recipe.after_watchdog == "resume"
        and run.state is RunState.RUNNING
        and run.compiled is not None
        and not run.compiled.host_step
    )


def describe_left(run: ChannelRun) -> str:
    """What the restarted program still has: ``41.5 min`` and, with a charge end, ``0.58 Ah``."""
    assert run.compiled is not None
    steps = run.compiled.program.steps
    if len(steps) > 1:
        return f"the whole sequence again ({len(steps)} instrument steps)"
    charge = [t for t in steps[0].tests if _is_charge_end(t)]
    return f"{steps[0].duration_s / 60.0:.4g} min" + (f", {charge[0].value:.4g} Ah" if charge else "")


def _is_charge_end(test: StepTest) -> bool:
    return test.type is TestType.AMPH_GE and test.action is TestAction.NEXT


async def resume_after_watchdog(
    run: ChannelRun, end: EndRecord, ledger: JobLedger, flush: Callable[[], Awaitable[None]]
) -> bool:
    """Apply ``[resume] after_watchdog = "resume"`` to a watchdog end record: True when the run goes on with the
    rest of its step (journalled, with an alarm), False when the end is handled as any other."""
    if not may_resume(run, end):
        return False
    again = run.restart_s is not None and end.time_s <= run.restart_s
    if not run.restart_after_watchdog(end):
        return False
    if not again:
        # Samples first: a journal never runs ahead of the stored records (the end record must not come twice).
        await flush()
        await ledger.alarm(
            "warning",
            "watchdog_resumed",
            f"{run.cell_id}: step {run.step.id} was stopped by the instrument's watchdog; restarted with what is "
            f"left: {describe_left(run)}",
            run=run,
        )
        await ledger.journal([run])
    return True
