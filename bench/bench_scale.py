"""The line as a service at scale: one `formation serve` daemon carrying 1, 4 and 16 simulated 256-channel cabinets.

Everything runs as it would on a line, each part in its own process: the simulated plant (`formation sim serve
--site`, every cabinet on its own TCP port, clock ×1), one daemon (`formation serve --poll-log`, 1 s poll), jobs
queued with `formation run launch` (one per cabinet, every channel). Per size and recipe variant it measures, over
a window after a warm-up:

- daemon CPU (% of one core, /proc/<pid>/stat utime + stime) and RSS (/proc/<pid>/status, peak over the window);
- poll cycle p50 / p99 per cabinet and missed polls (started more than one interval late), from the poll log;
- step-end-to-next-start delay p50 / p99 (instrument time of a step's end record to the next step's start
  record, from the stored samples) — the ``steps`` variant has 30-60 s steps so transitions happen;
- sample ingest (rows stored per second) and the simulator's own CPU for context.

At the smallest size it also polls the same 256 channels with a plain per-channel pyvisa loop (three queries a
channel, as a script written with pyvisa alone would: voltage, current, status) in its own process, and compares
channels polled per CPU-second.

    python bench/bench_scale.py [--sizes 1,4,16] [--variants long,steps] [--window-s 600] [--warmup-s 30]
                                [--profile DIR] [--json out.json]

``long`` is the built-in ncm21700-formation recipe on fresh cells (its 2 h precharge outlasts the window);
``steps`` loops 1C charge 60 s / rest 30 s / 1C discharge 60 s / rest 30 s on formed cells at 50 % SOC.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

CHANNELS = 256
POLL_S = 1.0
PYTHON = sys.executable
STEPS_RECIPE = """
name = "bench-steps"
version = "1"
chemistry = "NCM"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = 60.0
[record]
every_s = 10
every_mv = 5.0
[[steps]]
kind = "tag"
tag = "cycle"
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { duration = "60s", voltage_v = 4.2 }
[[steps]]
id = "rest1"
kind = "rest"
until = { duration = "30s" }
[[steps]]
id = "discharge"
kind = "discharge"
current = "1C"
until = { duration = "60s", voltage_v = 2.5 }
[[steps]]
id = "rest2"
kind = "rest"
until = { duration = "30s" }
[[steps]]
kind = "loop"
loop_to = "cycle"
cycle_count = 200
"""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for_ports(ports: list[int], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not open port {port}") from None
                time.sleep(0.2)


def site_toml(n_cabinets: int, ports: list[int], db: Path, variant: str, mqtt: str) -> str:
    formed = variant == "steps"
    lines = [
        'site = "bench"',
        'line = "scale"',
        f'[database]\npath = "{db}"',
        "[clock]\nscale = 1.0",
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\nenabled = "{mqtt}"\ninterval_s = 1.0',
    ]
    for i, port in enumerate(ports[:n_cabinets], start=1):
        lines.append(
            f'[[cabinets]]\nname = "cab{i}"\nresource = "TCPIP0::127.0.0.1::{port}::SOCKET"\nchannels = {CHANNELS}\n'
            f"poll_interval_s = {POLL_S}\ntimeout_s = 2.0\nwatchdog_s = 30.0\n"
            f'[cabinets.sim]\npreset = "ncm21700-5ah"\nseed = {i}\nport = {port}\nformed = {str(formed).lower()}\n'
            f"initial_soc = {0.5 if formed else 0.0}"
        )
    return "\n".join(lines) + "\n"


def cells_csv(path: Path, cabinet: int) -> None:
    rows = ["cell_id,lot,nominal_capacity_ah"]
    rows += [f"S{cabinet:02d}-{ch:04d},LOT-S{cabinet:02d},5.0" for ch in range(1, CHANNELS + 1)]
    path.write_text("\n".join(rows) + "\n")


# -- /proc ----------------------------------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem_gib:.0f} GiB, Python {platform.python_version()}"


# -- the parts as processes ---------------------------------------------------------------------------------------
def formation(*args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PYTHON, "-m", "formation", *args], **kw)


def py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy (collapsed stacks, threads on CPU only) for ``seconds``, into ``out``."""
    exe = Path(PYTHON).with_name("py-spy")
    args = [str(exe), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    args += ["--format", "raw", "--nonblocking", "--gil", "--output", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def launch_all(site: Path, tmp: Path, n: int, recipe: str) -> None:
    """Queue one job per cabinet (every channel) with `formation run launch`, four at a time."""

    def one(i: int) -> None:
        cells = tmp / f"cells{i}.csv"
        cells_csv(cells, i)
        args = ["run", "launch", recipe, "--site", str(site), "--cabinet", f"cab{i}", "--channels", f"1-{CHANNELS}"]
        out = subprocess.run([PYTHON, "-m", "formation", *args, "--cells", str(cells)], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"launch on cab{i} failed: {out.stderr.strip() or out.stdout.strip()}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(1, n + 1)))


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Until ``text`` appears in the file ``proc`` writes (RuntimeError with the file if it exits first)."""
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} from the daemon: {path.read_text()[-2000:]}")
        time.sleep(0.2)


def db_scalar(db: Path, sql: str) -> Any:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def wait_running(db: Path, n: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while db_scalar(db, "SELECT count(*) FROM job WHERE state = 'running'") < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {n} jobs running after {timeout_s:.0f} s")
        time.sleep(0.5)


# -- figures ----------------------------------------------------------------------------------------------------------
def poll_figures(poll_log: Path, t0: float, t1: float) -> dict[str, Any]:
    """Per-cabinet poll wall time p50 / p99 and missed polls within [t0, t1] (unix seconds of the poll's end)."""
    rows = [r.split(",") for r in poll_log.read_text().splitlines()[1:] if r]
    per: dict[str, list[tuple[float, float]]] = {}
    gc_pauses: list[tuple[int, float]] = []  # (generation, pause s): the daemon logs its collections as "(gc)"
    for cab, end_s, wall_s, late_s, records, _ends in rows:
        if not t0 <= float(end_s) <= t1:
            continue
        if cab == "(gc)":
            gc_pauses.append((int(records), float(wall_s)))
        else:
            per.setdefault(cab, []).append((float(wall_s), float(late_s)))
    full = [p for g, p in gc_pauses if g == 2]
    p50 = {c: float(np.percentile([w for w, _ in v], 50)) * 1e3 for c, v in per.items()}
    p99 = {c: float(np.percentile([w for w, _ in v], 99)) * 1e3 for c, v in per.items()}
    late = np.array([lt for v in per.values() for _, lt in v])
    return {
        "polls": sum(len(v) for v in per.values()),
        "polls_per_cabinet_min": min(len(v) for v in per.values()),
        "poll_p50_ms_median": float(np.median(list(p50.values()))),
        "poll_p50_ms_max": max(p50.values()),
        "poll_p99_ms_median": float(np.median(list(p99.values()))),
        "poll_p99_ms_max": max(p99.values()),
        "late_p99_ms": float(np.percentile(late, 99)) * 1e3,
        "late_max_ms": float(late.max()) * 1e3,
        "missed_polls": int((late > POLL_S).sum()),
        "gc_full_collections": len(full),
        "gc_full_pause_max_ms": max(full, default=0.0) * 1e3,
        "gc_pause_max_ms": max((p for _, p in gc_pauses), default=0.0) * 1e3,
    }


def transition_delays(db: Path, t0: float, t1: float) -> np.ndarray:
    """Seconds from each step's end record to the next step's start record, for ends within [t0, t1]."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = np.array(
            con.execute("SELECT run_id, step_index, ts_s FROM sample ORDER BY run_id, rec").fetchall(), dtype=float
        )
    finally:
        con.close()
    if not len(rows):
        return np.empty(0)
    same_run = rows[1:, 0] == rows[:-1, 0]
    next_step = rows[1:, 1] == rows[:-1, 1] + 1
    change = same_run & next_step
    end_ts, start_ts = rows[:-1, 2][change], rows[1:, 2][change]
    keep = (end_ts >= t0) & (end_ts <= t1)
    return start_ts[keep] - end_ts[keep]


def plain_loop(resource: str, channels: int, seconds: float) -> None:
    """A script written with pyvisa alone: per channel, voltage, current and status; paced at one round a second."""
    import pyvisa

    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=5000)
    rounds, walls = 0, []
    c0 = time.process_time()
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        readings = []
        for ch in range(1, channels + 1):
            cell = 1000 + ch
            v = float(inst.query(f"MEAS:CELL:VOLT? (@{cell})"))
            a = float(inst.query(f"MEAS:CELL:CURR? (@{cell})"))
            st = int(inst.query(f"STAT:CELL:REP? (@{cell})"))
            readings.append((v, a, st))
        rounds += 1
        walls.append(time.monotonic() - t0)
        time.sleep(max(0.0, POLL_S - walls[-1]))
    cpu = time.process_time() - c0
    inst.close()
    w = np.array(walls) * 1e3
    print(
        json.dumps(
            {
                "rounds": rounds,
                "cpu_s": cpu,
                "round_p50_ms": float(np.median(w)),
                "round_p99_ms": float(np.percentile(w, 99)),
            }
        )
    )


def run_config(n: int, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One size and variant: plant, daemon, jobs, warm-up, window, figures."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        db, site, poll_log = tmp / "line.db", tmp / "site.toml", tmp / "polls.csv"
        ports = free_ports(n)
        site.write_text(site_toml(n, ports, db, variant, args.mqtt))
        recipe = "ncm21700-formation" if variant == "long" else str(tmp / "steps.toml")
        (tmp / "steps.toml").write_text(STEPS_RECIPE)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        sim = formation("sim", "serve", "--site", str(site), **quiet)
        daemon = None
        try:
            wait_for_ports(ports)
            log = open(tmp / "daemon.log", "w")  # noqa: SIM115 - closed below
            daemon = formation("serve", "--site", str(site), "--poll-log", str(poll_log), stdout=log, stderr=log)
            wait_for_text(tmp / "daemon.log", "serving", daemon)
            launch_all(site, tmp, n, recipe)
            wait_running(db, n)
            time.sleep(args.warmup_s)
            load0 = os.getloadavg()
            t0, c0, s0 = time.time(), cpu_s(daemon.pid), cpu_s(sim.pid)
            rows0 = db_scalar(db, "SELECT coalesce(max(id), 0) FROM sample")
            rss = []
            spy = (
                py_spy(daemon.pid, args.profile / f"daemon-{n}x{CHANNELS}-{variant}.txt", args.window_s)
                if args.profile
                else None
            )
            while time.time() - t0 < args.window_s:
                time.sleep(min(5.0, args.window_s - (time.time() - t0)))
                rss.append(rss_mib(daemon.pid))
            t1, c1, s1 = time.time(), cpu_s(daemon.pid), cpu_s(sim.pid)
            if spy is not None:
                spy.wait(timeout=60)
            rows1 = db_scalar(db, "SELECT coalesce(max(id), 0) FROM sample")
            load1 = os.getloadavg()
            out: dict[str, Any] = {
                "channels": n * CHANNELS,
                "cabinets": n,
                "variant": variant,
                "window_s": t1 - t0,
                "load_avg_1min_start_end": [load0[0], load1[0]],
                "daemon_cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
                "sim_cpu_pct": 100.0 * (s1 - s0) / (t1 - t0),
                "rss_mib_peak": max(rss),
                "ingest_rows_per_s": (rows1 - rows0) / (t1 - t0),
            }
            out.update(poll_figures(poll_log, t0, t1))
            out["daemon_channels_per_cpu_s"] = out["polls"] * CHANNELS / max(c1 - c0, 1e-9)
            if n == 1 and args.plain_s > 0 and variant == args.variants[0]:
                res = subprocess.run(
                    [PYTHON, __file__, "--plain-loop", f"TCPIP0::127.0.0.1::{ports[0]}::SOCKET"],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "BENCH_PLAIN_S": str(args.plain_s)},
                )
                if res.returncode != 0:
                    raise RuntimeError(f"plain loop failed: {res.stderr.strip()[-2000:]}")
                plain = json.loads(res.stdout.strip().splitlines()[-1])
                plain["channels_per_cpu_s"] = plain["rounds"] * CHANNELS / plain["cpu_s"]
                out["plain_loop"] = plain
                out["ratio_channels_per_cpu_s"] = out["daemon_channels_per_cpu_s"] / plain["channels_per_cpu_s"]
        finally:
            if daemon is not None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=120)
            sim.terminate()
            sim.wait(timeout=30)
        delays = transition_delays(db, t0, t1)
        out["transitions"] = len(delays)
        if len(delays):
            out["transition_p50_s"] = float(np.percentile(delays, 50))
            out["transition_p99_s"] = float(np.percentile(delays, 99))
            out["transition_max_s"] = float(delays.max())
        out["jobs_failed"] = db_scalar(db, "SELECT count(*) FROM job WHERE state IN ('faulted', 'aborted')")
        out["alarms_critical"] = db_scalar(db, "SELECT count(*) FROM alarm WHERE severity = 'critical'")
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16", help="cabinets of 256 channels, comma-separated")
    parser.add_argument("--variants", default="long,steps")
    parser.add_argument("--window-s", type=float, default=600.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--plain-s", type=float, default=60.0, help="seconds of the plain pyvisa loop (0: none)")
    parser.add_argument("--mqtt", default="auto", help="the site's mqtt.enabled: auto | yes | no")
    parser.add_argument("--profile", type=Path, help="sample the daemon with py-spy over the window (raw stacks here)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--plain-loop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        plain_loop(args.plain_loop, CHANNELS, float(os.environ.get("BENCH_PLAIN_S", "60")))
        return
    args.variants = args.variants.split(",")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for variant in args.variants:
        for n in (int(s) for s in args.sizes.split(",")):
            res = run_config(n, variant, args)
            results.append(res)
            print(json.dumps(res), flush=True)
            if args.json:
                args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
