"""Repeat blocks on the simulated plant: every cycle's steps stored with their cycle number, in step results and
samples; per-cycle capacity and efficiency; the BDF export carries the cycle and passes the Battery Data
Alliance's own validator (`bdf validate`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.grading.cycles import cycle_capacity_fade_pct, cycle_table
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.orchestrator.run import RunState
from formation.recipes import loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.store import Store, export_cell_bdf

N = 3
CYCLES = """
name = "cycles-test"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_current_a = 5.0
[[steps]]
id = "settle"
kind = "rest"
until = { duration = "2min" }
[[steps]]
kind = "tag"
tag = "cycle"
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { voltage_v = 4.05, duration = "2h" }
[[steps]]
id = "relax"
kind = "rest"
until = { duration = "5min" }
[[steps]]
id = "discharge"
kind = "discharge"
current = "1C"
until = { voltage_v = 3.3, duration = "2h" }
[[steps]]
kind = "loop"
loop_to = "cycle"
cycle_count = 3
[[steps]]
id = "end"
kind = "rest"
until = { duration = "2min" }
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'c.db'}")
    s.create_schema()
    yield s
    s.close()


@pytest.mark.e2e
async def test_three_cycles_store_their_cycle_numbers_and_export_as_bdf(store: Store, tmp_path: Path) -> None:
    recipe = loads_recipe(CYCLES, "toml")
    assert len(recipe.steps) == 1 + 3 * 3 + 1 and recipe.cycles == (0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0)
    clock = ScaledClock(4000.0)
    spec = CabinetSpec(name="c", channels=N, preset="ncm21700-5ah", seed=3, formed=True, initial_soc=0.3,
                       defect_fraction=0.0)  # fmt: skip
    cells = [CellEntry(f"C-{i}", "LOT-C", 5.0) for i in range(1, N + 1)]
    async with SimulatedPlant([spec], clock) as plant:
        cab = CabinetConfig(name="c", resource=plant.cabinets["c"].resource, channels=N, poll_interval_s=20.0)
        sup = await run_job(cab, recipe, assign_cells(range(1, N + 1), cells, recipe), store, clock)
    assert all(r.state is RunState.DONE for r in sup.runs)

    results = store.step_results(job_id=sup.job_id)
    for run_id, run_results in results.groupby("run_id"):
        assert run_results["step_index"].tolist() == list(range(11))
        assert run_results["cycle"].tolist() == list(recipe.cycles)
        cycled = run_results[run_results["cycle"] > 0]
        assert cycled.groupby("cycle")["step_id"].apply(list).tolist() == [["charge", "relax", "discharge"]] * 3
        samples = store.samples(int(run_id), with_cycle=True)
        # Every sample carries its step's cycle, and each cycle's records are there.
        expected = np.asarray(recipe.cycles)[samples["step_index"].to_numpy()]
        assert (samples["cycle"].to_numpy() == expected).all()
        assert set(samples["cycle"]) == {0, 1, 2, 3}

    table = cycle_table(results)
    assert len(table) == 3 * N and table["cycle"].tolist() == [1, 2, 3] * N
    # Formed cells cycled between the same voltages: the charge comes back out, within the SOC drift of a cycle.
    assert (table["charge_ah"] > 1.0).all() and (table["discharge_ah"] > 1.0).all()
    assert table["efficiency"].between(0.85, 1.1).all()
    by_step = results[results["step_id"] == "discharge"].sort_values(["run_id", "cycle"])
    assert np.allclose(table["discharge_ah"], -by_step["ah"].to_numpy())
    assert cycle_capacity_fade_pct(table).notna().all()

    out = tmp_path / "c1.csv"
    export_cell_bdf(store, "C-1", out)
    frame = pd.read_csv(out)
    cycle = frame["Cycle Count / 1"].to_numpy()
    assert (np.diff(cycle) >= 0).all() and set(cycle) == {0, 1, 2, 3}
    bdf = shutil.which("bdf") or str(Path(__import__("sys").executable).with_name("bdf"))
    report = subprocess.run([bdf, "validate", str(out), "--json"], capture_output=True, text=True, timeout=60)
    verdict = json.loads(report.stdout)
    assert report.returncode == 0 and verdict["ok"], report.stdout
    assert "Cycle Count / 1" not in verdict["extras"] and not verdict["missing"]


def test_run_show_prints_the_per_cycle_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.create_schema()
    recipe = loads_recipe(CYCLES, "toml")
    store.upsert_lot_and_cells([("S-1", "LOT-S", 5.0)])
    store.save_recipe(recipe.sha256, recipe.name, recipe.version, None, 5.0, recipe.canonical_json(), "")
    job = store.create_job(recipe.sha256, "c", "1", 1.0, 0.0)
    (run,) = store.create_runs(job, [{"cell_id": "S-1", "cabinet": "c", "channel": 1, "instrument_cell": 1001,
                                      "state": "done", "started_s": 0.0}])  # fmt: skip
    ahs = {1: (4.0, -3.9), 2: (3.9, -3.8), 3: (3.8, -3.7)}
    rows = []
    for i, (step, cycle) in enumerate(zip(recipe.steps, recipe.cycles, strict=True)):
        ah = {"charge": ahs.get(cycle, (0, 0))[0], "discharge": ahs.get(cycle, (0, 0))[1]}.get(step.id, 0.0)
        rows.append({"run_id": run, "step_index": i, "step_id": step.id, "kind": step.kind, "started_s": i,
                     "ended_s": i + 1, "duration_s": 1.0, "ah": ah, "wh": 0.0, "end_reason": "duration",
                     "cycle": cycle})  # fmt: skip
    store.add_step_results(rows)
    store.close()
    assert main(["run", "show", str(job), "--db", f"sqlite:///{db}"]) == 0
    out = capsys.readouterr().out
    assert "Per-cycle capacity" in out
    lines = [line for line in out.split("Per-cycle capacity")[1].splitlines() if "S-1" in line]
    cycle_rows = [line.split("│")[1:-1] for line in lines if line.count("│") == 7]
    assert [[c.strip() for c in row][2:] for row in cycle_rows] == [
        ["1", "4.0000", "3.9000", "97.50"],
        ["2", "3.9000", "3.8000", "97.44"],
        ["3", "3.8000", "3.7000", "97.37"],
    ]
