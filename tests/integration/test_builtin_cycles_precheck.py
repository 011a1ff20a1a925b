"""The built-in pre-check and three-cycle recipes with their built-in rules, and grading that reads cycles, through
the CLI on real SQLite stores: shorted cells are rejected by ``ncm21700-precheck`` on the simulated plant before
any current and graded NG with the reason; ``formation grade`` picks the first, last or a numbered cycle's result,
and refuses a cycle the lot's recipe does not have (one line, exit 2, nothing written). The whole three-cycle route
on the simulator is in test_demo_recipes.py (e2e)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.instruments.program import channel_to_cell_id
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.recipes import builtin_recipes, load_builtin
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import RunState
from formation.store import Store

THREE_CYCLES = "ncm21700-formation-3cycles"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def _report(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["cell_id"]: row for row in csv.DictReader(f)}


async def test_the_builtin_precheck_rejects_shorted_cells_and_its_rules_grade_them_ng(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = load_builtin("ncm21700-precheck")
    db = tmp_path / "p.db"
    store = Store(f"sqlite:///{db}")
    store.create_schema()
    clock = ScaledClock(3000.0)
    # Cells from assembly: fresh, at the bottom of their OCV table, as the demo gives this route.
    spec = CabinetSpec(name="p", channels=4, preset="ncm21700-5ah", seed=11, formed=False, initial_soc=0.0,
                       defect_fraction=0.0)  # fmt: skip
    cells = [CellEntry(f"P-{i}", "LOT-P", 5.0) for i in range(1, 5)]
    async with SimulatedPlant([spec], clock) as plant:
        cabinet = CabinetConfig(name="p", resource=plant.cabinets["p"].resource, channels=4, poll_interval_s=30.0)
        faults: list[asyncio.Task[None]] = []

        async def short_cells() -> None:
            # P-2: a soft short (20 mA) that drains ~20 mV over the 30 min rest, which the pre-check judges;
            # P-3: a hard short (2 A) that pulls a fresh cell below limits.min_voltage_v within a minute, so the
            # instrument's own FAIL test stops it first.
            async with ScpiSession(cabinet.resource) as session:
                await session.write(f"SIM:FAULT:SHORT {channel_to_cell_id(2)},0.02")
                await session.write(f"SIM:FAULT:SHORT {channel_to_cell_id(3)},2.0")
                assert (await session.query("SYST:ERR?")).startswith("+0")

        sup = await run_job(
            cabinet, recipe, assign_cells(range(1, 5), cells, recipe), store, clock,
            on_start=lambda _: faults.append(asyncio.create_task(short_cells(), name="short")),
        )  # fmt: skip
        await asyncio.gather(*faults)
    by_cell = {r.cell_id: r for r in sup.runs}
    assert [by_cell[c].state for c in ("P-1", "P-2", "P-3", "P-4")] == [
        RunState.DONE, RunState.FAULTED, RunState.FAULTED, RunState.DONE
    ]  # fmt: skip
    results = store.step_results(job_id=sup.job_id)
    assert set(results["kind"]) == {"precheck"} and (results["ah"] == 0.0).all()  # no current, ever
    for cell in ("P-2", "P-3"):
        assert not (store.samples(by_cell[cell].run_id)["current_a"].abs() > 0).any()
    store.close()

    out = tmp_path / "report.csv"
    assert main(["grade", "LOT-P", "--rules", "ncm21700-precheck", "--out", str(out), "--db", f"sqlite:///{db}"]) == 0
    capsys.readouterr()
    report = _report(out)
    assert report["P-2"]["grade"] == "NG" and report["P-2"]["reason"].startswith("run faulted: precheck: voltage fell")
    assert report["P-3"]["grade"] == "NG" and report["P-3"]["reason"] == "run faulted: limit:min_voltage"
    for cell in ("P-1", "P-4"):
        assert report[cell]["grade"] == "A", report[cell]
        # The OCV the pre-check read: a fresh NCM cell at 0 % SOC (2.509 V in docs/domain.md's table).
        assert abs(float(report[cell]["ocv_v"]) - 2.509) < 0.005, report[cell]


#: Discharge Ah of each cycle of each cell (cell 3 stopped after its second cycle).
CYCLE_AH = {"Y-1": (4.95, 4.90, 4.88), "Y-2": (4.93, 4.91, 4.70), "Y-3": (4.96, 4.94)}


def _cycled_lot(db: Path) -> None:
    """A lot that went through the built-in three-cycle recipe, as its step results are stored."""
    recipe = load_builtin(THREE_CYCLES)
    with Store(f"sqlite:///{db}") as store:
        store.create_schema()
        store.upsert_lot_and_cells([(cell, "LOT-Y", 5.0) for cell in CYCLE_AH])
        store.save_recipe(recipe.sha256, recipe.name, recipe.version, "NCM", 5.0, recipe.canonical_json(), "")
        job = store.create_job(recipe.sha256, "c", "1-3", 1.0, 0.0)
        runs = store.create_runs(job, [{"cell_id": cell, "cabinet": "c", "channel": n, "instrument_cell": 1000 + n,
                                        "state": "done" if len(ahs) == 3 else "faulted", "started_s": 0.0}
                                       for n, (cell, ahs) in enumerate(CYCLE_AH.items(), start=1)])  # fmt: skip
        rows = []
        for run, ahs in zip(runs, CYCLE_AH.values(), strict=True):
            for i, (step, cycle) in enumerate(zip(recipe.steps, recipe.cycles, strict=True)):
                if cycle > len(ahs):
                    break
                ah = -ahs[cycle - 1] if step.id == "discharge" else 0.0
                rows.append({"run_id": run, "step_index": i, "step_id": step.id, "kind": step.kind,
                             "started_s": i, "ended_s": i + 1, "duration_s": 1.0, "ah": ah, "wh": 0.0,
                             "end_reason": "voltage", "cycle": cycle})  # fmt: skip
        store.add_step_results(rows)


def _rules(tmp_path: Path, cycle: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(
        f'name = "r"\nversion = "1"\n[metrics.capacity_ah]\nstep = "discharge"\ncycle = {cycle}\n'
        '[[grades]]\nname = "A"\ncapacity_ah = { min = 4.80 }\n'
    )
    return path


@pytest.mark.parametrize(
    ("cycle", "expected"),
    [
        ('"last"', {"Y-1": 4.88, "Y-2": 4.70}),
        ('"first"', {"Y-1": 4.95, "Y-2": 4.93}),
        ("2", {"Y-1": 4.90, "Y-2": 4.91}),
    ],
)
def test_grade_reads_the_cycle_the_rules_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cycle: str, expected: dict[str, float]
) -> None:
    db = tmp_path / "y.db"
    _cycled_lot(db)
    out = tmp_path / "report.csv"
    args = ["grade", "LOT-Y", "--rules", str(_rules(tmp_path, cycle)), "--out", str(out), "--db", f"sqlite:///{db}"]
    assert main(args) == 0, capsys.readouterr().err
    report = _report(out)
    assert {c: float(report[c]["capacity_ah"]) for c in expected} == expected
    assert [report[c]["grade"] for c in expected] == ["A" if ah >= 4.80 else "NG" for ah in expected.values()]
    assert report["Y-3"]["grade"] == "NG" and report["Y-3"]["reason"].startswith("run faulted")


@pytest.mark.parametrize(
    ("cycle", "reason"),
    [
        ("4", "metrics.capacity_ah.cycle: step 'discharge' of ncm21700-formation-3cycles runs in cycles 1-3, not 4"),
        ("0", "metrics.capacity_ah.cycle: cycle 0 is outside 1 … 1000000 (cycles are numbered from 1)"),
        ("-2", "metrics.capacity_ah.cycle: cycle -2 is outside 1 … 1000000"),
    ],
)
def test_grade_refuses_a_cycle_the_recipe_does_not_have_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cycle: str, reason: str
) -> None:
    db = tmp_path / "y.db"
    _cycled_lot(db)
    out = tmp_path / "report.csv"
    args = ["grade", "LOT-Y", "--rules", str(_rules(tmp_path, cycle)), "--out", str(out), "--db", f"sqlite:///{db}"]
    assert main(args) == 2
    assert reason in _one_error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".report.csv*"))
    with Store(f"sqlite:///{db}") as store:
        assert store.grades(lot="LOT-Y").empty


def test_the_demo_refuses_rules_with_a_cycle_its_recipe_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--recipe", THREE_CYCLES, "--rules", str(_rules(tmp_path, "7")), "--out", str(out)]
    assert main(args) == 2
    assert "metrics.capacity_ah.cycle: step 'discharge' of ncm21700-formation-3cycles runs in cycles 1-3, not 7" in (
        _one_error_line(capsys)
    )
    assert not out.exists()


def test_every_builtin_validates_and_the_three_cycle_recipe_shows_its_cycles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = builtin_recipes()
    assert {THREE_CYCLES, "ncm21700-precheck"} <= set(names)
    assert main(["recipe", "validate", *names]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"ok {name}" for name in names]
    assert f"ok {THREE_CYCLES}: {THREE_CYCLES} 1.0, 16 steps" in lines[names.index(THREE_CYCLES)]

    assert main(["recipe", "show", THREE_CYCLES]) == 0
    shown = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in shown.splitlines() if line.count("│") == 7]
    recipe = load_builtin(THREE_CYCLES)
    assert [(row[1], row[2]) for row in rows] == [
        (str(cycle) if cycle else "", step.id) for step, cycle in zip(recipe.steps, recipe.cycles, strict=True)
    ]
    assert [row[1] for row in rows].count("2") == 4  # charge, relax, discharge, rest of the second cycle
