"""`formation export`: one cell's samples as a Battery Data Format CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from formation.cli.app import console
from formation.errors import InputError


def export(
    cell: Annotated[str, typer.Argument(help="Cell id (serial)")],
    out: Annotated[Path, typer.Option(help="Output CSV path")] = Path("cell.csv"),
    run: Annotated[
        int | None, typer.Option(help="Run id (default: the cell's latest run)", min=1, max=2**63 - 1)
    ] = None,
    site: Annotated[Path | None, typer.Option(help="Site configuration (TOML)")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (overrides the site's)")] = None,
) -> None:
    """Export a cell's logged samples with BDF column names."""
    from formation.cli.run import open_store, output_file
    from formation.store.export import export_cell_bdf

    output_file(out, "--out")
    _, store = open_store(site, db)
    with store:
        if store.cell(cell) is None:
            raise InputError("cell", f"no cell {cell!r} in the store")
        if run is not None:
            found = store.get_run(run)
            if found is None or found.cell_id != cell:
                raise InputError("--run", f"run {run} is not a run of cell {cell!r}")
        path = export_cell_bdf(store, cell, out, run_id=run)
    console.print(f"wrote {escape(str(path))}")
