"""One poll cycle of a 256-channel cabinet: status + data-log drain + sample write (+ step transitions).

The simulated cabinet runs in its own process (`formation sim serve`), as a real instrument would, so the
host's event loop measures only its own work plus the SCPI round trips over loopback TCP. The host runs the
production path: ScpiSession (pyvisa-py) -> Bt2200Cycler -> CabinetSupervisor -> Store (SQLite file, WAL).

    python bench/bench_poll.py [--cycles 300] [--scale 60] [--period 0.5] [--every 10]

With the defaults every cell logs a record each 10 clock seconds, the clock runs ×60 and the host polls every
0.5 s wall, so each poll drains about 256 × 60 × 0.5 / 10 ≈ 770 records. Prints median and p99 wall time of
`CabinetSupervisor.poll_once` (target: under 20 ms) and the records drained per cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from formation.clock import ScaledClock
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells
from formation.recipes import loads_recipe
from formation.store import Store

CHANNELS = 256
RECIPE = """
name = "bench-poll"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[record]
every_s = {every}
every_mv = 0
[[steps]]
id = "charge"
kind = "charge"
current = "C/10"
until = {{ duration = "8h", voltage_v = 4.2 }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"simulator did not open port {port}")


async def bench(cycles: int, scale: float, period_s: float, every_s: float, db: Path) -> dict[str, float]:
    port = free_port()
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "formation",
            "sim",
            "serve",
            "--port",
            str(port),
            "--channels",
            str(CHANNELS),
            "--scale",
            str(scale),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port(port)
        clock = ScaledClock(scale)
        store = Store(f"sqlite:///{db}")
        store.create_schema()
        recipe = loads_recipe(RECIPE.format(every=every_s), "toml")
        cells = [CellEntry(f"B-{i:04d}", "BENCH", 5.0) for i in range(1, CHANNELS + 1)]
        async with (
            ScpiSession(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=5.0) as session,
            CabinetSupervisor("bench", Bt2200Cycler(session), store, clock, n_channels=CHANNELS) as sup,
        ):
            await sup.launch(recipe, assign_cells(range(1, CHANNELS + 1), cells, recipe))
            await sup.poll_once()
            assert sup.writer is not None
            await sup.writer.flush()
            sup.writer.write_wall_s.clear()
            walls, walls_committed, records = [], [], []
            for _ in range(cycles):
                await asyncio.sleep(period_s)
                t0 = time.perf_counter()
                stats = await sup.poll_once()
                walls.append(time.perf_counter() - t0)
                # Until the samples are committed: the cycle as the issue counts it (status + drain + write).
                await sup.writer.flush()
                walls_committed.append(time.perf_counter() - t0)
                records.append(stats.records)
            write_s = np.array(sup.writer.write_wall_s)
            await sup.abort()
            await sup.poll_once()
            stored = store.sample_count(job_id=sup.job_id)
            read = sup.records_total
        store.close()
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    w = np.array(walls) * 1000.0
    wc = np.array(walls_committed) * 1000.0
    r = np.array(records)
    return {
        "median_ms": float(np.median(wc)),
        "p99_ms": float(np.percentile(wc, 99)),
        "max_ms": float(wc.max()),
        "control_median_ms": float(np.median(w)),
        "control_p99_ms": float(np.percentile(w, 99)),
        "write_median_ms": float(np.median(write_s) * 1000.0),
        "write_p99_ms": float(np.percentile(write_s, 99) * 1000.0),
        "stored": float(stored),
        "read": float(read),
        "records_per_cycle": float(np.median(r)),
        "records_total": float(r.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--scale", type=float, default=60.0)
    parser.add_argument("--period", type=float, default=0.5, help="wall seconds between polls")
    parser.add_argument("--every", type=float, default=10.0, help="record rule, clock seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = asyncio.run(bench(args.cycles, args.scale, args.period, args.every, Path(tmp) / "bench.db"))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(
        f"poll cycle of {CHANNELS} channels over {args.cycles} cycles: median {res['median_ms']:.2f} ms, "
        f"p99 {res['p99_ms']:.2f} ms, max {res['max_ms']:.2f} ms (target < 20 ms); "
        f"{res['records_per_cycle']:.0f} records drained and written per cycle, {res['records_total']:.0f} in all"
    )
    print(
        f"  of which control path (status + drain + hand-off to the writer): median {res['control_median_ms']:.2f} ms,"
        f" p99 {res['control_p99_ms']:.2f} ms; sample write (writer thread): median {res['write_median_ms']:.2f} ms,"
        f" p99 {res['write_p99_ms']:.2f} ms; rows stored {res['stored']:.0f} of {res['read']:.0f} read"
    )


if __name__ == "__main__":
    main()
