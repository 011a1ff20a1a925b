"""The route a cell takes (issue 8, e2e): a lot forms on the cabinet (formation charge, capacity discharge, storage
charge to 30 %), moves to a rack (`formation age load`), ages 3 simulated days at 45 °C then 7 at 25 °C with
OCV/ACIR checkpoints (`formation age start --foreground`, built-in plan ``ncm21700-hot-then-room``), and is graded
(`formation grade`) with capacity from the cabinet and K, OCV and ACIR from the ageing job. While the lot ages, a
second lot runs a job on the same cabinet channels: they are free.

The rack stands in an ageing room (``formation demo --ageing``'s: τ 4 h, 5 min dead time), which holds ±0.5 °C with
the control periods of a few clock minutes that the clock's ×20 000 (``FORMATION_ROUTE_SCALE``) gives it: ten
simulated days in about a minute of wall time, hence ``e2e``.
"""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path

import numpy as np
import pytest

from formation.cli.app import main
from formation.cli.demo_ageing import ROOM_DEAD_TIME_S, ROOM_GAIN_C, ROOM_TAU_S, ageing_plant, room_site
from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.orchestrator.run import RunState
from formation.recipes import loads_recipe
from formation.sim import tester as sim_tester
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.sim.rack import RackSpec
from formation.store import Store
from tests.integration.ageing_support import site_file

pytestmark = pytest.mark.e2e

SCALE = float(os.environ.get("FORMATION_ROUTE_SCALE", "20000"))
N = 8
CHANNELS = list(range(1, N + 1))

#: A short formation and capacity recipe: forming charge, rest, C/2 capacity discharge to the cut-off (it must end
#: on voltage to count), storage charge to about 30 % SOC for ageing.
FORM = """
name = "route-form-capacity"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_current_a = 5.0
max_cell_temperature_c = 60.0
[record]
every_s = 60
every_mv = 5.0
[[steps]]
id = "form"
kind = "charge"
current = "C/2"
cv_voltage_v = 4.2
until = { current = "C/10", duration = "4h" }
[[steps]]
id = "relax"
kind = "rest"
until = { duration = "15min" }
[[steps]]
id = "capacity"
kind = "discharge"
current = "C/2"
until = { voltage_v = 2.7, duration = "3h" }
[[steps]]
id = "storage"
kind = "charge"
current = "C/2"
until = { soc = "30%", duration = "2h" }
[[steps]]
id = "settle"
kind = "rest"
until = { duration = "10min" }
"""

#: What the second lot runs on the freed channels while the first one ages.
SECOND = """
name = "route-second-lot"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_current_a = 5.0
[[steps]]
id = "charge"
kind = "charge"
current = "C/5"
until = { duration = "30min", voltage_v = 4.2 }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "15min" }
"""

#: The host's settings of the ageing room, as the demo has them (``room_site``), in the site file's words.
_ROOM = room_site("")
ROOM_SETTINGS = (
    "\n".join(
        f"{key} = {getattr(_ROOM, key)!r}" for key in ("period_s", "cycle_s", "min_on_s", "min_off_s", "sample_every_s")
    )
    + f"\ngain_c = {ROOM_GAIN_C}\ntau_s = {ROOM_TAU_S}\ndead_time_s = {ROOM_DEAD_TIME_S}"
)

RULES = """
name = "route-two-stations"
version = "1"
[metrics.capacity_ah]
step = "capacity"
[metrics.k_mv_per_day]
from = "ageing"
[metrics.ocv_v]
from = "ageing"
[metrics.acir_mohm]
from = "ageing"
[[grades]]
name = "A"
capacity_ah = { min = 4.0 }
k_mv_per_day = { max = 3.0, max_sigma_above = 4.0 }
acir_mohm = { max = 40.0 }
ocv_v = { max_dev = 0.015 }
[[grades]]
name = "B"
capacity_ah = { min = 3.5 }
k_mv_per_day = { max = 5.0 }
acir_mohm = { max = 60.0 }
"""


def _plant(clock: ScaledClock) -> SimulatedPlant:
    """Cabinet ``cab1`` of fresh (unformed) cells beside ageing room ``ch1``, which holds rack ``rack1`` read by
    ``t1``."""
    cabinet = CabinetSpec("cab1", channels=N, seed=11, defect_fraction=0.0)
    room = ageing_plant(N, seed=11)[0][0]
    return SimulatedPlant(
        [cabinet],
        clock,
        chambers=[ChamberSpec(name="ch1", params=room.params, seed=11)],
        racks=[RackSpec("rack1", positions=N, chamber="ch1", seed=11)],
        testers=[sim_tester.TesterSpec("t1", ("rack1",), seed=11)],
    )


async def _until(predicate: object, timeout_s: float) -> None:
    """Poll ``predicate()`` every wall 0.2 s until true (the test's failure, not a hang, after ``timeout_s``)."""
    assert callable(predicate)
    for _ in range(int(timeout_s / 0.2)):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not reached in {timeout_s} s of wall time")


