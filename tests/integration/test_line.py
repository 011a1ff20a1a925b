"""The line end to end: simulated cabinet over real TCP, the driver, the supervisor, a SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import CellState
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.cabinet.safety import MAX_BAD_POLLS
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, resume_job, run_job
from formation.recipes import Recipe, load_builtin, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import JobState, RunState
from formation.store import Store


@dataclass
class Line:
    plant: SimulatedPlant
    clock: ScaledClock
    cabinet: CabinetConfig
    store: Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'line.db'}")
    s.create_schema()
    yield s
    s.close()


@asynccontextmanager
async def _line(store: Store, *, cells: int, scale: float, formed: bool = False, **spec_kw) -> AsyncIterator[Line]:  # type: ignore[no-untyped-def]
    clock = ScaledClock(scale)
    spec = CabinetSpec(name="cab", channels=cells, preset="ncm21700-5ah", seed=3, port=0, formed=formed, **spec_kw)
    async with SimulatedPlant([spec], clock) as plant:
        cab = CabinetConfig(
            name="cab",
            resource=plant.cabinets["cab"].resource,
            channels=cells,
            poll_interval_s=20.0,
            timeout_s=2.0,
        )
        yield Line(plant, clock, cab, store)


def _entries(n: int, nominal: float = 5.0) -> list[CellEntry]:
    return [CellEntry(f"T-{i:03d}", "LOT-T", nominal) for i in range(1, n + 1)]


def _no_sample_lost(store: Store, sup: CabinetSupervisor, *, allow_none: bool = False) -> None:
    """The instrument numbers its records across cells: the job's stored records are one run of numbers."""
    recs = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    if allow_none and not len(recs):
        return
    assert len(recs) and len(np.unique(recs)) == len(recs), "a sample was stored twice"
    assert np.array_equal(recs, np.arange(recs[0], recs[0] + len(recs))), "a sample was lost"


def _trapz_ah(g: pd.DataFrame) -> float:
    t = g["ts_s"].to_numpy()
    i = g["current_a"].to_numpy()
    return float(np.sum((i[1:] + i[:-1]) * np.diff(t)) / 2.0 / 3600.0)


@pytest.mark.e2e
async def test_demo_recipe_accounts_every_coulomb(store: Store) -> None:
    """Every step's Ah equals the integral of its logged current within 0.5 %; FCE of fresh cells is 85–92 %."""
    recipe = load_builtin("demo-ncm21700")
    async with _line(store, cells=8, scale=4000.0, defect_fraction=0.0) as line:
        sup = await run_job(line.cabinet, recipe, assign_cells(range(1, 9), _entries(8), recipe), store, line.clock)
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.cell_id, r.state, r.end_reason) for r in sup.runs]
    results = store.step_results(job_id=sup.job_id)
    assert len(results) == 8 * len(recipe.steps)
    checked = 0
    for run in sup.runs:
        samples = store.samples(run.run_id)
        assert samples["rec"].is_unique
        for _, res in results[results["run_id"] == run.run_id].iterrows():
            g = samples[samples["step_index"] == res["step_index"]]
            assert len(g) >= 2, f"step {res['step_id']} has {len(g)} samples"
            logged = _trapz_ah(g)
            if abs(res["ah"]) < 1e-6:
                assert abs(logged) < 1e-6
                continue
            assert logged == pytest.approx(res["ah"], rel=0.005), (run.cell_id, res["step_id"])
            checked += 1
        by_kind = results[results["run_id"] == run.run_id].sort_values("step_index")
        first_discharge = by_kind[by_kind["kind"] == "discharge"].iloc[0]
        charged = by_kind[(by_kind["kind"] == "charge") & (by_kind["step_index"] < first_discharge["step_index"])]
        fce = -first_discharge["ah"] / charged["ah"].sum()
        assert 0.85 <= fce <= 0.92, (run.cell_id, fce)
    assert checked >= 8 * 4


