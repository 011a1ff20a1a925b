"""Grading throughput: 1,000,000 synthetic cells in 8 lots graded and written as the logistics CSV.

Run: ``python bench/bench_grading.py [--cells N] [--lots N] [--rules PATH]``

The metrics come as a DataFrame (what :func:`formation.grading.load_lot_metrics` returns), so this measures
the pure part: per-lot robust statistics, resolving each grade's bands, binning, NG reasons, sorting by cell id
and formatting the CSV. The target is under 10 s of wall time on 2 cores for a million cells.

Recorded results are at the end of this file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from formation.grading import grade_cells, load_rules, summarize, write_report_csv

ROOT = Path(__file__).resolve().parents[1]


def synthetic_cells(n: int, lots: int, seed: int = 1) -> pd.DataFrame:
    """NCM 21700 lots as the store would give them: spread, a few defects, missing metrics and faulted runs."""
    rng = np.random.default_rng(seed)
    lot = rng.integers(0, lots, n)
    cells = pd.DataFrame(
        {
            "cell_id": np.char.add("SN", np.char.zfill(rng.permutation(n).astype(str), 8)).astype(object),
            "lot": np.char.add("LOT-", lot.astype(str)).astype(object),
            # Each lot has its own level: the lot-relative bands must follow it.
            "capacity_ah": rng.normal(5.0, 0.04, n) + 0.01 * lot,
            "dcir_mohm": rng.normal(21.0, 0.5, n) - 0.05 * lot,
            "k_mv_per_day": rng.lognormal(np.log(0.15), 0.3, n),
            "ocv_v": rng.normal(3.60, 0.004, n),
            "fault": np.where(rng.random(n) < 0.001, "run faulted: host_check", "").astype(object),
            "cabinet": np.char.add("cab", (rng.integers(0, 16, n) + 1).astype(str)).astype(object),
            "channel": rng.integers(1, 257, n),
            "run_id": np.arange(1, n + 1),
            "recipe": "ncm21700-formation",
            "recipe_sha256": "3f" * 32,
            "graded_at_s": 1.75e9 + rng.random(n) * 30 * 86400.0,
        }
    )
    defects = rng.random(n) < 0.003  # high-leak cells: the K-value cull must catch them
    cells.loc[defects, "k_mv_per_day"] = rng.uniform(1.0, 20.0, int(defects.sum()))
    cells.loc[rng.random(n) < 0.001, "dcir_mohm"] = np.nan
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--lots", type=int, default=8)
    parser.add_argument(
        "--rules", type=Path, default=ROOT / "formation" / "grading" / "library" / "ncm21700-formation.toml"
    )
    args = parser.parse_args()

    rules = load_rules(args.rules)
    cells = synthetic_cells(args.cells, args.lots)
    print(f"{args.cells:,} cells in {args.lots} lots, rules {rules.name} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.csv"
        t0 = time.perf_counter()
        grading = grade_cells(cells, rules)
        t1 = time.perf_counter()
        write_report_csv(grading, out)
        t2 = time.perf_counter()
        size_mb = out.stat().st_size / 1e6
    summary = summarize(grading)
    yields = summary.groupby("grade", observed=True)["count"].sum() / args.cells * 100.0
    print(f"grade:     {t1 - t0:6.2f} s")
    print(f"write CSV: {t2 - t1:6.2f} s ({size_mb:.0f} MB)")
    print(f"total:     {t2 - t0:6.2f} s  ({args.cells / (t2 - t0):,.0f} cells/s)")
    print("yield %:   " + ", ".join(f"{g} {y:.2f}" for g, y in yields.items()))


if __name__ == "__main__":
    main()

# Recorded results (2 CPUs, Python 3.11.7, numpy 2.4, pandas 3.1; CSV in the temp directory):
#
#   1,000,000 cells in 8 lots, rules ncm21700-grading (2 CPUs)
#   grade:       0.61 s
#   write CSV:   5.21 s (235 MB)
#   total:       5.82 s  (171,850 cells/s)
#   yield %:   A 58.33, B 39.46, C 1.44, NG 0.76
#
# The CSV dominates: sorting a million cell ids (~0.3 s as fixed-width unicode, ~0.9 s as objects) and making
# 15 million field strings. DataFrame.to_csv took ~8 s for the same file, hence the column-join writer.
