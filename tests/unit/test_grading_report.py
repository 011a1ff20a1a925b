"""The logistics CSV (columns, formats, quoting, byte-for-byte reproducibility), the summary and the histograms."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from formation.grading import (
    REPORT_COLUMNS,
    SUMMARY_COLUMNS,
    grade_cells,
    loads_rules,
    summarize,
    summary_table,
    write_histograms,
    write_report_csv,
)
from formation.grading.report import _float_column, iso_utc

RULES = loads_rules(
    """
name = "report"
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
capacity_ah = { min = 4.95, max_dev_pct = 1 }
dcir_mohm = { max_sigma = 2.0 }
[[grades]]
name = "B"
capacity_ah = { min = 4.90, max_dev_pct = 2 }
dcir_mohm = { max_sigma = 3.0 }
k_mv_per_day = { max = 2.0, max_sigma_above = 4.5 }
"""
)
T0_S = 1_740_000_000.25  # 2025-02-19T21:20:00.25Z


def cells(n: int = 200, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "cell_id": [f"S{i:05d}" for i in rng.permutation(n)],
            "lot": np.where(np.arange(n) % 3 == 0, "LOT-2", "LOT-1"),
            "capacity_ah": rng.normal(5.0, 0.03, n),
            "dcir_mohm": rng.normal(21.0, 0.4, n),
            "k_mv_per_day": rng.lognormal(-2.0, 0.3, n),
            "ocv_v": rng.normal(3.6, 0.002, n),
            "fault": "",
            "cabinet": "cab1",
            "channel": pd.array(np.arange(n) % 256 + 1, dtype="Int64"),
            "run_id": pd.array(np.arange(n) + 10, dtype="Int64"),
            "recipe": "ncm21700-formation",
            "recipe_sha256": "f" * 64,
            "graded_at_s": T0_S + np.arange(n) * 60.0,
        }
    )
    frame.loc[3, "dcir_mohm"] = np.nan
    frame.loc[5, ["fault", "run_id", "channel", "cabinet", "recipe", "recipe_sha256", "graded_at_s"]] = [
        "no run",
        pd.NA,
        pd.NA,
        None,
        None,
        None,
        np.nan,
    ]
    frame.loc[5, ["capacity_ah", "dcir_mohm", "k_mv_per_day", "ocv_v"]] = np.nan
    return frame


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_csv_columns_order_formats_and_sorting(tmp_path: Path) -> None:
    frame = cells()
    path = write_report_csv(grade_cells(frame, RULES), tmp_path / "report.csv")
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(REPORT_COLUMNS)
    rows = read_csv_rows(path)
    assert len(rows) == len(frame)
    assert [r["cell_id"] for r in rows] == sorted(frame["cell_id"])
    first = next(r for r in rows if r["cell_id"] == frame.at[0, "cell_id"])
    assert first["capacity_ah"] == f"{frame.at[0, 'capacity_ah']:.4f}"
    assert first["dcir_mohm"] == f"{frame.at[0, 'dcir_mohm']:.3f}"
    assert first["k_mv_per_day"] == f"{frame.at[0, 'k_mv_per_day']:.4f}"
    assert first["ocv_v"] == f"{frame.at[0, 'ocv_v']:.5f}"
    assert first["run_id"] == "10" and first["channel"] == "1"
    assert first["rules_sha256"] == RULES.sha256
    assert first["graded_at"] == "2025-02-19T21:20:00Z"
    missing = next(r for r in rows if r["cell_id"] == frame.at[3, "cell_id"])
    assert (missing["grade"], missing["reason"], missing["dcir_mohm"]) == ("NG", "missing dcir_mohm", "")
    never = next(r for r in rows if r["cell_id"] == frame.at[5, "cell_id"])
    assert never["reason"] == "no run"
    assert [never[c] for c in ("capacity_ah", "run_id", "channel", "recipe", "graded_at")] == [""] * 5
    assert text.endswith("\n") and "\r" not in text


def test_a_lower_grade_names_the_bounds_of_the_grade_above_that_it_breaks(tmp_path: Path) -> None:
    frame = cells()
    graded = grade_cells(frame, RULES)
    rows = {r["cell_id"]: r for r in read_csv_rows(write_report_csv(graded, tmp_path / "r.csv"))}
    edges = graded.edges.set_index(["lot", "grade", "metric"])
    b_cells = graded.cells[graded.cells["grade"] == "B"]
    assert len(b_cells) > 0
    for cell in b_cells.itertuples():
        text = rows[cell.cell_id]["downgraded_by"]
        assert text.endswith(" (bounds of A)")
        cap = edges.loc[(cell.lot, "A", "capacity_ah")]
        dcir = edges.loc[(cell.lot, "A", "dcir_mohm")]
        # Exactly the bounds of A that the cell's own values break, with the lot's resolved edges.
        expected = []
        if cell.capacity_ah < cap["lo"]:
            expected.append(f"capacity_ah < {cap['lo']:.6g}")
        if cell.capacity_ah > cap["hi"]:
            expected.append(f"capacity_ah > {cap['hi']:.6g}")
        if cell.dcir_mohm < dcir["lo"]:
            expected.append(f"dcir_mohm < {dcir['lo']:.6g}")
        if cell.dcir_mohm > dcir["hi"]:
            expected.append(f"dcir_mohm > {dcir['hi']:.6g}")
        assert text == "; ".join(expected) + " (bounds of A)"
    assert all(r["downgraded_by"] == "" for r in rows.values() if r["grade"] in ("A", "NG"))
    # Metrics the rules do not grade (here the ageing room's) leave their columns empty, not a crash.
    assert {r["acir_mohm"] + r["k_se_mv_per_day"] + r["ageing_start"] for r in rows.values()} == {""}


def test_csv_is_byte_identical_whatever_the_row_order(tmp_path: Path) -> None:
    frame = cells()
    a = write_report_csv(grade_cells(frame, RULES), tmp_path / "a.csv").read_bytes()
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    b = write_report_csv(grade_cells(shuffled, RULES), tmp_path / "b.csv").read_bytes()
    assert a == b


def test_fields_with_commas_and_quotes_are_quoted_like_the_csv_module(tmp_path: Path) -> None:
    frame = cells(12)
    frame.loc[0, "lot"] = 'LOT "7", line 2'
    frame.loc[1, "fault"] = "run faulted: over-temperature, 61 °C"
    graded = grade_cells(frame, RULES)
    path = write_report_csv(graded, tmp_path / "q.csv")
    rows = read_csv_rows(path)
    by_id = {r["cell_id"]: r for r in rows}
    assert by_id[frame.at[0, "cell_id"]]["lot"] == 'LOT "7", line 2'
    assert by_id[frame.at[1, "cell_id"]]["reason"] == "run faulted: over-temperature, 61 °C"
    # The same bytes as Python's csv writer (QUOTE_MINIMAL, \n line ends) would give.
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    writer.writerows([r[c] for c in REPORT_COLUMNS] for r in rows)
    assert path.read_text(encoding="utf-8") == expected.getvalue()


def test_iso_utc_floors_to_the_second() -> None:
    out = iso_utc(np.array([0.0, 1_700_000_000.999, np.nan]))
    assert out.tolist() == ["1970-01-01T00:00:00Z", "2023-11-14T22:13:20Z", ""]


def test_summary_counts_and_yields_per_lot() -> None:
    frame = cells()
    grading = grade_cells(frame, RULES)
    summary = summarize(grading)
    assert tuple(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["grade"].astype(str).unique()) == ["A", "B", "NG"]
    for lot, rows in summary.groupby("lot"):
        assert rows["count"].sum() == (frame["lot"] == lot).sum()
        assert rows["yield_pct"].sum() == pytest.approx(100.0)
        for grade, count in zip(rows["grade"].astype(str), rows["count"], strict=True):
            assert count == ((grading.cells["lot"] == lot) & (grading.cells["grade"] == grade)).sum()
    console = Console(record=True, width=120)
    console.print(summary_table(summary))
    rendered = console.export_text()
    assert "LOT-1" in rendered and "LOT-2" in rendered and "NG" in rendered
    a_lot1 = summary[(summary["lot"] == "LOT-1") & (summary["grade"] == "A")].iloc[0]
    assert f"{a_lot1['count']} ({a_lot1['yield_pct']:.1f} %)" in rendered


def test_summary_lists_grades_nobody_reached() -> None:
    frame = cells(30)
    frame["capacity_ah"] = 5.0 + np.linspace(-0.01, 0.01, 30)
    summary = summarize(grade_cells(frame, RULES))
    b = summary[summary["grade"] == "B"]
    assert len(b) == 2  # both lots list B, with zero cells
    assert (b["count"] >= 0).all()


def test_histograms_per_lot_and_metric(tmp_path: Path) -> None:
    grading = grade_cells(cells(), RULES)
    paths = write_histograms(grading, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{lot}_{m}.png" for lot in ("LOT-1", "LOT-2") for m in RULES.metrics)
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    # Same data, same pictures (one lot drawn again: its edges and statistics do not depend on the other lot).
    frame = cells()
    again = write_histograms(grade_cells(frame[frame["lot"] == "LOT-1"], RULES), tmp_path / "again")
    assert [p.name for p in sorted(again)] == sorted(f"LOT-1_{m}.png" for m in RULES.metrics)
    for path in again:
        assert path.read_bytes() == (tmp_path / "plots" / path.name).read_bytes(), path.name


def test_fixed_float_formats_match_python_formatting() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.normal(0.0, 3.0, 5_000), [0.0, -0.00001, 123.45675, 9.99995, np.nan, -2.5]])
    for decimals in (3, 4, 5):
        expected = ["" if np.isnan(v) else f"{v:.{decimals}f}" for v in x.tolist()]
        got = _float_column(pd.Series(x), decimals)
        mismatches = [(a, b) for a, b in zip(got, expected, strict=True) if a != b]
        assert not mismatches, mismatches[:5]


def test_summary_table_prints_lot_names_literally() -> None:
    frame = cells()
    frame["lot"] = np.where(frame["lot"] == "LOT-1", "[bold]LOT-1", "LOT[/x]2")
    console = Console(record=True, width=160)
    console.print(summary_table(summarize(grade_cells(frame, RULES))))  # "[/x]" as markup would raise
    rendered = console.export_text()
    assert "[bold]LOT-1" in rendered and "LOT[/x]2" in rendered


def test_a_metric_no_cell_has_writes_an_empty_column() -> None:
    assert _float_column(pd.Series([np.nan, None, np.inf]), 3) == ["", "", ""]
    assert _float_column(pd.Series([], dtype=float), 3) == []
