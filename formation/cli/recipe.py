"""`formation recipe list|show|validate|import|export`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.bounds import printable
from formation.cli.app import add_text_row, console
from formation.errors import InputError
from formation.recipes import builtin_recipes, describe_step, load_builtin, resolve_recipe

app = typer.Typer(help="List, show and validate recipes.", no_args_is_help=True)


@app.command("list")
def list_recipes() -> None:
    """List the built-in recipes."""
    table = Table(title="Built-in recipes")
    for col in ("name", "chemistry", "nominal Ah", "steps", "sha256"):
        table.add_column(col)
    for name in builtin_recipes():
        r = load_builtin(name)
        add_text_row(table, name, r.chemistry or "", f"{r.nominal_capacity_ah:g}", str(len(r.steps)), r.sha256[:12])
    console.print(table)


@app.command("show")
def show(recipe: Annotated[str, typer.Argument(help="Recipe file or built-in name")]) -> None:
    """Show a recipe's limits and steps."""
    r = resolve_recipe(recipe)
    # Names are data: Rich markup and terminal control characters in them are shown, never obeyed.
    name, version, chemistry = (escape(printable(text)) for text in (r.name, r.version, r.chemistry or ""))
    console.print(f"[bold]{name}[/] {version}  {chemistry}  {r.nominal_capacity_ah:g} Ah")
    if r.description:
        lines = (escape(printable(line)) for line in r.description.splitlines())
        console.print("\n".join(lines), highlight=False)
    console.print(f"sha256 {r.sha256}")
    lim = r.limits
    console.print(
        f"limits: {lim.min_voltage_v:g}–{lim.max_voltage_v:g} V, max {lim.max_current_a:g} A, "
        f"max cell temperature {lim.max_cell_temperature_c} °C"
    )
    table = Table()
    cycled = any(r.cycles)  # a recipe with a repeat block shows each step's cycle (blank outside any block)
    for col in ("#", *(("cycle",) if cycled else ()), "id", "kind", "what", "record"):
        table.add_column(col)
    for i, step in enumerate(r.steps):
        cycle = r.cycle_of(i)
        add_text_row(
            table,
            str(i),
            *((str(cycle) if cycle else "",) if cycled else ()),
            step.id,
            step.kind,
            describe_step(step),
            f"{step.record.every_s:g} s / {step.record.every_mv:g} mV",
        )
    console.print(table)


@app.command("validate")
def validate(recipes: Annotated[list[str], typer.Argument(help="Recipe files or built-in names")]) -> None:
    """Validate recipes; exit 2 naming every problem of the first bad one (one line each on stderr)."""
    for name in recipes:
        # A RecipeError carries every problem; `formation.cli.app.main` prints them all, in order.
        r = resolve_recipe(name)
        console.print(
            f"[green]ok[/] {escape(printable(name))}: {escape(printable(r.name))} {escape(printable(r.version))}, "
            f"{len(r.steps)} steps, sha256 {r.sha256[:12]}"
        )


@app.command("import")
def import_recipe(
    protocol: Annotated[Path, typer.Argument(help="aurora-unicycler protocol (JSON)")],
    out: Annotated[Path | None, typer.Option(help="Write the recipe (JSON) here; default: print it")] = None,
    name: Annotated[str | None, typer.Option(help="Recipe name (default: the protocol's sample name)")] = None,
    capacity_ah: Annotated[float | None, typer.Option(help="Nominal capacity, Ah (default: the sample's)")] = None,
    max_voltage: Annotated[
        float | None, typer.Option(help="limits.max_voltage_v (default: safety.max_voltage_V)")
    ] = None,
    min_voltage: Annotated[
        float | None, typer.Option(help="limits.min_voltage_v (default: safety.min_voltage_V)")
    ] = None,
) -> None:
    """Turn an aurora-unicycler protocol into a recipe; what has no equivalent is refused with one line."""
    from formation.cli.run import output_file
    from formation.recipes.unicycler import import_protocol

    for option, value in (
        ("--capacity-ah", capacity_ah),
        ("--max-voltage", max_voltage),
        ("--min-voltage", min_voltage),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(option, f"{value!r} is not a finite positive number")
    target = output_file(out, "--out") if out is not None else None
    r = import_protocol(
        protocol, name=name, capacity_ah=capacity_ah, max_voltage_v=max_voltage, min_voltage_v=min_voltage
    )
    text = json.dumps(r.to_canonical(), indent=2, sort_keys=True) + "\n"
    if target is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        return
    target.write_text(text, encoding="utf-8")
    console.print(f"[green]ok[/] {escape(str(target))}: {escape(r.name)}, {len(r.steps)} steps, sha256 {r.sha256[:12]}")


@app.command("export")
def export_recipe(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in name")],
    to: Annotated[str, typer.Option(help="unicycler | neware | biologic | pybamm")],
    out: Annotated[Path | None, typer.Option(help="Write it here; default: print it")] = None,
) -> None:
    """Write a recipe out through aurora-unicycler (JSON, Neware XML, Biologic .mps, PyBaMM experiment)."""
    from formation.cli.run import output_file
    from formation.recipes.unicycler import export_recipe as export

    target = output_file(out, "--out") if out is not None else None
    text = export(resolve_recipe(recipe), to)
    if target is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True, end="")
        return
    target.write_text(text, encoding="utf-8")
    console.print(f"[green]ok[/] {escape(str(target))}: {escape(recipe)} as {escape(to)}")
