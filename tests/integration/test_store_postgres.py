"""The store on a real PostgreSQL (fresh schema per test): schema, round trips, binary COPY, idempotence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from formation.errors import StoreError
from formation.states import JobState
from formation.store import SAMPLE_COLUMNS, Store, export_cell_bdf
from formation.store.export import BDF_COLUMNS

pytestmark = pytest.mark.services

SHA = "b" * 64


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    with Store(postgres_url) as st:
        st.create_schema()
        yield st


def launch(store: Store, cells: tuple[str, ...] = ("P1", "P2")) -> tuple[int, list[int]]:
    """A lot, a recipe, a job and one run per cell; returns (job_id, run_ids)."""
    store.upsert_lot_and_cells((c, "LP", 5.0) for c in cells)
    store.save_recipe(SHA, "ncm-5ah", "2.0", "NCM", 5.0, "{}", "")
    job_id = store.create_job(SHA, "cabP", "1-2", 1.0, 100.0)
    rows = [
        {"cell_id": c, "cabinet": "cabP", "channel": i + 1, "instrument_cell": 1001 + i, "state": "running"}
        for i, c in enumerate(cells)
    ]
    return job_id, store.create_runs(job_id, [{**r, "started_s": 100.0} for r in rows])


def sample_block(run_id: int, n: int, rec0: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    block = np.empty((n, len(SAMPLE_COLUMNS)))
    block[:, 0] = run_id
    block[:, 1] = rec0 + i
    block[:, 2] = 1.7e9 + 0.123456789 + 5.0 * i
    block[:, 3] = i // 7
    block[:, 4] = (i % 7) * 5.0
    block[:, 5] = 3.6 + np.sqrt(i + 2) / 9.0
    block[:, 6] = np.where(i % 3 == 0, 2.5, -5.000000001)
    block[:, 7] = i / 3.0
    block[:, 8] = 24.0 + np.e * i / 1_000.0
    return block


def test_schema_is_created_in_the_fresh_schema(store: Store) -> None:
    store.create_schema()  # idempotent
    inspector = sa.inspect(store.engine)
    assert {"lot", "cell", "recipe", "job", "run", "step_result", "sample", "alarm"} <= set(inspector.get_table_names())
    assert {ix["name"] for ix in inspector.get_indexes("run")} >= {"ix_run_cabinet_state"}
    assert store.engine.dialect.name == "postgresql"
    assert store.engine.url.drivername == "postgresql+psycopg"


def test_round_trip_of_lots_jobs_runs_and_alarms(store: Store) -> None:
    job_id, (r1, r2) = launch(store)
    assert store.upsert_lot_and_cells([("P1", "LP", 5.0)]) == 0
    with pytest.raises(StoreError, match="P2 \\(already in lot 'LP', not 'LQ'\\)"):
        store.upsert_lot_and_cells([("P2", "LQ", 5.0)])
    assert store.save_recipe(SHA, "ncm-5ah", "2.0", "NCM", 5.0, "{}", "") is False
    store.update_runs([{"id": r1, "state": "done", "ended_s": 500.0}, {"id": r2, "last_rec": 2**40}])
    assert [r.id for r in store.runs_in_state("cabP", ["running"])] == [r2]
    assert store.get_run(r2).last_rec == 2**40  # type: ignore[union-attr]
    assert [r.id for r in store.cell_runs("P1")] == [r1]
    store.finish_job(job_id, JobState.DONE, 600.0)
    job = store.get_job(job_id)
    assert job is not None and (job.state, job.ended_s) == ("done", 600.0)
    alarm_id = store.add_alarm(50.0, "info", "START", "job started", job_id=job_id)
    assert [a.id for a in store.alarms(job_id=job_id)] == [alarm_id]


def test_step_results_are_written_once(store: Store) -> None:
    job_id, (r1, _) = launch(store)
    row = {
        "run_id": r1,
        "step_index": 0,
        "kind": "rest",
        "started_s": 0.0,
        "ended_s": 60.0,
        "duration_s": 60.0,
        "ah": 0.0,
        "wh": 0.0,
        "end_reason": "time",
    }
    assert store.add_step_results([row]) == 1
    assert store.add_step_results([{**row, "ah": 9.0}, {**row, "step_index": 1}]) == 1
    frame = store.step_results(job_id=job_id)
    assert list(frame["step_index"]) == [0, 1] and list(frame["ah"]) == [0.0, 0.0]
    assert set(frame["cell_id"]) == {"P1"}


def test_samples_copy_in_batches_read_back_exactly(store: Store) -> None:
    job_id, (r1, r2) = launch(store)
    b1 = sample_block(r1, 3_000, rec0=2**33)  # record numbers past 32 bits
    b2 = sample_block(r2, 1_000, rec0=1)
    b1[5, 8] = np.nan
    both = np.concatenate([b1, b2])[np.random.default_rng(5).permutation(4_000)]
    assert sum(store.write_samples(both[i : i + 1_500]) for i in range(0, 4_000, 1_500)) == 4_000
    for run_id, expected in ((r1, b1), (r2, b2)):
        np.testing.assert_array_equal(store.samples(run_id).to_numpy(dtype=np.float64), expected)
    assert store.sample_count(job_id=job_id) == 4_000
    with pytest.raises(StoreError):
        store.write_samples(sample_block(r2 + 50, 2, rec0=1))  # no such run: the FK refuses the COPY
    assert store.sample_count() == 4_000


def test_export_from_postgres(store: Store, tmp_path: Path) -> None:
    _, (r1, _) = launch(store)
    store.write_samples(sample_block(r1, 20, rec0=1))
    frame = pd.read_csv(export_cell_bdf(store, "P1", tmp_path / "P1.bdf.csv"))
    assert tuple(frame.columns) == BDF_COLUMNS
    assert frame["Test Time / s"].iloc[-1] == pytest.approx(95.0)
    assert list(frame["Step Count / 1"].unique()) == [1, 2, 3]
