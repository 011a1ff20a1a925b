"""What `formation demo` shows after its run: grades and their tables, first-cycle efficiency, the chamber plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from formation.cli.app import add_text_row, console

if TYPE_CHECKING:
    import pandas as pd

    from formation.config import MqttConfig
    from formation.grading import Rules
    from formation.store import Store

DEMO_LOT = "DEMO-LOT"
DEMO_CHAMBER = "sim-chamber1"
#: The site and line the demo publishes its status feed under (formation/v1/demo/line1/…).
DEMO_SITE, DEMO_LINE = "demo", "line1"


def plot_chamber_samples(store: Store, path: Path, name: str = DEMO_CHAMBER) -> tuple[Path, float] | None:
    """A chamber's stored samples as a PNG and the share of them within the band (None: the chamber never ran)."""
    from formation.chamber.plot import plot_chamber

    samples = store.chamber_samples(name)
    if samples.empty:
        return None
    in_band_pct = 100.0 * float(samples["in_band"].mean()) if len(samples) else float("nan")
    return plot_chamber(samples, path, title=f"chamber {name} during the demo"), in_band_pct


def grade_demo_lot(store: Store, rules: Rules, out: Path, feed_config: MqttConfig | None = None) -> tuple[Path, Path]:
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
    from formation.cli.feed import publish_grading

    summary = summarize(grading)
    console.print(summary_table(summary, title=f"Grades: {escape(rules.name)} {escape(rules.version)}"))
    publish_grading(feed_config, DEMO_SITE, DEMO_LINE, summary, rules.sha256)
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
                _number(row["capacity_ah"], 3),
                _number(row["dcir_mohm"], 2),
                _number(row["k_mv_per_day"], 2),
                str(row["reason"]),
            )
        console.print(table)
    return report, plots


def _number(value: float, digits: int) -> str:
    """A metric for the table; "-" where the cell has none (a faulted run, or rules that do not use it)."""
    return "-" if value != value else f"{value:.{digits}f}"  # NaN is the only value unequal to itself


def print_first_cycle(results: pd.DataFrame, nominal_capacity_ah: float) -> None:
    """First-cycle efficiency: discharge Ah over the charge Ah that went before it, per cell.

    Only a deep first discharge (to its cut-off voltage, more than half the nominal capacity, as the runs count
    a capacity) empties what the charges put in; one that stops on charge or time, or a short one that reaches
    its voltage backstop (an SOC-setting step), is no cycle to take an efficiency of.
    """
    if results.empty:
        return
    fce = []
    for _, g in results.sort_values("step_index").groupby("run_id"):
        charge = g[g["kind"] == "charge"]
        discharge = g[g["kind"] == "discharge"]
        if charge.empty or discharge.empty:
            continue
        first_dis = discharge.iloc[0]
        if first_dis["end_reason"] != "voltage" or -first_dis["ah"] <= 0.5 * nominal_capacity_ah:
            continue
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
