"""What `formation` prints, in this process: usage errors as one line, every problem in order on stderr, literal
text (no Rich markup), and tables that keep every cell's full text when stdout is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from rich.table import Table

from formation.cli.app import PIPE_WIDTH, console, main
from formation.cli.progress import step_summary_table

ROOT = Path(__file__).resolve().parents[2]

LONG = "a-cell-serial-long-enough-to-be-cut-by-any-terminal-" + "x" * 60  # > 100 characters
BAD_RECIPE = f"""
name = "bad"
version = "1"
nominal_capacity_ah = 5.0
"[red]" = 1
[limits]
max_voltage_v = 4.2
min_voltage_v = 2.5
[[steps]]
kind = "charge"
current = "C/2"
until = {{ voltage_v = 4.5 }}
{LONG.replace("-", "_")} = 1
[[steps]]
kind = "rest"
"""


@dataclass(frozen=True)
class Ran:
    """What one in-process `formation` call returned and printed."""

    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Ran]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """`formation ARGS` in this process, from an empty folder, with a narrow COLUMNS."""
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def _one_line_error(ran: Ran) -> str:
    assert ran.returncode == 2, ran.stdout + ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bogus"], "error: No such command 'bogus'. (formation --help lists the commands)"),
        (["run", "show", "abc"], "error: Invalid value for 'job': "),
        (["recipe", "validate"], "error: Missing argument 'recipes'. (formation recipe validate --help "),
        (["sim", "serve", "--port", "abc"], "error: Invalid value for '--port': "),
        (["run", "list", "--colour"], "error: No such option: --colour (formation run list --help "),
        (["recipe", "bogus"], "error: No such command 'bogus'. (formation recipe --help lists the commands)"),
    ],
    ids=["unknown-command", "job-not-a-number", "missing-argument", "port-not-a-number", "unknown-option", "sub"],
)
def test_usage_errors_are_one_line_and_exit_2(cli: Cli, tmp_path: Path, args: list[str], expected: str) -> None:
    ran = cli(*args)
    assert _one_line_error(ran).startswith(expected)
    assert ran.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_no_arguments_shows_the_help(cli: Cli) -> None:
    ran = cli()
    assert ran.returncode == 2
    assert "Usage: formation" in ran.stdout and "recipe" in ran.stdout
    assert "Traceback" not in ran.stderr


def test_help_exits_0(cli: Cli) -> None:
    ran = cli("--help")
    assert ran.returncode == 0, ran.stderr
    for command in ("recipe", "run", "sim", "grade", "export", "demo"):
        assert command in ran.stdout


def test_every_recipe_problem_is_one_literal_line_on_stderr_in_order(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_RECIPE)
    ran = cli("recipe", "validate", "bad.toml")
    assert ran.returncode == 2
    assert ran.stdout == ""
    lines = ran.stderr.splitlines()
    assert lines == [
        "error: bad.toml: [red]: unknown key (expected one of: name, version, chemistry, description, "
        "nominal_capacity_ah, limits, record, resume, steps)",
        f"also: steps[0].{LONG.replace('-', '_')}: unknown key (expected one of: id, kind, current, cv_voltage_v, "
        "until, record, chamber_c)",
        "also: steps[0].until.voltage_v: 4.5 V is above limits.max_voltage_v 4.2 V",
        "also: steps[1].until.duration: a rest step needs a duration end",
    ]
    assert max(len(line) for line in lines) > 100


def test_a_good_recipe_after_a_bad_one_is_not_reached(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_RECIPE)
    ran = cli("recipe", "validate", "demo-ncm21700", "bad.toml", "ncm21700-formation")
    assert ran.returncode == 2
    assert ran.stdout.count("ok") == 1 and "demo-ncm21700" in ran.stdout
    assert "ncm21700-formation" not in ran.stdout
    assert ran.stderr.splitlines()[0].startswith("error: bad.toml: ")


def test_a_site_file_error_is_one_line_naming_the_field(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(
        '[[cabinets]]\nname = "cab1"\nresource = "r"\n[cabinets.sim]\nformed = "maybe"\n'
    )
    line = _one_line_error(cli("sim", "serve", "--site", "site.toml"))
    assert line == "error: site.toml: cabinets[0].sim.formed: 'maybe' is not one of true, false, yes, no"


def test_a_wide_table_keeps_every_cell_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    table = Table(title="cells")
    for col in ("cell", "capacity Ah", "reason"):
        table.add_column(col, no_wrap=True)
    table.add_row(LONG, "11.234567", "capacity below the grade C minimum of 4.800 Ah " + "and more " * 8)
    console.print(table)
    out = capsys.readouterr().out
    assert LONG in out and "11.234567" in out and "and more " * 8 in out
    assert "…" not in out
    assert console.width == PIPE_WIDTH
    assert max(len(line) for line in out.splitlines()) < 400  # as wide as the table, not as the page


def test_markup_in_table_cells_prints_literally(capsys: pytest.CaptureFixture[str]) -> None:
    results = pd.DataFrame(
        {
            "run_id": [1, 2],
            "step_index": [0, 0],
            "step_id": [f"[red]{LONG}", f"[red]{LONG}"],
            "kind": ["charge", "charge"],
            "ah": [11.123456, 11.654321],
            "duration_s": [3600.0, 3600.0],
            "end_voltage_v": [4.2, 4.2],
            "end_reason": ["voltage[0]", "a [/bold] reason " * 6],
        }
    )
    console.print(step_summary_table(results))
    out = capsys.readouterr().out
    assert f"[red]{LONG}" in out
    assert "voltage[0]×1" in out and ("a [/bold] reason " * 6).strip() in out
    assert "11.389" in out
    assert "…" not in out


def test_recipe_show_prints_long_step_ids_in_full(cli: Cli, tmp_path: Path) -> None:
    step_id = LONG + "-first-charge"
    (tmp_path / "long.toml").write_text(
        'name = "long"\nversion = "[1]"\nnominal_capacity_ah = 5.0\n'
        "[limits]\nmax_voltage_v = 4.2\nmin_voltage_v = 2.5\n"
        f'[[steps]]\nid = "{step_id}"\nkind = "charge"\ncurrent = "C/2"\nuntil = {{ voltage_v = 4.1 }}\n'
    )
    ran = cli("recipe", "show", "long.toml")
    assert ran.returncode == 0, ran.stderr
    assert step_id in ran.stdout
    assert "long [1]" in ran.stdout  # a version in brackets is text, not markup
    assert "…" not in ran.stdout
    ran = cli("recipe", "list")
    assert "ncm21700-formation" in ran.stdout and "…" not in ran.stdout


def test_run_list_and_show_print_long_values_in_full(cli: Cli, tmp_path: Path) -> None:
    from formation.recipes import load_builtin
    from formation.store import Store

    recipe = load_builtin("ncm21700-formation")
    cabinet = "cabinet-" + LONG
    channels = ",".join(f"{i}-{i + 3}" for i in range(1, 200, 8))
    reason = "voltage limit reached after the [bold]first[/] charge " + "with a long story " * 5
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with Store(db) as store:
        store.create_schema()
        store.upsert_lot_and_cells([(LONG, "LOT-[1]", 5.0)])
        store.save_recipe(
            recipe.sha256, recipe.name, recipe.version, recipe.chemistry, 5.0, recipe.canonical_json(), ""
        )
        job = store.create_job(recipe.sha256, cabinet, channels, 1.0, 0.0)
        store.create_runs(
            job,
            [
                {
                    "cell_id": LONG,
                    "cabinet": cabinet,
                    "channel": 1,
                    "instrument_cell": 1001,
                    "state": "done",
                    "started_s": 0.0,
                    "end_reason": reason,
                }
            ],
        )
    ran = cli("run", "list", "--db", db)
    assert ran.returncode == 0, ran.stderr
    assert cabinet in ran.stdout and channels in ran.stdout and "…" not in ran.stdout
    ran = cli("run", "show", str(job), "--db", db)
    assert ran.returncode == 0, ran.stderr
    assert LONG in ran.stdout and reason in ran.stdout and "…" not in ran.stdout


def test_in_process_calls_leave_no_state_behind(cli: Cli) -> None:
    hook = sys.excepthook
    assert cli("bogus").returncode == 2
    assert cli("recipe", "list").returncode == 0
    assert sys.excepthook is hook
    assert console._live_stack == []  # no progress display left attached to the shared console
    assert cli("recipe", "list").stdout.count("ncm21700-formation ") == 1  # the table once (not -3cycles)
