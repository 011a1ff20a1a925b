"""Re-attach after a host crash, on the simulated cabinet over TCP: a DCIR pulse cut by the crash still yields its
resistance (sub-steps stored with the samples), the recipe's policy for cells the watchdog stopped while no host
was there, and the instrument–host clock offset measured at connect placing age checkpoints on the step's clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import LOG_COL, CellState
from formation.instruments.scpi import ScpiSession
from formation.orchestrator import metrics
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.cabinet.clocksync import measure_offset_s
from formation.orchestrator.cabinet.resume import log_rows_from_samples
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, resume_job
from formation.orchestrator.timers import LineTimers
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import JobState, RunState
from formation.store import Store
from formation.store.records import AgeMeasurement, DcirMeasurement, StepDetails

HEAD = """
name = "reattach"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.2
min_voltage_v = 2.5
"""
DCIR = """
[[steps]]
id = "dcir"
kind = "dcir"
rest = "60s"
current = "1C"
duration = "30s"
sample_at = ["1s", "10s", "30s"]
[[steps]]
id = "after"
kind = "rest"
until = { duration = "1min" }
"""
CHARGE = """
[[steps]]
id = "form"
kind = "charge"
current = "C/2"
until = { charge = "20%", duration = "2h" }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "5min" }
"""
AGE = """
[[steps]]
id = "age"
kind = "age"
duration = "1h"
ocv_at = ["20min", "50min"]
record = { every_s = 1800, every_mv = 0 }
"""


def recipe(body: str, extra: str = "") -> Recipe:
    return loads_recipe(HEAD + extra + body, "toml", source="reattach.toml")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'line.db'}")
    s.create_schema()
    yield s
    s.close()


@asynccontextmanager
async def cabinet(scale: float, *, watchdog_s: float = 30.0) -> AsyncIterator[tuple[CabinetConfig, ScaledClock]]:
    clock = ScaledClock(scale)
    spec = CabinetSpec(name="cab", channels=4, preset="ncm21700-5ah", seed=5, port=0, formed=True, initial_soc=0.3)
    async with SimulatedPlant([spec], clock) as plant:
        res = plant.cabinets["cab"].resource
        yield CabinetConfig("cab", res, channels=4, poll_interval_s=10.0, timeout_s=2.0, watchdog_s=watchdog_s), clock


def cells() -> list[CellEntry]:
    return [CellEntry(f"R-{i}", "LOT-R", 5.0) for i in range(1, 5)]


async def first_host_dies(
    cab: CabinetConfig, store: Store, clock: ScaledClock, r: Recipe, until: object, *, timers: bool = False
) -> int:
    """A host launches ``r``, polls until ``until(supervisor)`` holds, then dies: nothing aborted, nothing closed
    (what it handed to the writer is committed, as a process that dies after its last commit)."""
    async with (
        ScpiSession(cab.resource, timeout_s=2.0) as session,
        LineTimers(store, clock) as line_timers,
        CabinetSupervisor(
            "cab", Bt2200Cycler(session), store, clock, n_channels=4, watchdog_s=cab.watchdog_s,
            poll_interval_s=cab.poll_interval_s, timers=line_timers if timers else None,
        ) as first,
    ):  # fmt: skip
        job_id = await first.launch(r, assign_cells(range(1, 5), cells(), r))
        for _ in range(2000):
            await first.poll_once()
            if until(first):  # type: ignore[operator]
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the moment to die never came")
    return job_id


def in_pulse(sup: CabinetSupervisor) -> bool:
    """Every run has drained records of its pulse (instrument sub-step 2), and the pulse is not over."""
    rows = [np.concatenate(r.captured) if r.captured else np.empty((0, len(LOG_COL))) for r in sup.runs]
    return all(r.step_index == 0 for r in sup.runs) and all((x[:, LOG_COL["step"]] == 2).any() for x in rows)


async def test_a_dcir_pulse_cut_by_a_host_crash_still_yields_its_resistance(store: Store) -> None:
    r = recipe(DCIR)
    async with cabinet(100.0) as (cab, clock):
        job_id = await first_host_dies(cab, store, clock, r, in_pulse)
        stored = store.samples(store.job_runs(job_id)[0].id or 0, with_sub_step=True)
        assert set(stored["sub_step"]) == {1, 2}  # the rest and the start of the pulse were stored before it died
        sup = await resume_job(cab, job_id, store, clock)
    assert all(run.state is RunState.DONE for run in sup.runs)
    results = store.step_results(job_id=job_id)
    assert len(results) == 4 * 2  # no step twice
    for run in sup.runs:
        samples = store.samples(run.run_id, with_sub_step=True)
        step = samples[samples["step_index"] == 0]
        assert samples["rec"].is_unique and samples["ts_s"].is_monotonic_increasing
        (row,) = results[(results["run_id"] == run.run_id) & (results["step_index"] == 0)].itertuples()
        details = StepDetails.from_json(row.details)
        assert details.error is None, details.error
        measured = details.measurement
        assert isinstance(measured, DcirMeasurement)
        # The very resistance the stored records give, rest and pulse told apart by their stored sub-steps.
        again = metrics.dcir_single(log_rows_from_samples(step), r.steps[0].sample_at_s)
        assert measured.dcir_mohm == pytest.approx(again.dcir_mohm, rel=1e-12)
        assert 5.0 < measured.dcir_mohm["10"] < 100.0
        assert row.duration_s == pytest.approx(60.0 + 30.0, abs=0.01)  # the rest's time kept across the crash


@pytest.mark.parametrize("policy", ["resume", "fault"])
async def test_cells_the_watchdog_stopped_are_resumed_with_what_is_left_or_faulted(store: Store, policy: str) -> None:
    r = recipe(CHARGE, f'[resume]\nafter_watchdog = "{policy}"\n')
    async with cabinet(1000.0, watchdog_s=1.0) as (cab, clock):
        job_id = await first_host_dies(cab, store, clock, r, lambda s: all(x.last_ts_s > 0 for x in s.runs))
        await asyncio.sleep(1.6)  # no host: the instrument's watchdog stops every cell after 1 s of silence
        async with ScpiSession(cab.resource, timeout_s=2.0) as session:
            assert (await Bt2200Cycler(session).status([1, 2, 3, 4]) == CellState.ABORTED).all()
        sup = await resume_job(cab, job_id, store, clock)
    results = store.step_results(job_id=job_id)
    codes = [a.code for a in store.alarms(job_id=job_id)]
    if policy == "fault":
        assert all(run.state is RunState.FAULTED and run.end_reason == "watchdog" for run in sup.runs)
        assert store.get_job(job_id).state == JobState.FAULTED and "watchdog_resumed" not in codes
        return
    assert all(run.state is RunState.DONE for run in sup.runs), [(x.state, x.end_reason) for x in sup.runs]
    assert codes.count("watchdog_resumed") == 4
    assert sorted(results.groupby("run_id")["step_index"].apply(list).tolist()) == [[0, 1]] * 4  # none twice
    form = results[results["step_id"] == "form"]
    # The charge ended on its charge budget (1 Ah = 20 %) counted over both programs, never past it (the
    # instrument tests Ah at its integration substeps: at most a few mAh over at 2.5 A).
    assert (form["end_reason"] == "charge").all()
    assert form["ah"].between(1.0, 1.0 + 0.01).all(), form["ah"].tolist()
    for run in sup.runs:
        samples = store.samples(run.run_id)
        charge = samples[samples["step_index"] == 0]
        assert samples["rec"].is_unique and samples["ts_s"].is_monotonic_increasing
        assert charge["voltage_v"].max() <= r.limits.max_voltage_v + 0.0005
        assert charge["ah"].iloc[-1] < 1.0  # the remainder alone moved less than the step's whole budget


async def test_the_clock_offset_measured_at_connect_places_checkpoints_after_a_reattach(store: Store) -> None:
    r = recipe(AGE)
    async with cabinet(1000.0) as (cab, plant_clock):
        # Host clocks that started elsewhere: an hour behind the plant, then (the restarted host) two ahead.
        first_clock = ScaledClock(1000.0, start=plant_clock.now() - 3600.0)
        async with ScpiSession(cab.resource, timeout_s=2.0) as session:
            offset_s = await measure_offset_s(Bt2200Cycler(session), first_clock, "cab")
        assert offset_s == pytest.approx(3600.0, abs=2.0)
        job_id = await first_host_dies(
            cab, store, first_clock, r, lambda s: all(x.step_t0_host_s is not None for x in s.runs), timers=True
        )
        # No host for 2000 s of the step: the first checkpoint (20 min) falls due meanwhile, and the record at
        # 1800 s waits on the instrument. The next host takes the late checkpoint as soon as it is attached.
        await asyncio.sleep(2.0)
        started_s = float(store.samples(store.job_runs(job_id)[0].id or 0)["ts_s"].iloc[0])
        attached_step_s = plant_clock.now() - started_s
        second_clock = ScaledClock(1000.0, start=plant_clock.now() + 7200.0)
        ready: list[float] = []  # the step time when the re-attach is over and polling starts
        sup = await resume_job(
            cab, job_id, store, second_clock, on_start=lambda _: ready.append(plant_clock.now() - started_s)
        )
    assert sup.clock_offset_s == pytest.approx(-7200.0, abs=2.0)
    results = store.step_results(job_id=job_id)
    assert (results["end_reason"] == "duration").all(), results[["end_reason", "details"]].to_dict("records")
    assert all("error" not in d for d in results["details"]), (attached_step_s, ready, results["details"].iloc[0])
    for details in results["details"]:
        measured = StepDetails.from_json(details).measurement
        assert isinstance(measured, AgeMeasurement), details
        assert measured.ocv_source == ("timer", "timer")
        # Each reading at its step time on the instrument's clock: the late one in the first poll after the host
        # came back (anchored on the 1800 s record it drains first, as before the offset, it would read some
        # 300 s early, before the host was even there), the other at its time, late by at most a poll (the 50 ms
        # wall floor: 50 s here) and jitter.
        assert attached_step_s <= measured.ocv_at_s[0] <= ready[0] + 100.0
        assert measured.ocv_at_s[1] == pytest.approx(3000.0 + 40.0, abs=60.0)
