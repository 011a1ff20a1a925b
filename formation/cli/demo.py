"""`formation demo`: the whole line on embedded defaults — simulated plant, real SCPI over TCP, SQLite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.cli.app import add_text_row, console
from formation.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from formation.grading import Rules
    from formation.orchestrator.inputs import CellEntry
    from formation.recipes import Recipe
    from formation.store import Store

DEMO_RECIPE = "demo-ncm21700"
DEMO_PRESET = "ncm21700-5ah"
DEMO_LOT = "DEMO-LOT"


def demo(
    cells: Annotated[int, typer.Option(help="Number of simulated cells (one channel each)")] = 32,
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes")] = Path("formation-demo"),
    scale: Annotated[float, typer.Option(help="Simulated seconds per wall second")] = 1500.0,
    recipe: Annotated[str, typer.Option(help="Recipe file or built-in name")] = DEMO_RECIPE,
    seed: Annotated[int, typer.Option(help="Seed of the simulated cell population")] = 7,
    defects: Annotated[float, typer.Option(help="Fraction of defective simulated cells")] = 0.1,
    rules: Annotated[str | None, typer.Option(help="Grading rules file (default: the recipe's built-in rules)")] = None,
) -> None:
    """Start a simulated cabinet in-process, form its cells over SCPI/TCP, and summarise the result."""
    import asyncio

    from formation.cli.progress import step_summary_table
    from formation.cli.run import output_dir
    from formation.grading import resolve_rules
    from formation.orchestrator.inputs import CellEntry
    from formation.orchestrator.job import assign_cells
    from formation.recipes import resolve_recipe
    from formation.store import Store
    from formation.store.export import export_cell_bdf

    if not 1 <= cells <= 256:
        raise InputError("--cells", f"{cells} is outside 1-256")
    if scale <= 0:
        raise InputError("--scale", f"{scale} must be > 0")
    if not 0.0 <= defects <= 1.0:
        raise InputError("--defects", f"{defects} is outside 0-1")
    r = resolve_recipe(recipe)
    grading_rules = resolve_rules(rules or r.name)
    output_dir(out, "--out")
    # Every check before the first write: a refused demo leaves no folder behind.
    entries = [CellEntry(f"DEMO-{i:04d}", DEMO_LOT, r.nominal_capacity_ah) for i in range(1, cells + 1)]
    assignments = assign_cells(list(range(1, cells + 1)), entries, r)
    out.mkdir(exist_ok=True)
    db_path = out / "formation.db"
    t0 = time.perf_counter()
    console.print(
        f"[bold]formation demo[/]: {cells} simulated {DEMO_PRESET} cells, recipe {escape(r.name)} "
        f"({len(r.steps)} steps), clock ×{scale:g}"
    )
    with Store(f"sqlite:///{db_path}") as store:
        store.create_schema()
        job_id = asyncio.run(_demo(store, r, assignments, cells, scale, seed, defects))
        results = store.step_results(job_id=job_id)
        console.print(step_summary_table(results, title=f"Job {job_id}: per-step summary"))
        _print_first_cycle(results)
        report, plots = _grade(store, grading_rules, out)
        cell_csv = out / "cell-DEMO-0001.csv"
        export_cell_bdf(store, "DEMO-0001", cell_csv)
    console.print(f"database: {escape(str(db_path))}")
    console.print(f"grading report (logistics CSV): {escape(str(report))}")
    console.print(f"histograms: {escape(str(plots))}/")
    console.print(f"samples of DEMO-0001 (BDF CSV): {escape(str(cell_csv))}")
    console.print(f"done in {time.perf_counter() - t0:.1f} s wall")


def _grade(store: Store, rules: Rules, out: Path) -> tuple[Path, Path]:
    """Grade the demo lot, store the grades, write the CSV and histograms, print the grade tables."""
    from formation.grading import (
        grade_cells,
        load_lot_metrics,
        summarize,
        summary_table,
        write_histograms,
        write_report_csv,
    )

    cells = load_lot_metrics(store, DEMO_LOT, rules)
    grading = grade_cells(cells, rules)
    store.save_grades(grading.cells, rules_sha256=rules.sha256, rules_name=rules.name)
    report = write_report_csv(grading, out / "grading-report.csv")
    plots = out / "plots"
    write_histograms(grading, plots)
    console.print(summary_table(summarize(grading), title=f"Grades: {escape(rules.name)} {escape(rules.version)}"))
    graded = grading.cells.sort_values("cell_id")
    not_a = graded[graded["grade"] != "A"]
    if len(not_a):
        table = Table(title="Cells not graded A")
        for col in ("cell", "grade", "capacity Ah", "DCIR mΩ", "K mV/day", "reason"):
            table.add_column(col, no_wrap=col != "reason")
        for _, row in not_a.iterrows():
            add_text_row(
                table,
                row["cell_id"],
                row["grade"],
                f"{row['capacity_ah']:.3f}",
                f"{row['dcir_mohm']:.2f}",
                f"{row['k_mv_per_day']:.2f}",
                str(row["reason"]),
            )
        console.print(table)
    return report, plots


async def _demo(
    store: Store,
    recipe: Recipe,
    assignments: list[tuple[int, CellEntry]],
    cells: int,
    scale: float,
    seed: int,
    defects: float,
) -> int:
    from formation.cli.progress import job_progress
    from formation.clock import ScaledClock
    from formation.config import CabinetConfig
    from formation.orchestrator.job import run_job
    from formation.sim.plant import CabinetSpec, SimulatedPlant

    clock = ScaledClock(scale)
    spec = CabinetSpec(name="sim-cab1", channels=cells, preset=DEMO_PRESET, seed=seed, port=0, defect_fraction=defects)
    async with SimulatedPlant([spec], clock) as plant:
        server = plant.cabinets["sim-cab1"]
        cabinet = CabinetConfig(
            name="sim-cab1",
            resource=server.resource,
            channels=cells,
            poll_interval_s=30.0,
            timeout_s=5.0,
            watchdog_s=30.0,
        )
        console.print(f"simulated cabinet listening on {server.resource}")
        with job_progress() as progress:
            sup = await run_job(
                cabinet,
                recipe,
                assignments,
                store,
                clock,
                on_start=progress.on_start,
                on_cycle=progress.on_cycle,
                note="formation demo",
            )
    assert sup.job_id is not None
    return sup.job_id


def _print_first_cycle(results: pd.DataFrame) -> None:
    """First-cycle efficiency: discharge Ah over the charge Ah that went before it, per cell."""
    if results.empty:
        return
    fce = []
    for _, g in results.sort_values("step_index").groupby("run_id"):
        charge = g[g["kind"] == "charge"]
        discharge = g[g["kind"] == "discharge"]
        if charge.empty or discharge.empty:
            continue
        first_dis = discharge.iloc[0]
        charged = charge[charge["step_index"] < first_dis["step_index"]]["ah"].sum()
        if charged > 0:
            fce.append(-first_dis["ah"] / charged)
    if fce:
        import numpy as np

        arr = np.array(fce)
        console.print(
            f"first-cycle efficiency: mean {arr.mean() * 100:.1f} % (min {arr.min() * 100:.1f} %, "
            f"max {arr.max() * 100:.1f} %) over {len(arr)} cells"
        )
