"""Rows of the README's fault matrix not covered elsewhere, through the simulator over real TCP and real databases:
one cabinet powered off while another runs; an internal short during a step; the database locked by another
process for a while; PostgreSQL unreachable for a minute (a TCP relay stopped and started); a full disk under the
SQLite file (a 4 MiB tmpfs filled up); the ageing room's tester losing contact on one position. Each asserts the
affected channels' state, the alarm, what the other channels do, what comes back afterwards, and that no sample is
lost (the stored records are one unbroken run of numbers, none doubled)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.config import CabinetConfig
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.bt3562 import scanner_channel
from formation.instruments.program import CellState
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.cabinet.shorts import REST_SETTLE_S
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import RunState
from formation.store import Store
from tests.integration.ageing_support import FAST_PLAN, formed_lot, site_file
from tests.integration.ageing_support import plant as ageing_plant

RECIPE = """
name = "short"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[record]
every_s = 30
every_mv = 5
[[steps]]
id = "c1"
kind = "charge"
current = "C/2"
until = {{ duration = "{charge}", voltage_v = 4.1 }}
[[steps]]
id = "r1"
kind = "rest"
until = {{ duration = "{rest}" }}
"""

#: How long (wall seconds) the PostgreSQL row keeps the database away.
OUTAGE_S = 60.0


def _recipe(charge: str = "2h", rest: str = "30min") -> Recipe:
    return loads_recipe(RECIPE.format(charge=charge, rest=rest), "toml", source="short.toml")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "line.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{db_path}")
    s.create_schema()
    yield s
    s.close()


def _entries(prefix: str, n: int) -> list[CellEntry]:
    return [CellEntry(f"{prefix}-{i:03d}", "LOT-F", 5.0) for i in range(1, n + 1)]


def _no_sample_lost(store: Store, sup: CabinetSupervisor) -> None:
    """The instrument numbers its records across cells: the job's stored records are one run of numbers."""
    assert all(len(store.samples(run.run_id)) > 0 for run in sup.runs)
    every = np.sort(np.concatenate([store.samples(r.run_id)["rec"].to_numpy() for r in sup.runs]))
    assert len(np.unique(every)) == len(every), "a sample was stored twice"
    assert np.array_equal(every, np.arange(every[0], every[0] + len(every))), "a sample was lost"


@pytest.mark.e2e  # ~10 s of wall time: the powered-off cabinet is given up after its reconnect attempts
async def test_one_cabinet_powered_off_while_another_runs(store: Store) -> None:
    clock = ScaledClock(2000.0)
    specs = [CabinetSpec(name=name, channels=2, seed=seed) for name, seed in (("off", 1), ("on", 2))]
    plant = SimulatedPlant(specs, clock)
    await plant.__aenter__()
    try:
        cabs = {
            name: CabinetConfig(
                name=name, resource=plant.cabinets[name].resource, channels=2, timeout_s=0.3, watchdog_s=0.3
            )
            for name in ("off", "on")
        }
        recipe = _recipe("40min", "10min")  # long enough for the powered-off cabinet to be given up
        started = {name: asyncio.Event() for name in cabs}
        jobs = {
            name: asyncio.create_task(
                run_job(
                    cab,
                    recipe,
                    assign_cells(range(1, 3), _entries(name, 2), recipe),
                    store,
                    clock,
                    on_start=lambda s, n=name: started[n].set(),  # type: ignore[misc]
                ),
                name=f"job-{name}",
            )
            for name, cab in cabs.items()
        }
        await asyncio.gather(*(e.wait() for e in started.values()))
        await asyncio.sleep(0.2)
        # Power off: the cabinet stops answering and never comes back.
        await plant.cabinets["off"].__aexit__(None, None, None)
        off = await asyncio.wait_for(jobs["off"], 60)
        on = await asyncio.wait_for(jobs["on"], 120)
    finally:
        plant.cabinets.pop("off", None)
        await plant.__aexit__(None, None, None)
    # The affected channels: faulted for a lost link, the job faulted, a critical alarm.
    assert all(r.state is RunState.FAULTED and r.end_reason == "comm_lost" for r in off.runs)
    assert store.get_job(off.job_id).state == "faulted"
    assert "comm_lost_fault" in [a.code for a in store.alarms(job_id=off.job_id)]
    # The other cabinet's channels carried on to the end, every sample stored once.
    assert all(r.state is RunState.DONE for r in on.runs), [(r.state, r.end_reason) for r in on.runs]
    assert store.get_job(on.job_id).state == "done"
    assert not [a for a in store.alarms(job_id=on.job_id) if a.code.startswith("comm_")]
    _no_sample_lost(store, on)


