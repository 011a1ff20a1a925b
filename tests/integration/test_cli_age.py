"""`formation age load`: a formed lot onto a rack, recorded in the database (SQLite and PostgreSQL) and moved on the
simulated plant over real TCP; a lot not formed, a position used twice, a cell loaded twice: exit 2, one line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.clock import ScaledClock
from formation.sim import tester as sim_tester
from formation.sim.plant import CabinetSpec, SimulatedPlant
from formation.sim.rack import RackSpec
from formation.store import Store

SHA = "a" * 64
T0_S = 1_700_000_000.0


def populate(
    url: str,
    lot: str = "L1",
    n: int = 4,
    *,
    first_channel: int = 1,
    running: str | None = None,
    ended: dict[str, str] | None = None,
) -> None:
    """A lot of ``n`` cells whose runs on cab1 finished (``running``: one whose latest run still runs; ``ended``:
    cells whose run ended otherwise, e.g. faulted)."""
    with Store(url) as store:
        store.create_schema()
        ids = [f"{lot}-{k:02d}" for k in range(n)]
        store.upsert_lot_and_cells((c, lot, 5.0) for c in ids)
        store.save_recipe(SHA, "ncm21700-formation", "1.0", "NCM", 5.0, '{"steps":[]}', "")
        job = store.create_job(SHA, "cab1", f"{first_channel}-{first_channel + n - 1}", 1.0, T0_S)
        runs = store.create_runs(
            job,
            [
                {
                    "cell_id": c,
                    "cabinet": "cab1",
                    "channel": first_channel + k,  # logical channels, as a launch stores them
                    "instrument_cell": 1001 + k,
                    "state": "running",
                    "started_s": T0_S,
                }
                for k, c in enumerate(ids)
            ],
        )
        states = {c: "running" if c == running else (ended or {}).get(c, "done") for c in ids}
        store.update_runs([{"id": r, "state": states[c]} for c, r in zip(ids, runs, strict=True)])


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    return err


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'f.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_a_formed_lot_goes_onto_a_rack_one_cell_per_position(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    populate(url)
    assert main(["age", "load", "L1", "--rack", "rack1", "--first-position", "5", "--db", url]) == 0
    assert "4 cells of lot L1 on rack rack1, positions 5-8" in capsys.readouterr().out
    with Store(url) as store:
        places = store.rack_places(rack="rack1")
    assert [(p.cell_id, p.position) for p in places] == [(f"L1-{k:02d}", 5 + k) for k in range(4)]
    # Loading the lot again: its cells already sit somewhere.
    assert main(["age", "load", "L1", "--rack", "rack2", "--db", url]) == 2
    assert "cell 'L1-00' already sits on rack 'rack1' position 5" in one_error(capsys)
    # Another lot onto a position that is taken.
    populate(url, "L2", 2, first_channel=5)
    assert main(["age", "load", "L2", "--rack", "rack1", "--first-position", "8", "--db", url]) == 2
    assert "position 8 of rack 'rack1' is taken by cell 'L1-03'" in one_error(capsys)
    assert main(["age", "load", "L2", "--rack", "rack1", "--first-position", "9", "--db", url]) == 0


def test_a_lot_not_formed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    populate(url, running="L1-02")
    assert main(["age", "load", "L1", "--rack", "rack1", "--db", url]) == 2
    assert "lot 'L1' is not formed: cell 'L1-02''s latest run is running" in one_error(capsys)
    assert main(["age", "load", "NOPE", "--rack", "rack1", "--db", url]) == 2
    assert "lot 'NOPE' has no cells" in one_error(capsys)
    with Store(url) as store:
        assert store.rack_places() == []  # nothing written


def test_cells_whose_formation_faulted_stay_behind_and_the_rest_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    populate(url, ended={"L1-01": "faulted", "L1-03": "aborted"})
    assert main(["age", "load", "L1", "--rack", "rack1", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "2 cells of lot L1 on rack rack1, positions 1-2" in out
    assert "2 cell(s) left behind" in out and "L1-01 (faulted)" in out and "L1-03 (aborted)" in out
    with Store(url) as store:
        assert [(p.cell_id, p.position) for p in store.rack_places(rack="rack1")] == [("L1-00", 1), ("L1-02", 2)]
    # A lot none of whose cells formed has nothing to age.
    populate(url, "L2", 2, first_channel=5, ended={"L2-00": "faulted", "L2-01": "faulted"})
    assert main(["age", "load", "L2", "--rack", "rack1", "--first-position", "9", "--db", url]) == 2
    assert "lot 'L2' has no formed cell: every latest run faulted or was aborted" in one_error(capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["L1", "--rack", "rack1", "--first-position", "0"], "--first-position: 0 is outside 1-999"),
        (["L1", "--rack", "rack1", "--first-position", "998"], "--first-position: 4 cells from 998 run past 999"),
        (["L1", "--rack", "a,b"], "--rack: 'a,b' holds a comma"),
        (["L1", "--rack", "  "], "--rack: is empty"),
        (["L1", "--rack", "r" * 201], "--rack: is longer than 200 characters"),
        (["", "--rack", "rack1"], "LOT: is empty"),
        (["L1", "--rack", "rack1", "--tester", " "], "--tester: is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    populate(url)
    assert main(["age", "load", *args, "--db", url]) == 2
    assert expected in one_error(capsys)


async def test_with_a_tester_the_simulated_cells_move_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    populate(url)
    cabinet = CabinetSpec("cab1", channels=8, seed=3, initial_soc=0.3, formed=True)
    racks = [RackSpec("rack1", positions=8), RackSpec("small", positions=2)]
    testers = [sim_tester.TesterSpec("t1", ("rack1", "small"))]
    async with SimulatedPlant([cabinet], ScaledClock(100.0), racks=racks, testers=testers) as plant:
        resource = plant.tester_resources["t1"]
        args = ["age", "load", "L1", "--db", url, "--tester", resource]
        assert await asyncio.to_thread(main, [*args, "--rack", "nowhere"]) == 2
        assert "the tester reaches no rack 'nowhere' (it reaches: rack1, small)" in one_error(capsys)
        assert await asyncio.to_thread(main, [*args, "--rack", "small"]) == 2
        assert "rack 'small' has 2 positions, not 4" in one_error(capsys)
        assert await asyncio.to_thread(main, [*args, "--rack", "rack1", "--first-position", "3"]) == 0
        assert "(the simulated cells moved with them)" in capsys.readouterr().out
        rack = plant.racks["rack1"]
        assert [rack.occupied(p) for p in range(1, 9)] == [False, False, True, True, True, True, False, False]
        assert [rack.origins[p].channel for p in range(3, 7)] == [101, 102, 103, 104]
        assert plant.cabinets["cab1"].model.vacant.tolist() == [True] * 4 + [False] * 4
        truth = rack.truth(3)
        assert truth["cabinet"] == "cab1" and json.dumps(truth, default=float)
    with Store(url) as store:
        places = store.rack_places(rack="rack1")
    assert [p.position for p in places] == [3, 4, 5, 6]
    assert all(p.loaded_s > T0_S for p in places)
