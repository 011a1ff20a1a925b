"""K by regression against the simulator's truth, and a K screen's detection of micro-shorts (issue 8).

A lot of formed NCM 21700 cells at 30 % SOC (2 % of them with a seeded 10–50 µA micro-short) is moved from a
simulated cabinet onto a 256-position rack in a chamber and aged with the built-in plan ``ncm21700-hot-then-room``
(3 days at 45 °C, then 7 days at 25 °C, OCV/ACIR of every cell at 12 checkpoints) through the real path:
``formation age load`` and ``formation age start --foreground`` over TCP to the BT3562-dialect tester and the
DAQ970A-dialect chamber, on a clock running ``--scale`` times faster than the wall.

Truth: while the plan runs, the rack's cells are sampled in-process every simulated hour; a cell's true K over the
fit window is the mean of its instantaneous K (leak + SEI growth, through the OCV slope) over the window's span.
Figures: for cells with true K ≥ 0.3 mV/day, how many regression K lie within ±10 % of the truth; the screen
"K > lot median + 4 σ (σ = 1.4826 × MAD)" (the demo rules' A cull) against the seeded micro-shorts: detection rate
and false-reject rate. Run: ``python bench/bench_ageing_k.py [--cells 256] [--scale 1000] [--seed 7]`` (at ×1000
the chamber loop's 10 ms wall floor is a 10 s control period and the chamber holds its band; 10 simulated days
take about 15 minutes of wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import formation.clock
from formation.ageing import resolve_plan
from formation.cli.app import main
from formation.clock import ScaledClock
from formation.store import Store
from tests.integration.ageing_support import formed_lot, plant, site_file

MICROSHORT = "microshort"


async def run(cells: int, scale: float, seed: int, microshorts: float) -> dict[str, float | str]:
    """Age one lot through the real path; the figures."""
    folder = Path(tempfile.mkdtemp(prefix="bench-ageing-"))
    url = f"sqlite:///{folder / 'f.db'}"
    ids = formed_lot(url, "B1", cells)
    clock = ScaledClock(scale)
    # The commands below run in this process: give them the plant's clock (as the demo does), so the fit windows
    # they store and the truth sampled here are on one time axis. Each command building its own ScaledClock
    # would start it at the wall time of its call, behind the plant's by (seconds since the plant started) × scale.
    formation.clock.make_clock = lambda scale: clock
    samples: list[tuple[float, np.ndarray]] = []
    async with plant(clock, cells=cells, positions=cells, seed=seed, microshorts=microshorts) as sim:
        site = site_file(folder / "site.toml", url, sim, scale)
        tester = sim.tester_resources["t1"]
        assert (
            await asyncio.to_thread(main, ["age", "load", "B1", "--rack", "rack1", "--db", url, "--tester", tester])
            == 0
        )
        rack = sim.racks["rack1"]
        assert rack.cells is not None
        order = np.array([rack.cell_index(p) for p in range(1, cells + 1)])
        defect = rack.cells.truth_arrays()["defect"][order]
        leak_a = rack.cells.truth_arrays()["leak_a"][order]

        async def sample_truth() -> None:
            while True:
                rack.advance_to(clock.now())
                assert rack.cells is not None
                samples.append((clock.now(), rack.cells.truth_arrays()["k_mv_per_day"][order].copy()))
                await asyncio.sleep(3600.0 / scale)

        sampler = asyncio.create_task(sample_truth(), name="truth-sampler")
        wall0 = time.monotonic()
        args = ["age", "start", "B1", "--plan", "ncm21700-hot-then-room", "--rack", "rack1", "--site", str(site)]
        assert await asyncio.to_thread(main, [*args, "--foreground"]) == 0
        wall_s = time.monotonic() - wall0
        sampler.cancel()
    with Store(url) as store:
        results = store.ageing_results(job_id=1).set_index("cell_id").loc[ids]
    k = results["k_mv_per_day"].to_numpy(dtype=float)
    start = results["window_start_s"].to_numpy(dtype=float)
    end = results["window_end_s"].to_numpy(dtype=float)
    times = np.array([t for t, _ in samples])
    truth_k = np.vstack([v for _, v in samples])  # (samples, cells)
    true = np.array(
        [
            truth_k[(times >= start[i]) & (times <= end[i]), i].mean() if np.isfinite(start[i]) else np.nan
            for i in range(cells)
        ]
    )
    fitted = np.isfinite(k)
    judged = fitted & (true >= 0.3)
    rel = np.abs(k[judged] - true[judged]) / true[judged]
    median = np.median(k[fitted])
    sigma = 1.4826 * np.median(np.abs(k[fitted] - median))
    flagged = fitted & (k > median + 4.0 * sigma)
    flagged_3 = fitted & (k > median + 3.0 * sigma)
    shorted = defect == MICROSHORT
    # Each short: its leak (µA), its K and where that K ranks in the lot (percentile).
    rank_pct = 100.0 * np.array([np.mean(k[fitted] < v) for v in k[shorted]])
    shorts = "; ".join(
        f"{1e6 * leak:.1f} µA: K {kv:.3f} (p{rank:.0f})"
        for leak, kv, rank in sorted(zip(leak_a[shorted], k[shorted], rank_pct, strict=True))
    )
    plan = resolve_plan("ncm21700-hot-then-room")
    return {
        "cells": float(cells),
        "fitted": float(fitted.sum()),
        "judged_k_ge_0.3": float(judged.sum()),
        "within_10pct": float((rel <= 0.10).sum()),
        "max_rel_error_pct": float(100 * rel.max()) if rel.size else float("nan"),
        "median_rel_error_pct": float(100 * np.median(rel)) if rel.size else float("nan"),
        "median_k_se": float(np.nanmedian(results["k_se_mv_per_day"].to_numpy(dtype=float))),
        "median_k": float(median),
        "cull_mv_per_day": float(median + 4.0 * sigma),
        "microshorts": float(shorted.sum()),
        "detected": float((flagged & shorted).sum()),
        "false_rejects": float((flagged & ~shorted).sum()),
        "good_cells": float((~shorted).sum()),
        "min_short_k": float(k[shorted].min()) if shorted.any() else float("nan"),
        "detected_at_3_sigma": float((flagged_3 & shorted).sum()),
        "false_rejects_at_3_sigma": float((flagged_3 & ~shorted).sum()),
        "shorts": shorts,
        "wall_s": wall_s,
        "plan_days": plan.duration_s / 86400.0,
    }


def main_bench() -> None:
    """Parse options, run, print the figures (for bench/RESULTS.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=256)
    parser.add_argument("--scale", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--microshorts", type=float, default=0.02)
    opts = parser.parse_args()
    os.environ.setdefault("FORMATION_MQTT_ENABLED", "no")
    load_before = os.getloadavg()
    figures = asyncio.run(run(opts.cells, opts.scale, opts.seed, opts.microshorts))
    cpus = f"{platform.machine()} {os.cpu_count()} cpus"
    print(f"machine: {cpus}, Python {platform.python_version()}")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*load_before))
    print("load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for key, value in figures.items():
        print(f"{key}: {value}" if isinstance(value, str) else f"{key}: {value:.6g}")


if __name__ == "__main__":
    main_bench()
