"""Steps the host judges or releases, on the simulated plant over TCP: a pre-check rejects a shorted cell before any
current; a hold keeps the output off until `formation run continue` (also across a host crash); a rest ends when the
simulator's own relaxation slows below its dV/dt; a wait ends once the cell has cooled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.grading import grade_cells, load_lot_metrics, parse_rules
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import CellState, channel_to_cell_id
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.cabinet.hostends import dvdt_mv_per_h
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, resume_job, run_job
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import RunState, StartState
from formation.store import Store

HEAD = """
name = "host-steps"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_current_a = 5.0
"""


@dataclass
class Line:
    clock: ScaledClock
    cabinet: CabinetConfig
    store: Store
    url: str


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Store, str]]:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    store.create_schema()
    yield store, url
    store.close()


@asynccontextmanager
async def _line(db: tuple[Store, str], cells: int, scale: float) -> AsyncIterator[Line]:
    clock = ScaledClock(scale)
    spec = CabinetSpec(name="h", channels=cells, preset="ncm21700-5ah", seed=5, formed=True, initial_soc=0.3,
                       defect_fraction=0.0)  # fmt: skip
    async with SimulatedPlant([spec], clock) as plant:
        cab = CabinetConfig(name="h", resource=plant.cabinets["h"].resource, channels=cells, poll_interval_s=10.0)
        yield Line(clock, cab, db[0], db[1])


def _cells(n: int) -> list[CellEntry]:
    return [CellEntry(f"H-{i}", "LOT-H", 5.0) for i in range(1, n + 1)]


def _recipe(steps: str) -> Recipe:
    return loads_recipe(HEAD + steps, "toml")


PRECHECK = """
[[steps]]
id = "screen"
kind = "precheck"
ocv_min_v = 3.0
ocv_max_v = 4.0
rest = "10min"
max_drop_mv = 3.0
record = { every_s = 30 }
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { duration = "5min" }
"""


async def test_a_shorted_cell_is_rejected_by_the_precheck_before_any_current(db: tuple[Store, str]) -> None:
    recipe = _recipe(PRECHECK)
    async with _line(db, 3, 2000.0) as line:
        faults: list[asyncio.Task[None]] = []

        async def short_cell_2() -> None:
            # A hard short (2 A) on a cell of the lot, as soon as the cells are defined on the instrument.
            async with ScpiSession(line.cabinet.resource) as session:
                await session.write(f"SIM:FAULT:SHORT {channel_to_cell_id(2)},2.0")
                assert (await session.query("SYST:ERR?")).startswith("+0")

        sup = await run_job(
            line.cabinet, recipe, assign_cells(range(1, 4), _cells(3), recipe), line.store, line.clock,
            on_start=lambda _: faults.append(asyncio.create_task(short_cell_2(), name="short")),
        )  # fmt: skip
        await asyncio.gather(*faults)
    states = {r.cell_id: r for r in sup.runs}
    assert states["H-1"].state is RunState.DONE and states["H-3"].state is RunState.DONE
    shorted = states["H-2"]
    assert shorted.state is RunState.FAULTED and shorted.end_reason.startswith("precheck: voltage fell")
    results = line.store.step_results(job_id=sup.job_id)
    mine = results[results["run_id"] == shorted.run_id]
    assert mine["kind"].tolist() == ["precheck"], "the rejected cell got no charge step"
    assert not (line.store.samples(shorted.run_id)["current_a"].abs() > 0).any(), "no current ever flowed"
    assert (results[results["kind"] == "charge"]["run_id"].nunique()) == 2
    stored = line.store.get_run(shorted.run_id)
    assert stored is not None and stored.state == "faulted" and stored.end_reason == shorted.end_reason
    assert "precheck_rejected" in [a.code for a in line.store.alarms(job_id=sup.job_id)]
    # The grading report names the reason.
    rules = parse_rules({"name": "r", "version": "1", "metrics": {"ocv_v": {"step": "screen"}},
                         "grades": [{"name": "A", "ocv_v": {"min": 0.0}}]})  # fmt: skip
    graded = grade_cells(load_lot_metrics(line.store, "LOT-H", rules), rules).cells.set_index("cell_id")
    assert graded.loc["H-2", "grade"] == "NG" and "precheck: voltage fell" in graded.loc["H-2", "reason"]


HOLD = """
[[steps]]
id = "before"
kind = "rest"
until = { duration = "2min" }
[[steps]]
id = "degas"
kind = "hold"
message = "degas and reseal the pouches"
timeout = "100h"
[[steps]]
id = "after"
kind = "charge"
current = "C/2"
until = { duration = "5min" }
"""


async def _all_holding(sup: CabinetSupervisor) -> None:
    while not all(r.step is not None and r.step.kind == "hold" and r.start is StartState.STARTED for r in sup.runs):
        await asyncio.sleep(0.02)


async def _outputs_off(line: Line, n: int) -> None:
    async with ScpiSession(line.cabinet.resource) as session:
        cycler = Bt2200Cycler(session)
        status = await cycler.status(list(range(1, n + 1)))
        measured = await cycler.measure(list(range(1, n + 1)))
    assert not (status == CellState.RUNNING).any()
    assert np.allclose(measured.current_a, 0.0)


def _continue(line: Line, job_id: int) -> int:
    return main(["run", "continue", str(job_id), "--db", line.url])


async def test_a_hold_keeps_the_output_off_until_run_continue(db: tuple[Store, str]) -> None:
    recipe = _recipe(HOLD)
    async with _line(db, 2, 2000.0) as line:
        holding: list[CabinetSupervisor] = []
        job = asyncio.create_task(
            run_job(
                line.cabinet,
                recipe,
                assign_cells(range(1, 3), _cells(2), recipe),
                line.store,
                line.clock,
                on_start=holding.append,
            ),
            name="job",
        )
        while not holding:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(_all_holding(holding[0]), 30)
        await asyncio.sleep(0.5)  # ~17 simulated minutes: the hold does not end by itself
        assert all(r.step.id == "degas" for r in holding[0].runs)
        await _outputs_off(line, 2)
        assert await asyncio.to_thread(_continue, line, holding[0].job_id) == 0
        sup = await asyncio.wait_for(job, 60)
    assert all(r.state is RunState.DONE for r in sup.runs)
    results = line.store.step_results(job_id=sup.job_id)
    hold = results[results["step_id"] == "degas"]
    assert (hold["end_reason"] == "continued").all() and (hold["duration_s"] > 600).all()
    assert (results[results["step_id"] == "after"]["ah"] > 0.1).all()


async def test_a_crash_during_the_hold_resumes_into_the_hold(
    db: tuple[Store, str], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(HOLD)
    async with _line(db, 2, 2000.0) as line:
        async with (
            ScpiSession(line.cabinet.resource) as session,
            CabinetSupervisor("h", Bt2200Cycler(session), line.store, line.clock, n_channels=2) as first,
        ):
            job_id = await first.launch(recipe, assign_cells(range(1, 3), _cells(2), recipe))
            while not all(r.step is not None and r.step.kind == "hold" for r in first.runs):
                await first.poll_once()
                await asyncio.sleep(0.02)
            await first.poll_once()  # the hold starts and is journalled
        # The host died inside the hold: nothing runs, and the operator continues while no host is there.
        assert [r.step_id for r in line.store.job_runs(job_id)] == ["degas", "degas"]
        await _outputs_off(line, 2)
        assert await asyncio.to_thread(_continue, line, job_id) == 0
        assert "continue sent to 2 run(s) at hold step degas" in capsys.readouterr().out
        sup = await resume_job(line.cabinet, job_id, line.store, line.clock)
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    results = line.store.step_results(job_id=job_id)
    assert sorted(results.groupby("run_id")["step_id"].apply(list).tolist()) == [["before", "degas", "after"]] * 2
    assert (results[results["step_id"] == "degas"]["end_reason"] == "continued").all()


def test_run_continue_refuses_what_it_cannot_release(db: tuple[Store, str], capsys: pytest.CaptureFixture[str]) -> None:
    store, url = db
    recipe = _recipe(HOLD)
    store.upsert_lot_and_cells([("X-1", "LOT-X", 5.0)])
    store.save_recipe(recipe.sha256, recipe.name, recipe.version, None, 5.0, recipe.canonical_json(), "")
    job = store.create_job(recipe.sha256, "h", "1", 1.0, 0.0)
    store.create_runs(job, [{"cell_id": "X-1", "cabinet": "h", "channel": 1, "instrument_cell": 1001,
                             "state": "running", "step_index": 0, "started_s": 0.0}])  # fmt: skip
    cases = [
        (["run", "continue", "99", "--db", url], "error: job: no job 99"),
        (["run", "continue", str(job), "--db", url], f"error: job: no run of job {job} is at a hold step"),
        (["run", "continue", "x", "--db", url], "error: Invalid value for 'job'"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(expected), err
    store.finish_job(job, __import__("formation.states", fromlist=["JobState"]).JobState.DONE, 1.0)
    assert main(["run", "continue", str(job), "--db", url]) == 2
    assert capsys.readouterr().err.strip() == f"error: job: job {job} is done: nothing to continue"
    assert store.continue_count(job) == 0


RELAX = """
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { duration = "10min" }
[[steps]]
id = "relax"
kind = "rest"
until = { duration = "3h", dvdt_mv_per_h = 5.0, dvdt_window = "5min" }
record = { every_s = 10, every_mv = 1.0 }
[[steps]]
id = "warm"
kind = "charge"
current = "1C"
until = { duration = "10min" }
[[steps]]
id = "cool"
kind = "wait"
below_c = 27.0
timeout = "3h"
record = { every_s = 30 }
"""


async def test_a_rest_ends_when_relaxation_slows_and_a_wait_when_the_cell_is_cool(db: tuple[Store, str]) -> None:
    recipe = _recipe(RELAX)
    # x1000: the 3 h backstop is 11 s of wall, room for a loaded machine to judge the dV/dt end first.
    async with _line(db, 2, 1000.0) as line:
        sup = await run_job(line.cabinet, recipe, assign_cells(range(1, 3), _cells(2), recipe), line.store, line.clock)
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    results = line.store.step_results(job_id=sup.job_id).set_index(["run_id", "step_id"])
    for run in sup.runs:
        relax = results.loc[(run.run_id, "relax")]
        assert relax["end_reason"] == "dvdt"
        assert 300 < relax["duration_s"] < 2 * 3600, "ended on the dV/dt end, well before its 3 h backstop"
        samples = line.store.samples(run.run_id)
        rest = samples[samples["step_index"] == 1]
        t, v = rest["ts_s"].to_numpy(), rest["voltage_v"].to_numpy()
        first = t <= t[0] + 300
        last = t >= t[-1] - 300
        # The simulator's own relaxation: fast at first, below the threshold over the last window.
        assert dvdt_mv_per_h(t[first], v[first]) > 20.0
        # A poll or two may pass between the judged record and the abort: the slope only keeps falling.
        assert dvdt_mv_per_h(t[last], v[last]) < 5.0
        cool = results.loc[(run.run_id, "cool")]
        assert cool["end_reason"] == "temperature"
        temps = samples[samples["step_index"] == 3]["temperature_c"].to_numpy()
        # The end is judged on the cell's temperature; the logged one carries 0.05 °C noise at 0.1 °C resolution.
        assert temps[0] >= 27.0 and temps[-1] <= 27.1, "it waited for a warm cell to cool"
        assert temps[-1] < temps[0]  # it cooled while it waited
