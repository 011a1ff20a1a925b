"""The line as a service: queued jobs started by a Line within one poll, SIGTERM leaving cells running for the
next daemon, two daemons sharing one database and two cabinets, and `formation serve` as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig, SiteConfig
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.program import CellState
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, queue_job
from formation.orchestrator.line import MIN_IDLE_POLL_S, Line
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import JobState
from formation.store import Store

SCALE = 2000.0
RECIPE = """
name = "serve-test"
version = "1"
chemistry = "NCM"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.5
[record]
every_s = 30
[[steps]]
id = "charge"
kind = "charge"
current = "1C"
until = { duration = "20min", voltage_v = 4.2 }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "20min" }
"""


def recipe() -> Recipe:
    return loads_recipe(RECIPE, "toml", source="serve-test.toml")


def cells(prefix: str, n: int = 4) -> list[CellEntry]:
    return [CellEntry(f"{prefix}-{i}", f"LOT-{prefix}", 5.0) for i in range(1, n + 1)]


@asynccontextmanager
async def plant(names: tuple[str, ...] = ("cab1",)) -> AsyncIterator[tuple[SimulatedPlant, SiteConfig, ScaledClock]]:
    clock = ScaledClock(SCALE)
    specs = [CabinetSpec(name=n, channels=8, preset="ncm21700-5ah", seed=4, port=0, formed=True) for n in names]
    async with SimulatedPlant(specs, clock) as p:
        cabinets = tuple(
            CabinetConfig(name=n, resource=p.cabinets[n].resource, channels=8, poll_interval_s=10.0, timeout_s=2.0)
            for n in names
        )
        yield p, SiteConfig(cabinets=cabinets, clock_scale=SCALE), clock


def queue(site: SiteConfig, store: Store, clock: ScaledClock, cabinet: str, prefix: str) -> int:
    cab = site.cabinet(cabinet)
    r = recipe()
    return queue_job(cab, r, assign_cells(range(1, 5), cells(prefix), r), store, clock)


async def until(condition: Callable[[], bool], wall_s: float) -> bool:
    deadline = time.monotonic() + wall_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def state(store: Store, job_id: int) -> str:
    job = store.get_job(job_id)
    assert job is not None
    return job.state


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'line.db'}")
    s.create_schema()
    yield s
    s.close()


async def test_a_queued_job_starts_within_one_poll_and_runs_to_done(store: Store) -> None:
    async with plant() as (_, site, clock), Line(site, store, clock, lease_s=6.0) as line:
        assert await until(lambda: line.slots["cab1"].leased, 5.0)
        t0 = time.monotonic()
        job_id = queue(site, store, clock, "cab1", "Q")
        assert await until(lambda: state(store, job_id) == JobState.RUNNING, 5.0)
        # Within one look at the queue (the poll interval, 5 ms of wall here, floored at MIN_IDLE_POLL_S), plus
        # the database round trips and this test's own 20 ms polling.
        assert time.monotonic() - t0 <= MIN_IDLE_POLL_S + 0.5
        assert await until(lambda: state(store, job_id) == JobState.DONE, 60.0)
        job = store.get_job(job_id)
        assert job is not None and job.owner == line.owner
    results = store.step_results(job_id=job_id)
    assert len(results) == 4 * 2 and set(results["end_reason"]) <= {"duration", "voltage"}
    assert store.leases() == []  # released on exit


async def test_a_stopped_daemon_leaves_the_cells_running_and_the_next_one_reattaches(store: Store) -> None:
    async with plant() as (p, site, clock):
        job_id = queue(site, store, clock, "cab1", "S")
        async with Line(site, store, clock, lease_s=6.0) as first:
            assert await until(lambda: bool(store.sample_count(job_id)), 10.0)
            first.stop()
        assert state(store, job_id) == JobState.INTERRUPTED
        assert store.leases() == []
        async with ScpiSession(p.cabinets["cab1"].resource, timeout_s=2.0) as session:
            status = await Bt2200Cycler(session).status([1, 2, 3, 4])
        assert (status == CellState.RUNNING).all()  # the daemon went, the cells did not stop
        async with Line(site, store, clock, lease_s=6.0) as second:
            assert await until(lambda: second.slots["cab1"].jobs_done == [job_id], 60.0)
        assert state(store, job_id) == JobState.DONE
    results = store.step_results(job_id=job_id)
    assert len(results) == 4 * 2  # no step twice
    for run in store.job_runs(job_id):
        assert run.id is not None
        samples = store.samples(run.id)
        assert samples["rec"].is_unique and samples["ts_s"].is_monotonic_increasing
        for _, step in samples.groupby("step_index"):  # between steps a cell waits for the host: not a gap
            assert np.diff(step["ts_s"].to_numpy()).max() <= 30.0 + 1e-6  # none beyond the record interval


async def test_an_at_launch_fires_once_at_its_time_also_across_a_restart(store: Store) -> None:
    async with plant() as (_, site, clock):
        due_s = clock.now() + 3600.0  # an hour of clock time: 1.8 s of wall at x2000
        job_id = queue(site, store, clock, "cab1", "A")
        store.queue_job_start(job_id, due_s)
        async with Line(site, store, clock, lease_s=6.0) as first:
            assert await until(lambda: first.slots["cab1"].leased, 5.0)
            await asyncio.sleep(0.3)
            assert state(store, job_id) == JobState.QUEUED and clock.now() < due_s  # not before its time
        # The daemon restarts before the job is due: the queue row is all there is, and it still fires once.
        async with Line(site, store, clock, lease_s=6.0) as second:
            assert await until(lambda: state(store, job_id) != JobState.QUEUED, 10.0)
            job = store.get_job(job_id)
            assert job is not None and job.started_s >= due_s
            assert await until(lambda: second.slots["cab1"].jobs_done == [job_id], 60.0)
    assert state(store, job_id) == JobState.DONE
    assert len(store.step_results(job_id=job_id)) == 4 * 2  # ran once
    assert store.claim_job("cab1", "again", clock.now()) is None


@pytest.mark.services
@pytest.mark.e2e
def test_two_daemons_on_one_postgres_split_two_cabinets_and_a_killed_one_hands_over(
    postgres_url: str, tmp_path: Path
) -> None:
    ports = (_free_port(), _free_port())
    site = tmp_path / "site.toml"
    cabinets = "".join(
        f'[[cabinets]]\nname = "cab{i}"\nresource = "TCPIP0::127.0.0.1::{port}::SOCKET"\nchannels = 8\n'
        f'poll_interval_s = 10\n[cabinets.sim]\npreset = "ncm21700-5ah"\nseed = {i}\nport = {port}\nformed = true\n'
        for i, port in enumerate(ports, start=1)
    )
    site.write_text(f'[database]\nurl = "{postgres_url}"\n[clock]\nscale = 1000\n{cabinets}')
    (tmp_path / "r.toml").write_text(RECIPE.replace('"20min"', '"90min"'))  # running when the daemon dies
    for n in (1, 2):
        rows = "".join(f"K{n}-{i},L,5\n" for i in range(4))
        (tmp_path / f"cells{n}.csv").write_text("cell_id,lot,nominal_capacity_ah\n" + rows)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "formation", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(proc)
        return proc

    try:
        start("sim", "serve", "--site", str(site))
        for port in ports:
            _wait_port(port)
        with Store(postgres_url) as store:
            store.create_schema()  # before the daemons, which would otherwise race to create it
            a = start("serve", "--site", str(site), "--lease-s", "6")
            assert _wait(lambda: {lease.cabinet for lease in store.leases()} == {"cab1", "cab2"}, 30.0)
            b = start("serve", "--site", str(site), "--lease-s", "6")
            time.sleep(1.0)
            holders = {lease.cabinet: lease.owner for lease in store.leases()}
            assert len(set(holders.values())) == 1  # the first daemon drives both; the second waits, driving none
            for n in (1, 2):
                cells = str(tmp_path / f"cells{n}.csv")
                done = formation("run", "launch", str(tmp_path / "r.toml"), "--site", str(site), "--cabinet",
                                 f"cab{n}", "--channels", "1-4", "--cells", cells, env=env)  # fmt: skip
                assert done.returncode == 0, done.stderr
            assert _wait(lambda: all(state(store, j) == JobState.RUNNING for j in (1, 2)), 30.0)
            a.kill()  # kill -9: no release, no goodbye
            a.wait()
            # The second daemon takes both cabinets (a dead holder on this host at once, else at expiry) and
            # re-attaches both jobs, which then run to their ends.
            assert _wait(lambda: all(state(store, j) == JobState.DONE for j in (1, 2)), 90.0)
            owners = {lease.owner for lease in store.leases()}
            assert len(owners) == 1 and owners != set(holders.values())
            reattached = [a for a in store.alarms() if a.code == "reattached"]
            assert sorted(a.job_id for a in reattached) == [1, 2]
            for job_id in (1, 2):
                assert len(store.step_results(job_id=job_id)) == 4 * 2  # no step twice
        b.send_signal(signal.SIGTERM)
        out, _ = b.communicate(timeout=30.0)
        assert b.returncode == 0 and "re-attached" in out, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate()
            print(proc.args[3:5], out[-3000:])  # shown when the test fails


def _wait(condition: Callable[[], bool], wall_s: float) -> bool:
    deadline = time.monotonic() + wall_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def formation(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "formation", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def main_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from formation.cli.app import main

    assert main(args) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return line


def test_bad_input_to_serve_and_queued_launch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from formation.cli.app import main

    empty = tmp_path / "empty.toml"
    empty.write_text('site = "x"\n')
    bad_db = tmp_path / "site.toml"
    bad_db.write_text(
        '[database]\nurl = "postgresql+psycopg://nobody@127.0.0.1:1/none"\n'
        '[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::9::SOCKET"\nchannels = 8\n'
    )
    silent = tmp_path / "silent.toml"
    silent.write_text(
        '[database]\npath = "line.db"\n'
        '[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::9::SOCKET"\nchannels = 8\ntimeout_s = 0.5\n'
        '[[cabinets]]\nname = "cab2"\nresource = "TCPIP0::127.0.0.1::19::SOCKET"\nchannels = 8\ntimeout_s = 0.5\n'
    )
    cases = [
        (["serve", "--site", str(silent)], "cabinet cab1 (TCPIP0::127.0.0.1::9::SOCKET) does not answer"),
        (["serve", "--site", str(empty)], "lists no cabinet"),
        (["serve", "--site", str(bad_db)], "database"),
        (["serve", "--site", str(bad_db), "--lease-s", "0.5"], "--lease-s"),
        (["run", "launch", "demo-ncm21700", "--site", str(bad_db), "--cabinet", "cab1", "--channels", "1",
          "--cells", "c.csv", "--at", "tomorrow"], None),
    ]  # fmt: skip
    for args, shown in cases:
        code = main(args)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2, (args, lines)
        assert len(lines) == 1, lines
        if shown is not None:
            assert shown in lines[0], lines[0]
    assert "cabinet cab2" in main_line(["serve", "--site", str(silent)], capsys)  # every silent cabinet named


@pytest.mark.e2e
def test_formation_serve_starts_a_queued_launch_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    site = tmp_path / "site.toml"
    site.write_text(
        f'[database]\npath = "line.db"\n[clock]\nscale = {SCALE}\n'
        f'[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::{port}::SOCKET"\nchannels = 8\n'
        "poll_interval_s = 10\n"
        f'[cabinets.sim]\npreset = "ncm21700-5ah"\nseed = 2\nport = {port}\nformed = true\n'
    )
    (tmp_path / "serve-test.toml").write_text(RECIPE)
    (tmp_path / "cells.csv").write_text("cell_id,lot,nominal_capacity_ah\n" + "".join(f"C{i},L,5\n" for i in range(4)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen([sys.executable, "-m", "formation", "sim", "serve", "--site", str(site)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    daemon = None
    try:
        _wait_port(port)
        daemon = subprocess.Popen([sys.executable, "-m", "formation", "serve", "--site", str(site)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        launched = formation("run", "launch", str(tmp_path / "serve-test.toml"), "--site", str(site), "--cabinet",
                             "cab1", "--channels", "1-4", "--cells", str(tmp_path / "cells.csv"), env=env)  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        assert "job 1 queued" in launched.stdout
        with Store(f"sqlite:///{tmp_path / 'line.db'}") as store:
            deadline = time.monotonic() + 60.0
            while state(store, 1) != JobState.DONE and time.monotonic() < deadline:
                time.sleep(0.2)
            assert state(store, 1) == JobState.DONE
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=30.0)
        assert daemon.returncode == 0, out
        assert "job 1 started" in out and "job 1 done" in out and "stopped" in out
    finally:
        for proc in (daemon, sim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"simulator did not come up on {port}")


def test_run_launch_queues_with_its_start_time_and_abort_of_a_queued_job_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime

    from formation.cli.app import main

    site = tmp_path / "site.toml"
    site.write_text(
        '[database]\npath = "line.db"\n'
        '[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::9::SOCKET"\nchannels = 8\n'
    )
    (tmp_path / "r.toml").write_text(RECIPE)
    (tmp_path / "cells.csv").write_text("cell_id,lot,nominal_capacity_ah\nQ1,L,5\nQ2,L,5\n")
    at = datetime.fromtimestamp(time.time() + 7200).strftime("%Y-%m-%d %H:%M")
    args = ["run", "launch", str(tmp_path / "r.toml"), "--site", str(site), "--cabinet", "cab1", "--channels", "1-2"]
    assert main([*args, "--cells", str(tmp_path / "cells.csv"), "--at", at]) == 0
    out = capsys.readouterr().out
    assert "job 1 queued" in out and f"not before {at}" in out
    with Store(f"sqlite:///{tmp_path / 'line.db'}") as store:
        job = store.get_job(1)
        assert job is not None and job.state == JobState.QUEUED
        assert job.start_after_s == pytest.approx(datetime.fromisoformat(at).timestamp())
    assert main(["status", "--database", "--site", str(site)]) == 0
    shown = capsys.readouterr().out
    assert "not driven" in shown and "queued" in shown and "2 pending" in shown
    assert main(["status", "--database", "--site", str(site), "--mqtt", "mqtt://127.0.0.1:1883"]) == 2
    assert main(["status", "--db", "sqlite:///x.db"]) == 2
    assert len([line for line in capsys.readouterr().err.splitlines() if line.strip()]) == 2
    # Aborting it needs no instrument (this one's port answers nothing): it never started.
    assert main(["run", "abort", "1", "--site", str(site)]) == 0
    assert "aborted before it started (2 runs)" in capsys.readouterr().out
    with Store(f"sqlite:///{tmp_path / 'line.db'}") as store:
        assert state(store, 1) == JobState.ABORTED
        assert {r.state for r in store.job_runs(1)} == {"aborted"}
        assert all(r.ended_s is not None for r in store.job_runs(1))
    assert main([*args, "--cells", str(tmp_path / "cells.csv"), "--at", at, "--foreground"]) == 2
    assert "--at" in capsys.readouterr().err


async def test_health_checks_find_a_silent_or_erroring_idle_cabinet(store: Store) -> None:
    async with plant() as (_, site, clock):
        silent = CabinetConfig(name="cab9", resource="TCPIP0::127.0.0.1::9::SOCKET", channels=8, timeout_s=0.5)
        site = SiteConfig(cabinets=(*site.cabinets, silent), clock_scale=SCALE)
        async with Line(site, store, clock, lease_s=6.0, health_every_s=3600.0) as line:
            cabinet = site.cabinets[0]
            assert await until(lambda: line.slots["cab1"].leased and line.slots["cab9"].leased, 5.0)
            assert await line.check_health(cabinet) is None  # idle and well
            async with ScpiSession(cabinet.resource, timeout_s=2.0) as session:
                await session.write("BOGUS:COMMAND")  # leaves -113 in the instrument's error queue
            problem = await line.check_health(cabinet)
            assert problem is not None and "-113" in problem
            assert await line.check_health(cabinet) is None  # the check drained it
            problem = await line.check_health(silent)
            assert problem is not None and problem.startswith("does not answer")
    alarms = {a.cabinet: a.message for a in store.alarms() if a.code == "health_check"}
    assert set(alarms) == {"cab1", "cab9"} and "-113" in alarms["cab1"]
