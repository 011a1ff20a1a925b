"""Grading: rules (TOML), vectorised binning of a lot into grades, the logistics CSV, summary and plots.

    rules = load_rules("examples/grading.toml")          # RulesError (exit 2) names the bad field
    cells = load_lot_metrics(store, "LOT-42", rules)     # one row per cell: metrics, fault, traceability
    check_lot_cycles(store, cells, rules)                # RulesError: a cycle the lot's recipe does not have
    grading = grade_cells(cells, rules)                  # first grade whose every bound holds wins, else NG
    write_report_csv(grading, "report.csv")              # byte-identical for the same database and rules
    summary_table(summarize(grading))                    # Rich table of counts and yields per lot

The rules, the engine and the report are pure; only :mod:`formation.grading.source` reads the store.
"""

from formation.grading.cycles import check_rules_cycles
from formation.grading.engine import EDGE_COLUMNS, MAD_TO_SIGMA, Grading, grade_cells, lot_statistics
from formation.grading.plots import write_histograms
from formation.grading.report import (
    FLOAT_DECIMALS,
    REPORT_COLUMNS,
    SUMMARY_COLUMNS,
    report_columns,
    summarize,
    summary_table,
    write_report_csv,
)
from formation.grading.rules import (
    BOUND_KEYS,
    METRICS,
    NG,
    Bounds,
    GradeRule,
    MetricSource,
    Rules,
    builtin_rules,
    load_rules,
    loads_rules,
    parse_rules,
    resolve_rules,
)
from formation.grading.source import CELL_COLUMNS, check_lot_cycles, load_lot_metrics, lot_query, metrics_frame

__all__ = [
    "BOUND_KEYS",
    "CELL_COLUMNS",
    "EDGE_COLUMNS",
    "FLOAT_DECIMALS",
    "MAD_TO_SIGMA",
    "METRICS",
    "NG",
    "REPORT_COLUMNS",
    "SUMMARY_COLUMNS",
    "Bounds",
    "GradeRule",
    "Grading",
    "MetricSource",
    "Rules",
    "builtin_rules",
    "check_lot_cycles",
    "check_rules_cycles",
    "grade_cells",
    "load_lot_metrics",
    "load_rules",
    "loads_rules",
    "lot_query",
    "lot_statistics",
    "metrics_frame",
    "parse_rules",
    "report_columns",
    "resolve_rules",
    "summarize",
    "summary_table",
    "write_histograms",
    "write_report_csv",
]
