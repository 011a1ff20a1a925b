"""`formation demo --ageing`: after formation the lot leaves the cabinet for a rack in a simulated ageing room, ages
there with OCV/ACIR checkpoints read by a tester, and is graded from both stations.

The ageing room is a chamber of hours (walls, racks and a room full of cells; transport over minutes), not the
formation chamber of twenty minutes: it holds ±0.5 °C with control periods of a few clock minutes, which the
demo's fast clock (ten days in about a minute of wall) gives it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from formation.cli.app import console

if TYPE_CHECKING:
    from formation.ageing import AgeingPlan
    from formation.clock import Clock
    from formation.config import ChamberSite, SiteConfig
    from formation.feed.sink import FeedSink
    from formation.sim.plant import ChamberSpec, SimulatedPlant
    from formation.sim.rack import RackSpec
    from formation.sim.tester import TesterSpec
    from formation.store import Store

DEMO_PLAN = "ncm21700-hot-then-room"
#: The recipe `--ageing` runs on the cabinet unless --recipe names another: formation, capacity, DCIR, storage.
DEMO_AGEING_RECIPE = "demo-ncm21700-to-ageing"
AGEING_ROOM, DEMO_RACK, DEMO_TESTER = "sim-ageing-room", "sim-rack1", "sim-tester1"
#: The room's working figures: 40 °C at full valve, τ 4 h, 5 min dead time, thermocouples of 1 min.
ROOM_GAIN_C, ROOM_TAU_S, ROOM_DEAD_TIME_S, ROOM_TC_TAU_S = 40.0, 4 * 3600.0, 300.0, 60.0


@dataclass(frozen=True)
class AgeingDemo:
    """What `--ageing` adds to the demo: the plan the lot ages by."""

    plan: AgeingPlan


def ageing_demo(plan: str) -> AgeingDemo:
    """The plan --ageing runs, checked against the ageing room's set-point range (one line, exit 2)."""
    from formation.ageing import check_setpoints, resolve_plan
    from formation.errors import InputError

    if not plan.strip():
        raise InputError("--plan", "is empty")
    the_plan = resolve_plan(plan)
    site = room_site("")
    check_setpoints(the_plan, site.name, site.setpoint_min_c, site.setpoint_max_c)
    return AgeingDemo(the_plan)


def ageing_plant(cells: int, seed: int) -> tuple[list[ChamberSpec], list[RackSpec], list[TesterSpec]]:
    """The simulated ageing room: one room chamber, one rack of ``cells`` positions in it, one tester reaching it."""
    from formation.sim.chamber import ChamberParams
    from formation.sim.plant import ChamberSpec
    from formation.sim.rack import RackSpec
    from formation.sim.tester import TesterSpec

    params = ChamberParams(
        gain_c=ROOM_GAIN_C, tau_s=ROOM_TAU_S, dead_time_s=ROOM_DEAD_TIME_S, tc_tau_s=ROOM_TC_TAU_S, max_dt_s=30.0
    )
    return (
        [ChamberSpec(name=AGEING_ROOM, params=params, seed=seed)],
        [RackSpec(DEMO_RACK, positions=cells, chamber=AGEING_ROOM, seed=seed)],
        [TesterSpec(DEMO_TESTER, (DEMO_RACK,), seed=seed)],
    )


def room_site(resource: str) -> ChamberSite:
    """The host's settings of the ageing room: its plant model (SIMC gains) and a loop as slow as the room."""
    from formation.config import ChamberSite

    return ChamberSite(
        name=AGEING_ROOM,
        resource=resource,
        gain_c=ROOM_GAIN_C,
        tau_s=ROOM_TAU_S,
        dead_time_s=ROOM_DEAD_TIME_S,
        period_s=60.0,
        cycle_s=600.0,
        min_on_s=60.0,
        min_off_s=60.0,
        hold_s=1800.0,
        # A room of hours drifts out of the band for minutes after a set-point change; alarm on a half hour of it.
        alarm_delay_s=1800.0,
        sample_every_s=300.0,
        timeout_s=5.0,
    )


