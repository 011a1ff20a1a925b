"""Grading against a real store (SQLite file and PostgreSQL): inputs query, Grade table versions, `formation grade`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formation.cli import app as cli_app
from formation.cli.grade import grade as grade_command
from formation.errors import InputError
from formation.grading import grade_cells, load_lot_metrics, load_rules
from formation.store import Store, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = ROOT / "formation" / "grading" / "library" / "ncm21700-formation.toml"
SHA = "e" * 64
T0_S = 1_750_000_000.0


class FixedClock:
    """A clock that stands still (the store only reads ``now()``)."""

    scale = 1.0

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - the store never sleeps
        raise AssertionError("the store never sleeps")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "formation.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url, clock=FixedClock(T0_S + 10 * 86400.0)) as st:
        st.create_schema()
        yield st


def step_rows(run_id: int, capacity_ah: float, dcir_10s_mohm: float, k: float, ocv_v: float) -> list[dict]:
    """The step results the orchestrator writes for ncm21700-formation, with contract-shaped details JSON."""
    t = T0_S
    rows = []
    for index, (step_id, kind, ah, details) in enumerate(
        [
            ("precharge", "charge", 0.4, {}),
            ("capacity", "discharge", -capacity_ah, {"soc_end": 0.0}),
            (
                "dcir",
                "dcir",
                -0.025,
                {
                    "method": "single",
                    "direction": "discharge",
                    "pulse_current_a": 5.0,
                    "pulse_s": 18.0,
                    "soc": 0.3,
                    "temperature_c": 25.1,
                    "baseline_v": 3.62,
                    "dcir_mohm": {"1": dcir_10s_mohm - 3.0, "10": dcir_10s_mohm, "18": dcir_10s_mohm + 1.0},
                },
            ),
            (
                "age",
                "age",
                0.0,
                {
                    "ocv_at_s": [86400.0, 604800.0],
                    "ocv_v": [ocv_v + 0.001, ocv_v],
                    "k_mv_per_day": k,
                    "temperature_c": 25.0,
                },
            ),
        ]
    ):
        rows.append(
            {
                "run_id": run_id,
                "step_index": index,
                "step_id": step_id,
                "kind": kind,
                "started_s": t,
                "ended_s": t + 3600.0 * (index + 1),
                "duration_s": 3600.0,
                "ah": ah,
                "wh": ah * 3.6,
                "end_reason": "done",
                "details": json.dumps({"end_code": 1, "seq_id": 1, **details}),
            }
        )
    return rows


def populate(store: Store, n: int = 40) -> dict[str, int]:
    """Lot L1: n regular finished cells, one faulted, one still running, one never run, one run twice."""
    rng = np.random.default_rng(5)
    ids = [f"C{i:03d}" for i in range(n)] + ["FAULT", "RUNNING", "NEVER", "TWICE"]
    store.upsert_lot_and_cells((c, "L1", 5.0) for c in ids)
    store.upsert_lot_and_cells([("OTHER", "L2", 5.0)])
    store.save_recipe(SHA, "ncm21700-formation", "1.0", "NCM", 5.0, '{"steps":[]}', "")
    job = store.create_job(SHA, "cab1", f"1-{n + 4}", 1.0, T0_S)
    ran = [c for c in ids if c != "NEVER"] + ["TWICE"]
    runs = store.create_runs(
        job,
        [
            {
                "cell_id": c,
                "cabinet": "cab1",
                "channel": i + 1,
                "instrument_cell": 1001 + i,
                "state": "running",
                "started_s": T0_S + i,
            }
            for i, c in enumerate(ran)
        ],
    )
    run_of = dict(zip(ran, runs, strict=True))  # TWICE maps to its later run
    first_twice = runs[ran.index("TWICE")]
    updates = [{"id": r, "state": "done", "ended_s": T0_S + 8 * 86400.0} for c, r in run_of.items() if c != "RUNNING"]
    updates.append({"id": first_twice, "state": "done"})
    updates = [
        u if u["id"] != run_of["FAULT"] else {**u, "state": "faulted", "end_reason": "host_check"} for u in updates
    ]
    store.update_runs(updates)
    results = []
    for i, c in enumerate(ids[:n]):
        results += step_rows(
            run_of[c], rng.normal(5.0, 0.02), rng.normal(21.0, 0.3), 0.1 + 0.01 * (i % 5), 3.600 + 0.0005 * (i % 7)
        )
    results += step_rows(run_of["FAULT"], 4.0, 30.0, 3.0, 3.5)
    results += step_rows(first_twice, 4.0, 40.0, 5.0, 3.4)  # the old run: would be NG
    results += step_rows(run_of["TWICE"], 5.0, 21.0, 0.1, 3.6)
    results += step_rows(run_of["RUNNING"], 5.0, 21.0, 0.1, 3.6)[:2]
    store.add_step_results(results)
    return run_of


def test_lot_metrics_come_from_the_latest_run(store: Store) -> None:
    run_of = populate(store)
    rules = load_rules(RULES_PATH)
    cells = load_lot_metrics(store, "L1", rules).set_index("cell_id")
    assert len(cells) == 44 and set(cells["lot"]) == {"L1"}
    twice = cells.loc["TWICE"]
    assert twice["run_id"] == run_of["TWICE"]
    assert (twice["capacity_ah"], twice["dcir_mohm"], twice["k_mv_per_day"], twice["ocv_v"]) == (5.0, 21.0, 0.1, 3.6)
    assert twice["graded_at_s"] == T0_S + 4 * 3600.0  # the end of the run's last step result
    assert twice["recipe"] == "ncm21700-formation" and twice["recipe_sha256"] == SHA and twice["cabinet"] == "cab1"
    assert cells.at["C000", "fault"] == ""
    assert cells.at["FAULT", "fault"] == "run faulted: host_check"
    assert cells.at["RUNNING", "fault"] == "run not finished (running)"
    assert np.isnan(cells.at["RUNNING", "dcir_mohm"]) and cells.at["RUNNING", "capacity_ah"] == 5.0
    assert cells.at["NEVER", "fault"] == "no run" and pd.isna(cells.at["NEVER", "run_id"])
    with pytest.raises(InputError, match="no lot 'L9'"):
        load_lot_metrics(store, "L9", rules)


def test_grades_are_versioned_by_rules_hash(store: Store, tmp_path: Path) -> None:
    populate(store)
    rules = load_rules(RULES_PATH)
    grading = grade_cells(load_lot_metrics(store, "L1", rules), rules)
    assert store.save_grades(grading.cells, rules_sha256=rules.sha256, rules_name=rules.name) == 44
    stored = store.grades(lot="L1").set_index("cell_id")
    assert len(stored) == 44
    assert stored.at["FAULT", "grade"] == "NG" and stored.at["FAULT", "reason"] == "run faulted: host_check"
    assert stored.at["NEVER", "reason"] == "no run" and pd.isna(stored.at["NEVER", "run_id"])
    assert stored.at["TWICE", "grade"] == "A" and stored.at["TWICE", "dcir_mohm"] == 21.0
    assert np.isnan(stored.at["NEVER", "capacity_ah"])
    assert set(stored["rules_sha256"]) == {rules.sha256} and set(stored["rules_name"]) == {rules.name}
    assert set(stored["graded_s"]) == {T0_S + 10 * 86400.0}

    # The same rules again replace their version (also for the cell that never ran).
    store.save_grades(grading.cells, rules_sha256=rules.sha256, rules_name=rules.name, graded_s=1.0)
    again = store.grades(lot="L1")
    assert len(again) == 44 and set(again["graded_s"]) == {1.0}

    # New rules add a version; both stay traceable by hash.
    text = RULES_PATH.read_text().replace("min = 4.85", "min = 4.99")
    (tmp_path / "strict.toml").write_text(text)
    strict = load_rules(tmp_path / "strict.toml")
    store.save_grades(
        grade_cells(load_lot_metrics(store, "L1", strict), strict).cells,
        rules_sha256=strict.sha256,
        rules_name=strict.name,
    )
    assert len(store.grades(lot="L1")) == 88
    assert len(store.grades(lot="L1", rules_sha256=strict.sha256)) == 44
    assert store.grades(lot="L2").empty


@pytest.fixture
def cli() -> Iterator[None]:
    """`formation grade` registered on the application (the lead registers it in app.py)."""
    names = {c.name for c in cli_app.app.registered_commands}
    if "grade" not in names:
        cli_app.app.command("grade")(grade_command)
    yield


def test_formation_grade_command(
    store: Store, url: str, tmp_path: Path, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(store)
    out1, out2 = tmp_path / "r1.csv", tmp_path / "r2.csv"
    args = ["grade", "L1", "--rules", str(RULES_PATH), "--db", url]
    assert cli_app.main([*args, "--out", str(out1), "--plots", str(tmp_path / "plots")]) == 0
    printed = capsys.readouterr().out
    assert "L1" in printed and "NG" in printed and "r1.csv" in printed
    assert len(list((tmp_path / "plots").glob("L1_*.png"))) == 4
    assert cli_app.main([*args, "--out", str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()  # same database, same rules: byte-identical
    report = pd.read_csv(out1, dtype=str, keep_default_na=False)
    assert len(report) == 44 and report["cell_id"].is_monotonic_increasing
    last_step_end = datetime.fromtimestamp(T0_S + 4 * 3600.0, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report.set_index("cell_id").at["TWICE", "graded_at"] == last_step_end
    assert len(store.grades(lot="L1")) == 44  # graded twice with the same rules: one version


def test_formation_grade_bad_input_exits_2(
    store: Store, url: str, tmp_path: Path, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(store, n=3)
    assert (
        cli_app.main(["grade", "NOPE", "--rules", str(RULES_PATH), "--db", url, "--out", str(tmp_path / "x.csv")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no lot 'NOPE'" in err[0]
    bad = tmp_path / "bad.toml"
    bad.write_text(RULES_PATH.read_text().replace("max_sigma = 3.0", 'max_sigma = "three"'))
    assert cli_app.main(["grade", "L1", "--rules", str(bad), "--db", url, "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grades[1].dcir_mohm.max_sigma: must be a number" in err[0]
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.e2e  # a second interpreter with a file-size limit: about 10 s on two busy cores
def test_grades_and_report_are_written_together_or_not_at_all(postgres_url: str, tmp_path: Path, cli: None) -> None:
    """A report that cannot be written (here a file-size limit, as a full disk would) stores no grade either."""
    import subprocess
    import sys

    with Store(postgres_url, clock=FixedClock(T0_S + 10 * 86400.0)) as store:
        store.create_schema()
        populate(store)
    out = tmp_path / "report.csv"
    args = ["grade", "L1", "--rules", str(RULES_PATH), "--db", postgres_url, "--out", str(out)]
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
        "from formation.cli.app import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc
    assert len(lines) == 1 and lines[0].startswith("failed: cannot write the report"), proc.stderr
    assert list(tmp_path.iterdir()) == []  # neither the report nor its staged half
    with Store(postgres_url) as store:
        assert store.grades(lot="L1").empty  # and no grade stored
    # Without the limit the same command writes both.
    assert cli_app.main(args) == 0
    with Store(postgres_url) as store:
        assert len(store.grades(lot="L1")) == 44
    assert len(pd.read_csv(out)) == 44