@pytest.mark.e2e
async def test_formed_cell_capacity_is_nominal(store: Store) -> None:
    """A formed NCM 21700: CC-CV to 4.2 V then C/5 to 2.5 V delivers its nominal 5 Ah within ±3 %."""
    recipe = load_builtin("ncm21700-capacity")
    async with _line(store, cells=6, scale=4000.0, formed=True, initial_soc=0.3, defect_fraction=0.0) as line:
        sup = await run_job(line.cabinet, recipe, assign_cells(range(1, 7), _entries(6), recipe), store, line.clock)
    results = store.step_results(job_id=sup.job_id)
    capacity = -results[results["step_id"] == "capacity"]["ah"].to_numpy()
    assert len(capacity) == 6
    assert np.all(np.abs(capacity / 5.0 - 1.0) <= 0.03), capacity
    # The CC-CV charge never went past the clamp on the instrument.
    for run in sup.runs:
        assert store.samples(run.run_id)["voltage_v"].max() <= 4.2 + 0.0005


SHORT = """
name = "short"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = {tmax}
[record]
every_s = 30
every_mv = 5
[[steps]]
id = "c1"
kind = "charge"
current = "C/2"
until = {{ duration = "3h", voltage_v = 4.1 }}
[[steps]]
id = "r1"
kind = "rest"
until = {{ duration = "30min" }}
"""


def _short(tmax: float = 60.0) -> Recipe:
    return loads_recipe(SHORT.format(tmax=tmax), "toml", source="short.toml")


async def test_dropped_connection_is_reconnected_without_losing_or_duplicating_samples(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=8, scale=2000.0) as line:
        dropped = asyncio.Event()

        async def drop_midway(sup: CabinetSupervisor) -> None:
            while not any(r.steps_done for r in sup.runs) and not sup.finished:
                await asyncio.sleep(0.02)
            async with ScpiSession(line.cabinet.resource, name="injector") as injector:
                await injector.write("SIM:FAULT:DROP")
            dropped.set()

        tasks: list[asyncio.Task[None]] = []
        sup = await run_job(
            line.cabinet,
            recipe,
            assign_cells(range(1, 9), _entries(8), recipe),
            store,
            line.clock,
            on_start=lambda s: tasks.append(asyncio.create_task(drop_midway(s), name="drop-midway")),
        )
        await asyncio.gather(*tasks)
        assert dropped.is_set()
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    assert store.get_job(sup.job_id).state == "done"
    assert not [a for a in store.alarms(job_id=sup.job_id) if a.severity == "critical"]
    _no_sample_lost(store, sup)


async def test_silent_host_leaves_every_cell_aborted_by_the_watchdog(store: Store) -> None:
    recipe = _short()
    async with (
        _line(store, cells=4, scale=200.0) as line,
        ScpiSession(line.cabinet.resource, timeout_s=2.0) as session,
        CabinetSupervisor("cab", Bt2200Cycler(session), store, line.clock, watchdog_s=0.5, n_channels=4) as sup,
    ):
        await sup.launch(recipe, assign_cells(range(1, 5), _entries(4), recipe))
        await sup.poll_once()
        assert all(r.state is RunState.RUNNING for r in sup.runs)
        # The host goes silent: no command at all for longer than the watchdog (wall time).
        await asyncio.sleep(1.2)
        cycler = Bt2200Cycler(session)
        status = await cycler.status([1, 2, 3, 4])
        meas = await cycler.measure([1, 2, 3, 4])
        assert list(status) == [CellState.ABORTED] * 4
        assert np.all(meas.current_a == 0.0)
        await sup.poll_once()
    assert all(r.state is RunState.FAULTED and r.end_reason == "watchdog" for r in sup.runs)
    assert sum(a.code == "instrument_stop" for a in store.alarms(job_id=sup.job_id)) == 4
    # What the instrument logged while the host was silent (up to the watchdog's stop) is drained once it speaks.
    _no_sample_lost(store, sup)


