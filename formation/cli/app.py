"""The `formation` command: wires configuration to the orchestrator, the simulator and the store.

Kept light on purpose: `formation --help` and `formation recipe validate` import only this module, the command
modules and the recipe package. Everything heavy (pandas, SQLAlchemy, the orchestrator, matplotlib) is imported
inside the command that needs it.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console, ConsoleDimensions
from rich.text import Text

from formation.bounds import printable
from formation.errors import FormationError, InputError

if TYPE_CHECKING:
    from rich.table import Table

#: The width Rich lays out for when the output is not a terminal: no table cell or line is cut or wrapped
#: there, because a file or a pipe is read by programs and people searching for the full value.
PIPE_WIDTH = 100_000

app = typer.Typer(
    name="formation",
    help="Open orchestrator for lithium-ion cell formation, ageing and grading.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CliConsole(Console):
    """A Rich console that keeps the Rich look in a terminal and never truncates or wraps anything elsewhere."""

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; PIPE_WIDTH wide (whatever COLUMNS says) when writing to a file or a pipe."""
        size = super().size
        if self.writes_to_terminal():
            return size
        return ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def writes_to_terminal(self) -> bool:
        """Whether the file written to now is a terminal (FORCE_COLOR asks for colour, not for a narrow page)."""
        isatty = getattr(self.file, "isatty", None)
        try:
            return bool(isatty is not None and isatty())
        except ValueError:  # a closed stream
            return False


console = CliConsole()
err_console = CliConsole(stderr=True)


def print_problem(label: str, message: str, style: str = "bold red") -> None:
    """One line on stderr, ``label message``: the message literal (no markup, no emoji), never wrapped."""
    flat = printable(" ".join(str(message).splitlines()))
    err_console.print(Text.assemble((label, style), " ", flat), soft_wrap=True, highlight=False)


def add_text_row(table: Table, *values: str) -> None:
    """A table row of literal text: ids, names and reasons are data, never Rich markup (``[x]`` stays ``[x]``)
    and never terminal control (an escape character shows as ``\\x1b``)."""
    table.add_row(*(Text(printable(value)) for value in values))


def _is_usage_error(exc: Exception) -> bool:
    """A command-line usage error from typer (bad option, missing argument, unknown command)."""
    # typer vendors click as a private package; its errors derive from the public typer.TyperException. An older
    # typer raised click's own ClickException, which has the same exit_code and format_message.
    base = getattr(typer, "TyperException", None)
    if base is not None and isinstance(exc, base):
        return True
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "format_message", None))


def _report_usage_error(exc: Exception) -> int:
    """Print a usage error as one line with where to find help; the exit code (2 for usage errors)."""
    code = int(getattr(exc, "exit_code", 2))
    message = str(exc.format_message())  # type: ignore[attr-defined]
    # Without arguments a group shows its help (typer prints it while building the message) instead of an error.
    if type(exc).__name__ == "NoArgsIsHelpError":
        if message.strip():
            console.print(message, markup=False, highlight=False)
        return code
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", "") or "formation"
    command = getattr(ctx, "command", None)
    hint = "lists the commands" if hasattr(command, "list_commands") else "shows the arguments and options"
    print_problem("error:", f"{message} ({path} --help {hint})")
    return code


@functools.cache
def _register() -> None:
    # Imported here so each command module can import `app` helpers without a cycle; cached because in-process
    # callers (tests) run main() many times and the sub-apps must be added once.
    from formation.cli import age, chamber, db, demo, display, export, grade, recipe, report, run, serve, sim, status

    app.add_typer(recipe.app, name="recipe")
    app.add_typer(age.app, name="age")
    app.add_typer(sim.app, name="sim")
    app.add_typer(run.app, name="run")
    app.add_typer(chamber.app, name="chamber")
    app.add_typer(db.app, name="db")
    app.add_typer(report.app, name="report")
    known = {c.name for c in app.registered_commands}
    commands = (
        ("export", export.export),
        ("grade", grade.grade),
        ("demo", demo.demo),
        ("display", display.display),
        ("status", status.status),
        ("serve", serve.serve),
    )
    for name, command in commands:
        if name not in known:  # a caller may have registered it already
            app.command(name)(command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input exits 2 with one line, instrument or store failures exit 1 with one line."""
    _register()
    # typer installs its own excepthook on every call; an in-process caller keeps the one it had.
    hook = sys.excepthook
    try:
        # Non-standalone, typer returns an exit code instead of exiting (130 after Ctrl-C).
        rv = app(args=argv, prog_name="formation", standalone_mode=False)
    except InputError as exc:
        print_problem("error:", str(exc))
        # A validator that collects problems lists every one, in order, after the first.
        for field, reason in exc.errors[1:]:
            print_problem("also:", f"{field}: {reason}", style="red")
        return 2
    except FormationError as exc:
        print_problem("failed:", str(exc))
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        if _is_usage_error(exc):
            return _report_usage_error(exc)
        raise
    finally:
        sys.excepthook = hook
    if isinstance(rv, int) and rv != 0:
        if rv == 130:
            err_console.print("interrupted")
        return rv
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
