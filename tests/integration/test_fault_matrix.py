"""Rows of the README's fault matrix not covered elsewhere, through the simulator over real TCP and a real SQLite
database: one cabinet powered off while another runs; the database locked by another process for a while. Each
asserts the affected channels' state, the alarm, what the other channels do, and that no sample is lost (the
stored records of every run that finished are contiguous)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import RunState
from formation.store import Store

RECIPE = """
name = "short"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[record]
every_s = 30
every_mv = 5
[[steps]]
id = "c1"
kind = "charge"
current = "C/2"
until = {{ duration = "{charge}", voltage_v = 4.1 }}
[[steps]]
id = "r1"
kind = "rest"
until = {{ duration = "{rest}" }}
"""


def _recipe(charge: str = "2h", rest: str = "30min") -> Recipe:
    return loads_recipe(RECIPE.format(charge=charge, rest=rest), "toml", source="short.toml")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "line.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{db_path}")
    s.create_schema()
    yield s
    s.close()


def _entries(prefix: str, n: int) -> list[CellEntry]:
    return [CellEntry(f"{prefix}-{i:03d}", "LOT-F", 5.0) for i in range(1, n + 1)]


def _no_sample_lost(store: Store, sup: CabinetSupervisor) -> None:
    """The instrument numbers its records across cells: the job's stored records are one run of numbers."""
    assert all(len(store.samples(run.run_id)) > 0 for run in sup.runs)
    every = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    assert len(np.unique(every)) == len(every), "a sample was stored twice"
    assert np.array_equal(every, np.arange(every[0], every[0] + len(every))), "a sample was lost"


@pytest.mark.e2e  # ~10 s of wall time: the powered-off cabinet is given up after its reconnect attempts
async def test_one_cabinet_powered_off_while_another_runs(store: Store) -> None:
    clock = ScaledClock(2000.0)
    specs = [CabinetSpec(name=name, channels=2, seed=seed) for name, seed in (("off", 1), ("on", 2))]
    plant = SimulatedPlant(specs, clock)
    await plant.__aenter__()
    try:
        cabs = {
            name: CabinetConfig(
                name=name, resource=plant.cabinets[name].resource, channels=2, timeout_s=0.3, watchdog_s=0.3
            )
            for name in ("off", "on")
        }
        recipe = _recipe("40min", "10min")  # long enough for the powered-off cabinet to be given up
        started = {name: asyncio.Event() for name in cabs}
        jobs = {
            name: asyncio.create_task(
                run_job(
                    cab,
                    recipe,
                    assign_cells(range(1, 3), _entries(name, 2), recipe),
                    store,
                    clock,
                    on_start=lambda s, n=name: started[n].set(),  # type: ignore[misc]
                ),
                name=f"job-{name}",
            )
            for name, cab in cabs.items()
        }
        await asyncio.gather(*(e.wait() for e in started.values()))
        await asyncio.sleep(0.2)
        # Power off: the cabinet stops answering and never comes back.
        await plant.cabinets["off"].__aexit__(None, None, None)
        off = await asyncio.wait_for(jobs["off"], 60)
        on = await asyncio.wait_for(jobs["on"], 120)
    finally:
        plant.cabinets.pop("off", None)
        await plant.__aexit__(None, None, None)
    # The affected channels: faulted for a lost link, the job faulted, a critical alarm.
    assert all(r.state is RunState.FAULTED and r.end_reason == "comm_lost" for r in off.runs)
    assert store.get_job(off.job_id).state == "faulted"
    assert "comm_lost_fault" in [a.code for a in store.alarms(job_id=off.job_id)]
    # The other cabinet's channels carried on to the end, every sample stored once.
    assert all(r.state is RunState.DONE for r in on.runs), [(r.state, r.end_reason) for r in on.runs]
    assert store.get_job(on.job_id).state == "done"
    assert not [a for a in store.alarms(job_id=on.job_id) if a.code.startswith("comm_")]
    _no_sample_lost(store, on)


class Locker:
    """Another process's writer: holds an exclusive lock on the SQLite file for ``hold_s`` wall seconds."""

    def __init__(self, path: Path, hold_s: float) -> None:
        self.path = path
        self.hold_s = hold_s
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, name="sqlite-locker", daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            self.held.set()
            threading.Event().wait(self.hold_s)
            conn.execute("COMMIT")
        finally:
            conn.close()


async def test_a_database_locked_for_a_while_loses_no_sample_and_supervision_goes_on(
    store: Store, db_path: Path
) -> None:
    clock = ScaledClock(2000.0)
    async with SimulatedPlant([CabinetSpec(name="cab", channels=4, seed=3)], clock) as plant:
        cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=20.0)
        recipe = _recipe()
        lockers: list[Locker] = []
        polls_while_locked: list[int] = []

        def lock_midway(sup: CabinetSupervisor) -> None:
            locker = Locker(db_path, hold_s=2.0)  # about 70 clock minutes of the route
            lockers.append(locker)
            locker.thread.start()

        def count(sup: CabinetSupervisor, _stats: object) -> None:
            if lockers and lockers[0].held.is_set() and lockers[0].thread.is_alive():
                polls_while_locked.append(1)

        sup = await run_job(
            cab, recipe, assign_cells(range(1, 5), _entries("db", 4), recipe), store, clock,
            on_start=lock_midway, on_cycle=count,
        )  # fmt: skip
        lockers[0].thread.join(timeout=10)
    assert lockers[0].held.is_set(), "the lock was never taken"
    assert polls_while_locked, "supervision stopped while the database was locked"
    # Every channel finished its recipe; nothing was lost or doubled while the writes waited.
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    assert store.get_job(sup.job_id).state == "done"
    assert len(store.step_results(job_id=sup.job_id)) == 2 * len(sup.runs)
    _no_sample_lost(store, sup)
