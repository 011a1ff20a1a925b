"""The line's database is not a way into the orchestrator: a timer row is data, never code.

Someone who can write rows in the line's database (SQLite file or PostgreSQL) crafts them: a pickle in the table
APScheduler's SQLAlchemy job store used to keep (which that store unpickled, running whatever the pickle names),
and rows of ``line_timers`` with an unknown kind, a kind naming a function, keys of the wrong type or an id that
does not match its keys. The timers start on that database: nothing runs, the bad rows are skipped, the good
row is scheduled and fires once."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from formation.clock import ScaledClock
from formation.orchestrator.timers import TIMERS, LineTimers, checkpoint_job_id
from formation.store import Store


class Touch:
    """Unpickling this creates ``path``: the stand-in for arbitrary code a crafted pickle would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


class Recorder:
    def __init__(self) -> None:
        self.fired: list[tuple[int, int, int, int]] = []

    def on_checkpoint(self, job_id: int, run_id: int, step_index: int, k: int) -> None:
        self.fired.append((job_id, run_id, step_index, k))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'line.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = Store(url)
    store.create_schema()
    try:
        yield store
    finally:
        store.close()


def _craft(store: Store, marker: Path, now_unix_s: float) -> None:
    """What an attacker with write access to the database leaves there."""
    legacy = sa.Table(  # APScheduler 3's SQLAlchemyJobStore table, as it created it
        "apscheduler_jobs",
        sa.MetaData(),
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    payload = pickle.dumps(Touch(marker))
    good = {"cabinet": "cab", "job_id": 7, "run_id": 42, "step_index": 3, "k": 1, "due_unix_s": now_unix_s + 0.3}
    rows = [
        {**good, "id": checkpoint_job_id("cab", 42, 3, 1), "kind": "ocv_checkpoint"},  # the one real timer
        {**good, "id": checkpoint_job_id("cab", 43, 3, 1), "run_id": 43, "kind": "builtins:exec"},
        {**good, "id": checkpoint_job_id("cab", 44, 3, 1), "run_id": 44, "kind": "pathlib:Path.touch"},
        {**good, "id": "ocv:cab:45:3:1", "run_id": 46, "kind": "ocv_checkpoint"},  # id and keys disagree
    ]
    with store.engine.begin() as conn:
        legacy.create(conn, checkfirst=True)
        conn.execute(sa.insert(legacy).values(id="evil", next_run_time=now_unix_s, job_state=payload))
        TIMERS.create(conn, checkfirst=True)
        conn.execute(sa.insert(TIMERS), rows)
        if conn.dialect.name == "sqlite":  # SQLite keeps whatever type it is given: text where an id belongs
            bad = {**good, "id": "ocv:cab:x:3:1", "run_id": "x", "kind": "ocv_checkpoint"}
            conn.execute(sa.text(f"INSERT INTO {TIMERS.name} VALUES (:id, :kind, :cabinet, :job_id, :run_id, "
                                 ":step_index, :k, :due_unix_s)"), bad)  # fmt: skip


async def test_crafted_rows_run_no_code_and_only_the_real_timer_fires(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(FileNotFoundError):
        pickle.loads(pickle.dumps(Touch(tmp_path / "no-such-folder" / "x")))  # the pickle really runs code
    clock = ScaledClock(1.0)
    timers = LineTimers(store, clock)
    _craft(store, marker, timers.wall_time(clock.now()).timestamp())
    recorder = Recorder()
    async with timers:
        assert timers.pending() == [checkpoint_job_id("cab", 42, 3, 1)]
        timers.register("cab", recorder)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not recorder.fired and loop.time() < deadline:
            await asyncio.sleep(0.02)
        timers.unregister("cab", recorder)
    assert recorder.fired == [(7, 42, 3, 1)]
    assert not marker.exists()
    with store.engine.connect() as conn:
        left = sorted(conn.execute(sa.select(TIMERS.c.id)).scalars())
    # The fired timer's row is gone; the refused rows stay for a person to look at, never scheduled.
    assert checkpoint_job_id("cab", 42, 3, 1) not in left and len(left) >= 3
