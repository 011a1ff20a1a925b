"""`formation demo`: the whole line on embedded defaults — simulated plant, real SCPI over TCP, SQLite."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.cli.demo_ageing import AGEING_ROOM, DEMO_AGEING_RECIPE, DEMO_PLAN, ageing_demo, print_ageing
from formation.cli.demo_results import (
    DEMO_CHAMBER,
    DEMO_LINE,
    DEMO_LOT,
    DEMO_SITE,
    grade_demo_lot,
    plot_chamber_samples,
    print_first_cycle,
)
from formation.cli.feed import MqttOpt
from formation.errors import InputError

if TYPE_CHECKING:
    from formation.cli.demo_ageing import AgeingDemo
    from formation.cli.display import DisplayProcess
    from formation.clock import ScaledClock
    from formation.config import MqttConfig
    from formation.feed.sink import FeedSink
    from formation.orchestrator.inputs import CellEntry
    from formation.recipes import Recipe
    from formation.sim.cells import CellPreset
    from formation.sim.plant import SimulatedPlant
    from formation.sim.rack import RackSpec
    from formation.sim.tester import TesterSpec
    from formation.store import Store

DEMO_RECIPE = "demo-ncm21700"
#: The feed interval (wall s) with --display: at the demo's clock a 5 s interval spans hours of the route.
DISPLAY_INTERVAL_S = 1.0
DEMO_CHAMBER_MAX_SCALE = 2000.0
#: Without --scale the clock runs so that the route's worst case (every step to its end or time backstop) takes
#: about this much wall time; the real route ends sooner wherever a step ends on voltage, current or charge.
TARGET_WALL_S = 60.0
#: Round scales the demo picks from (times powers of ten), rounding up: the default route demo-ncm21700
#: (84 618 s worst case) runs at ×1500, as its recorded grades (tests/data/demo-seed7-grades.csv) expect.
_ROUND_SCALES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
#: The fastest clock the demo runs. The simulator and the host share one thread, and a 5 s integration substep
#: of charging cells costs ~0.2 ms, so above ~×25 000 the simulator falls behind while cells carry current and
#: catches up at rest. Measured at ×50 000 with 32 cells: its longest catch-up 0.5 s, the longest poll 1.1 s (the
#: command timeout is 5 s), the route ~10 % longer in clock time (each step start waits for a poll that covers
#: 2500 clock s). Faster than that the gaps grow and a catch-up may outlast the command timeout.
MAX_SCALE = 50_000.0
#: The demo cabinet's poll interval at a low scale (clock s), as on a real cabinet.
BASE_POLL_S = 30.0
#: A recipe whose first charge or discharge is a charge at this C-rate or slower is a formation route and gets
#: fresh cells; any other route (a capacity check, a DCIR map) is run on formed cells, as on a line.
FORMATION_MAX_C_RATE = 0.1


def demo(
    cells: Annotated[int, typer.Option(help="Number of simulated cells (one channel each)")] = 32,
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes")] = Path("formation-demo"),
    scale: Annotated[
        float | None,
        typer.Option(help="Simulated seconds per wall second (default: the route's worst case in about a minute)"),
    ] = None,
    recipe: Annotated[str, typer.Option(help="Recipe file or built-in name")] = DEMO_RECIPE,
    preset: Annotated[
        str | None, typer.Option(help="Simulated cell preset (default: the one matching the recipe)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated cell population", min=0, max=2**32 - 1)] = 7,
    defects: Annotated[float, typer.Option(help="Fraction of defective simulated cells")] = 0.1,
    rules: Annotated[str | None, typer.Option(help="Grading rules file (default: the recipe's built-in rules)")] = None,
    mqtt: MqttOpt = None,
    ageing: Annotated[
        bool,
        typer.Option(
            "--ageing",
            help="After formation, move the lot to a rack in a simulated ageing room, age it by --plan with OCV/ACIR "
            f"checks, and grade it from both stations (recipe default: {DEMO_AGEING_RECIPE})",
        ),
    ] = False,
    plan: Annotated[
        str | None,
        typer.Option(help=f"Ageing plan for --ageing: a TOML file or a built-in name [default: {DEMO_PLAN}]"),
    ] = None,
    display: Annotated[
        bool,
        typer.Option(
            "--display",
            help="Open the wall display on a free local port (publishes the feed: --mqtt, default auto) and keep it "
            "up after the demo until Ctrl-C",
        ),
    ] = False,
) -> None:
    """Start a simulated cabinet in-process, form its cells over SCPI/TCP, and summarise the result."""
    import asyncio

    from formation.cli.feed import demo_feed_config
    from formation.cli.progress import step_summary_table
    from formation.cli.run import output_dir
    from formation.grading import builtin_rules, check_rules_cycles, resolve_rules
    from formation.orchestrator.inputs import CellEntry
    from formation.orchestrator.job import assign_cells
    from formation.recipes import resolve_recipe
    from formation.store import Store
    from formation.store.export import export_cell_bdf

    if not 1 <= cells <= 256:
        raise InputError("--cells", f"{cells} is outside 1-256")
    if scale is not None and not 0 < scale <= MAX_SCALE:
        raise InputError("--scale", f"{scale:g} is outside 0-{MAX_SCALE:g} (above it the simulator falls behind)")
    if not 0.0 <= defects <= 1.0:
        raise InputError("--defects", f"{defects} is outside 0-1")
    if plan is not None and not ageing:
        raise InputError("--plan", "ages a lot only with --ageing")
    to_age = ageing_demo(DEMO_PLAN if plan is None else plan) if ageing else None
    if to_age is not None and recipe == DEMO_RECIPE:
        recipe = DEMO_AGEING_RECIPE
    r = resolve_recipe(recipe)
    cell_preset = choose_preset(r, preset)
    grading_rules = resolve_rules(rules) if rules else resolve_rules(r.name) if r.name in builtin_rules() else None
    if grading_rules is not None:
        check_rules_cycles(grading_rules, r)
    output_dir(out, "--out")
    feed_config = demo_feed_config(mqtt)
    if display:  # the display shows the feed, so --display publishes it, every second: the clock runs fast
        shown = feed_config or demo_feed_config("auto")
        assert shown is not None  # "auto" always names a broker
        feed_config = replace(shown, interval_s=min(shown.interval_s, DISPLAY_INTERVAL_S))
    # Every check before the first write: a refused demo leaves no folder behind.
    nominal_ah = cell_preset.nominal_capacity_ah
    entries = [CellEntry(f"DEMO-{i:04d}", DEMO_LOT, nominal_ah) for i in range(1, cells + 1)]
    assignments = assign_cells(list(range(1, cells + 1)), entries, r)
    worst_s = worst_case_s(r, nominal_ah) + (to_age.plan.duration_s if to_age is not None else 0.0)
    if scale is None:
        scale = auto_scale(worst_s)
    formed = not is_formation_route(r, nominal_ah)
    out.mkdir(exist_ok=True)
    db_path = out / "formation.db"
    t0 = time.perf_counter()
    state = "formed" if formed else "fresh"
    console.print(
        f"[bold]formation demo[/]: {cells} simulated {cell_preset.name} cells ({state}), recipe {escape(r.name)} "
        f"({len(r.steps)} steps), clock ×{scale:g}"
    )
    matched = cell_preset in _matches(r)
    if not matched:
        console.print(
            f"[yellow]note[/]: --preset {cell_preset.name} ({_describe(cell_preset)}) does not match the recipe "
            f"({escape(r.chemistry or 'no chemistry')} {r.nominal_capacity_ah:g} Ah)"
        )
    console.print(
        f"route: {_clock_text(worst_s)} simulated at most (every step to its end or time backstop), "
        f"about {worst_s / scale:.0f} s wall at ×{scale:g}"
    )
    wall = _open_display(feed_config) if display else None
    with Store(f"sqlite:///{db_path}") as store:
        store.create_schema()
        job_id, ageing_job = asyncio.run(
            _demo(store, r, assignments, cell_preset, formed, scale, seed, defects, feed_config, to_age)
        )
        results = store.step_results(job_id=job_id)
        console.print(step_summary_table(results, title=f"Job {job_id}: per-step summary"))
        if not formed:  # the efficiency of the first cycle is a formation figure; formed cells had theirs
            print_first_cycle(results, nominal_ah)
        aged = print_ageing(store, ageing_job, out) if ageing_job is not None else None
        graded = grade_demo_lot(store, grading_rules, out, feed_config) if grading_rules is not None else None
        cell_csv = out / "cell-DEMO-0001.csv"
        export_cell_bdf(store, "DEMO-0001", cell_csv)
        chamber = plot_chamber_samples(store, out / "plots" / "chamber.png")
        room = (
            plot_chamber_samples(store, out / "plots" / "ageing-room.png", AGEING_ROOM)
            if ageing_job is not None
            else None
        )
    chosen = f"matches {escape(r.name)}" if matched else "named by --preset"
    console.print(f"cells: {cells} × {cell_preset.name} ({_describe(cell_preset)}, {state}; {chosen})")
    console.print(f"database: {escape(str(db_path))}")
    if graded is None:
        console.print(f"not graded: no built-in rules for {escape(r.name)} (--rules FILE grades the lot)")
    else:
        report, plots = graded
        console.print(f"grading report (logistics CSV): {escape(str(report))}")
        console.print(f"histograms: {escape(str(plots))}/")
    console.print(f"samples of DEMO-0001 (BDF CSV): {escape(str(cell_csv))}")
    if chamber is not None:
        console.print(
            f"chamber {DEMO_CHAMBER}: {chamber[1]:.1f} % of its samples within ±0.5 °C of the set point; "
            f"temperature, set point and valve demand: {escape(str(chamber[0]))}"
        )
    if aged is not None and room is not None:
        console.print(
            f"ageing room {AGEING_ROOM}: {room[1]:.1f} % of its samples within ±0.5 °C; {escape(str(room[0]))}; "
            f"OCV over the days on the rack: {escape(str(aged))}"
        )
    console.print(f"done in {time.perf_counter() - t0:.1f} s wall")
    if wall is not None:
        wall.serve_until_interrupted()


def _open_display(feed_config: MqttConfig | None) -> DisplayProcess:
    """The wall display of the demo line in a process of its own, its address printed."""
    from formation.cli.display import DisplayProcess

    assert feed_config is not None  # --display publishes
    wall = DisplayProcess.start(feed_config, DEMO_SITE, DEMO_LINE)
    console.print(f"wall display: [bold]{wall.url}[/] (open it in a browser)", highlight=False)
    return wall


def _matches(recipe: Recipe) -> list[CellPreset]:
    from formation.sim.cells import matching_presets

    return matching_presets(recipe.chemistry, recipe.nominal_capacity_ah)


def _describe(preset: CellPreset) -> str:
    return f"{preset.chemistry} {preset.nominal_capacity_ah:g} Ah"


def choose_preset(recipe: Recipe, name: str | None = None) -> CellPreset:
    """The simulated cells for ``recipe``: the preset ``name``, else the one of the recipe's chemistry family whose
    nominal capacity is nearest the recipe's (within ±5 %); InputError (one line) when there is none."""
    from formation.sim.cells import PRESET_CAPACITY_TOLERANCE as tolerance
    from formation.sim.cells import PRESETS

    known = ", ".join(f"{p.name} ({_describe(p)})" for p in sorted(PRESETS.values(), key=lambda p: p.name))
    if name is not None:
        if name not in PRESETS:
            raise InputError("--preset", f"no simulated cell preset {name!r} (presets: {known})")
        return PRESETS[name]
    matches = _matches(recipe)
    if not matches:
        raise InputError(
            "--recipe",
            f"{recipe.name} ({recipe.chemistry or 'no chemistry'}, {recipe.nominal_capacity_ah:g} Ah) matches no "
            f"simulated cell preset (same chemistry, nominal capacity within ±{tolerance * 100:g} %; presets: "
            f"{known}); --preset NAME runs it anyway",
        )
    return matches[0]