class Locker:
    """Another process's writer: holds an exclusive lock on the SQLite file for ``hold_s`` wall seconds."""

    def __init__(self, path: Path, hold_s: float) -> None:
        self.path = path
        self.hold_s = hold_s
        self.held = threading.Event()
        self.thread = threading.Thread(target=self._hold, name="sqlite-locker", daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            self.held.set()
            threading.Event().wait(self.hold_s)
            conn.execute("COMMIT")
        finally:
            conn.close()


async def test_a_database_locked_for_a_while_loses_no_sample_and_supervision_goes_on(
    store: Store, db_path: Path
) -> None:
    clock = ScaledClock(2000.0)
    async with SimulatedPlant([CabinetSpec(name="cab", channels=4, seed=3)], clock) as plant:
        cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=20.0)
        recipe = _recipe()
        lockers: list[Locker] = []
        polls_while_locked: list[int] = []

        def lock_midway(sup: CabinetSupervisor) -> None:
            locker = Locker(db_path, hold_s=2.0)  # about 70 clock minutes of the route
            lockers.append(locker)
            locker.thread.start()

        def count(sup: CabinetSupervisor, _stats: object) -> None:
            if lockers and lockers[0].held.is_set() and lockers[0].thread.is_alive():
                polls_while_locked.append(1)

        sup = await run_job(
            cab, recipe, assign_cells(range(1, 5), _entries("db", 4), recipe), store, clock,
            on_start=lock_midway, on_cycle=count,
        )  # fmt: skip
        lockers[0].thread.join(timeout=10)
    assert lockers[0].held.is_set(), "the lock was never taken"
    assert polls_while_locked, "supervision stopped while the database was locked"
    # Every channel finished its recipe; nothing was lost or doubled while the writes waited.
    assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
    assert store.get_job(sup.job_id).state == "done"
    assert len(store.step_results(job_id=sup.job_id)) == 2 * len(sup.runs)
    _no_sample_lost(store, sup)


@pytest.mark.e2e  # the host must poll often enough to see the voltage fall before the instrument's limit trips:
# on a loaded machine the default run's four workers on two cores space the polls out too far (seen here)
async def test_an_internal_short_during_a_step_switches_that_channel_off_and_the_others_go_on(store: Store) -> None:
    """Cell 1 shorts during its charge (5 A against a 2.5 A charge), cell 2 once its rest has settled (2 A): the
    host sees the voltage fall, switches each off with an ``internal_short`` alarm; cells 3 and 4 finish."""
    clock = ScaledClock(1000.0)
    recipe = _recipe("40min", "40min")  # the rest is judged from its 20th minute on
    async with SimulatedPlant([CabinetSpec(name="cab", channels=4, seed=3)], clock) as plant:
        cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=20.0)
        injected: dict[int, str] = {}
        tasks: list[asyncio.Task[None]] = []

        async def inject(command: str) -> None:
            async with ScpiSession(cab.resource, name="injector") as injector:
                await injector.write(command)

        def watch(sup: CabinetSupervisor, _stats: object) -> None:
            one, two = sup.runs[0], sup.runs[1]
            # Early in the charge, so that the host sees it fall before the step's 40 minutes are over (a short
            # injected in its last poll would hit the rest, where the instrument's voltage limit may come first).
            into_s = clock.now() - (one.account.started_s or clock.now())
            charging = one.state is RunState.RUNNING and one.step_index == 0 and into_s < 30 * 60
            if 1 not in injected and charging and one.last_voltage_v > 3.4:
                injected[1] = "charge"
                tasks.append(asyncio.create_task(inject("SIM:FAULT:SHORT 1001,5"), name="short-1"))
            began_s = two.account.started_s
            settled = two.step_index == 1 and began_s is not None and clock.now() - began_s >= REST_SETTLE_S
            if 2 not in injected and settled and one.terminal:
                injected[2] = "rest"
                tasks.append(asyncio.create_task(inject("SIM:FAULT:SHORT 1002,2"), name="short-2"))

        sup = await run_job(
            cab, recipe, assign_cells(range(1, 5), _entries("sh", 4), recipe), store, clock, on_cycle=watch
        )
        await asyncio.gather(*tasks)
        async with ScpiSession(cab.resource) as s:
            status = await Bt2200Cycler(s).status([1, 2, 3, 4])
    assert injected == {1: "charge", 2: "rest"}
    one, two, *others = sup.runs
    # The shorted channels: switched off on the instrument, faulted, one critical alarm each, in the step shorted.
    assert one.state is RunState.FAULTED and one.end_reason == "internal_short"
    assert two.state is RunState.FAULTED and two.end_reason == "internal_short"
    assert list(status[:2]) == [CellState.ABORTED] * 2
    shorts = [a for a in store.alarms(job_id=sup.job_id) if a.code == "internal_short"]
    assert sorted(a.severity for a in shorts) == ["critical", "critical"]
    assert [s.step_index for s in (one, two)] == [0, 1]
    # Caught by the host while the voltage was still inside the recipe window: no instrument limit tripped.
    assert all(recipe.limits.min_voltage_v < r.last_voltage_v < recipe.limits.max_voltage_v for r in (one, two))
    # The other channels carried on to the end of the recipe, with no alarm of their own.
    assert all(r.state is RunState.DONE for r in others), [(r.state, r.end_reason) for r in others]
    assert (
        len(
            store.step_results(job_id=sup.job_id).query(
                "run_id in @ids", local_dict={"ids": [r.run_id for r in others]}
            )
        )
        == 4
    )
    assert store.get_job(sup.job_id).state == "faulted"
    _no_sample_lost(store, sup)