async def test_a_lot_forms_ages_on_a_rack_and_is_graded_from_both_stations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORMATION_MQTT_ENABLED", "no")
    url = f"sqlite:///{tmp_path / 'f.db'}"
    clock = ScaledClock(SCALE)
    # One clock for the plant and every command run in this process, as the demo does.
    monkeypatch.setattr("formation.clock.make_clock", lambda scale: clock)
    store = Store(url)
    store.create_schema()
    async with _plant(clock) as sim:
        cab = CabinetConfig(name="cab1", resource=sim.cabinets["cab1"].resource, channels=N, poll_interval_s=20.0)
        form = loads_recipe(FORM, "toml")
        cells = [CellEntry(f"R1-{i:02d}", "R1", 5.0) for i in CHANNELS]
        sup = await run_job(cab, form, assign_cells(CHANNELS, cells, form), store, clock)
        assert all(r.state is RunState.DONE for r in sup.runs)
        formed = store.step_results(job_id=sup.job_id)
        capacity = formed[formed["step_id"] == "capacity"].set_index("cell_id")
        assert (capacity["end_reason"] == "voltage").all() and capacity["ah"].abs().between(4.0, 5.5).all()

        site = site_file(tmp_path / "site.toml", url, sim, SCALE, ROOM_SETTINGS)
        tester = sim.tester_resources["t1"]
        load = ["age", "load", "R1", "--rack", "rack1", "--db", url, "--tester", tester]
        assert await asyncio.to_thread(main, load) == 0
        assert sim.cabinets["cab1"].model.vacant.tolist() == [True] * N  # the cells left the cabinet
        start = ["age", "start", "R1", "--plan", "ncm21700-hot-then-room", "--rack", "rack1", "--site", str(site)]
        ageing = asyncio.create_task(asyncio.to_thread(main, [*start, "--foreground"]), name="ageing-job")

        # While the lot ages (its first hot-stage checkpoint is stored), the cabinet's channels take another lot.
        await _until(lambda: len(store.ageing_readings(job_id=1)) >= N, timeout_s=120.0)
        second = loads_recipe(SECOND, "toml")
        others = [CellEntry(f"R2-{i:02d}", "R2", 5.0) for i in CHANNELS]
        sup2 = await run_job(cab, second, assign_cells(CHANNELS, others, second), store, clock)
        assert all(r.state is RunState.DONE for r in sup2.runs)
        ageing_state = store.ageing_jobs(job_id=1)[0].state
        assert ageing_state == "running" and not ageing.done()

        assert await ageing == 0
        truth = {p: sim.racks["rack1"].truth(p) for p in range(1, N + 1)}
    out = capsys.readouterr().out
    assert "ageing job 1: lot R1 on rack rack1, plan ncm21700-hot-then-room" in out

    job = store.ageing_jobs(job_id=1)[0]
    readings = store.ageing_readings(job_id=1)
    results = store.ageing_results(job_id=1).set_index("cell_id")
    second_runs = store.step_results(job_id=sup2.job_id)
    assert job.state == "done" and job.ended_s is not None
    assert job.ended_s - job.started_s >= 10 * 86400.0  # 3 d at 45 °C, then 7 d at 25 °C
    # The second lot ran on the same channels and finished while the first one aged on the rack.
    assert second_runs["ended_s"].max() < job.ended_s and second_runs["started_s"].min() > job.started_s
    assert len(readings) == 12 * N and readings["reason"].isna().all()  # every checkpoint, every cell, once
    # The chamber held its band: hot-stage checkpoints after the first near 45 °C, room ones after 12 h near 25 °C.
    hot = readings[(readings["stage"] == 0) & (readings["k"] >= 1)]
    room = readings[(readings["stage"] == 1) & (readings["k"] >= 5)]
    assert hot["cell_temperature_c"].between(44.0, 46.0).all(), hot["cell_temperature_c"].describe()
    assert room["cell_temperature_c"].between(24.0, 26.0).all(), room["cell_temperature_c"].describe()
    assert room["chamber_in_band"].astype(bool).mean() >= 0.9
    # K by regression for every cell, with a standard error well below K; OCV as the simulator has it at the end.
    assert results["reason"].eq("").all() and results["n_points"].ge(4).all()
    assert results["k_mv_per_day"].between(0.1, 3.0).all(), results["k_mv_per_day"]
    assert (results["k_se_mv_per_day"] < 0.5 * results["k_mv_per_day"]).all()
    ocv_truth = np.array([truth[p]["ocv_v"] for p in range(1, N + 1)], dtype=float)
    assert np.abs(results.loc[[f"R1-{i:02d}" for i in CHANNELS], "ocv_v"].to_numpy() - ocv_truth).max() < 0.005
    assert results["acir_mohm"].between(5.0, 60.0).all()

    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    report = tmp_path / "report.csv"
    assert main(["grade", "R1", "--rules", str(rules), "--out", str(report), "--db", url]) == 0
    with report.open(encoding="utf-8", newline="") as fh:
        rows = {r["cell_id"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == [c.cell_id for c in cells]
    for cell_id, row in rows.items():
        assert row["grade"] in ("A", "B", "NG")
        # Capacity from the cabinet's capacity step, K, OCV and ACIR from the ageing job: the report joins both.
        assert float(row["capacity_ah"]) == pytest.approx(abs(capacity.at[cell_id, "ah"]), abs=1e-4)
        assert float(row["k_mv_per_day"]) == pytest.approx(results.at[cell_id, "k_mv_per_day"], abs=1e-4)
        assert float(row["ocv_v"]) == pytest.approx(results.at[cell_id, "ocv_v"], abs=1e-5)
        assert row["cabinet"] == "cab1" and int(row["channel"]) in CHANNELS
        # What quality asks for: ACIR, K's standard error, the ageing window and its temperature.
        assert float(row["acir_mohm"]) == pytest.approx(results.at[cell_id, "acir_mohm"], abs=1e-3)
        assert float(row["k_se_mv_per_day"]) == pytest.approx(results.at[cell_id, "k_se_mv_per_day"], abs=1e-4)
        assert row["ageing_job_id"] == "1" and row["ageing_start"] < row["ageing_end"]
        assert 24.0 <= float(row["ageing_temperature_c"]) <= 26.0
        assert (row["downgraded_by"] != "") == (row["grade"] == "B")
    assert sum(r["grade"] == "A" for r in rows.values()) >= N // 2  # a healthy lot grades mostly A
    store.close()
