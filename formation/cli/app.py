"""The `formation` command: wires configuration to the orchestrator, the simulator and the store."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from formation.errors import FormationError, InputError

app = typer.Typer(
    name="formation",
    help="Open orchestrator for lithium-ion cell formation, ageing and grading.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _register() -> None:
    # Imported here so each command module can import `app` helpers without a cycle.
    from formation.cli import demo, export, grade, recipe, run, sim

    app.add_typer(recipe.app, name="recipe")
    app.add_typer(sim.app, name="sim")
    app.add_typer(run.app, name="run")
    app.command("export")(export.export)
    app.command("grade")(grade.grade)
    app.command("demo")(demo.demo)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input exits 2 with one line, instrument or store failures exit 1 with one line."""
    _register()
    try:
        # Non-standalone, typer returns an exit code instead of exiting (130 after Ctrl-C).
        rv = app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except FormationError as exc:
        err_console.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    if isinstance(rv, int) and rv != 0:
        if rv == 130:
            err_console.print("interrupted")
        return rv
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
