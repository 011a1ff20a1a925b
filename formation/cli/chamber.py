"""`formation chamber hold`: one chamber held at a set point by its control loop alone, then its time-in-band."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.cli.app import add_text_row, console
from formation.config import ChamberSite, load_site_config
from formation.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from formation.clock import Clock
    from formation.orchestrator.chamber_loop import ChamberLoop, HoldStats
    from formation.store import Store

app = typer.Typer(help="Temperature chambers.", no_args_is_help=True)

#: Wall seconds between two refreshes of the progress line.
REFRESH_WALL_S = 0.25


def check_setpoint(chamber: ChamberSite, setpoint_c: float) -> float:
    """``setpoint_c`` if the chamber can hold it; InputError naming the range otherwise."""
    low, high = chamber.setpoint_min_c, chamber.setpoint_max_c
    if not low <= setpoint_c <= high:
        raise InputError("SETPOINT", f"{setpoint_c:g} °C is outside {low:g}–{high:g} °C of chamber {chamber.name}")
    return setpoint_c


@app.command("hold")
def hold(
    chamber: Annotated[str, typer.Argument(help="Chamber name in the site file")],
    setpoint: Annotated[float, typer.Argument(help="Set point, °C", show_default=False)],
    site: Annotated[Path, typer.Option(help="Site configuration (TOML)")],
    for_: Annotated[
        str | None, typer.Option("--for", help="How long to hold (clock time, e.g. 2h); default until Ctrl-C")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
) -> int:
    """Hold a chamber at SETPOINT °C, then print time to band, % in band, deviation and valve switchings.

    Samples, alarms and valve wear go to the database. Ctrl-C ends the hold (valves closed) and exits 130.
    """
    import asyncio

    from formation.cli.run import open_store
    from formation.clock import make_clock
    from formation.recipes.units import parse_duration_s

    cfg = load_site_config(site)
    site_chamber = cfg.chamber(chamber)
    check_setpoint(site_chamber, setpoint)
    duration_s: float | None = None
    if for_ is not None:
        try:
            duration_s = parse_duration_s(for_)
        except ValueError as exc:
            raise InputError("--for", str(exc)) from None
    _, store = open_store(site, db)
    with store:
        clock = make_clock(cfg.clock_scale)
        until = f"for {escape(for_)}" if for_ is not None else "until Ctrl-C"
        console.print(
            f"holding [bold]{escape(chamber)}[/] at {setpoint:g} °C {until} "
            f"(band ±{site_chamber.band_c:g} °C, clock ×{cfg.clock_scale:g})"
        )
        loop, interrupted = asyncio.run(_hold(site_chamber, setpoint, duration_s, clock, store))
        console.print(figures_table(loop.stats, loop.switches_per_hour(), loop.switch_counts))
        console.print(f"samples and alarms in {escape(store.url)}", highlight=False)
    return 130 if interrupted else 0


async def _hold(
    chamber: ChamberSite, setpoint_c: float, duration_s: float | None, clock: Clock, store: Store
) -> tuple[ChamberLoop, bool]:
    """Run the loop until ``duration_s`` clock seconds have passed or Ctrl-C; the loop (closed) and whether
    it was interrupted."""
    import asyncio

    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from formation.orchestrator.chamber_loop import open_chamber_loop

    interrupted = False
    with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("connecting", total=None)
        async with open_chamber_loop(chamber, clock, store) as loop:
            loop.set_setpoint(setpoint_c)
            end_s = clock.now() + duration_s if duration_s is not None else math.inf
            try:
                while (left_s := end_s - clock.now()) > 0:
                    _describe(progress, task, loop, clock)
                    await clock.sleep(min(left_s, REFRESH_WALL_S * clock.scale))
            except asyncio.CancelledError:
                # Ctrl-C ends the hold; the loop still closes the valves and stores its wear on the way out.
                interrupted = True
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
            _describe(progress, task, loop, clock)
    return loop, interrupted


def _describe(progress: Progress, task: TaskID, loop: ChamberLoop, clock: Clock) -> None:
    step = loop.last_step
    if step is None:
        progress.update(task, description=f"{escape(loop.name)} connecting")
        return
    hours = (clock.now() - loop.stats.started_s) / 3600.0
    if step.fail_safe:
        state = "[red]FAIL-SAFE[/]"
    else:
        state = "stable" if loop.stable else "in band" if loop.in_band else "settling"
    valves = ",".join(str(c) for c in sorted(step.command.open)) or "none"
    progress.update(
        task,
        description=(
            f"{escape(loop.name)} t+{hours:5.2f} h  {loop.temperature_c:6.2f} °C → {loop.setpoint_c:g} °C  "
            f"demand {step.demand:+.2f}  open {valves}  {state}"
        ),
    )


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value / 60.0:.1f} min"


def figures_table(stats: HoldStats, per_hour: dict[int, float], totals: dict[int, int]) -> Table:
    """Time-in-band figures of a hold and the switchings of every valve."""
    table = Table(title=f"Hold at {stats.setpoint_c:g} °C")
    table.add_column("figure")
    table.add_column("value", justify="right")
    pct = stats.in_band_pct
    add_text_row(table, "time to band", _seconds(stats.time_to_band_s))
    add_text_row(table, "time to stable", _seconds(stats.time_to_stable_s))
    add_text_row(table, "in band after settling", "n/a" if math.isnan(pct) else f"{pct:.2f} %")
    deviation = "n/a" if stats.time_to_stable_s is None else f"{stats.max_deviation_c:.2f} °C"
    add_text_row(table, "max deviation after settling", deviation)
    for channel in sorted(per_hour):
        add_text_row(table, f"valve {channel} switchings", f"{per_hour[channel]:.1f} /h ({totals[channel]} total)")
    return table
