"""Rich progress and summary tables shared by `run launch` and `demo`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from formation.cli.app import add_text_row, console

if TYPE_CHECKING:
    import pandas as pd

    from formation.orchestrator import CabinetSupervisor, PollStats


class JobProgress:
    """A progress bar over recipe steps completed across all cells, with run states and clock time."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("launching", total=None)
        self.t0: float | None = None

    def on_start(self, sup: CabinetSupervisor) -> None:
        """Size the bar once the job is launched."""
        total = len(sup.runs) * (len(sup.recipe.steps) if sup.recipe else 0)
        self.t0 = sup.clock.now()
        self.progress.update(self.task, total=total, completed=0, description=self._describe(sup))

    def on_cycle(self, sup: CabinetSupervisor, stats: PollStats) -> None:
        """Refresh after a poll cycle."""
        done = sum(r.steps_done for r in sup.runs)
        self.progress.update(self.task, completed=done, description=self._describe(sup))

    def _describe(self, sup: CabinetSupervisor) -> str:
        states = Counter(r.state.value for r in sup.runs)
        hours = (sup.clock.now() - self.t0) / 3600.0 if self.t0 is not None else 0.0
        text = " ".join(f"{k} {v}" for k, v in sorted(states.items()))
        comm = "" if sup.comm_ok else " [red]COMM LOST[/]"
        return f"{escape(sup.name)} t+{hours:5.2f} h  {text}{comm}"


@contextmanager
def job_progress() -> Iterator[JobProgress]:
    """A live JobProgress on the console."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield JobProgress(progress)


def step_summary_table(results: pd.DataFrame, title: str = "Per-step summary") -> Table:
    """Per recipe step: cells, mean and spread of Ah, mean hours and end voltage, and the end reasons."""
    table = Table(title=title)
    for col in ("#", "step", "kind", "cells", "Ah mean", "Ah sd", "h", "end V", "ended on"):
        table.add_column(col, justify="left" if col in ("step", "kind", "ended on") else "right", no_wrap=True)
    if results.empty:
        return table
    for (idx, step_id, kind), g in results.groupby(["step_index", "step_id", "kind"], sort=True):
        reasons = " ".join(f"{k}×{v}" for k, v in g["end_reason"].value_counts().items())
        add_text_row(
            table,
            str(idx),
            str(step_id),
            str(kind),
            str(len(g)),
            f"{g['ah'].mean():.3f}",
            f"{g['ah'].std(ddof=0):.3f}",
            f"{g['duration_s'].mean() / 3600:.2f}",
            f"{g['end_voltage_v'].mean():.3f}",
            reasons,
        )
    return table


def cycle_summary_table(results: pd.DataFrame, title: str = "Per-cycle capacity") -> Table | None:
    """Per run and cycle of a repeat block: Ah charged, Ah discharged, coulombic efficiency (None: no cycles)."""
    from formation.grading.cycles import cycle_table

    cycles = cycle_table(results)
    if cycles.empty:
        return None
    table = Table(title=title)
    for col in ("run", "cell", "cycle", "charge Ah", "discharge Ah", "efficiency %"):
        table.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
    for row in cycles.itertuples(index=False):
        efficiency = "" if row.efficiency != row.efficiency else f"{row.efficiency * 100:.2f}"
        add_text_row(
            table,
            str(row.run_id),
            str(row.cell_id),
            str(row.cycle),
            f"{row.charge_ah:.4f}",
            f"{row.discharge_ah:.4f}",
            efficiency,
        )
    return table
