"""An ageing job over real TCP: `formation age start --foreground` follows a plan on a simulated rack in a held
chamber, reads every cell at each checkpoint through the BT3562-dialect tester, and stores K per cell; tester faults
give readings a reason and an alarm; bad input is one line and exit 2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.store import Store
from tests.integration.ageing_support import FAST_PLAN, SHORT_PLAN, formed_lot, plant, site_file

SCALE = 3000.0


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


async def test_a_plan_runs_on_the_rack_and_k_is_fit_per_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    cells = formed_lot(url, n=8)
    plan = tmp_path / "plan.toml"
    plan.write_text(FAST_PLAN)
    async with plant(ScaledClock(SCALE), cells=8) as sim:
        site = site_file(tmp_path / "site.toml", url, sim, SCALE)
        tester = sim.tester_resources["t1"]
        assert (
            await asyncio.to_thread(main, ["age", "load", "L1", "--rack", "rack1", "--db", url, "--tester", tester])
            == 0
        )
        sim.testers["t1"].model.no_contact.add(1003)  # position 3's probes touch nothing
        args = ["age", "start", "L1", "--plan", str(plan), "--rack", "rack1", "--site", str(site), "--foreground"]
        assert await asyncio.to_thread(main, args) == 0
        truth = {p: sim.racks["rack1"].truth(p) for p in range(1, 9)}
    out = capsys.readouterr().out
    assert "ageing job 1: lot L1 on rack rack1" in out
    with Store(url) as store:
        readings = store.ageing_readings(job_id=1)
        results = store.ageing_results(job_id=1).set_index("cell_id")
        job = store.ageing_jobs(job_id=1)[0]
        alarms = store.alarms()
    assert job.state == "done" and job.ended_s is not None
    assert len(readings) == 6 * 8  # every checkpoint, every cell, once
    assert sorted(readings["k"].unique().tolist()) == list(range(6))
    # Position 3 read no contact at every checkpoint: a reason, no numbers, an alarm per checkpoint.
    bad = readings[readings["position"] == 3]
    assert set(bad["reason"]) == {"no contact"} and bad["ocv_v"].isna().all()
    assert (
        "no contact" in results.at[cells[2], "reason"]
        and results.at[cells[2], "k_mv_per_day"] != results.at[cells[2], "k_mv_per_day"]
    )
    assert sum(a.code == "tester_no_contact" for a in alarms) == 6
    good = readings[readings["position"] != 3]
    assert good["reason"].isna().all()
    assert good["ocv_v"].between(3.3, 3.7).all()
    assert good["acir_mohm"].between(5.0, 60.0).all()
    # The chamber followed the stages: hot readings at 45 °C set point, room ones at 25 °C.
    assert set(readings.loc[readings["stage"] == 0, "chamber_setpoint_c"]) == {45.0}
    assert set(readings.loc[readings["stage"] == 1, "chamber_setpoint_c"]) == {25.0}
    # Each reading carries the chamber's state; at this clock scale (×3000) the loop holds the room stage loosely.
    late = readings[readings["k"] >= 3]
    assert late["cell_temperature_c"].notna().all() and 22.0 < late["cell_temperature_c"].mean() < 30.0
    assert readings[readings["k"] == 1]["cell_temperature_c"].mean() > 40.0  # the end of the hot stage
    assert readings["chamber_in_band"].notna().all() and readings["chamber_stable"].notna().all()
    # K of every readable cell, with a standard error, over the room stage from its first half hour on (4 points).
    fitted = results.drop(index=cells[2])
    assert fitted["reason"].eq("").all() and fitted["n_points"].eq(4).all()
    assert fitted["k_mv_per_day"].notna().all() and (fitted["k_se_mv_per_day"] > 0).all()
    assert (fitted["ocv_v"] - [truth[p]["ocv_v"] for p in (1, 2, 4, 5, 6, 7, 8)]).abs().max() < 0.005


@pytest.mark.parametrize(
    ("plan_text", "expected"),
    [
        (
            SHORT_PLAN.replace("setpoint_c = 45.0", "setpoint_c = 75.0"),
            "ageing[0].setpoint_c: 75 °C is outside 10–60 °C of chamber ch1",
        ),
        (SHORT_PLAN.replace('"0h", "2h"', '"0h", "3h"'), "ageing[0].checkpoints[1]: '3h' is outside the stage"),
        (
            SHORT_PLAN.replace('duration = "5h"', 'duration = "200d"'),
            "ageing[1].duration: '200d' is longer than 90 days",
        ),
        (SHORT_PLAN.replace('after = "1h"', 'after = "5h"'), "k_value.after: 18000 s is not within stage 'room'"),
        (SHORT_PLAN.replace('after = "1h"', 'after = "4h"'), "k_value: stage 'room' has 2 checkpoint(s) at or after"),
        (SHORT_PLAN.replace("setpoint_c = 25.0", 'setpoint_c = "warm"'), "ageing[1].setpoint_c: must be a number"),
    ],
)
def test_bad_plans_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plan_text: str, expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    formed_lot(url, n=2)
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text)
    site = tmp_path / "site.toml"
    site.write_text(
        f'[database]\nurl = "{url}"\n[[chambers]]\nname = "ch1"\nresource = "TCPIP0::127.0.0.1::1::SOCKET"\n'
        '[[racks]]\nname = "rack1"\nchamber = "ch1"\n'
        '[[testers]]\nname = "t1"\nresource = "TCPIP0::127.0.0.1::2::SOCKET"\nracks = ["rack1"]\n'
    )
    assert main(["age", "load", "L1", "--rack", "rack1", "--db", url]) == 0
    capsys.readouterr()
    assert main(["age", "start", "L1", "--plan", str(plan), "--rack", "rack1", "--site", str(site)]) == 2
    assert expected in one_error(capsys)
    with Store(url) as store:
        assert store.ageing_jobs() == []


def test_a_lot_not_on_the_rack_or_an_unknown_rack_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    formed_lot(url, n=2)
    site = tmp_path / "site.toml"
    site.write_text(
        f'[database]\nurl = "{url}"\n[[chambers]]\nname = "ch1"\nresource = "TCPIP0::127.0.0.1::1::SOCKET"\n'
        '[[racks]]\nname = "rack0"\n[[racks]]\nname = "rack1"\nchamber = "ch1"\n'
        '[[racks]]\nname = "rack2"\nchamber = "ch1"\n'
        '[[testers]]\nname = "t1"\nresource = "TCPIP0::127.0.0.1::2::SOCKET"\nracks = ["rack0", "rack1", "rack2"]\n'
    )
    plan = tmp_path / "plan.toml"
    plan.write_text(SHORT_PLAN)
    start = ["age", "start", "L1", "--plan", str(plan), "--site", str(site)]
    assert main([*start, "--rack", "rack9"]) == 2
    assert "--rack: no rack named 'rack9' in the site (known: rack0, rack1, rack2)" in one_error(capsys)
    assert main([*start, "--rack", "rack0"]) == 2
    assert "ageing[0].setpoint_c: 45 °C needs a chamber, and the rack stands in none" in one_error(capsys)
    assert main([*start, "--rack", "rack1"]) == 2
    assert "LOT: no cell of lot 'L1' sits on a rack" in one_error(capsys)
    assert main(["age", "load", "L1", "--rack", "rack2", "--db", url]) == 0
    capsys.readouterr()
    assert main([*start, "--rack", "rack1"]) == 2
    assert "--rack: cell 'L1-000' of lot 'L1' sits on rack 'rack2'" in one_error(capsys)
    assert main([*start, "--rack", "rack2"]) == 0  # queued for the daemon
    assert main([*start, "--rack", "rack2"]) == 2
    assert "LOT: lot 'L1' already ages on rack 'rack2' (job 1)" in one_error(capsys)
    assert main(["age", "start", "L1", "--plan", "nope", "--rack", "rack2", "--site", str(site)]) == 2
    assert "--plan: no file 'nope' and no built-in plan of that name" in one_error(capsys)
    assert main(["age", "start", "L1", "--plan", str(plan), "--rack", "rack2"]) == 2
    assert "--site: required" in one_error(capsys)
    with Store(url) as store:
        assert [j.state for j in store.ageing_jobs()] == ["queued"]
        timers = store.query_frame(__import__("sqlalchemy").text("SELECT id, kind FROM line_timers"))
    assert sorted(timers["id"]) == sorted(f"age:rack2:1:{k}" for k in range(7))
    assert set(timers["kind"]) == {"ageing_checkpoint"}
