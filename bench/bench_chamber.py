"""Chamber control: 24 simulated hours at 45 °C with a 256-cell cabinet inside, through the real ChamberLoop over TCP.

The plant (one 256-channel cabinet standing in one chamber, docs/daq970a-dialect.md) runs in this process on a
scaled clock; the chamber is held by the production path (ScpiSession over pyvisa-py -> Daq970aChamber ->
ChamberLoop -> SQLite store). The cells are driven over TCP with plain SCPI lines: every cell alternates 30 min of
1C charge or discharge with 30 min of rest, all in phase, so their heat comes and goes as a square wave. Eight
hours in, the ambient steps +5 °C (SIM:FAULT:AMB); sixteen hours in, the door opens for 2 minutes, a trolley
rolled in or out (SIM:FAULT:DOOR; ``--door-s`` for another length).

Reported per clock scale: time from 25 °C to the ±0.5 °C band (target < 60 min), % of the time in band after the
first settling (target >= 99 %) by the loop's control temperature and by the true air temperature, switchings per
valve per hour (target <= 60 on average) and each valve's count, the loop's mean control period.

    python bench/bench_chamber.py --scales 600,300      # the recorded figures, plot of the x600 run
    python bench/bench_chamber.py --scales 600 --hours 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from formation.clock import ScaledClock
from formation.config import ChamberSite
from formation.orchestrator.chamber_loop import ChamberLoop, open_chamber_loop
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.store import Store

SETPOINT_C = 45.0
BAND_C = 0.5
CELLS = 256
NOMINAL_AH = 5.0
AMBIENT_STEP = (8 * 3600.0, 30.0)  # clock seconds after the start, new ambient °C
DOOR = (16 * 3600.0, 120.0)  # clock seconds after the start, seconds open (--door-s)
HERE = Path(__file__).resolve().parent


def cell_sequence(hours: float) -> list[str]:
    """One sequence: 1C charge, rest, 1C discharge, rest, 30 min each, for ``hours`` (at most 64 steps)."""
    lines = []
    kinds = (("CHARGE", 4.2), ("REST", 0.0), ("DISCHARGE", 2.5), ("REST", 0.0))
    for step in range(1, min(64, math.ceil(hours * 2)) + 1):
        kind, volts = kinds[(step - 1) % 4]
        lines.append(f"SEQ:STEP:DEF 1,{step},{kind},1800,{NOMINAL_AH},{volts}")
        lines.append(f"SEQ:STEP:LOG 1,{step},3600,0")  # the log only needs to exist, not to be read
    return lines


class Line:
    """A plain SCPI line client (the cabinet's cells and the chamber's simulator-only faults)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Line:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, *lines: str) -> None:
        for line in lines:
            self.writer.write(line.encode() + b"\n")
        self.writer.write(b"SYST:ERR?\n")
        await self.writer.drain()
        reply = (await self.reader.readline()).decode().strip()
        if reply != '+0,"No error"':
            raise RuntimeError(f"{lines[-1]!r}: {reply}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@dataclass
class Run:
    """What one run measured."""

    scale: float
    hours: float
    wall_s: float = 0.0
    steps: int = 0
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    truth: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_hour: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    instrument_counts: list[int] = field(default_factory=list)
    time_to_band_min: float = math.nan
    time_to_stable_min: float = math.nan
    in_band_pct: float = math.nan
    true_in_band_pct: float = math.nan
    max_deviation_c: float = math.nan
    #: Minutes the control temperature was out of band after settling: the hour after the ambient step, the hour
    #: after the door opened, and the rest of the time.
    out_minutes: dict[str, float] = field(default_factory=dict)
    in_band_without_door_pct: float = math.nan
    alarms: list[str] = field(default_factory=list)


def in_band_pct(t_s: np.ndarray, temperature_c: np.ndarray, from_s: float) -> float:
    """Time-weighted share in band from ``from_s`` on, each interval booked to the value at its start."""
    dt = np.diff(t_s)
    keep = t_s[:-1] >= from_s
    inside = np.abs(temperature_c[:-1] - SETPOINT_C) <= BAND_C
    return float(100.0 * dt[keep & inside].sum() / dt[keep].sum())


def out_of_band_min(t_s: np.ndarray, temperature_c: np.ndarray, start_s: float, end_s: float) -> float:
    """Minutes out of band between ``start_s`` and ``end_s``, each interval booked to the value at its start."""
    dt = np.diff(t_s)
    keep = (t_s[:-1] >= start_s) & (t_s[:-1] < end_s)
    outside = ~(np.abs(temperature_c[:-1] - SETPOINT_C) <= BAND_C)
    return float(dt[keep & outside].sum() / 60.0)


async def _truth_sampler(plant: SimulatedPlant, out: list[tuple[float, float, float]], clock: ScaledClock) -> None:
    chamber = plant.groups["ch1"].chamber
    while True:
        out.append((chamber.time_s, chamber.air_c, chamber.cell_heat_w))
        await clock.sleep(30.0)


async def run_once(scale: float, hours: float, db: Path) -> Run:
    """Hold the chamber at 45 °C for ``hours`` simulated hours at clock ``scale``."""
    clock = ScaledClock(scale)
    cabinet = CabinetSpec("cab1", channels=CELLS, seed=1, formed=True, initial_soc=0.5, chamber="ch1")
    result = Run(scale, hours)
    truth: list[tuple[float, float, float]] = []
    with Store(f"sqlite:///{db}", clock=clock) as store:
        store.create_schema()
        async with SimulatedPlant([cabinet], clock, chambers=[ChamberSpec("ch1", seed=7)]) as plant:
            cells = await Line.open(plant.cabinets["cab1"].port)
            faults = await Line.open(plant.chambers["ch1"].port)
            ids = f"(@1001:{1000 + CELLS})"
            await cells.send(
                *(f"CELL:DEF {1000 + n},(@{(n - 1) // 32 + 1}{(n - 1) % 32 + 1:02d})" for n in range(1, 257))
            )
            await cells.send(*cell_sequence(hours))
            site = ChamberSite("ch1", plant.chamber_resources["ch1"], sample_every_s=1.0)  # a sample every step
            sampler = asyncio.create_task(_truth_sampler(plant, truth, clock), name="bench-truth")
            wall0 = time.perf_counter()
            try:
                async with open_chamber_loop(site, clock, store) as loop:
                    loop.set_setpoint(SETPOINT_C)
                    t0 = clock.now()
                    await cells.send(f"CELL:ENAB {ids},1", f"CELL:INIT {ids}")
                    events = [
                        (AMBIENT_STEP[0], f"SIM:FAULT:AMB {AMBIENT_STEP[1]:g}"),
                        (DOOR[0], f"SIM:FAULT:DOOR {DOOR[1]:g}"),
                    ]
                    for at_s, line in events:
                        if at_s < hours * 3600.0:
                            await clock.sleep(t0 + at_s - clock.now())
                            await faults.send(line)
                    await clock.sleep(t0 + hours * 3600.0 - clock.now())
                _collect(result, loop)  # after the exit, which closed every valve (counted by both sides)
                result.instrument_counts = plant.chambers["ch1"].model.switch_counts.tolist()
            finally:
                result.wall_s = time.perf_counter() - wall0
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
                await cells.close()
                await faults.close()
        result.samples = store.chamber_samples("ch1")
        result.alarms = [f"{a.severity} {a.code}: {a.message}" for a in store.alarms()]
    result.truth = pd.DataFrame(truth, columns=["ts_s", "air_c", "cell_heat_w"])
    _figures(result)
    return result


def _collect(result: Run, loop: ChamberLoop) -> None:
    result.steps = loop.steps_taken
    result.per_hour = loop.switches_per_hour()
    result.counts = loop.switch_counts
    stats = loop.stats
    result.time_to_band_min = math.nan if stats.time_to_band_s is None else stats.time_to_band_s / 60.0
    result.time_to_stable_min = math.nan if stats.time_to_stable_s is None else stats.time_to_stable_s / 60.0
    result.in_band_pct = stats.in_band_pct
    result.max_deviation_c = stats.max_deviation_c


def _figures(result: Run) -> None:
    """The true air's share in band, counted from the moment the loop first reported stable."""
    samples, truth = result.samples, result.truth
    stable = samples.index[samples["stable"]]
    if len(stable) and len(truth) > 1:
        settled_s = float(samples.loc[stable[0], "ts_s"])
        result.true_in_band_pct = in_band_pct(truth["ts_s"].to_numpy(), truth["air_c"].to_numpy(), settled_s)
        t_s, temperature_c = samples["ts_s"].to_numpy(), samples["temperature_c"].to_numpy()
        t0 = float(t_s[0])
        windows = {"ambient step": AMBIENT_STEP[0], "door": DOOR[0]}
        result.out_minutes = {
            f"{name} (+1 h)": out_of_band_min(t_s, temperature_c, max(t0 + at_s, settled_s), t0 + at_s + 3600.0)
            for name, at_s in windows.items()
        }
        total = out_of_band_min(t_s, temperature_c, settled_s, math.inf)
        result.out_minutes["elsewhere"] = max(0.0, total - sum(result.out_minutes.values()))
        door_s = t0 + DOOR[0]
        if door_s < t_s[-1]:
            # The simulated door loses more heat (250 W/K) than every hot valve gives: no controller holds the band
            # while it is open, and the chamber's mass needs minutes to recover what it lost.
            settled_min = (float(t_s[-1]) - settled_s) / 60.0 - 60.0
            out_min = total - result.out_minutes["door (+1 h)"]
            result.in_band_without_door_pct = 100.0 * (1.0 - out_min / settled_min)


def plot(result: Run, path: Path) -> None:
    """Temperature and deviation, demand and cell heat, every valve's state, against simulated hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, truth = result.samples, result.truth
    t0 = float(samples["ts_s"].iloc[0])
    t_h = (samples["ts_s"].to_numpy() - t0) / 3600.0
    truth_h = (truth["ts_s"].to_numpy() - t0) / 3600.0
    fig, axes = plt.subplots(
        4, 1, figsize=(13, 10), sharex=True, height_ratios=(2.2, 2.2, 1.3, 1.6), constrained_layout=True
    )
    top, zoom, demand_ax, valves_ax = axes
    top.plot(t_h, samples["setpoint_c"], color="tab:green", lw=1.2, label="set point")
    top.plot(truth_h, truth["air_c"], color="black", lw=0.8, label="air (simulator truth)")
    top.plot(t_h, samples["temperature_c"], color="tab:red", lw=0.8, label="control temperature (thermocouple vote)")
    top.set_ylabel("°C")
    top.set_ylim(20, 50)
    top.legend(loc="lower right", fontsize=9)
    top.set_title(
        f"Chamber at {SETPOINT_C:g} °C, 256 cells at 1C inside, clock ×{result.scale:g}: "
        f"band in {result.time_to_band_min:.0f} min, {result.in_band_pct:.2f} % in ±{BAND_C:g} °C after settling"
    )
    zoom.axhspan(-BAND_C, BAND_C, color="tab:green", alpha=0.15, label=f"±{BAND_C:g} °C band")
    zoom.plot(truth_h, truth["air_c"] - SETPOINT_C, color="black", lw=0.8, label="air − set point")
    zoom.plot(
        t_h, samples["temperature_c"] - samples["setpoint_c"], color="tab:red", lw=0.8, label="control − set point"
    )
    zoom.set_ylim(-2.0, 2.0)
    zoom.set_ylabel("deviation, °C")
    zoom.legend(loc="lower right", fontsize=9)
    demand_ax.step(t_h, samples["demand"], where="post", color="tab:blue", lw=0.8, label="demand (+heat, −cool)")
    demand_ax.axhline(0.0, color="grey", lw=0.5)
    demand_ax.set_ylim(-1.05, 1.05)
    demand_ax.set_ylabel("demand")
    heat_ax = demand_ax.twinx()
    heat_ax.plot(truth_h, truth["cell_heat_w"], color="tab:orange", lw=0.8, label="cell heat, W")
    heat_ax.set_ylabel("cell heat, W", color="tab:orange")
    demand_ax.legend(loc="lower left", fontsize=9)
    heat_ax.legend(loc="lower right", fontsize=9)
    channels = sorted(result.counts)
    opened = np.array([[str(c) in v.split(",") for c in channels] for v in samples["valves_open"]], dtype=float)
    heating = np.array([c <= 304 for c in channels])
    image = np.where(opened > 0, np.where(heating, 1.0, -1.0), 0.0).T
    valves_ax.imshow(
        image,
        aspect="auto",
        interpolation="nearest",
        cmap="coolwarm",
        vmin=-1,
        vmax=1,
        extent=(t_h[0], t_h[-1], len(channels) - 0.5, -0.5),
    )
    valves_ax.set_yticks(
        range(len(channels)), [f"{c} {'heat' if h else 'cool'}" for c, h in zip(channels, heating, strict=True)]
    )
    valves_ax.set_ylabel("valve open")
    valves_ax.set_xlabel("simulated hours")
    for ax in axes:
        for at_s, label in ((AMBIENT_STEP[0], "ambient +5 °C"), (DOOR[0], f"door open {DOOR[1] / 60:g} min")):
            if at_s / 3600.0 <= t_h[-1]:
                ax.axvline(at_s / 3600.0, color="purple", lw=0.8, ls="--")
                if ax is top:
                    ax.text(at_s / 3600.0 + 0.15, 48.3, label, color="purple", fontsize=9, va="top")
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def report(result: Run) -> None:
    """Print one run's figures."""
    valves = sorted(result.counts)
    mean_per_hour = float(np.mean([result.per_hour[c] for c in valves]))
    hours = result.hours
    print(f"\n== clock ×{result.scale:g}: {hours:g} h simulated in {result.wall_s:.1f} s wall")
    print(f"control steps {result.steps} (mean period {hours * 3600.0 / max(result.steps, 1):.1f} clock s)")
    print(
        f"time 25 -> 45 °C to band: {result.time_to_band_min:.1f} min (target < 60); stable after "
        f"{result.time_to_stable_min:.1f} min"
    )
    print(
        f"in ±{BAND_C:g} °C after first settling: {result.in_band_pct:.2f} % by the control temperature, "
        f"{result.true_in_band_pct:.2f} % by the true air (target >= 99 %)"
    )
    print(f"max deviation after settling (control temperature): {result.max_deviation_c:.2f} °C")
    print("minutes out of band after settling: " + ", ".join(f"{k} {v:.1f}" for k, v in result.out_minutes.items()))
    print(f"in band after settling leaving out the hour after the door opened: {result.in_band_without_door_pct:.2f} %")
    print(
        f"switchings per valve per hour: mean {mean_per_hour:.1f}, max {max(result.per_hour.values()):.1f} "
        "(target <= 60 mean)"
    )
    print("per valve: " + ", ".join(f"{c}: {result.counts[c]} ({result.per_hour[c]:.1f}/h)" for c in valves))
    print(f"instrument's own switch counts: {result.instrument_counts}")
    print(f"alarms: {len(result.alarms)}")
    for line in result.alarms:
        print(f"  {line}")


def main() -> None:
    global DOOR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="600,300", help="clock scales to run, comma-separated")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours per run")
    parser.add_argument("--plot", type=Path, default=HERE / "chamber-24h.png", help="PNG of the first run")
    parser.add_argument("--door-s", type=float, default=DOOR[1], help="clock seconds the door stays open")
    args = parser.parse_args()
    DOOR = (DOOR[0], args.door_s)
    print(f"machine: {platform.node()} {platform.machine()} Python {platform.python_version()}, door {args.door_s:g} s")
    with tempfile.TemporaryDirectory() as tmp:
        for i, scale in enumerate(float(s) for s in args.scales.split(",")):
            result = asyncio.run(run_once(scale, args.hours, Path(tmp) / f"bench-{i}.db"))
            report(result)
            if i == 0:
                plot(result, args.plot)
                print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