class TcpProxy:
    """A TCP relay to ``target`` on a port of its own, in threads (the event loop's blocking callers cannot stall
    it); ``stop`` closes the port and every relayed connection, as a database host dropping off the network."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Listen (on the same port as before, after a stop) and relay every connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.mark.e2e  # the database is away for a whole minute of wall time
async def test_postgresql_unreachable_for_a_minute_loses_no_sample_and_supervision_goes_on(postgres_url: str) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert url != postgres_url
    store = Store(url)
    store.create_schema()
    clock = ScaledClock(100.0)  # the recipe takes ~90 s of wall time: the outage falls in its middle
    polls = {"during": 0}
    outage: dict[str, float] = {}
    try:
        async with SimulatedPlant([CabinetSpec(name="cab", channels=4, seed=3)], clock) as plant:
            cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=20.0)
            recipe = _recipe("2h", "30min")
            tasks: list[asyncio.Task[None]] = []

            async def away_for_a_minute() -> None:
                await asyncio.sleep(5.0)
                await asyncio.to_thread(proxy.stop)
                outage["from"] = clock.now()
                await asyncio.sleep(OUTAGE_S)
                outage["to"] = clock.now()
                await asyncio.to_thread(proxy.start)

            def count(sup: CabinetSupervisor, _stats: object) -> None:
                if "from" in outage and "to" not in outage:
                    polls["during"] += 1

            sup = await run_job(
                cab, recipe, assign_cells(range(1, 5), _entries("pg", 4), recipe), store, clock,
                on_start=lambda s: tasks.append(asyncio.create_task(away_for_a_minute(), name="pg-outage")),
                on_cycle=count,
            )  # fmt: skip
            await asyncio.gather(*tasks)
        # Supervision went on while the database was away (a poll every 0.2 s of wall time).
        assert polls["during"] > 100, polls
        assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
        assert store.get_job(sup.job_id).state == "done"
        assert len(store.step_results(job_id=sup.job_id)) == 2 * len(sup.runs)
        # The alarms raised while the database was away (writes refused, then the queue full) were stored once it
        # came back, with their own times.
        alarms = {a.code: a for a in store.alarms(job_id=sup.job_id)}
        for code in ("store_refused", "store_backlog"):
            assert code in alarms and outage["from"] < alarms[code].ts_s < outage["to"], (code, alarms, outage)
        # Records timed inside the outage were stored afterwards: none lost, none doubled.
        stored = pd.concat([store.samples(r.run_id) for r in sup.runs])
        assert ((stored["ts_s"] > outage["from"]) & (stored["ts_s"] < outage["to"])).sum() > 0
        _no_sample_lost(store, sup)
    finally:
        store.close()
        proxy.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own (mounting needs root; skipped with the reason where it is refused)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs for the disk-full row (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> int:
    """Write ``path`` until the file system is full; the bytes written."""
    chunk = b"\0" * 65536
    written = 0
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk) or 0
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


@pytest.mark.e2e  # "supervision goes on" counts polls within ~1 s of wall: a loaded run spaced them too far apart
async def test_a_full_disk_under_the_sqlite_file_loses_no_sample_and_supervision_goes_on(small_disk: Path) -> None:
    db = small_disk / "line.db"
    filler = small_disk / "filler"
    clock = ScaledClock(2000.0)
    with Store(f"sqlite:///{db}") as store:
        store.create_schema()
        async with SimulatedPlant([CabinetSpec(name="cab", channels=4, seed=3)], clock) as plant:
            cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=4, poll_interval_s=20.0)
            recipe = _recipe("1h", "20min")
            full: dict[str, float] = {}
            polls = {"during": 0}
            tasks: list[asyncio.Task[None]] = []

            async def fill_then_free() -> None:
                await clock.sleep(1200.0)
                assert _fill(filler) > 0  # 4 MiB into memory: quick, and no worker thread to queue behind
                full["from"] = clock.now()
                await asyncio.sleep(1.0)  # about 33 clock minutes with nowhere to write
                full["to"] = clock.now()
                filler.unlink()

            def count(sup: CabinetSupervisor, _stats: object) -> None:
                if "from" in full and "to" not in full:
                    polls["during"] += 1

            sup = await run_job(
                cab, recipe, assign_cells(range(1, 5), _entries("full", 4), recipe), store, clock,
                on_start=lambda s: tasks.append(asyncio.create_task(fill_then_free(), name="disk-full")),
                on_cycle=count,
            )  # fmt: skip
            await asyncio.gather(*tasks)
        # The disk really refused the writes, and supervision went on meanwhile.
        assert sup.drain.writer is not None and sup.drain.writer.failures > 0
        assert polls["during"] >= 3, polls
        # Every channel finished; the alarm raised when the disk refused writes was stored afterwards, with its time.
        assert all(r.state is RunState.DONE for r in sup.runs), [(r.state, r.end_reason) for r in sup.runs]
        assert store.get_job(sup.job_id).state == "done"
        assert len(store.step_results(job_id=sup.job_id)) == 2 * len(sup.runs)
        refused = [a for a in store.alarms(job_id=sup.job_id) if a.code == "store_refused"]
        assert len(refused) == 1 and full["from"] < refused[0].ts_s < full["to"], (refused, full)
        assert "full" in refused[0].message
        stored = pd.concat([store.samples(r.run_id) for r in sup.runs])
        assert ((stored["ts_s"] > full["from"]) & (stored["ts_s"] < full["to"])).sum() > 0
        _no_sample_lost(store, sup)


async def test_tester_no_contact_gives_the_reading_a_reason_and_an_alarm_and_contact_comes_back(tmp_path: Path) -> None:
    """``SIM:FAULT:CONT`` on position 2's scanner channel from the first checkpoint; cleared once two checkpoints
    have read it without contact: those readings carry the reason and no numbers, each raises an alarm, the other
    positions read normally throughout, and position 2 reads again from the next checkpoint on."""
    url = f"sqlite:///{tmp_path / 'age.db'}"
    cells = formed_lot(url, n=4)
    plan = tmp_path / "plan.toml"
    plan.write_text(FAST_PLAN)
    scale = 5000.0
    async with ageing_plant(ScaledClock(scale), cells=4) as sim:
        site = site_file(tmp_path / "site.toml", url, sim, scale)
        tester = sim.tester_resources["t1"]
        assert (
            await asyncio.to_thread(main, ["age", "load", "L1", "--rack", "rack1", "--db", url, "--tester", tester])
            == 0
        )
        async with ScpiSession(tester, name="injector") as injector:
            await injector.write(f"SIM:FAULT:CONT {scanner_channel(1, 2)}")
        args = ["age", "start", "L1", "--plan", str(plan), "--rack", "rack1", "--site", str(site), "--foreground"]
        ageing = asyncio.create_task(asyncio.to_thread(main, args), name="age-start")

        def bad_so_far() -> int:
            with Store(url) as store:
                readings = store.ageing_readings(job_id=1) if store.ageing_jobs() else None
            return 0 if readings is None else int((readings["reason"] == "no contact").sum())

        while await asyncio.to_thread(bad_so_far) < 2 and not ageing.done():
            await asyncio.sleep(0.02)
        async with ScpiSession(tester, name="injector") as injector:
            await injector.write("SIM:FAULT:CLE")
        assert await ageing == 0
    with Store(url) as store:
        readings = store.ageing_readings(job_id=1)
        job = store.ageing_jobs(job_id=1)[0]
        alarms = [a for a in store.alarms() if a.code.startswith("tester_")]
    checkpoints = 6
    assert job.state == "done"
    # Every checkpoint read every position exactly once: nothing lost, nothing doubled.
    assert len(readings) == checkpoints * 4
    assert not readings.duplicated(["k", "position"]).any()
    bad = readings[readings["reason"].notna()]
    assert set(bad["position"]) == {2} and set(bad["reason"]) == {"no contact"} and bad["ocv_v"].isna().all()
    assert 2 <= len(bad) < checkpoints  # at least the two it waited for, cleared before the end
    # One alarm per checkpoint that read no contact, naming the position.
    assert [a.code for a in alarms] == ["tester_no_contact"] * len(bad)
    assert all(a.severity == "warning" and "2" in a.message for a in alarms)
    # The other positions read normally throughout; position 2 reads again once contact is back.
    good = readings[readings["reason"].isna()]
    assert good["ocv_v"].between(3.3, 3.7).all() and good["acir_mohm"].between(5.0, 60.0).all()
    after = readings[(readings["position"] == 2) & (readings["k"] > bad["k"].max())]
    assert len(after) == checkpoints - 1 - int(bad["k"].max()) and after["reason"].isna().all()
    assert cells[1] in set(readings.loc[readings["position"] == 2, "cell_id"])
