"""The start-confirmation table: through every crash point, no step is started twice (no socket)."""

from __future__ import annotations

import pytest

from formation.errors import InstrumentTimeout, StateError
from formation.instruments.program import CellState
from formation.orchestrator.cabinet.starts import StepStarter
from formation.orchestrator.compile import compile_step
from formation.orchestrator.run import ChannelRun
from formation.recipes import load_builtin
from formation.states import START_TRANSITIONS, RunState, StartState
from tests.unit.cabinet.double import CabinetDouble

RECIPE = load_builtin("ncm21700-formation")


def _runs(n: int, step: int = 1) -> list[ChannelRun]:
    runs = []
    for ch in range(1, n + 1):
        run = ChannelRun(ch, f"C{ch}", "L", ch, 5.0, RECIPE)
        run.begin_step(step, compile_step(RECIPE.steps[step], RECIPE, 5.0))
        runs.append(run)
    return runs


def _previous_step_done(cab: CabinetDouble, runs: list[ChannelRun]) -> None:
    """Each channel shows the previous step's sequence, finished: what the instrument looks like between steps."""
    for run in runs:
        run.transition(RunState.RUNNING)
        cab.seq[run.channel] = 99
        cab.state[run.channel] = CellState.DONE


def _starts_of(cab: CabinetDouble, runs: list[ChannelRun]) -> list[int]:
    """How many times each run's current program reached the instrument."""
    seq = cab.programs[runs[0].compiled.program]  # type: ignore[union-attr]
    return [cab.starts[(r.channel, seq)] for r in runs]


async def test_a_clean_start_is_sent_once_and_confirmed() -> None:
    cab, runs = CabinetDouble(), _runs(3, step=0)
    touched = await StepStarter(cab).start_pending(runs)
    assert touched == runs
    assert [r.start for r in runs] == [StartState.STARTED] * 3
    assert [r.state for r in runs] == [RunState.RUNNING] * 3
    await StepStarter(cab).start_pending(runs)  # nothing is due any more
    assert _starts_of(cab, runs) == [1, 1, 1]


async def test_reply_lost_after_the_start_reached_the_instrument() -> None:
    cab, runs = CabinetDouble(), _runs(2)
    _previous_step_done(cab, runs)
    starter = StepStarter(cab)
    cab.lose_next_start_reply = True
    with pytest.raises(InstrumentTimeout):
        await starter.start_pending(runs)
    assert [r.start for r in runs] == [StartState.UNSURE] * 2
    # Next poll: the instrument shows the cells running this step: confirmed, not sent again.
    await starter.start_pending(runs)
    assert [r.start for r in runs] == [StartState.STARTED] * 2
    assert _starts_of(cab, runs) == [1, 1]


async def test_reply_lost_and_the_step_already_ended_waits_for_its_start_record() -> None:
    cab, runs = CabinetDouble(), _runs(1)
    _previous_step_done(cab, runs)
    starter = StepStarter(cab)
    cab.lose_next_start_reply = True
    with pytest.raises(InstrumentTimeout):
        await starter.start_pending(runs)
    cab.finish(1)  # a short step: over before the host could ask
    await starter.start_pending(runs)
    assert runs[0].start is StartState.WAIT_RECORD  # DONE could be this step's or the previous one's
    assert _starts_of(cab, runs) == [1]
    starter.start_record(runs[0], seq_id=cab.seq[1])  # the drain brings this step's start record
    assert runs[0].start is StartState.STARTED and runs[0].seq_id == cab.seq[1]
    await starter.start_pending(runs)
    assert _starts_of(cab, runs) == [1]