def demo_site(plant: SimulatedPlant, database_url: str, scale: float) -> SiteConfig:
    """The site the ageing runner reads: the room, the rack in it and the tester reaching it."""
    from formation.config import SiteConfig
    from formation.site_ageing import RackSite, TesterSite

    return SiteConfig(
        site="demo",
        database_url=database_url,
        clock_scale=scale,
        source="formation demo --ageing",
        chambers=(room_site(plant.chamber_resources[AGEING_ROOM]),),
        racks=(RackSite(DEMO_RACK, positions=plant.racks[DEMO_RACK].positions, chamber=AGEING_ROOM),),
        testers=(TesterSite(DEMO_TESTER, plant.tester_resources[DEMO_TESTER], (DEMO_RACK,)),),
    )


async def age_lot(
    store: Store, clock: Clock, plant: SimulatedPlant, lot: str, demo: AgeingDemo, feed: FeedSink | None
) -> int:
    """Move the formed cells of ``lot`` onto the rack (the rest stay behind), run the plan to its end; the job id."""
    import asyncio

    from formation.cli.age import check_free, formed_runs, left_behind_text, move_simulated, start_ageing_job
    from formation.orchestrator.ageing import open_ageing_runner
    from formation.orchestrator.timers import LineTimers
    from formation.store import Place

    site = demo_site(plant, str(store.engine.url), clock.scale)
    runs, left = formed_runs(store, lot)
    positions = list(range(1, len(runs) + 1))
    check_free(store, DEMO_RACK, runs, positions)
    loaded_s = await move_simulated(plant.tester_resources[DEMO_TESTER], DEMO_RACK, runs, positions)
    store.place_cells([Place(r.cell_id, DEMO_RACK, p, loaded_s) for r, p in zip(runs, positions, strict=True)])
    cabinets = ", ".join(
        f"{name} {int(server.model.vacant.sum())}/{server.model.vacant.size} channels free"
        for name, server in plant.cabinets.items()
    )
    console.print(f"{len(runs)} cells of lot {escape(lot)} on rack {DEMO_RACK} in {AGEING_ROOM}; cabinet {cabinets}")
    if left:
        console.print(left_behind_text(left))
    job_id = start_ageing_job(site, store, clock, lot, DEMO_RACK, demo.plan, foreground=True)
    job = store.ageing_jobs(job_id=job_id)[0]
    async with (
        LineTimers(store, clock) as timers,
        open_ageing_runner(site, store, clock, job, timers, feed=feed, on_event=_on_event) as runner,
        _days_progress(clock, job.started_s, demo.plan.duration_s),
    ):
        await runner.run_until_done()
    await asyncio.sleep(0)
    return job_id


def _on_event(text: str) -> None:
    console.print(escape(text), highlight=False)


@contextlib.asynccontextmanager
async def _days_progress(clock: Clock, started_s: float, duration_s: float) -> AsyncIterator[None]:
    """A Rich bar over the plan's days in clock time, refreshed a few times a second."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    days = duration_s / 86400.0
    with Progress(
        TextColumn("ageing"), BarColumn(), TextColumn("day {task.completed:.1f} of {task.total:g}"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("ageing", total=days)

        async def refresh() -> None:
            while True:
                progress.update(task, completed=min(days, (clock.now() - started_s) / 86400.0))
                await asyncio.sleep(0.25)

        ticker = asyncio.create_task(refresh(), name="demo-ageing-progress")
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            progress.update(task, completed=min(days, (clock.now() - started_s) / 86400.0))


def print_ageing(store: Store, job_id: int, out: Path) -> Path:
    """One paragraph on the K results of the job and a plot of the OCV over the days; the plot's path."""
    import numpy as np

    from formation.ageing.plot import plot_ageing

    results = store.ageing_results(job_id=job_id)
    readings = store.ageing_readings(job_id=job_id)
    k = results["k_mv_per_day"].to_numpy(dtype=float, na_value=np.nan)
    se = results["k_se_mv_per_day"].to_numpy(dtype=float, na_value=np.nan)
    fitted = np.isfinite(k)
    if fitted.any():
        console.print(
            f"K by regression (room stage, corrected to 25 °C): median {np.median(k[fitted]):.3f} mV/day "
            f"(min {k[fitted].min():.3f}, max {k[fitted].max():.3f}) over {int(fitted.sum())} cells, "
            f"standard error median {np.nanmedian(se):.3f} mV/day; {len(readings)} OCV/ACIR readings"
        )
    unfitted = results[~fitted]
    for row in unfitted.itertuples(index=False):
        console.print(f"[yellow]no K[/] for {escape(str(row.cell_id))}: {escape(str(row.reason))}")
    return plot_ageing(readings, results, out / "plots" / "ageing.png", title=f"ageing job {job_id} on {DEMO_RACK}")
