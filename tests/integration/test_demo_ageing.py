"""`formation demo --ageing`: the lot forms on the cabinet, leaves it for a rack in the simulated ageing room, ages
3 days at 45 °C and 7 at 25 °C with OCV/ACIR checkpoints, and is graded from both stations; bad --plan input is
refused in one line before anything is written."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.cli.demo_ageing import AGEING_ROOM
from tests.integration.test_cli import formation

N = 16


@pytest.mark.e2e
def test_the_demo_ages_the_formed_lot_on_a_rack_and_grades_it_from_both_stations(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = formation("demo", "--ageing", "--cells", str(N), "--defects", "0.25", "--out", str(out), timeout=300.0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = " ".join(proc.stdout.split())  # Rich wraps long lines
    assert "recipe demo-ncm21700-to-ageing" in text
    # The cells left the cabinet: its channels are free while the lot ages.
    assert f"cells of lot DEMO-LOT on rack sim-rack1 in {AGEING_ROOM}; cabinet sim-cab1 {N}/{N} channels free" in text
    assert "ageing job 1: lot DEMO-LOT on rack sim-rack1, plan ncm21700-hot-then-room" in text
    assert "Grades: demo-ncm21700-to-ageing-grading" in text
    with sqlite3.connect(out / "formation.db") as conn:
        job = conn.execute("SELECT state, started_s, ended_s FROM ageing_job").fetchall()
        readings = conn.execute("SELECT count(*), count(ocv_v) FROM ageing_reading").fetchone()
        on_rack = conn.execute("SELECT count(*) FROM rack_position").fetchone()[0]
        room = conn.execute("SELECT avg(in_band) FROM chamber_sample WHERE chamber = ?", (AGEING_ROOM,)).fetchone()
    assert len(job) == 1 and job[0][0] == "done" and job[0][2] - job[0][1] >= 10 * 86400.0
    assert readings == (12 * on_rack, 12 * on_rack)  # every checkpoint read every cell on the rack, once
    assert room[0] >= 0.9  # the room held ±0.5 °C (it slews between the stages)

    with (out / "grading-report.csv").open(encoding="utf-8", newline="") as fh:
        rows = {r["cell_id"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == [f"DEMO-{i:04d}" for i in range(1, N + 1)]
    aged = [r for r in rows.values() if r["ageing_job_id"] == "1"]
    assert len(aged) == on_rack
    for r in aged:
        # Capacity and DCIR from the cabinet, K (with its standard error), OCV and ACIR from the rack.
        assert 4.0 < float(r["capacity_ah"]) < 5.5 and 10.0 < float(r["dcir_mohm"]) < 60.0
        assert float(r["k_se_mv_per_day"]) < 0.5 and 3.2 < float(r["ocv_v"]) < 3.8 and float(r["acir_mohm"]) > 0
        assert 24.0 <= float(r["ageing_temperature_c"]) <= 26.0
    # The leaky cells the lot was seeded with fall beyond every grade's K bound; the healthy ones within A's.
    k = {c: float(r["k_mv_per_day"]) for c, r in rows.items() if r["k_mv_per_day"]}
    leaky = [c for c, v in k.items() if v > 3.0]
    assert leaky and all(rows[c]["grade"] == "NG" and "k_mv_per_day" in rows[c]["reason"] for c in leaky)
    assert sum(v < 2.0 for v in k.values()) >= N // 2
    assert (out / "plots" / "ageing.png").stat().st_size > 10_000
    assert (out / "plots" / "ageing-room.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--plan", "ncm21700-hot-then-room"], "--plan: ages a lot only with --ageing"),
        (["--ageing", "--plan", "no-such-plan"], "no-such-plan"),
        (["--ageing", "--plan", " "], "--plan: is empty"),
        (["--ageing", "--plan", "{hot}"], "setpoint"),
    ],
    ids=["plan-without-ageing", "unknown-plan", "empty-plan", "plan-too-hot-for-the-room"],
)
def test_bad_ageing_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    hot = tmp_path / "hot.toml"
    hot.write_text(
        'name = "too-hot"\nversion = "1"\n[k_value]\nstage = "s"\nafter = "1h"\nreference_c = 25.0\n'
        'ocv_temp_coeff_mv_per_k = -0.1\n[[ageing]]\nid = "s"\nsetpoint_c = 80.0\nduration = "1d"\n'
        'checkpoints = ["0h", "6h", "12h", "1d"]\n'
    )
    assert main(["demo", *[a.format(hot=hot) for a in args], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hot.toml"]  # no out folder