def worst_case_s(recipe: Recipe, nominal_capacity_ah: float) -> float:
    """Clock seconds of the route if every step ran to its duration or time backstop, as the instrument has it."""
    from formation.orchestrator.compile import compile_step

    return sum(
        inst.duration_s
        for step in recipe.steps
        for inst in compile_step(step, recipe, nominal_capacity_ah).program.steps
    )


def auto_scale(worst_s: float) -> float:
    """The round clock scale at which ``worst_s`` takes at most about TARGET_WALL_S, within 1…MAX_SCALE."""
    import math

    wanted = worst_s / TARGET_WALL_S
    if wanted <= 1.0:
        return 1.0
    decade = 10.0 ** math.floor(math.log10(wanted))
    # The 1e-9 keeps a scale that is already round from being bumped up by float noise.
    scale = next((m * decade for m in _ROUND_SCALES if m * decade >= wanted * (1 - 1e-9)), 10.0 * decade)
    return min(scale, MAX_SCALE)


def poll_interval_s(scale: float) -> float:
    """The demo cabinet's poll interval (clock s): BASE_POLL_S, and above ×600 the clock time of the supervisor's
    shortest poll period (MIN_POLL_WALL_S of wall), at which it polls anyway; so the interval says what it does."""
    from formation.orchestrator.cabinet.supervisor import MIN_POLL_WALL_S

    return max(BASE_POLL_S, MIN_POLL_WALL_S * scale)


