"""`formation recipe list|show|validate`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from formation.bounds import printable
from formation.cli.app import add_text_row, console
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
    for col in ("#", "id", "kind", "what", "record"):
        table.add_column(col)
    for i, step in enumerate(r.steps):
        add_text_row(
            table,
            str(i),
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
