"""Vectorised grading: per-lot robust statistics, each grade's resolved band per lot, first matching grade wins.

The input is one row per cell (``cell_id``, ``lot``, the metric columns, and ``fault``: empty when the cell's run
finished well, else the reason it did not). The work is a loop over grades × metrics (a handful) of numpy
comparisons over all cells; there is no per-cell Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from formation.grading.rules import METRICS, NG, Bounds, Rules

#: σ = MAD_TO_SIGMA × MAD estimates the standard deviation of normally distributed values, robust to outliers.
MAD_TO_SIGMA = 1.4826

#: Columns of :attr:`Grading.edges`: per lot, grade and metric, the absolute, the resolved lot-relative, and the
#: combined band (``lo``/``hi``, the intersection, what grading uses). Unbounded sides are ∓inf.
EDGE_COLUMNS: tuple[str, ...] = ("lot", "grade", "metric", "abs_lo", "abs_hi", "rel_lo", "rel_hi", "lo", "hi")


@dataclass(frozen=True)
class Grading:
    """The result of grading: cells with ``grade`` and ``reason``, the lot statistics and the resolved bands."""

    cells: pd.DataFrame
    stats: pd.DataFrame
    edges: pd.DataFrame
    rules: Rules


def _fault_mask(frame: pd.DataFrame) -> np.ndarray:
    if "fault" not in frame:
        return np.zeros(len(frame), dtype=bool)
    fault = frame["fault"]
    return (fault.notna() & (fault.astype(str) != "")).to_numpy()


def _metric_values(frame: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def lot_statistics(values: np.ndarray, codes: np.ndarray, n_lots: int, valid: np.ndarray) -> np.ndarray:
    """Per lot ``[median, sigma, count]`` (shape (n_lots, 3)) of ``values`` where ``valid``; NaN for empty lots."""
    keep = valid & ~np.isnan(values)
    x, c = values[keep], codes[keep]
    out = np.full((n_lots, 3), np.nan)
    counts = np.bincount(c, minlength=n_lots)
    out[:, 2] = counts
    if x.size:
        series = pd.Series(x)
        med = series.groupby(c).median()
        out[med.index.to_numpy(), 0] = med.to_numpy()
        mad = pd.Series(np.abs(x - out[c, 0])).groupby(c).median()
        out[mad.index.to_numpy(), 1] = MAD_TO_SIGMA * mad.to_numpy()
    return out


def resolve_bounds(bounds: Bounds, median: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """Per-lot ``abs_lo/abs_hi/rel_lo/rel_hi/lo/hi`` arrays of one grade's bounds on one metric."""
    n = median.shape[0]
    abs_lo = np.full(n, -np.inf if bounds.min is None else bounds.min)
    abs_hi = np.full(n, np.inf if bounds.max is None else bounds.max)
    rel_lo, rel_hi = np.full(n, -np.inf), np.full(n, np.inf)
    if bounds.max_dev is not None:
        rel_lo = np.maximum(rel_lo, median - bounds.max_dev)
        rel_hi = np.minimum(rel_hi, median + bounds.max_dev)
    if bounds.max_dev_pct is not None:
        width = np.abs(median) * bounds.max_dev_pct / 100.0
        rel_lo, rel_hi = np.maximum(rel_lo, median - width), np.minimum(rel_hi, median + width)
    for k_above in (bounds.max_sigma, bounds.max_sigma_above):
        if k_above is not None:
            rel_hi = np.minimum(rel_hi, median + k_above * sigma)
    for k_below in (bounds.max_sigma, bounds.max_sigma_below):
        if k_below is not None:
            rel_lo = np.maximum(rel_lo, median - k_below * sigma)
    if bounds.has_relative:
        # A lot without a median (no cell has the metric) has no band: nobody passes.
        rel_lo = np.where(np.isnan(median), np.nan, rel_lo)
        rel_hi = np.where(np.isnan(median), np.nan, rel_hi)
    return {
        "abs_lo": abs_lo,
        "abs_hi": abs_hi,
        "rel_lo": rel_lo,
        "rel_hi": rel_hi,
        # np.maximum/minimum propagate NaN: a NaN relative band stays NaN and fails every comparison.
        "lo": np.maximum(abs_lo, rel_lo),
        "hi": np.minimum(abs_hi, rel_hi),
    }