def is_formation_route(recipe: Recipe, nominal_capacity_ah: float) -> bool:
    """Whether ``recipe`` is a route for fresh cells: it begins with a slow first charge (≤ FORMATION_MAX_C_RATE),
    or it is a pre-formation screen (a ``precheck`` and no step that moves current)."""
    from formation.recipes import ChargeStep, DischargeStep
    from formation.recipes.model import NO_CURRENT_KINDS

    for step in recipe.steps:
        if isinstance(step, ChargeStep | DischargeStep):
            c_rate = step.current.resolve_a(nominal_capacity_ah) / nominal_capacity_ah
            return isinstance(step, ChargeStep) and c_rate <= FORMATION_MAX_C_RATE + 1e-9
    return any(step.kind == "precheck" for step in recipe.steps) and all(
        step.kind in NO_CURRENT_KINDS for step in recipe.steps
    )


def empty_soc(preset: CellPreset) -> float:
    """The true SOC a formed cell of ``preset`` is left at by the standard discharge to its cut-off: "empty" on a
    line, where a measurement route starts (the simulator's 0 % is the bottom of the OCV table, a few % lower)."""
    # capacity_factor is tuned so that the standard check delivers the nominal capacity: the rest stays inside.
    return 1.0 - 1.0 / preset.capacity_factor


