"""Histograms of each graded metric per lot, with every grade's band edges drawn as vertical lines (PNG, headless).

Uses matplotlib's object API with the Agg canvas, never ``pyplot``: no global figure state, no GUI backend.
Solid lines are absolute bounds (``min``/``max``); dashed lines are lot-relative bounds resolved for that lot.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from formation.grading.engine import Grading

_BINS = 60
_COLOURS = ("tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink")
_UNITS = {"capacity_ah": "Ah", "dcir_mohm": "mΩ", "k_mv_per_day": "mV/day", "ocv_v": "V"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "lot"


def _plot_range(x: np.ndarray, edges: list[float]) -> tuple[float, float]:
    # Percentiles keep a few defective outliers from squashing the histogram; they are clipped into the end bins.
    lo, hi = np.percentile(x, [0.5, 99.5]) if x.size else (0.0, 1.0)
    lo, hi = min([lo, *edges]), max([hi, *edges])
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo) * 0.01, 1e-6)
    return float(lo - pad), float(hi + pad)


def write_histograms(grading: Grading, out_dir: str | Path) -> list[Path]:
    """One PNG per lot and graded metric (``{lot}_{metric}.png``); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = grading.cells
    # Faulted cells are left out of the histograms, as they are of the lot statistics.
    ok = cells["fault"].fillna("").astype(str) == "" if "fault" in cells else pd.Series(True, index=cells.index)
    written: list[Path] = []
    for lot, lot_cells in cells[ok].groupby(cells.loc[ok, "lot"].astype(str), sort=True):
        for metric in grading.rules.metrics:
            if metric not in lot_cells:
                continue
            x = lot_cells[metric].to_numpy(dtype=np.float64, na_value=np.nan)
            x = x[~np.isnan(x)]
            edges = grading.edges[(grading.edges["lot"] == lot) & (grading.edges["metric"] == metric)]
            written.append(_histogram(out / f"{_safe(lot)}_{metric}.png", lot, metric, x, edges, grading))
    return written


def _histogram(path: Path, lot: str, metric: str, x: np.ndarray, edges: pd.DataFrame, grading: Grading) -> Path:
    lines: list[tuple[float, str, str, str]] = []  # value, colour, style, label
    for gi, rule in enumerate(grading.rules.grades):
        colour = _COLOURS[gi % len(_COLOURS)]
        for row in edges[edges["grade"] == rule.name].itertuples(index=False):
            for value, style, label in (
                (row.abs_lo, "-", f"{rule.name} min"),
                (row.abs_hi, "-", f"{rule.name} max"),
                (row.rel_lo, "--", f"{rule.name} low (lot)"),
                (row.rel_hi, "--", f"{rule.name} high (lot)"),
            ):
                if np.isfinite(value):
                    lines.append((float(value), colour, style, label))
    lo, hi = _plot_range(x, [v for v, *_ in lines])
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(np.clip(x, lo, hi), bins=_BINS, range=(lo, hi), color="0.6", edgecolor="0.4", linewidth=0.3)
    for value, colour, style, label in lines:
        ax.axvline(value, color=colour, linestyle=style, linewidth=1.2, label=f"{label} {value:.6g}")
    stats = grading.stats[(grading.stats["lot"] == lot) & (grading.stats["metric"] == metric)]
    if len(stats) and np.isfinite(stats["median"].iloc[0]):
        ax.axvline(float(stats["median"].iloc[0]), color="black", linestyle=":", linewidth=1.0, label="lot median")
    ax.set_xlabel(f"{metric} ({_UNITS.get(metric, '')})")
    ax.set_ylabel("cells")
    ax.set_title(f"lot {lot}: {metric} (n = {x.size}), rules {grading.rules.name} {grading.rules.version}")
    if lines:
        ax.legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    # No software/date metadata: the same data gives the same file.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path
