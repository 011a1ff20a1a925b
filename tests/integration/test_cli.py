"""The `formation` command as a user meets it: exit codes, one-line errors, what it writes.

Most tests call `formation.cli.app.main` in this process (the same argv, exit code, stdout and stderr a user
sees); the demo runs the installed command in its own process. The entry point itself, Ctrl-C, a killed launcher
and `sim serve` are exercised in real processes in test_cli_process.py and test_sim_serve_cli.py.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.grading import METRICS, REPORT_COLUMNS
from formation.grading.rules import resolve_rules
from formation.sim.cells import PRESETS, CellPopulation

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "examples" / "site.toml")


def formation(*args: str, cwd: Path = ROOT, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "formation", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "160"},
    )


@dataclass(frozen=True)
class Ran:
    """What one in-process `formation` call returned and printed."""

    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Ran]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """`formation ARGS` in this process, run from ``cwd`` (a fresh folder unless told otherwise)."""
    monkeypatch.setenv("COLUMNS", "160")

    def run(*args: str, cwd: Path = tmp_path) -> Ran:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def _one_line_error(proc: Ran | subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    (tmp_path / "malformed.toml").write_text('name = "x"\nnominal_capacity_ah = [oops\n')
    (tmp_path / "above.toml").write_text(
        'name = "above"\nversion = "1"\nnominal_capacity_ah = 5.0\n'
        "[limits]\nmax_voltage_v = 4.2\nmin_voltage_v = 2.5\n"
        '[[steps]]\nkind = "charge"\ncurrent = "C/2"\nuntil = { voltage_v = 4.5 }\n'
    )
    (tmp_path / "dup.csv").write_text("cell_id,lot,nominal_capacity_ah\nA,L,5\nB,L,5\nA,L,5\n")
    (tmp_path / "two.csv").write_text("cell_id,lot,nominal_capacity_ah\nA,L,5\nB,L,5\n")
    return tmp_path


def test_malformed_recipe_exits_2(cli: Cli, bad_inputs: Path) -> None:
    line = _one_line_error(cli("recipe", "validate", str(bad_inputs / "malformed.toml")))
    assert "malformed.toml" in line


def test_recipe_above_limits_exits_2(cli: Cli, bad_inputs: Path) -> None:
    line = _one_line_error(cli("recipe", "validate", str(bad_inputs / "above.toml")))
    assert "steps[0].until.voltage_v" in line and "4.5" in line


def test_duplicate_cell_id_exits_2(cli: Cli, bad_inputs: Path) -> None:
    proc = cli(
        "run",
        "launch",
        "--foreground",
        "ncm21700-formation",
        "--site",
        SITE,
        "--cabinet",
        "cab1",
        "--channels",
        "1-3",
        "--cells",
        str(bad_inputs / "dup.csv"),
    )
    line = _one_line_error(proc)
    assert "duplicate cell id 'A'" in line


def test_channel_list_outside_cabinet_exits_2(cli: Cli, bad_inputs: Path) -> None:
    proc = cli(
        "run",
        "launch",
        "--foreground",
        "ncm21700-formation",
        "--site",
        SITE,
        "--cabinet",
        "cab1",
        "--channels",
        "255-258",
        "--cells",
        str(bad_inputs / "two.csv"),
    )
    line = _one_line_error(proc)
    assert "channel 257 is outside the cabinet (1-256)" in line


def test_unknown_cabinet_exits_2(cli: Cli, bad_inputs: Path) -> None:
    proc = cli(
        "run",
        "launch",
        "--foreground",
        "ncm21700-formation",
        "--site",
        SITE,
        "--cabinet",
        "nope",
        "--channels",
        "1-2",
        "--cells",
        str(bad_inputs / "two.csv"),
    )
    assert "no cabinet named 'nope'" in _one_line_error(proc)


def test_recipe_list_and_show(cli: Cli) -> None:
    proc = cli("recipe", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("lfp-280ah-formation", "ncm21700-formation", "demo-ncm21700"):
        assert name in proc.stdout
    proc = cli("recipe", "show", "lfp-280ah-formation")
    assert proc.returncode == 0, proc.stderr
    assert "sha256" in proc.stdout and "precharge" in proc.stdout


def test_examples_validate(cli: Cli) -> None:
    recipes = sorted(str(p) for p in (ROOT / "examples" / "recipes").iterdir())
    assert recipes
    proc = cli("recipe", "validate", *recipes)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok") == len(recipes)


@pytest.mark.e2e
def test_demo_runs_the_full_route_and_writes_under_out(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = formation("demo", "--cells", "16", "--out", str(out), "--scale", "4000", "--defects", "0.25", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per-step summary" in proc.stdout
    assert "first-cycle efficiency" in proc.stdout
    assert "Grades: demo-ncm21700-grading" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    db = out / "formation.db"
    with sqlite3.connect(db) as conn:
        states = conn.execute("SELECT state, count(*) FROM run GROUP BY state").fetchall()
        samples = conn.execute("SELECT count(*) FROM sample").fetchone()[0]
        grades = dict(conn.execute("SELECT cell_id, grade FROM grade").fetchall())
    assert states == [("done", 16)]
    assert samples > 16 * 50
    cell_csv = (out / "cell-DEMO-0001.csv").read_text().splitlines()
    assert cell_csv[0].startswith("Test Time / s") and len(cell_csv) > 50

    # The logistics CSV: one row per cell, no empty grade, the documented columns.
    report = (out / "grading-report.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(report.decode())))
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert sorted(r["cell_id"] for r in rows) == [f"DEMO-{i:04d}" for i in range(1, 17)]
    assert all(r["grade"] in {"A", "B", "C", "NG"} for r in rows)
    assert {r["cell_id"]: r["grade"] for r in rows} == grades
    # A histogram per metric the demo's rules grade on (the rules name only some of METRICS).
    graded = sorted(resolve_rules("demo-ncm21700").metrics)
    assert set(graded) <= set(METRICS) and len(graded) >= 4
    histograms = sorted(p.name for p in (out / "plots").iterdir() if p.name != "chamber.png")
    assert histograms == [f"DEMO-LOT_{m}.png" for m in graded]

    # Defective high-leak cells (the simulator's seeded population) are never graded A.
    population = CellPopulation(PRESETS["ncm21700-5ah"], 16, seed=7, defect_fraction=0.25)
    leaky = [f"DEMO-{i + 1:04d}" for i, kind in enumerate(population.defect) if kind == "leak"]
    assert leaky, "the seeded demo lot has no high-leak cell"
    assert all(grades[c] in {"NG", "C"} for c in leaky), {c: grades[c] for c in leaky}

    # Re-grading the same database with the same rules reproduces the CSV byte for byte.
    again = tmp_path / "again.csv"
    proc = formation("grade", "DEMO-LOT", "--rules", "demo-ncm21700", "--db", f"sqlite:///{db}", "--out", str(again))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert again.read_bytes() == report


RULES_HEAD = 'name = "r"\nversion = "1"\n[metrics.capacity_ah]\nstep = "capacity"\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "r"\nversion = "1"\n[metrics.colour]\nstep = "x"\n', "colour"),
        (
            RULES_HEAD + '[[grades]]\nname = "A"\ncapacity_ah = { min = 4.8 }\n'
            '[[grades]]\nname = "B"\ncapacity_ah = { min = 4.9 }\n',
            "grades[1]",
        ),
        (RULES_HEAD + '[[grades]]\nname = "A"\ncapacity_ah = { min = "lots" }\n', "grades[0].capacity_ah.min"),
    ],
    ids=["unknown-metric", "unreachable-grade", "bound-not-a-number"],
)
def test_grade_with_bad_rules_exits_2(cli: Cli, tmp_path: Path, body: str, expected: str) -> None:
    (tmp_path / "bad.toml").write_text(body)
    line = _one_line_error(cli("grade", "LOT", "--rules", str(tmp_path / "bad.toml"), "--db", "sqlite://"))
    assert expected in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no report.csv


def test_export_of_an_unknown_cell_exits_2(cli: Cli, tmp_path: Path) -> None:
    line = _one_line_error(cli("export", "NOPE", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--out", "x.csv"))
    assert "no cell 'NOPE'" in line
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--out", "{afile}"], "--out: {afile} exists and is not a folder"),
        (["export", "X", "--out", "/nonexistent/x.csv", "--db", "sqlite:///{tmp}/x.db"], "folder /nonexistent"),
        (["grade", "L", "--rules", "demo-ncm21700", "--plots", "{afile}", "--db", "sqlite://"], "--plots"),
        (["run", "list", "--db", "nosuchdriver://x"], "unusable database URL"),
        (["grade", "L", "--rules", "no-such-rules", "--db", "sqlite://"], "no built-in rules"),
    ],
    ids=["demo-out-is-a-file", "export-folder-missing", "plots-is-a-file", "bad-db-url", "unknown-rules"],
)
def test_bad_paths_and_urls_exit_2(cli: Cli, tmp_path: Path, args: list[str], expected: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [a.format(afile=afile, tmp=tmp_path) for a in args]
    line = _one_line_error(cli(*args, cwd=tmp_path))
    assert expected.format(afile=afile) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # refused before writing anything


def test_a_busy_cabinet_refuses_a_second_job(cli: Cli, tmp_path: Path, bad_inputs: Path) -> None:
    from formation.recipes import load_builtin
    from formation.store import Store

    recipe = load_builtin("ncm21700-formation")
    store = Store(f"sqlite:///{tmp_path / 'busy.db'}")
    store.create_schema()
    store.save_recipe(recipe.sha256, recipe.name, recipe.version, recipe.chemistry, 5.0, recipe.canonical_json(), "")
    job = store.create_job(recipe.sha256, "cab1", "1-2", 1.0, 0.0)
    store.close()
    proc = cli(
        "run",
        "launch",
        "--foreground",
        "ncm21700-formation",
        "--site",
        SITE,
        "--cabinet",
        "cab1",
        "--channels",
        "1-2",
        "--cells",
        str(bad_inputs / "two.csv"),
        "--db",
        f"sqlite:///{tmp_path / 'busy.db'}",
    )
    assert f"cabinet cab1 is busy with job {job}" in _one_line_error(proc)