def _clock_text(seconds: float) -> str:
    hours = seconds / 3600.0
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d ({hours:.0f} h)"


async def _demo(
    store: Store,
    recipe: Recipe,
    assignments: list[tuple[int, CellEntry]],
    preset: CellPreset,
    formed: bool,
    scale: float,
    seed: int,
    defects: float,
    feed_config: MqttConfig | None = None,
    ageing: AgeingDemo | None = None,
) -> tuple[int, int | None]:
    """Run the job on the simulated cabinet (then age the lot, with ``ageing``); the job and ageing job ids."""
    from formation.cli.demo_ageing import age_lot, ageing_plant
    from formation.cli.feed import publishing
    from formation.clock import ScaledClock
    from formation.recipes import chamber_setpoints
    from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant

    clock = ScaledClock(scale)
    cells = len(assignments)
    # Above this scale the chamber loop's period (10 ms of wall at least) is too coarse to hold the band.
    in_chamber = scale <= DEMO_CHAMBER_MAX_SCALE or bool(chamber_setpoints(recipe))
    spec = CabinetSpec(
        name="sim-cab1",
        channels=cells,
        preset=preset.name,
        seed=seed,
        port=0,
        formed=formed,
        initial_soc=empty_soc(preset) if formed else 0.0,
        defect_fraction=defects,
        chamber=DEMO_CHAMBER if in_chamber else None,
    )
    chambers = [ChamberSpec(name=DEMO_CHAMBER, seed=seed)] if in_chamber else []
    racks: list[RackSpec] = []
    testers: list[TesterSpec] = []
    if ageing is not None:
        rooms, racks, testers = ageing_plant(cells, seed)
        chambers += rooms
    async with (
        SimulatedPlant([spec], clock, chambers=chambers, racks=racks, testers=testers) as plant,
        publishing(feed_config, DEMO_SITE, DEMO_LINE) as feed,
    ):
        job_id = await _run_formation(plant, store, recipe, assignments, clock, in_chamber, feed)
        ageing_job = await age_lot(store, clock, plant, DEMO_LOT, ageing, feed) if ageing is not None else None
    return job_id, ageing_job


async def _run_formation(
    plant: SimulatedPlant,
    store: Store,
    recipe: Recipe,
    assignments: list[tuple[int, CellEntry]],
    clock: ScaledClock,
    in_chamber: bool,
    feed: FeedSink | None,
) -> int:
    """The formation job on the demo cabinet (in the formation chamber when ``in_chamber``); its id."""
    import functools

    from formation.cli.progress import job_progress
    from formation.config import CabinetConfig, ChamberSite
    from formation.orchestrator.chamber_loop import open_chamber_loop
    from formation.orchestrator.job import run_job
    from formation.recipes import chamber_setpoints

    cells, scale = len(assignments), clock.scale
    server = plant.cabinets["sim-cab1"]
    cabinet = CabinetConfig(
        name="sim-cab1",
        resource=server.resource,
        channels=cells,
        poll_interval_s=poll_interval_s(scale),
        timeout_s=5.0,
        watchdog_s=30.0,
        chamber=DEMO_CHAMBER if in_chamber else None,
    )
    chamber = None
    if in_chamber:
        # The recipe's own temperatures (if any) move the chamber; otherwise it is held at 25 °C for the route.
        chamber = ChamberSite(
            name=DEMO_CHAMBER, resource=plant.chamber_resources[DEMO_CHAMBER], position_ports=(201,), timeout_s=5.0
        )
        where = f"standing in chamber {DEMO_CHAMBER} ({chamber.resource})"
        console.print(f"simulated cabinet on {server.resource}, {where}")
    else:
        console.print(f"simulated cabinet on {server.resource} (no chamber above ×{DEMO_CHAMBER_MAX_SCALE:g})")
    with job_progress() as progress:
        launch = functools.partial(
            run_job, cabinet, recipe, assignments, store, clock,
            on_start=progress.on_start, on_cycle=progress.on_cycle, note="formation demo", feed=feed,
        )  # fmt: skip
        if chamber is None:
            sup = await launch()
        elif chamber_setpoints(recipe):
            sup = await launch(chamber=chamber)
        else:
            async with open_chamber_loop(chamber, clock, store, feed):
                sup = await launch()
    assert sup.job_id is not None
    return sup.job_id