async def test_start_lost_on_the_way_is_sent_again_after_one_drain() -> None:
    cab, runs = CabinetDouble(), _runs(1)
    _previous_step_done(cab, runs)
    starter = StepStarter(cab)
    cab.drop_next_start = True
    with pytest.raises(InstrumentTimeout):
        await starter.start_pending(runs)
    assert runs[0].start is StartState.UNSURE and _starts_of(cab, runs) == [0]
    # The sequence may not be what the host downloaded either: it is downloaded again before the next start.
    assert runs[0].compiled is not None and cab.forgotten == [runs[0].compiled.program]
    await starter.start_pending(runs)  # the instrument shows the previous step's finished sequence
    assert runs[0].start is StartState.WAIT_RECORD and _starts_of(cab, runs) == [0]
    await starter.start_pending(runs)  # one drain went by without a start record: it never got there
    assert runs[0].start is StartState.STARTED
    assert _starts_of(cab, runs) == [1]


async def test_host_killed_after_the_start() -> None:
    """A new host finds the cell running: whatever the journal said, it confirms and never starts again."""
    cab, old = CabinetDouble(), _runs(1)
    _previous_step_done(cab, old)
    await StepStarter(cab).start_pending(old)  # the old host started the step, then died
    new = _runs(1)
    new[0].transition(RunState.RUNNING)
    new[0].start_transition(StartState.UNSURE)  # restore_job: no stored record proves the start
    await StepStarter(cab).start_pending(new)
    assert new[0].start is StartState.STARTED
    assert _starts_of(cab, new) == [1]


async def test_host_killed_before_the_start() -> None:
    """The journal points at the next step; the instrument still shows the previous one finished."""
    cab, runs = CabinetDouble(), _runs(1)
    _previous_step_done(cab, runs)
    runs[0].start_transition(StartState.UNSURE)
    starter = StepStarter(cab)
    await starter.start_pending(runs)
    assert runs[0].start is StartState.WAIT_RECORD and _starts_of(cab, runs) == [0]
    await starter.start_pending(runs)
    assert runs[0].start is StartState.STARTED and _starts_of(cab, runs) == [1]


async def test_host_killed_after_the_start_and_the_step_ended_meanwhile() -> None:
    cab, old = CabinetDouble(), _runs(1)
    _previous_step_done(cab, old)
    await StepStarter(cab).start_pending(old)
    cab.finish(1)
    new = _runs(1)
    new[0].transition(RunState.RUNNING)
    new[0].start_transition(StartState.UNSURE)
    starter = StepStarter(cab)
    starter.start_record(new[0], seq_id=cab.seq[1])  # the re-attach drain brings the start record first
    assert new[0].start is StartState.STARTED
    await starter.start_pending(new)
    assert _starts_of(cab, new) == [1]


async def test_without_a_drain_a_run_waiting_for_its_start_record_keeps_waiting() -> None:
    """The database is behind, so the log was not read: the start record may be on the instrument, unread."""
    cab, runs = CabinetDouble(), _runs(1)
    _previous_step_done(cab, runs)
    runs[0].start_transition(StartState.UNSURE)
    starter = StepStarter(cab)
    await starter.start_pending(runs)
    assert runs[0].start is StartState.WAIT_RECORD
    for _ in range(3):
        await starter.start_pending(runs, drained=False)
        assert runs[0].start is StartState.WAIT_RECORD and _starts_of(cab, runs) == [0]
    await starter.start_pending(runs, drained=True)
    assert runs[0].start is StartState.STARTED and _starts_of(cab, runs) == [1]


async def test_aborting_and_terminal_runs_are_never_started() -> None:
    cab, runs = CabinetDouble(), _runs(2, step=0)
    runs[0].transition(RunState.ABORTED)
    runs[1].transition(RunState.RUNNING)
    runs[1].transition(RunState.ABORTING)
    assert await StepStarter(cab).start_pending(runs) == []
    assert sum(cab.starts.values()) == 0


def test_the_table_allows_no_shortcut_around_the_instrument() -> None:
    run = _runs(1)[0]
    with pytest.raises(StateError, match="illegal start transition awaiting -> started"):
        run.start_transition(StartState.STARTED)
    # A start in doubt can only go back to AWAITING (and be sent) through the instrument's answer.
    assert StartState.AWAITING not in START_TRANSITIONS[StartState.SENT]
    assert all(StartState.SENT not in START_TRANSITIONS[s] for s in (StartState.UNSURE, StartState.WAIT_RECORD))
