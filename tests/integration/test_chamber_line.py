"""Recipes at a temperature through the whole line: a simulated cabinet standing in a simulated chamber, the
chamber held by the real ChamberLoop and the cells run by the real supervisor, both over TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig, ChamberSite
from formation.errors import InputError
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, check_chamber, run_job
from formation.recipes import loads_recipe
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.states import RunState
from formation.store import Store
from formation.store.records import AgeMeasurement, StepDetails

AGE_AT_45 = """
name = "age-at-45"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = 60.0
[[steps]]
id = "soak"
kind = "chamber"
setpoint_c = 45.0
timeout = "3h"
[[steps]]
id = "age"
kind = "age"
duration = "4h"
ocv_at = ["30min", "4h"]
chamber_c = 45.0
record = { every_s = 300, every_mv = 1.0 }
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'line.db'}")
    s.create_schema()
    yield s
    s.close()


@pytest.mark.e2e
async def test_an_age_step_at_45_c_ages_its_cells_at_45_c_and_k_carries_the_paused_time(store: Store) -> None:
    recipe = loads_recipe(AGE_AT_45, "toml")
    clock = ScaledClock(1000.0)
    cab_spec = CabinetSpec(
        name="cab", channels=4, seed=5, formed=True, initial_soc=0.5, chamber="ch1", defect_fraction=0.0
    )
    async with SimulatedPlant([cab_spec], clock, chambers=[ChamberSpec(name="ch1", seed=5)]) as plant:
        site = ChamberSite(name="ch1", resource=plant.chamber_resources["ch1"], hold_s=300.0)
        cab = CabinetConfig(
            name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=30.0, chamber="ch1"
        )
        entries = [CellEntry(f"H-{i}", "LOT-H", 5.0) for i in range(1, 5)]
        started: asyncio.Queue[CabinetSupervisor] = asyncio.Queue()
        job = asyncio.create_task(
            run_job(
                cab,
                recipe,
                assign_cells(range(1, 5), entries, recipe),
                store,
                clock,
                chamber=site,
                on_start=started.put_nowait,
            ),
            name="job",
        )
        sup = await started.get()
        # An hour into the age step the chamber door stays open for 20 minutes: the chamber leaves its band.
        while not (sup.runs[0].step_index == 1 and sup.runs[0].step_t0_host_s is not None):
            await asyncio.sleep(0.02)
            assert not job.done(), job
        while clock.now() < sup.runs[0].step_t0_host_s + 3600.0:
            await asyncio.sleep(0.02)
        async with ScpiSession(site.resource, timeout_s=2.0, name="door") as door:
            await door.write("SIM:FAULT:DOOR 1200")
        sup = await asyncio.wait_for(job, 120.0)
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.cell_id, r.state, r.end_reason) for r in sup.runs]
    results = store.step_results(job_id=sup.job_id)
    soak = results[results["step_id"] == "soak"]
    assert (soak["end_reason"] == "stable").all()
    for run in sup.runs:
        age = store.samples(run.run_id)
        age = age[age["step_index"] == 1]
        # The cells aged at the chamber's 45 °C (their own heat and the door's dip aside).
        assert age["temperature_c"].median() == pytest.approx(45.0, abs=0.7)
    for text in results[results["step_id"] == "age"]["details"]:
        measurement = StepDetails.from_json(text).measurement
        assert isinstance(measurement, AgeMeasurement)
        # The door pushed the chamber out of band between the checkpoints: the K clock paused for it.
        assert 300.0 < measurement.k_paused_s < 4 * 3600.0


def test_a_temperature_the_cabinet_cannot_give_is_refused_before_anything() -> None:
    recipe = loads_recipe(AGE_AT_45, "toml")
    bare = CabinetConfig(name="cab", resource="TCPIP0::127.0.0.1::1::SOCKET")
    with pytest.raises(InputError, match=r"steps\[0\]\.setpoint_c: 45 °C asked of cabinet cab, which stands in no"):
        check_chamber(recipe, bare, None)
    cool = ChamberSite(name="ch1", resource="TCPIP0::127.0.0.1::2::SOCKET", setpoint_min_c=10.0, setpoint_max_c=40.0)
    inside = CabinetConfig(name="cab", resource="TCPIP0::127.0.0.1::1::SOCKET", chamber="ch1")
    with pytest.raises(InputError, match="45 °C is outside 10–40 °C of chamber ch1"):
        check_chamber(recipe, inside, cool)
