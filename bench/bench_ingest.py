"""Sample ingest rate of the store: rows/s for 1,000,000 rows in batches of 5,000.

Run: ``python bench/bench_ingest.py [--rows N] [--batch N] [--postgres URL | --no-postgres]``

It measures, on a SQLite file (WAL, synchronous=NORMAL) and on PostgreSQL when reachable:
- ``Store.write_samples`` as shipped (SQLite: driver executemany on tuples; PostgreSQL: binary COPY),
- the same with the sample -> run foreign key not enforced, to price the FK,
- on SQLite, the alternatives we chose against: Core ``insert(table)`` with dict rows, and per-column
  ``tolist()`` + ``zip`` instead of one structured-array ``tolist()``.

Recorded results are at the end of this file.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from formation.store import SAMPLE_COLUMNS, Sample, Store, sqlite_url
from formation.store.samples import block_rows, check_block

N_RUNS = 256  # one full cabinet


def make_blocks(run_ids: list[int], rows: int, batch: int, seed: int = 1) -> list[np.ndarray]:
    """Blocks of plausible samples: records interleaved across runs, as a cabinet's data log drains."""
    rng = np.random.default_rng(seed)
    rec = np.arange(1, rows + 1, dtype=np.float64)
    block = np.empty((rows, len(SAMPLE_COLUMNS)), dtype=np.float64)
    block[:, 0] = np.asarray(run_ids, dtype=np.float64)[np.arange(rows) % len(run_ids)]
    block[:, 1] = rec
    block[:, 2] = 1.7e9 + rec * 0.04
    block[:, 3] = (rec // 50_000) % 6
    block[:, 4] = (rec * 0.04) % 3600.0
    block[:, 5] = 3.2 + 0.3 * rng.random(rows)
    block[:, 6] = 14.0 + rng.normal(0.0, 0.01, rows)
    block[:, 7] = rng.random(rows) * 28.0
    block[:, 8] = 25.0 + rng.normal(0.0, 0.2, rows)
    return [block[i : i + batch] for i in range(0, rows, batch)]


def prepare(store: Store) -> list[int]:
    """Schema, one lot of N_RUNS cells, a recipe, a job and its runs; returns the run ids."""
    store.create_schema()
    store.upsert_lot_and_cells((f"B{i:05d}", "bench-lot", 280.0) for i in range(N_RUNS))
    sha = "0" * 64
    store.save_recipe(sha, "bench", "1", "LFP", 280.0, "{}", "")
    job = store.create_job(sha, "cab1", f"1-{N_RUNS}", 1.0, 1.7e9)
    rows = [
        {
            "cell_id": f"B{i:05d}",
            "cabinet": "cab1",
            "channel": i + 1,
            "instrument_cell": 1001 + i,
            "state": "running",
            "started_s": 1.7e9,
        }
        for i in range(N_RUNS)
    ]
    return store.create_runs(job, rows)


_FK_SQL = "SELECT conname FROM pg_constraint WHERE conrelid = 'sample'::regclass AND contype = 'f'"


def report(label: str, rows_per_s: float) -> None:
    """One aligned result line."""
    print(f"{label:<46}{rows_per_s:>12,.0f} rows/s")


def rate(write: Callable[[np.ndarray], object], blocks: list[np.ndarray]) -> float:
    """Rows per second of ``write`` over all blocks (wall time, perf_counter)."""
    t0 = time.perf_counter()
    for block in blocks:
        write(block)
    return sum(len(b) for b in blocks) / (time.perf_counter() - t0)


def _core_dicts(store: Store) -> Callable[[np.ndarray], None]:
    table = Sample.__table__  # type: ignore[attr-defined]

    def write(block: np.ndarray) -> None:
        rows = [dict(zip(SAMPLE_COLUMNS, row, strict=True)) for row in block_rows(check_block(block))]
        with store.engine.begin() as conn:
            conn.execute(sa.insert(table), rows)

    return write


def _zip_columns(store: Store) -> Callable[[np.ndarray], None]:
    sql = f"INSERT INTO sample ({', '.join(SAMPLE_COLUMNS)}) VALUES ({', '.join('?' * len(SAMPLE_COLUMNS))})"

    def write(block: np.ndarray) -> None:
        cols = [
            block[:, i].astype(np.int64).tolist() if name in ("run_id", "rec", "step_index") else block[:, i].tolist()
            for i, name in enumerate(SAMPLE_COLUMNS)
        ]
        with store.engine.begin() as conn:
            conn.exec_driver_sql(sql, list(zip(*cols, strict=True)))

    return write


def bench_sqlite(rows: int, batch: int) -> None:
    """SQLite file: shipped path with and without FK enforcement, then the rejected alternatives."""
    with tempfile.TemporaryDirectory() as tmp:
        with Store(sqlite_url(Path(tmp) / "bench.db")) as store:
            blocks = make_blocks(prepare(store), rows, batch)
            report("sqlite write_samples (executemany, FK on)", rate(store.write_samples, blocks))
            size_mb = (Path(tmp) / "bench.db").stat().st_size / 1e6
            print(f"         {store.sample_count():,} rows stored, file {size_mb:.0f} MB (+WAL)")
        with Store(sqlite_url(Path(tmp) / "nofk.db")) as store:
            # A later connect listener runs after the store's own and switches enforcement off.
            sa.event.listen(store.engine, "connect", lambda c, _r: c.execute("PRAGMA foreign_keys=OFF"))
            blocks = make_blocks(prepare(store), rows, batch)
            report("sqlite write_samples (FK not enforced)", rate(store.write_samples, blocks))
        small = rows // 5
        print(f"alternatives on {small:,} rows each (fresh file each):")
        writers: dict[str, Callable[[Store], Callable[[np.ndarray], object]]] = {
            "write_samples (structured tolist)": lambda st: st.write_samples,
            "Core insert() with dict rows": _core_dicts,
            "per-column tolist + zip": _zip_columns,
        }
        for i, (label, make_writer) in enumerate(writers.items()):
            with Store(sqlite_url(Path(tmp) / f"alt{i}.db")) as store:
                blocks = make_blocks(prepare(store), small, batch)
                report(f"sqlite {label}", rate(make_writer(store), blocks))
        t0 = time.perf_counter()
        for block in blocks:
            block_rows(block)
        conv = small / (time.perf_counter() - t0)
        report("(block -> tuples conversion alone)", conv)


def bench_postgres(base_url: str, rows: int, batch: int) -> None:
    """PostgreSQL: binary COPY with and without the FK, in a throw-away schema."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        print(f"postgres not reachable ({exc.__class__.__name__}); skipped")
        return
    try:
        with Store(f"{base_url}?options=-csearch_path%3D{schema}") as store:
            blocks = make_blocks(prepare(store), rows, batch)
            report("postgres write_samples (binary COPY, FK on)", rate(store.write_samples, blocks))
            with store.engine.begin() as conn:
                fk = conn.execute(sa.text(_FK_SQL)).scalar_one()
                conn.execute(sa.text(f'ALTER TABLE sample DROP CONSTRAINT "{fk}"'))
            report("postgres write_samples (COPY, no FK)", rate(store.write_samples, blocks))
            print(f"        {store.sample_count():,} rows stored")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    """Parse arguments and run every benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FORMATION_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    print(f"{args.rows:,} rows in batches of {args.batch:,}, {N_RUNS} runs interleaved")
    bench_sqlite(args.rows, args.batch)
    if not args.no_postgres:
        bench_postgres(args.postgres, args.rows, args.batch)


if __name__ == "__main__":
    main()

# Recorded results (2 vCPU container shared with other jobs, SQLite 3.40.1, PostgreSQL 15 on loopback,
# SQLAlchemy 2.1, psycopg 3.3; two runs, figures vary about +-15 % with the neighbours' load):
#
#   sqlite   write_samples (executemany, FK on)       194,708 .. 213,794 rows/s   (target > 150,000)
#   sqlite   write_samples (FK not enforced)          187,809 .. 233,462 rows/s   (FK cost within noise)
#   sqlite   Core insert() with dict rows             128,338 .. 135,491 rows/s   (rejected)
#   sqlite   structured tolist vs per-column zip      213k-261k vs 250k-265k      (same within noise; the
#            conversion alone runs at 2.6 M rows/s, so the INSERT itself is the bottleneck)
#   postgres binary COPY, FK on                       103,473 .. 114,669 rows/s
#   postgres binary COPY, no FK                       169,485 .. 207,242 rows/s
#
# Decision: keep the sample -> run foreign key. It is free on SQLite and costs ~45 % of COPY throughput on
# PostgreSQL, which still leaves > 1,000x headroom over a plant's log rate (256 channels at one record per
# 10 s is 26 rows/s per cabinet). Dropping it is the first lever if that ever changes.
