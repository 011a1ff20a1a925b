"""`formation` in processes of its own: the installed entry point, its output through a real pipe, and what
`--help` and `recipe validate` import (a fresh interpreter is the only place to count that)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(str(p) for p in (ROOT / "examples" / "recipes").iterdir())
#: Imported only by the commands that need them: a usage error, --help or a recipe check never waits for them.
HEAVY = ("pandas", "numpy", "matplotlib", "sqlalchemy", "sqlmodel", "apscheduler", "pyvisa", "psycopg", "aiomqtt")


def _entry_point() -> str:
    script = shutil.which("formation", path=str(Path(sys.executable).parent)) or shutil.which("formation")
    if script is None:
        pytest.skip("the formation entry point is not installed (pip install -e .)")
    return script


@pytest.mark.parametrize(
    "args",
    [["--help"], ["recipe", "validate", *RECIPES, "ncm21700-formation"]],
    ids=["help", "recipe-validate"],
)
def test_help_and_recipe_validate_import_nothing_heavy(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from formation.cli.app import main\n"
        f"rc = main({args!r})\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["rc"] == 0, proc.stdout + proc.stderr
    loaded = sorted({m.split(".")[0] for m in report["modules"]} & set(HEAVY))
    assert loaded == [], f"{' '.join(args[:2])} imported {loaded}"
    assert "formation.recipes" in report["modules"] or args == ["--help"]


def test_the_installed_entry_point_answers_and_errs_on_one_line(tmp_path: Path) -> None:
    script = _entry_point()
    env = {**os.environ, "COLUMNS": "60"}
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: formation" in proc.stdout and "recipe" in proc.stdout

    proc = subprocess.run([script, "bogus"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert proc.stderr == "error: No such command 'bogus'. (formation --help lists the commands)\n"
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_recipe_problems_through_a_pipe_are_one_line_each_at_60_columns(tmp_path: Path) -> None:
    key = "a_step_key_that_the_recipe_language_does_not_know_and_that_makes_the_message_long"
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\nversion = "1"\nnominal_capacity_ah = 5.0\n'
        "[limits]\nmax_voltage_v = 4.2\nmin_voltage_v = 2.5\n"
        f'[[steps]]\nkind = "charge"\ncurrent = "C/2"\nuntil = {{ voltage_v = 4.5 }}\n{key} = 1\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "formation", "recipe", "validate", "bad.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "60"},
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: bad.toml: steps[0].{key}: unknown key (expected one of: id, kind, current, cv_voltage_v, until, "
        "record, chamber_c)",
        "also: steps[0].until.voltage_v: 4.5 V is above limits.max_voltage_v 4.2 V",
    ]
    assert len(proc.stderr.splitlines()[0]) > 100
