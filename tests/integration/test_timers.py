"""Age checkpoint timers live in the line's database and survive a restart of the scheduler."""

from __future__ import annotations

import asyncio
from pathlib import Path

from formation.clock import ScaledClock
from formation.orchestrator.timers import LineTimers, checkpoint_job_id
from formation.store import Store


class Recorder:
    def __init__(self) -> None:
        self.fired: list[tuple[int, int, int, int]] = []

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None:
        self.fired.append((job_id, run_id, step_index, k))


async def _wait_for(cond, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_checkpoint_survives_a_restart_and_fires_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'line.db'}"
    clock = ScaledClock(3600.0)  # one clock hour per wall second
    first = Store(url)
    first.create_schema()
    async with LineTimers(first, clock) as timers:
        job = timers.schedule_checkpoint("cab", 7, 42, 3, 1, clock.now() + 2 * 3600.0)  # in 2 clock hours
        assert job == checkpoint_job_id("cab", 42, 3, 1)
        assert timers.pending() == [job]
    first.close()  # the process "stops" before the checkpoint is due

    second = Store(url)  # a new process opens the same database
    recorder = Recorder()
    async with LineTimers(second, clock) as timers:
        assert timers.pending() == [job]
        timers.register("cab", recorder)
        await _wait_for(lambda: recorder.fired)
        await asyncio.sleep(0.5)  # would a duplicate come? (it must not)
        assert recorder.fired == [(7, 42, 3, 1)]
        assert timers.pending() == []
        timers.unregister("cab", recorder)
    second.close()


async def test_rescheduling_replaces_and_late_targets_still_get_the_checkpoint(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'line.db'}")
    store.create_schema()
    clock = ScaledClock(1000.0)
    recorder = Recorder()
    async with LineTimers(store, clock) as timers:
        timers.schedule_checkpoint("cab2", 1, 5, 0, 0, clock.now() + 1e9)
        timers.schedule_checkpoint("cab2", 1, 5, 0, 0, clock.now() + 100.0)  # same id: replaces
        assert len(timers.pending()) == 1
        await asyncio.sleep(0.4)  # fires with no supervisor registered yet
        assert timers.pending() == []
        timers.register("cab2", recorder)  # a re-attaching supervisor receives it
        assert recorder.fired == [(1, 5, 0, 0)]
        timers.unregister("cab2", recorder)
    store.close()
