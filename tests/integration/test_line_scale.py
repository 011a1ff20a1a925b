"""What bench/bench_scale.py relies on and changed: the daemon's per-poll hook and --poll-log, polls paced at a fixed
rate with late and missed polls counted, one compiled step shared by the channels that start it together, and the
one-column job-state read every poll does (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.cli.serve import PollLog
from formation.clock import ScaledClock
from formation.config import CabinetConfig, SiteConfig
from formation.instruments.bt2200 import Bt2200Cycler
from formation.instruments.scpi import ScpiSession
from formation.orchestrator.cabinet import CabinetSupervisor, PollStats
from formation.orchestrator.compile import compile_step
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, queue_job
from formation.orchestrator.line import Line
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.states import JobState
from formation.store import Store

SCALE = 2000.0
RECIPE = """
name = "scale-hooks"
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
current = "1A"
until = { duration = "10min", voltage_v = 4.2 }
[[steps]]
id = "rest"
kind = "rest"
until = { duration = "10min" }
"""


def recipe() -> Recipe:
    return loads_recipe(RECIPE, "toml", source="scale-hooks.toml")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'l.db'}"
    s = Store(url)
    s.create_schema()
    yield s
    s.close()


async def until(condition: Callable[[], bool], wall_s: float) -> bool:
    deadline = time.monotonic() + wall_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_job_state_reads_the_one_column_a_poll_needs(store: Store) -> None:
    clock = ScaledClock(SCALE)
    cab = CabinetConfig(name="cab1", resource="TCPIP0::127.0.0.1::1::SOCKET", channels=8)
    r = recipe()
    job_id = queue_job(
        cab, r, assign_cells(range(1, 3), [CellEntry("J-1", "L", 5.0), CellEntry("J-2", "L", 5.0)], r), store, clock
    )
    assert store.job_state(job_id) == JobState.QUEUED
    assert store.claim_job("cab1", "me", clock.now()) == job_id
    assert store.job_state(job_id) == JobState.RUNNING
    store.set_job_state(job_id, JobState.ABORTING)
    job = store.get_job(job_id)
    assert job is not None and store.job_state(job_id) == JobState.ABORTING == job.state
    assert store.job_state(job_id + 1000) is None


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_the_line_reports_every_poll_of_every_cabinet_with_its_lateness(store: Store) -> None:
    clock = ScaledClock(SCALE)
    specs = [CabinetSpec(name=n, channels=4, preset="ncm21700-5ah", seed=2, port=0, formed=True) for n in ("c1", "c2")]
    polls: list[tuple[str, PollStats]] = []
    async with SimulatedPlant(specs, clock) as plant:
        cabinets = tuple(
            CabinetConfig(name=n, resource=plant.cabinets[n].resource, channels=4, poll_interval_s=100.0)
            for n in ("c1", "c2")
        )
        site = SiteConfig(cabinets=cabinets, clock_scale=SCALE)
        r = recipe()
        jobs = [
            queue_job(
                cab,
                r,
                assign_cells(range(1, 5), [CellEntry(f"{cab.name}-{i}", "L", 5.0) for i in range(4)], r),
                store,
                clock,
            )
            for cab in cabinets
        ]
        async with Line(site, store, clock, lease_s=6.0, on_poll=lambda name, s: polls.append((name, s))) as line:
            done = await until(lambda: all(store.job_state(j) == JobState.DONE for j in jobs), 60.0)
            assert done, [line.slots[c.name].last_error for c in cabinets]
    for name in ("c1", "c2"):
        mine = [s for n, s in polls if n == name]
        assert len(mine) >= 5  # 20 clock minutes at a 100 s poll: a dozen polls
        assert sum(s.records for s in mine) >= 4 * 2 * 2  # each cell's start and end records of both steps at least
        assert sum(s.step_ends for s in mine) == 4 * 2
        assert all(s.wall_s > 0.0 and s.late_s >= 0.0 for s in mine)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_a_stalled_loop_makes_one_poll_late_and_missed_and_channels_share_their_compiled_step(
    store: Store,
) -> None:
    clock = ScaledClock(SCALE)
    spec = CabinetSpec(name="cab1", channels=4, preset="ncm21700-5ah", seed=3, port=0, formed=True)
    seen: list[PollStats] = []
    stalled = False

    def on_cycle(stats: PollStats) -> None:
        nonlocal stalled
        seen.append(stats)
        if len(seen) == 3 and not stalled:
            stalled = True
            time.sleep(0.5)  # the whole event loop stalls for five poll intervals (0.1 s of wall each)

    async with SimulatedPlant([spec], clock) as plant:
        r = recipe()
        cells = [CellEntry("S-1", "L", 5.0), CellEntry("S-2", "L", 5.0), CellEntry("S-3", "L", 4.8)]
        async with (
            ScpiSession(plant.cabinets["cab1"].resource, timeout_s=2.0) as session,
            CabinetSupervisor("cab1", Bt2200Cycler(session), store, clock, poll_interval_s=200.0, n_channels=4) as sup,
        ):
            await sup.launch(r, assign_cells(range(1, 4), cells, r))
            first, second, third = sup.runs
            assert first.compiled is second.compiled  # compiled once for both 5 Ah cells
            assert third.compiled is not first.compiled
            assert third.compiled == compile_step(r.steps[0], r, 4.8)
            assert first.compiled == compile_step(r.steps[0], r, 5.0)
            await sup.run_until_done(on_cycle)
            # Counted once (more only if the shared machine stalls this process again by itself).
            assert sup.pacer is not None and sup.pacer.missed >= 1
    assert seen[3].late_s > 0.4  # the poll after the stall started that late
    assert all(r.state == "done" for r in sup.runs)


def test_poll_log_writes_a_header_then_one_line_per_poll(tmp_path: Path) -> None:
    path = tmp_path / "polls.csv"
    with PollLog(path) as log:
        log.write("cab1", PollStats(records=12, step_ends=1, wall_s=0.0123, late_s=0.002))
        log.write("cab2", PollStats(records=0, step_ends=0, wall_s=0.001))
    with PollLog(path) as log:  # appended to, header kept once
        log.write("cab1", PollStats(records=3, step_ends=0, wall_s=0.004))
    lines = path.read_text().splitlines()
    assert lines[0] == PollLog.HEADER.strip()
    rows = [r for r in (ln.split(",") for ln in lines[1:]) if r[0] != PollLog.GC_ROW]
    assert [r[0] for r in rows] == ["cab1", "cab2", "cab1"]
    assert [(float(r[2]), float(r[3]), int(r[4]), int(r[5])) for r in rows] == [
        (0.0123, 0.002, 12, 1),
        (0.001, 0.0, 0, 0),
        (0.004, 0.0, 3, 0),
    ]
    assert all(abs(float(r[1]) - time.time()) < 600.0 for r in rows)


def test_poll_log_logs_full_garbage_collections_as_pauses_of_the_process(tmp_path: Path) -> None:
    path = tmp_path / "polls.csv"
    with PollLog(path):
        gc.collect()  # a full collection, as the collector runs one of its own now and then
    gc.collect()  # after the log closed: not logged
    rows = [ln.split(",") for ln in path.read_text().splitlines()[1:]]
    assert len(rows) == 1 and rows[0][0] == PollLog.GC_ROW
    assert 0.0 < float(rows[0][2]) < 10.0 and int(rows[0][4]) == 2 and int(rows[0][5]) >= 0


@pytest.mark.parametrize(
    ("where", "why"),
    [("no-such-folder/polls.csv", "does not exist"), (".", "is a folder")],
)
def test_serve_refuses_a_poll_log_it_cannot_write_in_one_line(
    where: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[database]\npath = "{tmp_path / "x.db"}"\n[[cabinets]]\nname = "cab1"\n'
        'resource = "TCPIP0::127.0.0.1::9::SOCKET"\n'
    )
    capsys.readouterr()
    code = main(["serve", "--site", str(site), "--poll-log", str(tmp_path / where)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "--poll-log" in lines[0] and why in lines[0]
    assert not (tmp_path / "x.db").exists()  # refused before anything was written
