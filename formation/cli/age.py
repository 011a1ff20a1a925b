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
    from formation.store import LatestRun, Store

app = typer.Typer(help="The ageing room: racks, OCV/ACIR checks.", no_args_is_help=True)

#: Longest lot or rack name (the columns hold 200 characters).
MAX_NAME = 200
#: Positions a rack may have (the scanner addresses three digits).
MAX_POSITION = 999
_DONE = "done"


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
        runs = _formed_runs(store, lot)
        positions = list(range(first_position, first_position + len(runs)))
        if positions[-1] > MAX_POSITION:
            raise InputError("--first-position", f"{len(runs)} cells from {first_position} run past {MAX_POSITION}")
        _check_free(store, rack, runs, positions)
        if tester is not None:
            loaded_s = asyncio.run(_move_simulated(tester, rack, runs, positions))
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


def _formed_runs(store: Store, lot: str) -> list[LatestRun]:
    """Every cell of the lot with its latest run, which must have finished; else one line and exit 2."""
    runs = store.latest_runs(lot)
    if not runs:
        raise InputError("LOT", f"lot {printable(lot)!r} has no cells")
    for r in runs:
        if r.run_id is None:
            raise InputError("LOT", f"lot {printable(lot)!r} is not formed: cell {printable(r.cell_id)!r} has no run")
        if r.state != _DONE:
            cell = printable(r.cell_id)
            raise InputError("LOT", f"lot {printable(lot)!r} is not formed: cell {cell!r}'s latest run is {r.state}")
    return runs


def _check_free(store: Store, rack: str, runs: list[LatestRun], positions: list[int]) -> None:
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


async def _move_simulated(resource: str, rack: str, runs: list[LatestRun], positions: list[int]) -> float:
    """Move the cells on the simulated plant (``SIM:RACK:LOAD``); the plant clock when it was done."""
    import json

    from formation.errors import FormationError
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
            line = f'SIM:RACK:LOAD "{rack}",{position},"{r.cabinet}",{r.channel}'
            await session.write(line)
            try:
                await session.raise_on_errors(line)
            except FormationError as exc:
                raise InputError(
                    "--rack", f"the simulator refused cell {printable(r.cell_id)!r} at position {position}: {exc}"
                ) from None
        return float(await session.query("SIM:TIME?"))