async def test_instrument_temperature_limit_faults_cells_and_the_rest_goes_on(store: Store) -> None:
    """A FAIL test on the instrument stops a cell; the job finishes for the others."""
    recipe = _short(tmax=25.6)  # the C/2 charge warms cells above this within minutes
    async with _line(store, cells=4, scale=2000.0) as line:
        sup = await run_job(line.cabinet, recipe, assign_cells(range(1, 5), _entries(4), recipe), store, line.clock)
    assert sup.finished
    faulted = [r for r in sup.runs if r.state is RunState.FAULTED]
    assert faulted, "no cell reached the temperature limit"
    assert all(r.end_reason == "limit:max_temperature" for r in faulted)
    results = store.step_results(job_id=sup.job_id)
    assert set(results[results["end_reason"] == "limit:max_temperature"]["step_id"]) == {"c1"}
    # One alarm per stopped cell; the cells that stayed below the limit went on to the end of the recipe.
    stops = [a for a in store.alarms(job_id=sup.job_id) if a.code == "instrument_stop"]
    assert sorted(a.run_id for a in stops) == sorted(r.run_id for r in faulted)
    others = [r for r in sup.runs if r not in faulted]
    assert all(r.state is RunState.DONE for r in others), [(r.state, r.end_reason) for r in others]
    assert store.get_job(sup.job_id).state in ("faulted", "done")
    _no_sample_lost(store, sup)


async def test_ctrl_c_aborts_the_cells(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=50.0) as line:
        started = asyncio.Event()
        job = asyncio.create_task(
            run_job(
                line.cabinet,
                recipe,
                assign_cells(range(1, 5), _entries(4), recipe),
                store,
                line.clock,
                on_start=lambda s: started.set(),
            ),
            name="job",
        )
        await started.wait()
        await asyncio.sleep(0.3)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        async with ScpiSession(line.cabinet.resource) as session:
            status = await Bt2200Cycler(session).status([1, 2, 3, 4])
    assert list(status) == [CellState.ABORTED] * 4
    runs = store.job_runs(store.list_jobs()[-1].id)
    assert {r.state for r in runs} == {"aborted"}
    assert store.list_jobs()[-1].state == "aborted"


async def _inject_when_running(sup: CabinetSupervisor, resource: str, command: str) -> None:
    while not all(r.state is RunState.RUNNING for r in sup.runs):
        await asyncio.sleep(0.01)
    async with ScpiSession(resource, name="injector") as injector:
        await injector.write(command)


async def _run_injecting(line: Line, cab: CabinetConfig, recipe: Recipe, n: int, command: str) -> CabinetSupervisor:
    """Run ``recipe`` on ``n`` cells and send ``command`` from a second session once every run is running."""
    tasks: list[asyncio.Task[None]] = []
    sup = await run_job(
        cab,
        recipe,
        assign_cells(range(1, n + 1), _entries(n), recipe),
        line.store,
        line.clock,
        on_start=lambda s: tasks.append(
            asyncio.create_task(_inject_when_running(s, cab.resource, command), name="inject")
        ),
    )
    await asyncio.gather(*tasks)
    return sup


async def test_a_refused_step_start_is_alarmed_and_started_once_the_instrument_takes_it(store: Store) -> None:
    """The instrument refuses the next two CELL:INIT (SCPI error -221): the start is retried, never doubled."""
    recipe = _short()
    async with _line(store, cells=4, scale=5000.0) as line:
        sup = await _run_injecting(line, line.cabinet, recipe, 4, "SIM:FAULT:REF 2")
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    failed = [a for a in store.alarms(job_id=sup.job_id) if a.code == "start_failed"]
    assert len(failed) == 2 and all("-221" in a.message for a in failed), [a.message for a in failed]
    results = store.step_results(job_id=sup.job_id)
    assert sorted(results.groupby("run_id")["step_id"].apply(list)) == [["c1", "r1"]] * 4  # each step once
    assert store.get_job(sup.job_id).state == "done"
    _no_sample_lost(store, sup)


async def test_a_step_download_that_lost_a_line_is_found_and_downloaded_again(store: Store) -> None:
    """Two lines of the next step's download dropped unread: the step count shows it, the download is redone."""
    recipe = _short()
    async with _line(store, cells=4, scale=5000.0) as line:
        sup = await _run_injecting(line, line.cabinet, recipe, 4, "SIM:FAULT:LOSE 2")
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    failed = [a.message for a in store.alarms(job_id=sup.job_id) if a.code == "start_failed"]
    assert len(failed) == 1 and "a command was lost" in failed[0], failed
    results = store.step_results(job_id=sup.job_id)
    assert sorted(results.groupby("run_id")["step_id"].apply(list)) == [["c1", "r1"]] * 4
    _no_sample_lost(store, sup)


