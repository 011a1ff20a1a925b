"""DCIR and K-value measured through the whole line agree with the simulator's ground truth."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.instruments.program import channel_to_cell_id
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.orchestrator.run import RunState
from formation.recipes import load_builtin, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.store import Store

N = 8


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'm.db'}")
    s.create_schema()
    yield s
    s.close()


def _cells() -> list[CellEntry]:
    return [CellEntry(f"M-{i:02d}", "LOT-M", 5.0) for i in range(1, N + 1)]


async def _truth_while_resting(
    sup: CabinetSupervisor, resource: str, step_ids: dict[str, float], out: dict[tuple[int, str], list[float]]
) -> None:
    """Late in each dcir step's baseline rest, ask the simulator for the true ΔV/ΔI of the coming pulse."""
    async with ScpiSession(resource, name="truth") as truth:
        while not sup.finished:
            now_s = float(await truth.query("SIM:TIME?"))
            for run in sup.runs:
                step = run.step
                if step is None or step.id not in step_ids or (run.channel, step.id) in out:
                    continue
                started = run.account.started_s
                # The last two minutes of the rest: the state the pulse will start from (temperature included).
                if started is None or not step.rest_s - 150.0 < now_s - started < step.rest_s - 15.0:
                    continue
                times = ",".join(f"{t:g}" for t in step.sample_at_s)
                reply = await truth.query(
                    f"SIM:CELL:DCIR? {channel_to_cell_id(run.channel)},{-step_ids[step.id]},{times}"
                )
                out[(run.channel, step.id)] = [float(x) * 1000.0 for x in reply.split(",")]
            await asyncio.sleep(0.005)


@pytest.mark.e2e
async def test_dcir_matches_the_simulators_truth_and_rises_at_low_soc(store: Store) -> None:
    recipe = load_builtin("ncm21700-dcir-soc")
    clock = ScaledClock(400.0)
    spec = CabinetSpec(name="m", channels=N, preset="ncm21700-5ah", seed=11, formed=True, defect_fraction=0.25)
    truth: dict[tuple[int, str], list[float]] = {}
    async with SimulatedPlant([spec], clock) as plant:
        resource = plant.cabinets["m"].resource
        cab = CabinetConfig(name="m", resource=resource, channels=N, poll_interval_s=5.0)
        tasks: list[asyncio.Task[None]] = []
        pulse_a = {"dcir50": 2.5, "dcir05": 2.5}
        sup = await run_job(
            cab,
            recipe,
            assign_cells(range(1, N + 1), _cells(), recipe),
            store,
            clock,
            on_start=lambda s: tasks.append(
                asyncio.create_task(_truth_while_resting(s, resource, pulse_a, truth), name="truth")
            ),
        )
        await asyncio.gather(*tasks)
    assert all(r.state is RunState.DONE for r in sup.runs)
    results = store.step_results(job_id=sup.job_id)
    measured: dict[tuple[int, str], dict[str, float]] = {}
    for _, row in results[results["kind"] == "dcir"].iterrows():
        details = json.loads(row["details"])
        measured[(int(row["channel"]), row["step_id"])] = details["dcir_mohm"]
        # The logged current carries the cabinet's noise (0.01 %) and resolution (0.1 mA).
        assert details["pulse_s"] == 10.0 and details["pulse_current_a"] == pytest.approx(-2.5, abs=1e-3)
        assert 0.0 <= details["soc"] <= 0.6 and 15.0 < details["temperature_c"] < 40.0
    assert len(measured) == 2 * N and set(truth) == set(measured)
    for key, true_mohm in truth.items():
        got = measured[key]
        for t_s, expected in zip(("1", "10"), true_mohm, strict=True):
            assert got[t_s] == pytest.approx(expected, rel=0.02), (key, t_s)
    for ch in range(1, N + 1):
        assert measured[(ch, "dcir05")]["10"] > 1.3 * measured[(ch, "dcir50")]["10"]


AGE = """
name = "age-test"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
id = "settle"
kind = "rest"
until = { duration = "10min" }
[[steps]]
id = "age"
kind = "age"
duration = "2d"
ocv_at = ["12h", "2d"]
record = { every_s = 3600, every_mv = 0.5 }
"""


@pytest.mark.e2e
async def test_k_value_matches_the_simulators_truth(store: Store) -> None:
    recipe = loads_recipe(AGE, "toml")
    clock = ScaledClock(20_000.0)
    # Seed 9 with half the lot defective gives two high-leak cells (K ≈ 0.7 and 3.5 mV/day) among six normal ones.
    spec = CabinetSpec(
        name="k", channels=N, preset="ncm21700-5ah", seed=9, formed=True, initial_soc=0.3, defect_fraction=0.5
    )
    async with SimulatedPlant([spec], clock) as plant:
        resource = plant.cabinets["k"].resource
        cab = CabinetConfig(name="k", resource=resource, channels=N, poll_interval_s=60.0)

        async def k_true_now() -> np.ndarray:
            async with ScpiSession(resource) as s:
                replies = [await s.query(f"SIM:CELL:TRUTH? {channel_to_cell_id(ch)}") for ch in range(1, N + 1)]
            return np.array([json.loads(r)["k_mv_per_day"] for r in replies])

        started: list[CabinetSupervisor] = []
        early: list[np.ndarray] = []

        async def at_first_checkpoint() -> None:
            # The self-discharge rate falls over the days (a decaying SEI-growth current on top of the leak):
            # read the truth at the first checkpoint too, 12 h into the age step.
            while not started or started[0].runs[0].step_index < 1 or started[0].runs[0].step_t0_host_s is None:
                await asyncio.sleep(0.01)
            t0_s = started[0].runs[0].step_t0_host_s
            assert t0_s is not None
            await clock.sleep(t0_s + 12 * 3600.0 - clock.now())
            early.append(await k_true_now())

        probe = asyncio.create_task(at_first_checkpoint(), name="k-truth-12h")
        try:
            sup = await run_job(
                cab, recipe, assign_cells(range(1, N + 1), _cells(), recipe), store, clock, on_start=started.append
            )
        finally:
            await asyncio.wait_for(probe, 10.0)
        late = await k_true_now()
    results = store.step_results(job_id=sup.job_id)
    ages = results[results["step_id"] == "age"].sort_values("channel")
    assert len(ages) == N
    k_measured = np.array([json.loads(d)["k_mv_per_day"] for d in ages["details"]])
    low, high = np.minimum(early[0], late), np.maximum(early[0], late)
    strong = low > 0.2
    assert strong.any(), "the seeded lot has no cell with K above 0.2 mV/day"
    # K over 12 h to 2 d is the mean rate in between: within the truth's span at its ends, 5 % to spare.
    assert np.all(k_measured[strong] >= 0.95 * low[strong]), (k_measured, low)
    assert np.all(k_measured[strong] <= 1.05 * high[strong]), (k_measured, high)
    # The logged OCV falls as the leak predicts, for every cell.
    assert np.all(k_measured > 0)
    samples = store.samples(int(ages.iloc[0]["run_id"]))
    assert len(samples[samples["step_index"] == 1]) >= 48
