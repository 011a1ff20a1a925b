"""`formation age`: the ageing room. ``age load`` records where each cell of a formed lot went on a rack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.bounds import printable
from formation.cli.app import console
from formation.errors import InputError

if TYPE_CHECKING:
    from formation.ageing import AgeingPlan
    from formation.clock import Clock
    from formation.config import SiteConfig
    from formation.store import LatestRun, Store

app = typer.Typer(help="The ageing room: racks, OCV/ACIR checks.", no_args_is_help=True)

#: Longest lot or rack name (the columns hold 200 characters).
MAX_NAME = 200
#: Positions a rack may have (the scanner addresses three digits).
MAX_POSITION = 999
_DONE = "done"
#: A latest run in one of these has ended: done cells age, the others are left behind.
_ENDED = frozenset({"done", "faulted", "aborted"})


def _name(value: str, field: str) -> str:
    text = value.strip()
    if not text:
        raise InputError(field, "is empty")
    if len(text) > MAX_NAME:
        raise InputError(field, f"is longer than {MAX_NAME} characters")
    if printable(text) != text or "," in text or '"' in text:
        raise InputError(field, f"{printable(text)!r} holds a comma, a quote or a character that cannot be shown")
    return text


@app.command("load")
def load(
    lot: Annotated[str, typer.Argument(help="The lot whose cells go onto the rack")],
    rack: Annotated[str, typer.Option(help="The rack they go onto")],
    first_position: Annotated[int, typer.Option(help="Position of the first cell (the rest follow in cell order)")] = 1,
    tester: Annotated[
        str | None,
        typer.Option(help="VISA resource of the simulated tester reaching the rack: move the simulated cells too"),
    ] = None,
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML)")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
) -> None:
    """Record where each cell of a formed LOT went on RACK (one cell in one place); tell the simulator with --tester."""
    import asyncio

    from formation.cli.run import open_store
    from formation.store import Place

    lot = _name(lot, "LOT")
    rack = _name(rack, "--rack")
    if not 1 <= first_position <= MAX_POSITION:
        raise InputError("--first-position", f"{first_position} is outside 1-{MAX_POSITION}")
    if tester is not None and not tester.strip():
        raise InputError("--tester", "is empty")
    cfg, store = open_store(site, db)
    with store:
        runs, left = formed_runs(store, lot)
        positions = list(range(first_position, first_position + len(runs)))
        if positions[-1] > MAX_POSITION:
            raise InputError("--first-position", f"{len(runs)} cells from {first_position} run past {MAX_POSITION}")
        check_free(store, rack, runs, positions)
        if tester is not None:
            loaded_s = asyncio.run(move_simulated(tester, rack, runs, positions))
        else:
            from formation.clock import make_clock

            loaded_s = make_clock(cfg.clock_scale).now()
        store.place_cells([Place(r.cell_id, rack, p, loaded_s) for r, p in zip(runs, positions, strict=True)])
    table = Table("cell", "from", "rack", "position", title=f"lot {escape(lot)} on rack {escape(rack)}")
    for r, p in zip(runs, positions, strict=True):
        table.add_row(escape(r.cell_id), f"{escape(str(r.cabinet))}/{r.channel}", escape(rack), str(p))
    console.print(table)
    moved = " (the simulated cells moved with them)" if tester is not None else ""
    span = f"positions {positions[0]}-{positions[-1]}"
    console.print(f"{len(runs)} cells of lot {escape(lot)} on rack {escape(rack)}, {span}{moved}")
    if left:
        console.print(left_behind_text(left))


def left_behind_text(left: list[LatestRun]) -> str:
    """One line naming the cells that stay off the rack (their formation faulted or was aborted: NG already)."""
    named = ", ".join(f"{escape(r.cell_id)} ({r.state})" for r in left[:10]) + (" …" if len(left) > 10 else "")
    return f"[yellow]{len(left)} cell(s) left behind[/], their formation did not finish (graded NG): {named}"


def formed_runs(store: Store, lot: str) -> tuple[list[LatestRun], list[LatestRun]]:
    """The cells of the lot whose latest run is done (they age), and those whose run faulted or was aborted (they
    are segregated, NG already); InputError (exit 2) when a cell has no finished run or none is done."""
    runs = store.latest_runs(lot)
    if not runs:
        raise InputError("LOT", f"lot {printable(lot)!r} has no cells")
    for r in runs:
        if r.run_id is None:
            raise InputError("LOT", f"lot {printable(lot)!r} is not formed: cell {printable(r.cell_id)!r} has no run")
        if r.state not in _ENDED:
            cell = printable(r.cell_id)
            raise InputError("LOT", f"lot {printable(lot)!r} is not formed: cell {cell!r}'s latest run is {r.state}")
    done = [r for r in runs if r.state == _DONE]
    if not done:
        raise InputError("LOT", f"lot {printable(lot)!r} has no formed cell: every latest run faulted or was aborted")
    return done, [r for r in runs if r.state != _DONE]


def check_free(store: Store, rack: str, runs: list[LatestRun], positions: list[int]) -> None:
    """No cell of the lot sits anywhere yet, and no position it would take is taken."""
    placed = store.rack_places(cells=[r.cell_id for r in runs])
    if placed:
        p = placed[0]
        raise InputError(
            "LOT", f"cell {printable(p.cell_id)!r} already sits on rack {printable(p.rack)!r} position {p.position}"
        )
    wanted = set(positions)
    for p in store.rack_places(rack=rack):
        if p.position in wanted:
            raise InputError(
                "--rack", f"position {p.position} of rack {printable(rack)!r} is taken by cell {printable(p.cell_id)!r}"
            )


async def move_simulated(resource: str, rack: str, runs: list[LatestRun], positions: list[int]) -> float:
    """Move the cells on the simulated plant (``SIM:RACK:LOAD``); the plant clock when it was done."""
    import json

    from formation.errors import FormationError
    from formation.instruments.program import channel_to_instrument
    from formation.instruments.scpi import ScpiSession

    async with ScpiSession(resource, timeout_s=5.0, name="tester") as session:
        try:
            racks = {r["rack"]: r for r in json.loads(await session.query("SIM:RACK:LIST?"))}
        except (ValueError, TypeError, KeyError):
            raise InputError("--tester", f"{printable(resource)} is not a simulated tester") from None
        if rack not in racks:
            known = ", ".join(sorted(racks)) or "none"
            raise InputError("--rack", f"the tester reaches no rack {printable(rack)!r} (it reaches: {known})")
        if positions[-1] > int(racks[rack]["positions"]):
            raise InputError(
                "--rack", f"rack {printable(rack)!r} has {racks[rack]['positions']} positions, not {positions[-1]}"
            )
        for r, position in zip(runs, positions, strict=True):
            # Runs store the logical channel (1, 2, …); the simulator names it as the instrument does (101, …).
            line = f'SIM:RACK:LOAD "{rack}",{position},"{r.cabinet}",{channel_to_instrument(int(r.channel or 0))}'
            await session.write(line)
            try:
                await session.raise_on_errors(line)
            except FormationError as exc:
                raise InputError(
                    "--rack", f"the simulator refused cell {printable(r.cell_id)!r} at position {position}: {exc}"
                ) from None
        return float(await session.query("SIM:TIME?"))


@app.command("start")
def start(
    lot: Annotated[str, typer.Argument(help="The lot whose cells sit on the rack")],
    plan: Annotated[str, typer.Option(help="Ageing plan: a TOML file or the name of a built-in plan")],
    rack: Annotated[str, typer.Option(help="The rack the lot sits on (a [[racks]] name of the site)")],
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML) with the rack and its tester")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run the plan here until its last checkpoint (else `formation serve`)")
    ] = False,
) -> None:
    """Start an ageing PLAN on the cells of LOT sitting on RACK: checkpoints become persistent timers."""
    from formation.ageing import resolve_plan
    from formation.cli.run import open_store
    from formation.clock import make_clock

    lot = _name(lot, "LOT")
    rack = _name(rack, "--rack")
    if not plan.strip():
        raise InputError("--plan", "is empty")
    the_plan = resolve_plan(plan)
    if site is None:
        raise InputError("--site", "required: the site file names the rack, its tester and its chamber")
    cfg, store = open_store(site, db)
    with store:
        clock = make_clock(cfg.clock_scale)
        job_id = start_ageing_job(cfg, store, clock, lot, rack, the_plan, foreground=foreground)
        if foreground:
            import asyncio

            asyncio.run(run_ageing_foreground(cfg, store, clock, job_id))


def start_ageing_job(
    cfg: SiteConfig, store: Store, clock: Clock, lot: str, rack: str, plan: AgeingPlan, *, foreground: bool
) -> int:
    """Check and write an ageing job of ``lot`` on ``rack`` with its checkpoint timers; its id (printed too).

    Foreground: ``running``, owned by this process, which then runs it; else ``queued`` for `formation serve`.
    """
    from formation.ageing import check_setpoints
    from formation.orchestrator.lease import process_owner
    from formation.orchestrator.timers import store_ageing_timers

    rack_site = cfg.rack(rack)
    tester = cfg.tester_of(rack)
    if tester is None:
        raise InputError("--rack", f"no tester of the site reaches rack {printable(rack)!r}")
    chamber = cfg.chamber(rack_site.chamber) if rack_site.chamber is not None else None
    check_setpoints(
        plan,
        None if chamber is None else chamber.name,
        None if chamber is None else chamber.setpoint_min_c,
        None if chamber is None else chamber.setpoint_max_c,
    )
    runs, _ = formed_runs(store, lot)
    _check_on_rack(store, lot, rack, [r.cell_id for r in runs])
    job_id = store.create_ageing_job(
        lot_id=lot,
        rack=rack,
        plan_name=plan.name,
        plan_sha256=plan.sha256,
        plan_json=plan.canonical_json(),
        state="running" if foreground else "queued",
        started_s=clock.now(),
        tester=tester.name,
        chamber=None if chamber is None else chamber.name,
        owner=process_owner("age") if foreground else None,
    )
    job = store.ageing_jobs(job_id=job_id)[0]
    due = [(c.stage, c.k, job.started_s + c.at_s) for c in plan.checkpoints()]
    store_ageing_timers(store.engine, clock, rack, job_id, due)
    days = plan.duration_s / 86400.0
    console.print(
        f"ageing job {job_id}: lot {escape(lot)} on rack {escape(rack)}, plan {escape(plan.name)} "
        f"({len(plan.stages)} stages, {len(due)} checkpoints, {days:g} days)"
        + ("" if foreground else ", queued for `formation serve`")
    )
    return job_id


def _check_on_rack(store: Store, lot: str, rack: str, cells: list[str]) -> None:
    """Every cell of the lot sits on ``rack`` (`age load`), and no open ageing job of the lot runs there."""
    places = {p.cell_id: p for p in store.rack_places(cells=cells)}
    if not places:
        raise InputError("LOT", f"no cell of lot {printable(lot)!r} sits on a rack: `formation age load` it first")
    for cell in cells:
        p = places.get(cell)
        if p is None or p.rack != rack:
            where = "no rack" if p is None else f"rack {printable(p.rack)!r}"
            raise InputError("--rack", f"cell {printable(cell)!r} of lot {printable(lot)!r} sits on {where}")
    for job in store.ageing_jobs(rack=rack, states=("queued", "running", "interrupted")):
        if job.lot_id == lot:
            raise InputError("LOT", f"lot {printable(lot)!r} already ages on rack {printable(rack)!r} (job {job.id})")


async def run_ageing_foreground(cfg: object, store: Store, clock: object, job_id: int) -> None:
    """Run the job here until its last checkpoint; Ctrl-C leaves it interrupted (`formation serve` takes it up)."""
    from formation.clock import Clock
    from formation.config import SiteConfig
    from formation.orchestrator.ageing import open_ageing_runner
    from formation.orchestrator.timers import LineTimers

    assert isinstance(cfg, SiteConfig)
    assert isinstance(clock, Clock)
    job = store.ageing_jobs(job_id=job_id)[0]
    async with (
        LineTimers(store, clock) as timers,
        open_ageing_runner(cfg, store, clock, job, timers, on_event=lambda t: console.print(escape(t))) as runner,
    ):
        done = await runner.run_until_done()
    if done:
        _print_results(store, job_id)


def _print_results(store: Store, job_id: int) -> None:
    """K per cell of a finished job, in one table."""
    results = store.ageing_results(job_id=job_id)
    table = Table("cell", "K mV/day", "± SE", "points", "OCV V", "ACIR mΩ", "reason", title=f"ageing job {job_id}")
    for row in results.itertuples(index=False):
        k = "" if row.k_mv_per_day is None or row.k_mv_per_day != row.k_mv_per_day else f"{row.k_mv_per_day:.4f}"
        se = (
            ""
            if row.k_se_mv_per_day is None or row.k_se_mv_per_day != row.k_se_mv_per_day
            else f"{row.k_se_mv_per_day:.4f}"
        )
        ocv = "" if row.ocv_v is None or row.ocv_v != row.ocv_v else f"{row.ocv_v:.5f}"
        acir = "" if row.acir_mohm is None or row.acir_mohm != row.acir_mohm else f"{row.acir_mohm:.3f}"
        table.add_row(escape(str(row.cell_id)), k, se, str(row.n_points), ocv, acir, escape(str(row.reason)))
    console.print(table)