async def test_an_instrument_that_keeps_refusing_starts_gets_the_waiting_runs_faulted(store: Store) -> None:
    """Every CELL:INIT refused: after five polls in a row the waiting channels are switched off and faulted."""
    recipe = _short()
    async with _line(store, cells=4, scale=5000.0) as line:
        sup = await _run_injecting(line, line.cabinet, recipe, 4, "SIM:FAULT:REF 1000")
    assert all(r.state is RunState.FAULTED and r.end_reason == "start_refused" for r in sup.runs)
    codes = [a.code for a in store.alarms(job_id=sup.job_id)]
    assert codes.count("start_failed") == 5 and codes.count("start_refused") == 1
    assert store.get_job(sup.job_id).state == "faulted"
    results = store.step_results(job_id=sup.job_id)
    assert list(results["step_id"]) == ["c1"] * 4  # the charge ran and was stored; the rest never started
    _no_sample_lost(store, sup)


async def test_a_few_garbage_replies_raise_alarms_and_the_job_goes_on(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=2000.0) as line:
        sup = await _run_injecting(line, line.cabinet, recipe, 4, "SIM:FAULT:GARB 2")
    assert all(r.state is RunState.DONE for r in sup.runs)
    assert sum(a.code == "bad_reply" for a in store.alarms(job_id=sup.job_id)) == 2
    assert store.get_job(sup.job_id).state == "done"
    _no_sample_lost(store, sup)


async def test_an_instrument_that_keeps_answering_garbage_gets_its_channels_switched_off(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=200.0) as line:
        sup = await _run_injecting(line, line.cabinet, recipe, 4, "SIM:FAULT:GARB 1000")
        async with ScpiSession(line.cabinet.resource) as s:
            await s.write("SIM:FAULT:CLE")
            status = await Bt2200Cycler(s).status([1, 2, 3, 4])
    assert list(status) == [CellState.ABORTED] * 4
    assert all(r.state is RunState.FAULTED and r.end_reason == "instrument_unreadable" for r in sup.runs)
    codes = [a.code for a in store.alarms(job_id=sup.job_id)]
    assert codes.count("bad_reply") == MAX_BAD_POLLS and "instrument_unreadable" in codes
    assert store.get_job(sup.job_id).state == "faulted"
    _no_sample_lost(store, sup)  # what was read before the garbage began is stored, once


@pytest.mark.e2e
async def test_a_stalled_instrument_pauses_the_runs_and_they_resume_without_loss(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=1000.0) as line:
        cab = CabinetConfig(**{**line.cabinet.__dict__, "timeout_s": 0.5})
        tasks: list[asyncio.Task[None]] = []
        paused: list[bool] = []

        def watch(sup: CabinetSupervisor) -> None:
            async def stall_then_watch() -> None:
                await _inject_when_running(sup, cab.resource, "SIM:FAULT:STALL 1.5")
                while not sup.finished:
                    paused.append(any(r.state is RunState.PAUSED for r in sup.runs))
                    await asyncio.sleep(0.02)

            tasks.append(asyncio.create_task(stall_then_watch(), name="stall"))

        sup = await run_job(
            cab, recipe, assign_cells(range(1, 5), _entries(4), recipe), store, line.clock, on_start=watch
        )
        await asyncio.gather(*tasks)
    assert any(paused), "the runs were never shown as paused while the instrument was silent"
    assert all(r.state is RunState.DONE for r in sup.runs)
    codes = [a.code for a in store.alarms(job_id=sup.job_id)]
    assert "comm_lost" in codes and "comm_restored" in codes and "comm_lost_fault" not in codes
    assert store.get_job(sup.job_id).state == "done"
    _no_sample_lost(store, sup)


