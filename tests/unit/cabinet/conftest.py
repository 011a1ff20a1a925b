"""Fixtures of the supervisor-part tests: an SQLite store in a temporary folder, a ledger over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from formation.clock import ScaledClock
from formation.orchestrator.cabinet.ledger import JobLedger
from formation.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'parts.db'}")
    s.create_schema()
    yield s
    s.close()


@pytest.fixture
def ledger(store: Store) -> JobLedger:
    return JobLedger(store, ScaledClock(1.0), "cab", committed_rec=lambda: 0)
