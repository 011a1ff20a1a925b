"""`formation demo` with its defaults grades the same cells the same way as before the supervisor was split.

The expected grades (tests/data/demo-seed7-grades.csv) were recorded from `formation demo` (seed 7, 32 cells,
clock ×1500) before the supervisor was composed of parts. Measured values move a little between runs (polls
fall at different clock times), grades must not.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from formation.cli.app import main

EXPECTED = Path(__file__).resolve().parents[1] / "data" / "demo-seed7-grades.csv"


@pytest.mark.e2e
def test_demo_gives_the_recorded_grades_for_seed_7(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "7"]) == 0
    capsys.readouterr()
    with EXPECTED.open(newline="") as f:
        expected = {row["cell_id"]: row["grade"] for row in csv.DictReader(f)}
    with (out / "grading-report.csv").open(newline="") as f:
        got = {row["cell_id"]: row["grade"] for row in csv.DictReader(f)}
    assert got == expected
