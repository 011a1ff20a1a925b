"""What only PostgreSQL has (fresh schema per test): the psycopg 3 driver, the schema in the search path, binary COPY.

Every other store test runs on PostgreSQL too: tests/unit/test_store.py is parametrized over both backends."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from formation.errors import StoreError
from formation.store import SAMPLE_COLUMNS, Store

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