async def test_an_instrument_reset_faults_the_runs_instead_of_hanging(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=500.0) as line:

        async def reset_midway(sup: CabinetSupervisor) -> None:
            # Midway through the charge, with records already drained: what was stored must stay whole.
            while not all(r.state is RunState.RUNNING for r in sup.runs):
                await asyncio.sleep(0.01)
            await line.clock.sleep(900.0)
            async with ScpiSession(line.cabinet.resource, name="injector") as injector:
                await injector.write("*RST")

        tasks: list[asyncio.Task[None]] = []
        sup = await run_job(
            line.cabinet,
            recipe,
            assign_cells(range(1, 5), _entries(4), recipe),
            store,
            line.clock,
            on_start=lambda s: tasks.append(asyncio.create_task(reset_midway(s), name="reset")),
        )
        await asyncio.gather(*tasks)
    assert all(r.state is RunState.FAULTED and r.end_reason == "instrument_lost_cell" for r in sup.runs)
    assert sum(a.code == "instrument_lost_cell" for a in store.alarms(job_id=sup.job_id)) == 4
    assert store.get_job(sup.job_id).state == "faulted"
    # What was drained before the reset is stored once, unbroken; the reset cleared the rest from the instrument.
    _no_sample_lost(store, sup)


async def test_an_abort_requested_from_another_process_is_honoured(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=100.0) as line:

        def request_abort(sup: CabinetSupervisor) -> None:
            async def later() -> None:
                await asyncio.sleep(0.3)
                other = Store(store.url)  # as `formation run abort` does, through the database
                assert sup.job_id is not None
                other.set_job_state(sup.job_id, JobState.ABORTING)
                other.close()

            tasks.append(asyncio.create_task(later(), name="request-abort"))

        tasks: list[asyncio.Task[None]] = []
        sup = await run_job(
            line.cabinet,
            recipe,
            assign_cells(range(1, 5), _entries(4), recipe),
            store,
            line.clock,
            on_start=request_abort,
        )
        await asyncio.gather(*tasks)
        async with ScpiSession(line.cabinet.resource) as s:
            status = await Bt2200Cycler(s).status([1, 2, 3, 4])
    assert all(r.state is RunState.ABORTED for r in sup.runs)
    assert list(status) == [CellState.ABORTED] * 4
    assert store.get_job(sup.job_id).state == "aborted"


async def test_a_link_lost_for_longer_than_the_watchdog_allows_faults_the_runs(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=2, scale=100.0) as line:
        cab = CabinetConfig(**{**line.cabinet.__dict__, "timeout_s": 0.3, "watchdog_s": 0.3})
        sup = await _run_injecting(line, cab, recipe, 2, "SIM:FAULT:STALL 4")
        async with ScpiSession(cab.resource, timeout_s=5.0) as s:
            status = await Bt2200Cycler(s).status([1, 2])
            next_rec = int(await s.query("DATA:LOG:NEXT?"))
    assert all(r.state is RunState.FAULTED and r.end_reason == "comm_lost" for r in sup.runs)
    codes = [a.code for a in store.alarms(job_id=sup.job_id)]
    # Faulted after 3 × watchdog_s; the host kept trying the link, which came back: restored, then closed.
    assert "comm_lost_fault" in codes and codes.index("comm_restored") > codes.index("comm_lost_fault")
    # The instrument's own watchdog switched the cells off while the host could not reach it.
    assert list(status) == [CellState.ABORTED] * 2
    assert store.get_job(sup.job_id).state == "faulted"
    # Every record the instrument logged, those of the silent seconds too, is stored once: none left on it.
    _no_sample_lost(store, sup)
    stored = np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs])
    assert stored.max() == next_rec - 1


@pytest.mark.e2e
async def test_a_cabinet_gone_for_good_ends_the_job_as_faulted(store: Store) -> None:
    recipe = _short()
    clock = ScaledClock(100.0)
    plant = SimulatedPlant([CabinetSpec(name="gone", channels=2, seed=1)], clock)
    await plant.__aenter__()
    started = asyncio.Event()
    try:
        cab = CabinetConfig(
            name="gone", resource=plant.cabinets["gone"].resource, channels=2, timeout_s=0.3, watchdog_s=0.3
        )
        job = asyncio.create_task(
            run_job(
                cab,
                recipe,
                assign_cells(range(1, 3), _entries(2), recipe),
                store,
                clock,
                on_start=lambda s: started.set(),
            ),
            name="job",
        )
        await started.wait()
        await asyncio.sleep(0.2)
    finally:
        await plant.__aexit__(None, None, None)  # the cabinet disappears and never comes back
    sup = await asyncio.wait_for(job, 60)
    assert all(r.state is RunState.FAULTED and r.end_reason == "comm_lost" for r in sup.runs)
    assert store.get_job(sup.job_id).state == "faulted"
    assert "comm_lost_fault" in [a.code for a in store.alarms(job_id=sup.job_id)]


