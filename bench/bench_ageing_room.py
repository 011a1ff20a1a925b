"""The ageing room of `formation demo --ageing` at the demo's fast clocks: does it hold ±0.5 °C?

The room (formation/cli/demo_ageing.py: 40 °C at full valve, τ 4 h, 5 min dead time, thermocouples of 1 min) is
held by the production path (ScpiSession over pyvisa-py -> Daq970aChamber -> ChamberLoop -> SQLite store) with the
demo's settings (``room_site``). Per clock scale: 25 -> 45 °C and the time to stability, one day at 45 °C, the step
to 25 °C and the time to stability, one day at 25 °C; the share of the loop's readings within ±0.5 °C and the
largest deviation in each held day, switchings per valve per hour, the loop's mean control period (clock s).

    python bench/bench_ageing_room.py --scales 5000,10000,20000
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from formation.cli.demo_ageing import AGEING_ROOM, ageing_plant, room_site
from formation.clock import ScaledClock
from formation.orchestrator.chamber_loop import open_chamber_loop
from formation.sim.plant import SimulatedPlant
from formation.store import Store

DAY_S = 86400.0


async def _hold(loop: object, clock: ScaledClock, setpoint_c: float, seconds: float) -> tuple[float, float]:
    """Share of readings in band and the largest deviation over ``seconds`` of clock time."""
    temps = []
    end = clock.now() + seconds
    while clock.now() < end:
        await asyncio.sleep(0.02)
        temps.append(loop.temperature_c)  # type: ignore[attr-defined]
    dev = np.abs(np.array(temps) - setpoint_c)
    return float(np.mean(dev <= 0.5)), float(np.nanmax(dev))


async def run(scale: float) -> dict[str, float]:
    clock = ScaledClock(scale)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'room.db'}", clock=clock)
        store.create_schema()
        rooms, _, _ = ageing_plant(1, seed=5)
        async with SimulatedPlant([], clock, chambers=rooms) as plant:
            site = room_site(plant.chamber_resources[AGEING_ROOM])
            async with open_chamber_loop(site, clock, store) as loop:
                t0, steps0 = clock.now(), loop.steps_taken
                loop.set_setpoint(45.0)
                await loop.wait_stable(DAY_S)
                up_h = (clock.now() - t0) / 3600.0
                hot_share, hot_dev = await _hold(loop, clock, 45.0, DAY_S)
                t1 = clock.now()
                loop.set_setpoint(25.0)
                await loop.wait_stable(DAY_S)
                down_h = (clock.now() - t1) / 3600.0
                room_share, room_dev = await _hold(loop, clock, 25.0, DAY_S)
                hours = (clock.now() - t0) / 3600.0
                counts = loop.controller.valves.switch_counts
                period = (clock.now() - t0) / max(1, loop.steps_taken - steps0)
        store.close()
    return {
        "scale": scale,
        "to 45 °C stable h": up_h,
        "45 °C in band %": 100 * hot_share,
        "45 °C max dev °C": hot_dev,
        "to 25 °C stable h": down_h,
        "25 °C in band %": 100 * room_share,
        "25 °C max dev °C": room_dev,
        "switchings/valve/h": float(np.mean(list(counts.values()))) / hours,
        "control period s": period,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="5000,10000,20000")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    for scale in (float(s) for s in args.scales.split(",")):
        t = time.perf_counter()
        row = asyncio.run(run(scale))
        cells = ", ".join(f"{k} {v:.3g}" for k, v in row.items())
        print(f"{cells}; wall {time.perf_counter() - t:.0f} s", flush=True)


if __name__ == "__main__":
    main()
