"""A picture of a chamber's control: temperature against set point and band, and the valve demand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def plot_chamber(samples: pd.DataFrame, path: Path, *, band_c: float = 0.5, title: str = "chamber") -> Path:
    """Write a PNG of stored chamber samples (``Store.chamber_samples``): temperature, set point ± band, demand."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt
    import numpy as np

    t_h = (samples["ts_s"].to_numpy() - float(samples["ts_s"].iloc[0])) / 3600.0 if len(samples) else np.empty(0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    setpoint = samples["setpoint_c"].to_numpy()
    top.fill_between(t_h, setpoint - band_c, setpoint + band_c, color="tab:green", alpha=0.15, label=f"±{band_c:g} °C")
    top.plot(t_h, setpoint, color="tab:green", lw=1, label="set point")
    top.plot(t_h, samples["temperature_c"].to_numpy(), color="tab:red", lw=1, label="chamber (sensor vote)")
    top.set_ylabel("°C")
    top.legend(loc="lower right")
    top.set_title(title)
    bottom.plot(t_h, samples["demand"].to_numpy(), color="tab:blue", lw=1, drawstyle="steps-post")
    bottom.axhline(0.0, color="grey", lw=0.5)
    bottom.set_ylim(-1.05, 1.05)
    bottom.set_ylabel("demand\n(+heat, −cool)")
    bottom.set_xlabel("hours")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
