"""A picture of an ageing job: each cell's OCV over the days on the rack, the fit window, and the temperature."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def plot_ageing(readings: pd.DataFrame, results: pd.DataFrame, path: Path, *, title: str = "ageing") -> Path:
    """Write a PNG of an ageing job (``Store.ageing_readings`` / ``ageing_results``): OCV per cell against days,
    relative to its first valid reading, the K window shaded, the fastest-falling cells named; and the cell
    temperature at each checkpoint."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    valid = readings[readings["ocv_v"].notna()].sort_values(["cell_id", "ts_s"])
    t0 = float(readings["ts_s"].min()) if len(readings) else 0.0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=(3, 1))
    starts = results["window_start_s"].dropna()
    ends = results["window_end_s"].dropna()
    if len(starts) and len(ends):
        top.axvspan(
            (float(starts.median()) - t0) / 86400.0,
            (float(ends.median()) - t0) / 86400.0,
            color="tab:green",
            alpha=0.1,
            label="K fit window",
        )
    k = results.set_index("cell_id")["k_mv_per_day"].astype(float)
    worst = set(k.dropna().sort_values(ascending=False).index[:3])
    for cell, g in valid.groupby("cell_id"):
        days = (g["ts_s"].to_numpy(dtype=float) - t0) / 86400.0
        drop_mv = (g["ocv_v"].to_numpy(dtype=float) - float(g["ocv_v"].iloc[0])) * 1000.0
        if cell in worst:
            top.plot(days, drop_mv, marker="o", ms=3, lw=1.5, label=f"{cell}: K {k[cell]:.2f} mV/day")
        else:
            top.plot(days, drop_mv, color="grey", lw=0.6, alpha=0.6)
    top.set_ylabel("OCV − first reading (mV)")
    top.set_title(title)
    top.legend(loc="lower left", fontsize=8)
    temps = readings.groupby("ts_s")["cell_temperature_c"].mean()
    bottom.plot((temps.index.to_numpy(dtype=float) - t0) / 86400.0, temps.to_numpy(), "o-", color="tab:red", ms=3)
    bottom.set_ylabel("cell °C")
    bottom.set_xlabel("days on the rack")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