def _join(reason: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Append non-empty ``part`` strings to ``reason`` strings with ``"; "`` (object arrays)."""
    has_r, has_p = reason != "", part != ""
    out = np.where(has_p, part, reason)
    both = has_r & has_p
    out[both] = reason[both] + "; " + part[both]
    return out


def grade_cells(frame: pd.DataFrame, rules: Rules) -> Grading:
    """Grade every cell of ``frame``; returns the frame with ``grade`` and ``reason`` added, plus stats and edges."""
    n = len(frame)
    codes, lots = pd.factorize(frame["lot"].astype(str), sort=True)
    n_lots = len(lots)
    faulted = _fault_mask(frame)
    values = {m: _metric_values(frame, m) for m in METRICS}
    stats = {m: lot_statistics(values[m], codes, n_lots, ~faulted) for m in METRICS}

    grade_idx = np.full(n, -1, dtype=np.int16)
    edge_rows: list[pd.DataFrame] = []
    resolved: list[dict[str, dict[str, np.ndarray]]] = []
    for gi, rule in enumerate(rules.grades):
        match = ~faulted & (grade_idx < 0)
        per_metric = {}
        for metric, bounds in rule.bounds.items():
            band = resolve_bounds(bounds, stats[metric][:, 0], stats[metric][:, 1])
            per_metric[metric] = band
            x = values[metric]
            # NaN (a missing metric, or a lot without a median) fails both comparisons.
            match &= (x >= band["lo"][codes]) & (x <= band["hi"][codes])
            edge_rows.append(pd.DataFrame({"lot": lots, "grade": rule.name, "metric": metric, **band}))
        resolved.append(per_metric)
        grade_idx[match] = gi

    names = np.array([*(g.name for g in rules.grades), NG], dtype=object)
    grade = names[grade_idx]  # index -1 is the trailing NG
    reason = np.full(n, "", dtype=object)
    ng = grade_idx < 0
    reason[ng & faulted] = frame["fault"].to_numpy(dtype=object)[ng & faulted] if "fault" in frame else ""
    open_ng = ng & ~faulted
    missing_any = np.zeros(n, dtype=bool)
    for metric in rules.used_metrics:
        lacks = open_ng & np.isnan(values[metric])
        missing_any |= lacks
        reason[lacks] = _join(reason[lacks], np.full(int(lacks.sum()), f"missing {metric}", dtype=object))
    reason = _explain_no_match(reason, open_ng & ~missing_any, codes, values, rules, resolved[-1])

    cells = frame.copy()
    cells["grade"] = grade
    cells["reason"] = reason
    cells["downgraded_by"] = _explain_downgrade(grade_idx, codes, values, rules, resolved)
    stats_frame = pd.concat(
        [
            pd.DataFrame({"lot": lots, "metric": m, "median": s[:, 0], "sigma": s[:, 1], "n": s[:, 2].astype(np.int64)})
            for m, s in stats.items()
            if m in rules.metrics
        ],
        ignore_index=True,
    )
    edges = pd.concat(edge_rows, ignore_index=True) if edge_rows else pd.DataFrame(columns=list(EDGE_COLUMNS))
    return Grading(cells, stats_frame, edges[list(EDGE_COLUMNS)], rules)


def _explain_no_match(
    reason: np.ndarray,
    rows: np.ndarray,
    codes: np.ndarray,
    values: dict[str, np.ndarray],
    rules: Rules,
    last_band: dict[str, dict[str, np.ndarray]],
) -> np.ndarray:
    """Name the bounds of the last (loosest) grade that each unmatched cell breaks, e.g. ``capacity_ah < 4.8``."""
    if not rows.any():
        return reason
    last = rules.grades[-1].name
    sub_codes = codes[rows]
    sub_reason = np.full(int(rows.sum()), "", dtype=object)
    for metric, band in last_band.items():
        x = values[metric][rows]
        for side, op, fail in (("lo", "<", x < band["lo"][sub_codes]), ("hi", ">", x > band["hi"][sub_codes])):
            if not fail.any():
                continue
            # One string per lot (a handful), picked per cell by lot code: no per-cell formatting.
            texts = np.array([f"{metric} {op} {edge:.6g}" for edge in band[side]], dtype=object)
            part = np.where(fail, texts[sub_codes], "").astype(object)
            sub_reason = _join(sub_reason, part)
    reason[rows] = "no grade: " + sub_reason + f" (bounds of {last})"
    return reason


def _broken_bounds(
    rows: np.ndarray, codes: np.ndarray, values: dict[str, np.ndarray], bands: dict[str, dict[str, np.ndarray]]
) -> np.ndarray:
    """For the cells in ``rows``, the bounds of one grade they break (``k_mv_per_day > 1.2``, or ``missing
    acir_mohm``), joined with ``"; "``; one string per lot and bound, picked per cell by lot code."""
    sub_codes = codes[rows]
    out = np.full(int(rows.sum()), "", dtype=object)
    for metric, band in bands.items():
        x = values[metric][rows]
        lacks = np.isnan(x)
        if lacks.any():
            out = _join(out, np.where(lacks, f"missing {metric}", "").astype(object))
        # Negated comparisons: a lot without a band (NaN edge) breaks it too, so the text is never empty.
        for side, op, fail in (
            ("lo", "<", ~lacks & ~(x >= band["lo"][sub_codes])),
            ("hi", ">", ~lacks & ~(x <= band["hi"][sub_codes])),
        ):
            if fail.any():
                texts = np.array([f"{metric} {op} {edge:.6g}" for edge in band[side]], dtype=object)
                out = _join(out, np.where(fail, texts[sub_codes], "").astype(object))
    return out


def _explain_downgrade(
    grade_idx: np.ndarray,
    codes: np.ndarray,
    values: dict[str, np.ndarray],
    rules: Rules,
    resolved: list[dict[str, dict[str, np.ndarray]]],
) -> np.ndarray:
    """Why a cell took a grade below the best: the bounds of the grade just above its own that it breaks
    (``k_mv_per_day > 1.2 (bounds of A)`` for a B cell); empty for the best grade and for NG (see ``reason``)."""
    out = np.full(grade_idx.shape[0], "", dtype=object)
    for gi in range(1, len(rules.grades)):
        rows = grade_idx == gi
        if rows.any():
            broken = _broken_bounds(rows, codes, values, resolved[gi - 1])
            out[rows] = broken + f" (bounds of {rules.grades[gi - 1].name})"
    return out
