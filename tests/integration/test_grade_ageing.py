"""Grades across stations: capacity from a cabinet run, K and ACIR from ageing on a rack; a retested cell uses its
retest, a re-aged cell its latest ageing job with a valid K, a cell whose K could not be fit is NG for it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from formation.errors import RulesError
from formation.grading import REPORT_COLUMNS, grade_cells, load_lot_metrics, write_report_csv
from formation.grading.rules import loads_rules
from formation.store import Store, sqlite_url

SHA = "f" * 64
T0_S = 1_750_000_000.0
RULES = """
name = "two-stations"
version = "1"
[metrics.capacity_ah]
step = "capacity"
[metrics.k_mv_per_day]
from = "ageing"
[metrics.acir_mohm]
from = "ageing"
[[grades]]
name = "A"
capacity_ah = { min = 4.8 }
k_mv_per_day = { max = 1.0 }
acir_mohm = { max = 20.0 }
[[grades]]
name = "B"
capacity_ah = { min = 4.6 }
k_mv_per_day = { max = 2.0 }
acir_mohm = { max = 25.0 }
"""


def run_with_capacity(store: Store, cells: list[str], capacities: list[float], t_s: float) -> None:
    job = store.create_job(SHA, "cab1", "1-8", 1.0, t_s)
    runs = store.create_runs(
        job,
        [
            {"cell_id": c, "cabinet": "cab1", "channel": 101 + i, "instrument_cell": 1001 + i, "state": "done"}
            | {"started_s": t_s}
            for i, c in enumerate(cells)
        ],
    )
    store.update_runs([{"id": r, "state": "done"} for r in runs])
    store.add_step_results(
        [
            {"run_id": r, "step_index": 0, "step_id": "capacity", "kind": "discharge", "started_s": t_s}
            | {"ended_s": t_s + 3600.0, "duration_s": 3600.0, "ah": -cap, "wh": -cap * 3.6, "end_reason": "voltage"}
            | {"details": json.dumps({"end_code": 1})}
            for r, cap in zip(runs, capacities, strict=True)
        ]
    )


def ageing(store: Store, lot: str, results: dict[str, tuple[float | None, float | None, str]], t_s: float) -> int:
    job = store.create_ageing_job(
        lot_id=lot, rack="rack1", plan_name="p", plan_sha256="0" * 64, plan_json="{}", state="done", started_s=t_s
    )
    store.save_ageing_results(
        job,
        [
            {"ageing_job_id": job, "cell_id": c, "k_mv_per_day": k, "k_se_mv_per_day": None if k is None else 0.02}
            | {"n_points": 7 if k is not None else 1, "window_start_s": t_s + 4 * 86400.0}
            | {"window_end_s": t_s + 10 * 86400.0, "temperature_c": 25.1, "reference_c": 25.0, "ocv_v": 3.55}
            | {"acir_mohm": acir, "reason": reason, "computed_s": t_s + 10 * 86400.0}
            for c, (k, acir, reason) in results.items()
        ],
    )
    return job


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(sqlite_url(tmp_path / "f.db"))
    st.create_schema()
    return st


def test_a_cell_is_graded_from_its_cabinet_run_and_its_ageing(store: Store) -> None:
    with store:
        cells = [f"C{i}" for i in range(5)]
        store.upsert_lot_and_cells((c, "L1", 5.0) for c in cells)
        store.save_recipe(SHA, "r", "1", "NCM", 5.0, '{"steps":[]}', "")
        run_with_capacity(store, cells, [4.9, 4.9, 4.9, 4.7, 4.9], T0_S)
        run_with_capacity(store, ["C0"], [4.5], T0_S + 86400.0)  # C0 retested: its retest is what counts
        first = ageing(
            store,
            "L1",
            {
                "C0": (0.5, 15.0, ""),
                "C1": (1.5, 15.0, ""),
                "C2": (None, 15.0, "K: 1 valid reading(s) after the relaxation window, needs 4 (tester: no contact)"),
                "C3": (0.5, 15.0, ""),
                "C4": (0.5, 22.0, ""),
            },
            T0_S + 2 * 86400.0,
        )
        second = ageing(store, "L1", {"C1": (0.6, 16.0, "")}, T0_S + 20 * 86400.0)  # C1 aged again
        rules = loads_rules(RULES)
        frame = load_lot_metrics(store, "L1", rules).set_index("cell_id", drop=False)
        graded = grade_cells(frame.reset_index(drop=True), rules).cells.set_index("cell_id")
    assert frame.loc["C0", "capacity_ah"] == pytest.approx(4.5)  # the retest
    assert frame.loc["C1", "k_mv_per_day"] == pytest.approx(0.6) and frame.loc["C1", "ageing_job_id"] == second
    assert frame.loc["C0", "ageing_job_id"] == first and frame.loc["C0", "k_se_mv_per_day"] == pytest.approx(0.02)
    assert np.isnan(frame.loc["C2", "k_mv_per_day"]) and "no contact" in frame.loc["C2", "ageing_reason"]
    assert frame.loc["C4", "ageing_temperature_c"] == pytest.approx(25.1)
    assert graded["grade"].to_dict() == {"C0": "NG", "C1": "A", "C2": "NG", "C3": "B", "C4": "B"}
    assert "capacity_ah < 4.6" in graded.loc["C0", "reason"]
    assert graded.loc["C2", "reason"] == "missing k_mv_per_day"
    # The bound that made a cell B, not only why a cell is NG.
    assert graded.loc["C3", "downgraded_by"] == "capacity_ah < 4.8 (bounds of A)"
    assert graded.loc["C4", "downgraded_by"] == "acir_mohm > 20 (bounds of A)"
    assert graded.loc["C1", "downgraded_by"] == "" and graded.loc["C0", "downgraded_by"] == ""


def test_the_report_carries_the_ageing_values_and_the_bound_of_a_lower_grade(store: Store, tmp_path: Path) -> None:
    with store:
        cells = ["C0", "C1", "C2"]
        store.upsert_lot_and_cells((c, "L1", 5.0) for c in cells)
        store.save_recipe(SHA, "r", "1", "NCM", 5.0, '{"steps":[]}', "")
        run_with_capacity(store, cells, [4.9, 4.9, 4.9], T0_S)
        job = ageing(
            store,
            "L1",
            {"C0": (0.5, 15.0, ""), "C1": (1.5, 15.5, ""), "C2": (None, None, "K: no valid reading")},
            T0_S + 86400.0,
        )
        rules = loads_rules(RULES)
        grading = grade_cells(load_lot_metrics(store, "L1", rules), rules)
    path = write_report_csv(grading, tmp_path / "report.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = {r["cell_id"]: r for r in csv.DictReader(fh)}
    assert list(rows["C0"]) == list(REPORT_COLUMNS)
    assert [rows[c]["grade"] for c in cells] == ["A", "B", "NG"]
    assert rows["C1"]["downgraded_by"] == "k_mv_per_day > 1 (bounds of A)" and rows["C0"]["downgraded_by"] == ""
    assert (rows["C0"]["acir_mohm"], rows["C1"]["acir_mohm"], rows["C2"]["acir_mohm"]) == ("15.000", "15.500", "")
    assert rows["C0"]["k_se_mv_per_day"] == "0.0200" and rows["C2"]["k_se_mv_per_day"] == ""
    assert rows["C0"]["ageing_job_id"] == str(job)
    # The fit window (days 5-11 after T0) and its mean temperature, as the ageing job stored them.
    assert rows["C0"]["ageing_start"] == "2025-06-20T15:06:40Z" and rows["C0"]["ageing_end"] == "2025-06-26T15:06:40Z"
    assert rows["C0"]["ageing_temperature_c"] == "25.10"
    assert rows["C2"]["ageing_start"] == "" and rows["C2"]["reason"] == "missing k_mv_per_day; missing acir_mohm"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('[metrics.acir_mohm]\nfrom = "cabinet"', "metrics.acir_mohm.from: required: 'ageing'"),
        ('[metrics.k_mv_per_day]\nfrom = "rack"', "metrics.k_mv_per_day.from: expected 'cabinet' or 'ageing'"),
        ('[metrics.k_mv_per_day]\nfrom = "ageing"\nstep = "age"', "an ageing metric takes no step"),
    ],
)
def test_bad_metric_sources_are_refused(source: str, expected: str) -> None:
    text = f'name = "r"\nversion = "1"\n{source}\n[[grades]]\nname = "A"\n'
    with pytest.raises(RulesError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        loads_rules(text + ("acir_mohm = { max = 1.0 }" if "acir" in source else "k_mv_per_day = { max = 1.0 }"))


def test_the_hash_of_rules_without_ageing_sources_is_unchanged() -> None:
    plain = loads_rules(
        'name = "r"\nversion = "1"\n[metrics.k_mv_per_day]\nstep = "age"\n'
        '[[grades]]\nname = "A"\nk_mv_per_day = { max = 1.0 }\n'
    )
    assert "from" not in plain.canonical_json()
