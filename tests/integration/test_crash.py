"""Crash acceptance (issue 10): `formation serve` killed with SIGKILL during a CC step, during a DCIR pulse and during
an age step, started again each time, against the same route run twice without a crash on identical cells.

Real processes: one `formation sim serve` with three cabinets whose cells are identical (same preset, same seed),
one daemon for the two cabinets that are never crashed (their difference is the plant's run-to-run jitter at a
scaled clock) and one daemon, on its own database, for the cabinet whose daemon is killed three times.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formation.recipes import loads_recipe
from formation.states import JobState
from formation.store import Store
from formation.store.records import DcirMeasurement, StepDetails

SCALE = 250.0
CELLS = 4
RECIPE = """
name = "crash-route"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.5
[record]
every_s = 30
every_mv = 5.0
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { voltage_v = 4.1, duration = "1h" }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "5min" }
[[steps]]
id = "capacity"
kind = "discharge"
current = "1C"
until = { voltage_v = 3.0, duration = "80min" }
[[steps]]
id = "half"
kind = "charge"
current = "C/2"
until = { duration = "30min" }
[[steps]]
id = "dcir"
kind = "dcir"
rest = "5min"
current = "1C"
duration = "30s"
sample_at = ["1s", "10s", "30s"]
[[steps]]
id = "age"
kind = "age"
duration = "1h"
ocv_at = ["20min", "1h"]
record = { every_s = 600, every_mv = 0 }
"""
#: What a cut of the route must reproduce: the charge and capacity Ah, the DCIR at every pulse time.
TOLERANCE = 0.005


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], bool], wall_s: float, what: str, every_s: float = 0.02) -> None:
    deadline = time.monotonic() + wall_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


def _cabinet(name: str, port: int, sim: bool) -> str:
    text = f'[[cabinets]]\nname = "{name}"\nresource = "TCPIP0::127.0.0.1::{port}::SOCKET"\nchannels = {CELLS}\n'
    text += "poll_interval_s = 10\n"
    if sim:
        text += f'[cabinets.sim]\npreset = "ncm21700-5ah"\nseed = 7\nport = {port}\nformed = true\ninitial_soc = 0.3\n'
    return text


class Route:
    """The processes and files of one test; every process is killed at the end whatever happened."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {name: _free_port() for name in ("base1", "base2", "crash")}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "FORMATION_MQTT_ENABLED": "no"}
        self.procs: list[subprocess.Popen[str]] = []
        head = f"[clock]\nscale = {SCALE}\n"
        (tmp / "sim.toml").write_text(head + "".join(_cabinet(n, p, True) for n, p in self.ports.items()))
        base = "".join(_cabinet(n, self.ports[n], False) for n in ("base1", "base2"))
        (tmp / "base.toml").write_text(f'{head}[database]\npath = "base.db"\n{base}')
        crash = _cabinet("crash", self.ports["crash"], False)
        (tmp / "crash.toml").write_text(f'{head}[database]\npath = "crash.db"\n{crash}')
        (tmp / "route.toml").write_text(RECIPE)

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "formation", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        return proc

    def daemon(self, site: str) -> subprocess.Popen[str]:
        return self.start("serve", "--site", str(self.tmp / site), "--lease-s", "6")

    def launch(self, site: str, cabinet: str, prefix: str) -> None:
        cells = self.tmp / f"{prefix}.csv"
        cells.write_text("cell_id,lot,nominal_capacity_ah\n" + "".join(f"{prefix}-{i},L,5\n" for i in range(CELLS)))
        done = subprocess.run(
            [sys.executable, "-m", "formation", "run", "launch", str(self.tmp / "route.toml"), "--site",
             str(self.tmp / site), "--cabinet", cabinet, "--channels", f"1-{CELLS}", "--cells", str(cells)],
            capture_output=True, text=True, timeout=60, env=self.env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate()
            print(proc.args[3:5], (out or "")[-2000:])  # shown when the test fails


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL: no journal, no release, no goodbye
    proc.wait()


class StepWatch:
    """A diagnostic connection of the test's own to the crash cabinet (the dialect allows several clients): which
    instrument step of its sequence each cell is in (``STAT:CELL:STEP?``), asked in about a millisecond."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
        self.reader = self.sock.makefile("r", encoding="ascii", newline="\n")

    def steps(self) -> list[int]:
        self.sock.sendall(f"STAT:CELL:STEP? (@1001:{1000 + CELLS})\n".encode("ascii"))
        return [int(pair.split(":")[1]) for pair in self.reader.readline().strip().split(",")]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def step_of(store: Store, job_id: int) -> set[int]:
    """The step indexes that stored samples of the job are in right now (the newest of each run)."""
    out = set()
    for run in store.job_runs(job_id):
        samples = store.samples(run.id or 0)
        if len(samples):
            out.add(int(samples["step_index"].iloc[-1]))
    return out


def route_figures(store: Store, job_id: int) -> pd.DataFrame:
    """Per cell (in channel order): charge Ah, capacity Ah and DCIR at each pulse time, from the step results."""
    results = store.step_results(job_id=job_id).sort_values(["channel", "step_index"])
    rows = []
    for channel, steps in results.groupby("channel"):
        by_id = steps.set_index("step_id")
        dcir = StepDetails.from_json(by_id.loc["dcir", "details"]).measurement
        assert isinstance(dcir, DcirMeasurement), by_id.loc["dcir", "details"]
        row = {"channel": channel, "charge_ah": by_id.loc["charge", "ah"], "capacity_ah": -by_id.loc["capacity", "ah"]}
        rows.append(row | {f"dcir_{k}_mohm": v for k, v in dcir.dcir_mohm.items()})
    return pd.DataFrame(rows).set_index("channel")


def check_whole(store: Store, job_id: int, n_steps: int, every_s: dict[int, float]) -> None:
    """Every run done, each step once, and per cell one unbroken series: times strictly increasing (but for the
    end and start records of two instrument steps of one sequence, logged at the same instant), no record twice,
    no gap within a step longer than that step's record interval."""
    job = store.get_job(job_id)
    assert job is not None and job.state == JobState.DONE, job
    results = store.step_results(job_id=job_id)
    assert len(results) == CELLS * n_steps
    for run_id, indexes in results.groupby("run_id")["step_index"]:
        assert sorted(indexes.tolist()) == list(range(n_steps)), (run_id, indexes.tolist())
    for run in store.job_runs(job_id):
        assert run.state == "done", (run.cell_id, run.state, run.end_reason)
        samples = store.samples(run.id or 0, with_sub_step=True)
        assert samples["rec"].is_unique and samples["rec"].is_monotonic_increasing
        dt = np.diff(samples["ts_s"].to_numpy())
        # One instant holds two records only where an instrument step ends and the next one of the same sequence
        # starts (a dcir's rest and its pulse: the end record, then the start record at step time 0).
        handover = (np.diff(samples["sub_step"].to_numpy()) == 1) & (samples["step_time_s"].to_numpy()[1:] == 0)
        bad = np.flatnonzero(~((dt > 0) | (handover & (dt == 0))))
        shown = samples.iloc[bad[0] : bad[0] + 2].to_dict("records") if len(bad) else []
        assert not len(bad), f"{run.cell_id}: times do not strictly increase: {shown}"
        for index, step in samples.groupby("step_index"):
            gap = np.diff(step["ts_s"].to_numpy()).max()
            assert gap <= every_s[int(index)] + 1e-3, (run.cell_id, index, gap)


@pytest.mark.e2e
def test_kill_9_during_a_cc_step_a_dcir_pulse_and_an_age_step_loses_nothing(tmp_path: Path) -> None:
    recipe = loads_recipe(RECIPE, "toml")
    steps = recipe.steps
    # The longest wait between two records of each step (a dcir: its rest's rule; its pulse logs every second).
    every_s = {
        i: max(s.record.every_s, recipe.record.every_s if s.kind == "dcir" else 0.0) for i, s in enumerate(steps)
    }
    route = Route(tmp_path)
    try:
        route.start("sim", "serve", "--site", str(tmp_path / "sim.toml"))
        for port in route.ports.values():
            _wait(lambda p=port: _answers(p), 20.0, f"the simulator on {port}")  # type: ignore[misc]
        for db in ("base.db", "crash.db"):  # before the daemons and launches, which would race to create them
            with Store(f"sqlite:///{tmp_path / db}") as fresh:
                fresh.create_schema()
        route.daemon("base.toml")
        crash = route.daemon("crash.toml")
        route.launch("base.toml", "base1", "A")
        route.launch("base.toml", "base2", "B")
        route.launch("crash.toml", "crash", "C")
        with Store(f"sqlite:///{tmp_path / 'crash.db'}") as store:
            # 1. During the CC charge (step 0): samples of it stored, then SIGKILL and a new daemon at once.
            _wait(lambda: step_of(store, 1) == {0}, 60.0, "the CC charge under way")
            kill9(crash)
            crash = route.daemon("crash.toml")
            # 2. During the DCIR pulse: the cabinet itself says its cells are in instrument step 2 of a sequence.
            _wait(lambda: step_of(store, 1) == {4}, 120.0, "the DCIR step")
            watch = StepWatch(route.ports["crash"])
            try:
                _wait(lambda: 2 in watch.steps(), 30.0, "the pulse", every_s=0.001)  # 30 s of clock: 120 ms
                kill9(crash)
            finally:
                watch.close()
            crash = route.daemon("crash.toml")
            # 3. During the age step.
            _wait(lambda: step_of(store, 1) == {5}, 60.0, "the age step")
            time.sleep(2.0)  # well into it: a record or two and a checkpoint scheduled
            kill9(crash)
            crash = route.daemon("crash.toml")
            _wait(lambda: store.get_job(1) is not None and store.get_job(1).state == JobState.DONE, 120.0, "the end")
            check_whole(store, 1, len(steps), every_s)
            reattached = [a for a in store.alarms(job_id=1) if a.code == "reattached"]
            assert len(reattached) == 3
            crashed = route_figures(store, 1)
        with Store(f"sqlite:///{tmp_path / 'base.db'}") as store:
            _wait(lambda: all(store.get_job(j).state == JobState.DONE for j in (1, 2)), 120.0, "the baselines")
            for job_id in (1, 2):
                check_whole(store, job_id, len(steps), every_s)
            base1, base2 = route_figures(store, 1), route_figures(store, 2)
    finally:
        route.stop_all()
    jitter = (base2 - base1).abs() / base1.abs()
    deviation = (crashed - base1).abs() / base1.abs()
    figures = {"jitter_max": jitter.max().to_dict(), "crash_max": deviation.max().to_dict()}
    print(json.dumps(figures, indent=1))
    (tmp_path / "figures.json").write_text(json.dumps(figures))
    # The plant's own run-to-run spread at this clock scale, measured here: the 0.5 % asked of a crashed run is
    # only meaningful if two runs without a crash agree better than that.
    assert (jitter.max() <= TOLERANCE).all(), f"run-to-run jitter above {TOLERANCE:.1%}: {figures}"
    assert (deviation.max() <= TOLERANCE).all(), figures


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