@pytest.mark.e2e
async def test_a_restarted_host_reattaches_without_losing_samples_or_repeating_a_step(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=4, scale=1000.0) as line:
        # The first host launches, supervises a while, then dies mid-charge: no abort, nothing closed.
        async with (
            ScpiSession(line.cabinet.resource) as session,
            CabinetSupervisor("cab", Bt2200Cycler(session), store, line.clock, n_channels=4) as first,
        ):
            job_id = await first.launch(recipe, assign_cells(range(1, 5), _entries(4), recipe))
            for _ in range(5):
                await first.poll_once()
                await asyncio.sleep(0.05)
            assert all(r.state is RunState.RUNNING and r.step_index == 0 for r in first.runs)
        await asyncio.sleep(0.3)  # the cells keep charging on the instrument meanwhile
        assert store.get_job(job_id).state == "running"

        # A new host process re-attaches from the database and the instrument alone.
        sup = await resume_job(line.cabinet, job_id, store, line.clock)
    assert sup.job_id == job_id
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    results = store.step_results(job_id=job_id)
    # Every step exactly once per cell: the charge was not repeated.
    assert sorted(results.groupby("run_id")["step_index"].apply(list).tolist()) == [[0, 1]] * 4
    assert (results[results["step_id"] == "c1"]["end_reason"] == "voltage").all()
    recs = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    assert np.array_equal(recs, np.arange(recs[0], recs[0] + len(recs))), "a sample was lost or doubled"
    # The charge Ah still equals the integral of its logged current across the restart.
    for run in sup.runs:
        samples = store.samples(run.run_id)
        charge = results[(results["run_id"] == run.run_id) & (results["step_index"] == 0)].iloc[0]
        assert _trapz_ah(samples[samples["step_index"] == 0]) == pytest.approx(charge["ah"], rel=0.005)
    assert store.get_job(job_id).state == "done"
    assert "reattached" in [a.code for a in store.alarms(job_id=job_id)]


class HostDiesAtStepEnd(Exception):
    """Fault injection: the host process dies at the worst moment of a step transition."""


class SupervisorThatDiesAtStepEnd(CabinetSupervisor):
    """Dies right after handing a step's end record to the writer, before the step result is written."""

    async def _advance(self, run, code):  # type: ignore[no-untyped-def]
        raise HostDiesAtStepEnd


async def test_a_host_that_died_between_storing_an_end_record_and_its_step_result_is_resumed(store: Store) -> None:
    recipe = _short()
    async with _line(store, cells=2, scale=2000.0) as line:
        with pytest.raises(HostDiesAtStepEnd):
            async with (
                ScpiSession(line.cabinet.resource) as session,
                SupervisorThatDiesAtStepEnd("cab", Bt2200Cycler(session), store, line.clock, n_channels=2) as first,
            ):
                job_id = await first.launch(recipe, assign_cells(range(1, 3), _entries(2), recipe))
                while True:
                    await first.poll_once()
                    await asyncio.sleep(0.02)
        # The end record is stored as a sample, the step result is not: it will never be drained again.
        assert store.step_results(job_id=job_id).empty
        sup = await resume_job(line.cabinet, job_id, store, line.clock)
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    results = store.step_results(job_id=job_id)
    assert sorted(results.groupby("run_id")["step_index"].apply(list).tolist()) == [[0, 1]] * 2
    assert (results[results["step_id"] == "c1"]["end_reason"] == "voltage").all()
    recs = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    assert np.array_equal(recs, np.arange(recs[0], recs[0] + len(recs))), "a sample was lost or doubled"
