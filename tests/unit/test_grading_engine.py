"""The grading engine on hand-built lots: robust lot statistics, resolved bands, first match wins, NG reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from formation.grading import MAD_TO_SIGMA, NG, grade_cells, loads_rules

RULES = loads_rules(
    """
name = "unit"
version = "1"
[metrics.capacity_ah]
step = "capacity"
[metrics.dcir_mohm]
step = "dcir"
at = "10s"
[metrics.k_mv_per_day]
step = "age"
[metrics.ocv_v]
step = "age"
[[grades]]
name = "A"
capacity_ah = { min = 4.95 }
dcir_mohm = { max_sigma = 2.0 }
k_mv_per_day = { max = 0.5, max_sigma_above = 4.5 }
ocv_v = { max_dev = 0.005 }
[[grades]]
name = "B"
capacity_ah = { min = 4.90 }
dcir_mohm = { max_sigma = 3.0 }
ocv_v = { max_dev = 0.015 }
[[grades]]
name = "C"
capacity_ah = { min = 4.80, max_dev_pct = 5 }
"""
)

# Lot L1: ten regular cells around known medians, then the cells under test.
REGULAR = {
    "capacity_ah": [5.00, 5.01, 4.99, 5.02, 4.98, 5.00, 5.01, 4.99, 5.00, 5.00],
    "dcir_mohm": [20.0, 20.1, 19.9, 20.2, 19.8, 20.05, 19.95, 20.1, 19.9, 20.0],
    "k_mv_per_day": [0.10, 0.12, 0.11, 0.09, 0.10, 0.13, 0.10, 0.08, 0.11, 0.10],
    "ocv_v": [3.600, 3.601, 3.599, 3.600, 3.602, 3.598, 3.600, 3.601, 3.599, 3.600],
}


def lot_frame() -> pd.DataFrame:
    rows = [{"cell_id": f"R{i}", "lot": "L1", "fault": "", **{m: v[i] for m, v in REGULAR.items()}} for i in range(10)]
    tests = [
        ("B_CAP", {"capacity_ah": 4.92}),  # below A's floor, above B's
        ("B_OCV", {"ocv_v": 3.610}),  # 10 mV off the median: B (15 mV), not A (5 mV)
        ("C_DCIR", {"dcir_mohm": 25.0}),  # far out on DCIR: only C, which does not bound DCIR
        ("NG_CAP", {"capacity_ah": 4.70}),  # below every floor
        ("NG_K", {"k_mv_per_day": 0.9}),  # A caps K at 0.5; B, C do not bound K, so it is B
        ("MISS", {"dcir_mohm": np.nan, "capacity_ah": 4.70}),
        ("MISS_C", {"dcir_mohm": np.nan}),  # lacks DCIR but C does not need it
        ("FAULT", {"capacity_ah": 1.0}),
    ]
    for i, (cell_id, changes) in enumerate(tests):
        # Each test cell copies a regular cell, so the lot keeps a realistic spread (no MAD of zero).
        values = {m: v[i] for m, v in REGULAR.items()} | changes
        fault = "run faulted: host_check" if cell_id == "FAULT" else ""
        rows.append({"cell_id": cell_id, "lot": "L1", "fault": fault, **values})
    return pd.DataFrame(rows)


def by_cell(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {c: (g, r) for c, g, r in zip(frame["cell_id"], frame["grade"], frame["reason"], strict=True)}


def test_first_matching_grade_wins_and_ng_reasons() -> None:
    result = by_cell(grade_cells(lot_frame(), RULES).cells)
    assert all(result[f"R{i}"] == ("A", "") for i in range(10))
    assert result["B_CAP"] == ("B", "")
    assert result["B_OCV"] == ("B", "")
    assert result["C_DCIR"] == ("C", "")
    assert result["NG_K"] == ("B", "")
    assert result["MISS_C"] == ("C", "")
    assert result["FAULT"] == (NG, "run faulted: host_check")
    assert result["MISS"] == (NG, "missing dcir_mohm")
    grade, reason = result["NG_CAP"]
    assert grade == NG
    # The loosest grade's floor is max(4.80 absolute, median − 5 %) = max(4.80, 4.75) = 4.8.
    assert reason == "no grade: capacity_ah < 4.8 (bounds of C)"


def test_lot_statistics_are_robust_and_skip_faulted_cells() -> None:
    frame = lot_frame()
    grading = grade_cells(frame, RULES)
    stats = grading.stats.set_index("metric")
    usable = frame[frame["fault"] == ""]
    for metric in REGULAR:
        x = usable[metric].dropna().to_numpy()
        median = np.median(x)
        assert stats.at[metric, "median"] == pytest.approx(median)
        assert stats.at[metric, "sigma"] == pytest.approx(MAD_TO_SIGMA * np.median(np.abs(x - median)))
        assert stats.at[metric, "n"] == len(x)


def test_edges_hold_absolute_relative_and_combined_bands() -> None:
    grading = grade_cells(lot_frame(), RULES)
    edges = grading.edges.set_index(["grade", "metric"])
    stats = grading.stats.set_index("metric")
    med, sigma = stats.at["dcir_mohm", "median"], stats.at["dcir_mohm", "sigma"]
    a_dcir = edges.loc[("A", "dcir_mohm")]
    assert a_dcir["rel_lo"] == pytest.approx(med - 2 * sigma)
    assert a_dcir["rel_hi"] == pytest.approx(med + 2 * sigma)
    assert a_dcir["abs_lo"] == -np.inf and a_dcir["abs_hi"] == np.inf
    a_k = edges.loc[("A", "k_mv_per_day")]
    k_med, k_sigma = stats.at["k_mv_per_day", "median"], stats.at["k_mv_per_day", "sigma"]
    assert a_k["hi"] == pytest.approx(min(0.5, k_med + 4.5 * k_sigma))
    assert a_k["rel_lo"] == -np.inf  # one-sided
    c_cap = edges.loc[("C", "capacity_ah")]
    assert c_cap["lo"] == pytest.approx(4.80)  # the absolute guard binds
    assert c_cap["rel_hi"] == pytest.approx(5.0 * 1.05)
    assert len(grading.edges) == 4 + 3 + 1


def test_relative_bounds_are_per_lot() -> None:
    one = lot_frame()
    two = one.copy()
    two["lot"] = "L2"
    two["cell_id"] = "L2-" + two["cell_id"]
    two["ocv_v"] += 0.050  # the whole lot sits 50 mV higher: its own median, same grades
    graded = grade_cells(pd.concat([one, two], ignore_index=True), RULES).cells
    first = graded[graded["lot"] == "L1"].set_index("cell_id")["grade"]
    second = graded[graded["lot"] == "L2"].set_index("cell_id")["grade"]
    second.index = second.index.str.removeprefix("L2-")
    pd.testing.assert_series_equal(first, second, check_names=False)


def test_row_order_does_not_change_grades() -> None:
    frame = lot_frame()
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = by_cell(grade_cells(frame, RULES).cells)
    b = by_cell(grade_cells(shuffled, RULES).cells)
    assert a == b


def test_a_lot_without_a_metric_grades_nobody_on_it() -> None:
    frame = lot_frame()
    frame["dcir_mohm"] = np.nan
    graded = grade_cells(frame, RULES).cells.set_index("cell_id")
    # A and B need DCIR (relative to a median that does not exist); C does not.
    assert graded.at["R0", "grade"] == "C"
    assert graded.at["NG_CAP", "reason"] == "missing dcir_mohm"


def test_cells_without_a_fault_column_are_all_usable() -> None:
    frame = lot_frame().drop(columns=["fault"])
    graded = grade_cells(frame, RULES).cells.set_index("cell_id")
    assert graded.at["FAULT", "grade"] == NG
    assert graded.at["FAULT", "reason"] == "no grade: capacity_ah < 4.8 (bounds of C)"


def test_boundaries_are_inclusive() -> None:
    frame = lot_frame()
    frame.loc[frame["cell_id"] == "B_CAP", "capacity_ah"] = 4.95
    graded = grade_cells(frame, RULES).cells.set_index("cell_id")
    assert graded.at["B_CAP", "grade"] == "A"
