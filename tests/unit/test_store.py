"""The store on SQLite files and on PostgreSQL (a fresh schema per test): schema, every API call round-tripped,
batch samples, idempotence, BDF export. Engine details of each backend are tested without the ``store`` fixture."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from formation.errors import InputError, StoreError
from formation.states import JobState
from formation.store import SAMPLE_COLUMNS, Store, export_cell_bdf, make_engine, sqlite_url
from formation.store.export import BDF_COLUMNS, bdf_frame

SHA = "a" * 64


class FixedClock:
    """A clock that stands still (the store only reads ``now()``)."""

    scale = 1.0

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never awaited by the store
        raise AssertionError("the store never sleeps")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on a SQLite file and on PostgreSQL (skipped without it, unless services are required)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "formation.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url, clock=FixedClock(1_000.0)) as st:
        st.create_schema()
        yield st


def launch(store: Store, cells: tuple[str, ...] = ("S1", "S2")) -> tuple[int, list[int]]:
    """A lot, a recipe, a job and one run per cell (channels 1..n); returns (job_id, run_ids)."""
    store.upsert_lot_and_cells((c, "L1", 280.0) for c in cells)
    store.save_recipe(SHA, "lfp-280ah-formation", "1.0", "LFP", 280.0, '{"steps":[]}', "name = 'x'")
    job_id = store.create_job(SHA, "cab1", f"1-{len(cells)}", 60.0, 2_000.0, note="test")
    rows = [
        {
            "cell_id": c,
            "cabinet": "cab1",
            "channel": i + 1,
            "instrument_cell": 1001 + i,
            "state": "running",
            "started_s": 2_000.0,
        }
        for i, c in enumerate(cells)
    ]
    return job_id, store.create_runs(job_id, rows)


def sample_block(run_id: int, n: int, rec0: int = 1, step_of: int = 4) -> np.ndarray:
    """``n`` samples of one run, steps changing every ``step_of`` records, with awkward float values."""
    i = np.arange(n, dtype=np.float64)
    block = np.empty((n, len(SAMPLE_COLUMNS)))
    block[:, 0] = run_id
    block[:, 1] = rec0 + i
    block[:, 2] = 1.7e9 + 0.1 + 10.0 * i
    block[:, 3] = i // step_of
    block[:, 4] = (i % step_of) * 10.0
    block[:, 5] = 3.2 + np.sqrt(i + 2) / 7.0
    block[:, 6] = np.where(i % 2 == 0, 14.000000001, -28.5)
    block[:, 7] = np.cumsum(np.full(n, 1 / 3))
    block[:, 8] = 25.0 + np.pi * i / 100.0
    return block


# -- engine and schema ---------------------------------------------------------------------------------------


def test_sqlite_engine_runs_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "x.db"))
    names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
    try:
        with engine.connect() as conn:
            pragma = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in names}
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 10_000}
    # WAL is persistent: the file header's read/write format versions (bytes 18, 19) are 2 in WAL mode.
    assert (tmp_path / "x.db").read_bytes()[18:20] == b"\x02\x02"


def test_sqlite_url_is_absolute(tmp_path: Path) -> None:
    assert sqlite_url(tmp_path / "a.db") == f"sqlite:///{(tmp_path / 'a.db').resolve()}"


def test_postgres_urls_use_psycopg3() -> None:
    for url in ("postgresql://u@db.example/plant", "postgresql+psycopg://u@db.example/plant"):
        engine = make_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        engine.dispose()


def test_schema_has_every_table_and_index(store: Store) -> None:
    store.create_schema()  # a second time is harmless
    inspector = sa.inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert {"lot", "cell", "recipe", "job", "run", "step_result", "sample", "alarm"} <= tables
    run_indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("run")}
    assert run_indexes["ix_run_cabinet_state"] == ["cabinet", "state"]
    sample_indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("sample")}
    assert sample_indexes["ix_sample_run_rec"] == ["run_id", "rec"]
    uniques = inspector.get_unique_constraints("step_result")
    assert [u["column_names"] for u in uniques] == [["run_id", "step_index"]]


def test_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with Store(sqlite_url(tmp_path / "missing-dir" / "x.db")) as st, pytest.raises(StoreError):
        st.create_schema()


# -- lots, cells, recipes ------------------------------------------------------------------------------------


def test_lots_and_cells_are_idempotent(store: Store) -> None:
    assert store.upsert_lot_and_cells([("S1", "L1", 280.0), ("S2", "L1", 280.0), ("S3", "L2", 100.0)]) == 3
    assert store.upsert_lot_and_cells([("S1", "L1", 280.0), ("S4", "L2", 100.0)]) == 1
    assert [c.id for c in store.lot_cells("L2")] == ["S3", "S4"]
    cell = store.cell("S3")
    assert cell is not None
    assert (cell.lot_id, cell.nominal_capacity_ah, cell.created_s) == ("L2", 100.0, 1_000.0)
    lot = store.lot("L1")
    assert lot is not None and lot.created_s == 1_000.0
    assert store.cell("nope") is None


def test_cell_in_another_lot_is_refused_and_named(store: Store) -> None:
    store.upsert_lot_and_cells([("S1", "L1", 280.0)])
    with pytest.raises(StoreError, match=r"S1 \(already in lot 'L1', not 'L2'\)"):
        store.upsert_lot_and_cells([("S9", "L2", 280.0), ("S1", "L2", 280.0)])
    assert store.cell("S9") is None  # nothing written
    with pytest.raises(StoreError, match=r"S5 \(listed in lots 'L3' and 'L4'\)"):
        store.upsert_lot_and_cells([("S5", "L3", 1.0), ("S5", "L4", 1.0)])


def test_recipe_is_stored_once_by_hash(store: Store) -> None:
    assert store.save_recipe(SHA, "r", "1.0", None, 5.0, '{"a":1}', "src") is True
    assert store.save_recipe(SHA, "other", "2.0", "NCM", 6.0, "{}", "") is False
    recipe = store.recipe(SHA)
    assert recipe is not None
    assert (recipe.name, recipe.version, recipe.chemistry, recipe.body_json) == ("r", "1.0", None, '{"a":1}')


# -- jobs and runs -------------------------------------------------------------------------------------------


def test_job_round_trip(store: Store) -> None:
    job_id, _ = launch(store)
    job = store.get_job(job_id)
    assert job is not None
    assert (job.recipe_sha256, job.cabinet, job.channels, job.state) == (SHA, "cab1", "1-2", "running")
    assert (job.clock_scale, job.started_s, job.ended_s, job.note) == (60.0, 2_000.0, None, "test")
    store.finish_job(job_id, JobState.DONE, 9_000.0)
    job = store.get_job(job_id)
    assert job is not None and (job.state, job.ended_s) == ("done", 9_000.0)
    # A final state is never overwritten, and a job may only move along its transition table.
    store.finish_job(job_id, JobState.FAULTED, 9_500.0)
    assert store.set_job_state(job_id, JobState.RUNNING) is False
    job = store.get_job(job_id)
    assert job is not None and (job.state, job.ended_s) == ("done", 9_000.0)
    second = store.create_job(SHA, "cab2", "1", 1.0, 3_000.0, state=JobState.INTERRUPTED)
    assert store.set_job_state(second, JobState.RUNNING) is True
    assert [j.id for j in store.list_jobs()] == [job_id, second]
    assert store.get_job(999) is None
    with pytest.raises(StoreError, match="no job 999"):
        store.finish_job(999, JobState.DONE, 1.0)


def test_job_needs_a_known_recipe(store: Store) -> None:
    with pytest.raises(StoreError, match="IntegrityError"):
        store.create_job("f" * 64, "cab1", "1", 1.0, 0.0)


def test_runs_are_created_in_order_and_updated_in_groups(store: Store) -> None:
    cells = tuple(f"S{i}" for i in range(5))
    job_id, run_ids = launch(store, cells)
    assert len(run_ids) == 5
    assert [store.get_run(r).cell_id for r in run_ids] == list(cells)  # type: ignore[union-attr]
    journal = json.dumps({"step": 2, "ah": 1.5})
    store.update_runs(
        [
            {"id": run_ids[0], "state": "done", "ended_s": 5_000.0, "end_reason": "complete"},
            {"id": run_ids[1], "step_index": 2, "step_id": "form", "seq_id": 7, "journal": journal},
            {"id": run_ids[2], "state": "faulted", "ended_s": 4_000.0, "end_reason": "fail1"},
            {"id": run_ids[3], "last_rec": 3_000_000_000},
        ]
    )
    runs = {r.id: r for r in store.job_runs(job_id)}
    assert [r.channel for r in store.job_runs(job_id)] == [1, 2, 3, 4, 5]
    assert (runs[run_ids[0]].state, runs[run_ids[0]].end_reason) == ("done", "complete")
    second = runs[run_ids[1]]
    assert (second.step_index, second.step_id, second.seq_id, json.loads(second.journal)) == (
        2,
        "form",
        7,
        {"step": 2, "ah": 1.5},
    )
    assert runs[run_ids[3]].last_rec == 3_000_000_000
    assert runs[run_ids[4]].state == "running" and runs[run_ids[4]].journal == "{}"
    active = store.runs_in_state("cab1", ["running", "paused"])
    assert [r.id for r in active] == [run_ids[1], run_ids[3], run_ids[4]]
    assert store.runs_in_state("cab2", ["running"]) == []
    with pytest.raises(ValueError, match="unknown columns"):
        store.update_runs([{"id": run_ids[0], "colour": "red"}])


def test_cell_runs_lists_every_pass_oldest_first(store: Store) -> None:
    job1, (first, _) = launch(store)
    job2 = store.create_job(SHA, "cab1", "1", 1.0, 8_000.0)
    row = {"cell_id": "S1", "cabinet": "cab1", "channel": 1, "instrument_cell": 1001}
    (second,) = store.create_runs(job2, [{**row, "state": "running", "started_s": 8_000.0}])
    assert [(r.id, r.job_id) for r in store.cell_runs("S1")] == [(first, job1), (second, job2)]


# -- step results --------------------------------------------------------------------------------------------


def step_row(run_id: int, step_index: int, **extra: object) -> dict[str, object]:
    return {
        "run_id": run_id,
        "step_index": step_index,
        "step_id": f"s{step_index}",
        "kind": "charge",
        "started_s": 100.0 * step_index,
        "ended_s": 100.0 * step_index + 90.0,
        "duration_s": 90.0,
        "ah": 1.25,
        "wh": 4.0,
        "start_voltage_v": 3.1,
        "end_voltage_v": 3.4,
        "end_reason": "test1",
        **extra,
    }


def test_step_results_are_written_once(store: Store) -> None:
    job_id, (r1, r2) = launch(store)
    assert store.add_step_results([step_row(r1, 0), step_row(r2, 0)]) == 2
    # A replayed transition (same run, same step) is ignored, new steps in the same call still land.
    assert store.add_step_results([step_row(r1, 0, ah=99.0), step_row(r1, 1, details='{"dcir_mohm": 0.4}')]) == 1
    frame = store.step_results(job_id=job_id)
    assert list(frame[["run_id", "step_index"]].itertuples(index=False, name=None)) == [
        (r1, 0),
        (r1, 1),
        (r2, 0),
    ]
    assert frame.loc[0, "ah"] == 1.25  # the first write wins
    assert list(frame["cell_id"]) == ["S1", "S1", "S2"] and list(frame["channel"]) == [1, 1, 2]
    assert json.loads(frame.loc[1, "details"]) == {"dcir_mohm": 0.4}
    assert frame.loc[0, "details"] == "{}"
    assert {"job_id", "cabinet", "kind", "end_reason", "duration_s", "wh"} <= set(frame.columns)
    only_r2 = store.step_results(run_id=r2)
    assert list(only_r2["run_id"]) == [r2]
    assert store.step_results(job_id=job_id + 1).empty
    assert store.add_step_results([]) == 0


# -- samples -------------------------------------------------------------------------------------------------


def test_samples_written_in_batches_read_back_exactly(store: Store) -> None:
    job_id, (r1, r2) = launch(store)
    b1, b2 = sample_block(r1, 2_500), sample_block(r2, 1_200, rec0=2_501)
    b1[7, 8] = np.nan  # an open thermocouple
    both = np.concatenate([b1, b2])
    order = np.random.default_rng(3).permutation(len(both))  # interleaved, as a cabinet log drains
    shuffled = both[order]
    written = [store.write_samples(shuffled[i : i + 1_000]) for i in range(0, len(shuffled), 1_000)]
    assert written == [1_000, 1_000, 1_000, 700]
    for run_id, expected in ((r1, b1), (r2, b2)):
        frame = store.samples(run_id)
        assert list(frame.columns) == list(SAMPLE_COLUMNS)
        assert frame["rec"].dtype == np.int64 and frame["voltage_v"].dtype == np.float64
        np.testing.assert_array_equal(frame.to_numpy(dtype=np.float64), expected)
    assert store.sample_count() == 3_700
    assert store.sample_count(job_id=job_id) == 3_700
    assert store.sample_count(job_id=job_id + 1) == 0
    assert store.samples(999).empty


def test_samples_keep_their_cycle_and_instrument_sub_step(store: Store) -> None:
    _, (r1, r2) = launch(store)
    block = sample_block(r1, 6)
    cycle, sub_step = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 1, 2, 2, 2])
    full = np.column_stack([block, cycle, sub_step])  # the orchestrator's block: cycle, then sub-step
    assert store.write_samples(full) == 6
    assert store.write_samples(sample_block(r2, 2)) == 2  # a block without them: both 0
    frame = store.samples(r1, with_cycle=True, with_sub_step=True)
    assert list(frame.columns) == [*SAMPLE_COLUMNS, "cycle", "sub_step"]
    assert frame["sub_step"].dtype == np.int64 and frame["sub_step"].tolist() == sub_step.tolist()
    assert frame["cycle"].tolist() == cycle.tolist()
    assert list(store.samples(r1, with_sub_step=True).columns) == [*SAMPLE_COLUMNS, "sub_step"]
    assert store.samples(r2, with_cycle=True, with_sub_step=True)[["cycle", "sub_step"]].to_numpy().tolist() == [
        [0, 0],
        [0, 0],
    ]
    with pytest.raises(ValueError, match=r"shape \(n, 9\), \(n, 10\) or \(n, 11\)"):
        store.write_samples(np.zeros((2, 12)))


def test_write_samples_commits_the_run_cursor_atomically(store: Store) -> None:
    _, (r1, _) = launch(store)
    assert store.write_samples(sample_block(r1, 10), run_updates=[{"id": r1, "last_rec": 10}]) == 10
    run = store.get_run(r1)
    assert run is not None and run.last_rec == 10
    # A failing cursor update rolls the samples back with it.
    with pytest.raises(ValueError, match="unknown columns"):
        store.write_samples(sample_block(r1, 10, rec0=11), run_updates=[{"id": r1, "bogus": 1}])
    assert store.sample_count() == 10


def test_write_samples_rejects_bad_blocks_and_unknown_runs(store: Store) -> None:
    _, (r1, _) = launch(store)
    assert store.write_samples(np.empty((0, len(SAMPLE_COLUMNS)))) == 0
    with pytest.raises(ValueError, match=r"shape \(n, 9\)"):
        store.write_samples(np.zeros((3, 8)))
    with pytest.raises(StoreError, match="IntegrityError"):
        store.write_samples(sample_block(r1 + 100, 3))
    assert store.sample_count() == 0


async def test_concurrent_writers_from_worker_threads(store: Store) -> None:
    _, runs = launch(store, ("S1", "S2", "S3", "S4"))
    blocks = [sample_block(r, 500, rec0=1 + 500 * k) for k, r in enumerate(runs)]
    counts = await asyncio.gather(*(asyncio.to_thread(store.write_samples, b) for b in blocks))
    assert counts == [500] * 4
    assert store.sample_count() == 2_000


# -- alarms --------------------------------------------------------------------------------------------------


def test_alarms_round_trip(store: Store) -> None:
    job_id, (r1, _) = launch(store)
    late = store.add_alarm(
        20.0, "critical", "CELL_TEMP", "62.1 °C", cabinet="cab1", channel=1, run_id=r1, job_id=job_id
    )
    early = store.add_alarm(10.0, "warning", "CHAMBER_BAND", "out of band")
    alarms = store.alarms()
    assert [a.id for a in alarms] == [early, late]
    mine = store.alarms(job_id=job_id)
    assert len(mine) == 1
    assert (mine[0].severity, mine[0].code, mine[0].message) == ("critical", "CELL_TEMP", "62.1 °C")
    assert (mine[0].cabinet, mine[0].channel, mine[0].run_id, mine[0].ts_s) == ("cab1", 1, r1, 20.0)
    with pytest.raises(ValueError, match="severity"):
        store.add_alarm(1.0, "fatal", "X", "y")


# -- operator holds ------------------------------------------------------------------------------------------


def test_continue_count_counts_up_atomically(store: Store) -> None:
    job_id, _ = launch(store)
    assert store.continue_count(job_id) == 0
    assert [store.request_continue(job_id) for _ in range(3)] == [1, 2, 3]
    assert store.continue_count(job_id) == 3
    with pytest.raises(StoreError, match="no job 999"):
        store.request_continue(999)
    with pytest.raises(StoreError, match="no job 999"):
        store.continue_count(999)


# -- BDF export ----------------------------------------------------------------------------------------------


def test_export_writes_bdf_columns_and_values(store: Store, tmp_path: Path) -> None:
    _, (r1, _) = launch(store)
    block = sample_block(r1, 10, step_of=4)
    store.write_samples(block)
    out = export_cell_bdf(store, "S1", tmp_path / "S1.bdf.csv")
    frame = pd.read_csv(out)
    assert tuple(frame.columns) == BDF_COLUMNS
    np.testing.assert_allclose(frame["Test Time / s"], 10.0 * np.arange(10), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(frame["Unix Time / s"], block[:, 2])
    np.testing.assert_array_equal(frame["Voltage / V"], block[:, 5])
    np.testing.assert_array_equal(frame["Current / A"], block[:, 6])
    assert list(frame["Step Count / 1"]) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert list(frame["Step Index / 1"]) == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    np.testing.assert_array_equal(frame["Temperature T1 / degC"], block[:, 8])
    np.testing.assert_array_equal(frame["Step Net Capacity / Ah"], block[:, 7])


def test_export_takes_the_latest_run_unless_told(store: Store, tmp_path: Path) -> None:
    _, (first, other) = launch(store)
    job2 = store.create_job(SHA, "cab1", "1", 1.0, 9_000.0)
    row = {"cell_id": "S1", "cabinet": "cab1", "channel": 1, "instrument_cell": 1001, "state": "running"}
    (latest,) = store.create_runs(job2, [{**row, "started_s": 9_000.0}])
    store.write_samples(sample_block(first, 3))
    store.write_samples(sample_block(latest, 5, rec0=100))
    assert len(pd.read_csv(export_cell_bdf(store, "S1", tmp_path / "a.csv"))) == 5
    assert len(pd.read_csv(export_cell_bdf(store, "S1", tmp_path / "b.csv", run_id=first))) == 3
    with pytest.raises(StoreError, match="not a run of cell 'S1'"):
        export_cell_bdf(store, "S1", tmp_path / "c.csv", run_id=other)


def test_export_refuses_unknown_cells_empty_runs_and_missing_parquet(store: Store, tmp_path: Path) -> None:
    launch(store)
    with pytest.raises(StoreError, match="no such cell 'X'"):
        export_cell_bdf(store, "X", tmp_path / "x.csv")
    with pytest.raises(StoreError, match="has no samples"):
        export_cell_bdf(store, "S2", tmp_path / "x.csv")
    store.upsert_lot_and_cells([("S7", "L1", 280.0)])
    with pytest.raises(StoreError, match="has no runs"):
        export_cell_bdf(store, "S7", tmp_path / "x.csv")
    with pytest.raises(InputError, match="unknown export format 'xlsx'"):
        export_cell_bdf(store, "S1", tmp_path / "x.xlsx", fmt="xlsx")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_is_refused_cleanly(store: Store, tmp_path: Path) -> None:
    _, (r1, _) = launch(store)
    store.write_samples(sample_block(r1, 3))
    with pytest.raises(InputError, match="needs pyarrow"):
        export_cell_bdf(store, "S1", tmp_path / "x.parquet", fmt="parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_bdf_frame_of_no_samples_is_empty() -> None:
    empty = pd.DataFrame({c: np.zeros(0) for c in SAMPLE_COLUMNS})
    assert bdf_frame(empty).empty
    assert tuple(bdf_frame(empty).columns) == BDF_COLUMNS


def test_bad_database_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot use the database URL"):
        Store("nosuchdialect://x/y")
