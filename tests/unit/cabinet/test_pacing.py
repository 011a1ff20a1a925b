"""PollPacer: fixed-rate polls on a grid, late polls measured, a stall counted once and never made up in a burst."""

from __future__ import annotations

import pytest

from formation.orchestrator.cabinet.pacing import PollPacer


def test_polls_are_due_one_interval_after_the_previous_due_time_not_after_the_previous_poll_ended() -> None:
    pacer = PollPacer.starting(100.0, 1.0)
    assert pacer.wait_s(100.0) == 0.0  # without a phase the first poll is due at once
    starts = []
    now = 100.0
    for _ in range(5):
        now += pacer.wait_s(now)
        assert pacer.begin(now) == 0.0
        starts.append(now)
        now += 0.3  # the poll takes 0.3 s
        pacer.done()
    assert starts == pytest.approx([100.0, 101.0, 102.0, 103.0, 104.0])
    assert pacer.missed == 0


def test_a_late_poll_reports_its_delay_and_only_a_whole_interval_late_counts_as_missed() -> None:
    pacer = PollPacer.starting(0.0, 1.0)
    assert pacer.begin(0.4) == pytest.approx(0.4)
    assert pacer.missed == 0
    pacer.done()  # next due at 1.0
    assert pacer.begin(1.0 + 3.5) == pytest.approx(3.5)  # a 3.5 s stall
    assert pacer.missed == 1
    pacer.done()
    # The grid moved by whole intervals: the next poll is due at 5.0, not at once (no catch-up burst).
    assert pacer.due_s == pytest.approx(5.0)
    assert pacer.wait_s(4.6) == pytest.approx(0.4)


@pytest.mark.parametrize(("phase", "first_due"), [(0.0, 11.0), (0.25, 10.25), (0.5, 10.5), (0.9, 10.9)])
def test_a_phase_puts_the_polls_at_that_fraction_of_the_interval_on_a_shared_grid(
    phase: float, first_due: float
) -> None:
    pacer = PollPacer.starting(10.2, 1.0, phase)
    assert pacer.due_s == pytest.approx(first_due)
    pacer.begin(pacer.due_s)
    pacer.done()
    assert pacer.due_s == pytest.approx(first_due + 1.0)


def test_sixteen_cabinets_spread_over_the_interval_take_distinct_turns() -> None:
    pacers = [PollPacer.starting(1234.567, 1.0, i / 16) for i in range(16)]
    slots = sorted(p.due_s % 1.0 for p in pacers)
    assert slots == pytest.approx([i / 16 for i in range(16)], abs=1e-9)


@pytest.mark.parametrize("interval_s", [0.0, -1.0, float("nan")])
def test_an_interval_that_is_not_positive_is_refused(interval_s: float) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        PollPacer.starting(0.0, interval_s)
