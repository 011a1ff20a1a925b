"""`formation serve`'s Line runs queued ageing jobs: checkpoints are persistent timers, so a daemon stopped mid-plan
and a new one started later take every checkpoint once (none lost, none twice), and the job ends done."""

from __future__ import annotations

import asyncio
from pathlib import Path

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.config import load_site_config
from formation.orchestrator.line import Line
from formation.store import Store
from tests.integration.ageing_support import FAST_PLAN, formed_lot, plant, site_file

SCALE = 3000.0


async def test_a_daemon_stopped_mid_plan_and_a_new_one_take_every_checkpoint_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    formed_lot(url, n=4)
    plan = tmp_path / "plan.toml"
    plan.write_text(FAST_PLAN)
    clock = ScaledClock(SCALE)
    async with plant(clock, cells=4, positions=4) as sim:
        site_path = site_file(tmp_path / "site.toml", url, sim, SCALE)
        tester = sim.tester_resources["t1"]
        assert (
            await asyncio.to_thread(main, ["age", "load", "L1", "--rack", "rack1", "--db", url, "--tester", tester])
            == 0
        )
        start = ["age", "start", "L1", "--plan", str(plan), "--rack", "rack1", "--site", str(site_path)]
        assert await asyncio.to_thread(main, start) == 0  # queued
        site = load_site_config(site_path)
        events: list[str] = []
        with Store(url) as store:
            async with Line(site, store, clock, on_event=events.append) as line:
                for _ in range(400):  # until the second checkpoint (the end of the hot stage) is stored
                    if len(store.taken_checkpoints(1)) >= 2:
                        break
                    await asyncio.sleep(0.02)
                line.stop()
            first = store.taken_checkpoints(1)
            assert first >= {0, 1} and store.ageing_jobs(job_id=1)[0].state == "interrupted"
            assert any("ageing job 1 taken up" in e for e in events)
            # A new daemon: the pending timers come back from their rows; the job runs to its end.
            async with Line(site, store, clock, on_event=events.append) as line:
                for _ in range(1500):
                    if store.ageing_jobs(job_id=1)[0].state == "done":
                        break
                    await asyncio.sleep(0.02)
                line.stop()
            job = store.ageing_jobs(job_id=1)[0]
            readings = store.ageing_readings(job_id=1)
            results = store.ageing_results(job_id=1)
            timers = store.query_frame(__import__("sqlalchemy").text("SELECT id FROM line_timers"))
    assert job.state == "done"
    assert sorted(readings.groupby("k").size().items()) == [(k, 4) for k in range(6)]  # each checkpoint once
    assert len(timers) == 0
    assert results["k_mv_per_day"].notna().all() and results["k_se_mv_per_day"].notna().all()
