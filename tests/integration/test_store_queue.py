"""The work queue and cabinet leases on SQLite and on a real PostgreSQL, including claimers racing in threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from formation.states import JobState
from formation.store import Store

SHA = "c" * 64


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'line.db'}"
    with Store(url) as st:
        st.create_schema()
        st.save_recipe(SHA, "r", "1", "NCM", 5.0, "{}", "")
        yield st


def queue(store: Store, cabinet: str, start_after_s: float | None = None) -> int:
    job_id = store.create_job(SHA, cabinet, "1-2", 1.0, 0.0, state=JobState.QUEUED)
    store.queue_job_start(job_id, start_after_s)
    return job_id


def test_a_lease_is_held_renewed_refused_to_others_and_taken_over_once_expired(store: Store) -> None:
    assert store.hold_lease("cab1", "a", 30.0, 1000.0)
    assert store.hold_lease("cab1", "a", 30.0, 1010.0)  # renewed
    assert not store.hold_lease("cab1", "b", 30.0, 1039.0)  # a's lease runs to 1040
    assert store.hold_lease("cab2", "b", 30.0, 1039.0)  # another cabinet is free
    assert store.hold_lease("cab1", "b", 30.0, 1041.0)  # expired: b takes over
    assert not store.hold_lease("cab1", "a", 30.0, 1042.0)  # a lost it and cannot renew
    (lease1, lease2) = store.leases()
    assert (lease1.cabinet, lease1.owner) == ("cab1", "b")
    assert (lease1.expires_unix_s, lease1.acquired_unix_s) == (1071.0, 1041.0)
    assert (lease2.cabinet, lease2.owner) == ("cab2", "b")
    store.release_lease("cab1", "a")  # not a's: nothing happens
    assert [lease.owner for lease in store.leases()] == ["b", "b"]
    store.release_lease("cab1", "b")
    assert store.hold_lease("cab1", "a", 30.0, 1043.0)  # released: free at once


def test_claims_take_the_oldest_due_job_of_the_cabinet_once(store: Store) -> None:
    later = queue(store, "cab1", start_after_s=500.0)
    first = queue(store, "cab1")
    other = queue(store, "cab2")
    assert store.claim_job("cab1", "a", 100.0) == first  # the earlier id is not due yet
    assert store.claim_job("cab1", "a", 100.0) is None
    assert store.claim_job("cab1", "a", 500.0) == later
    assert store.claim_job("cab1", "a", 600.0) is None
    job = store.get_job(first)
    assert job is not None and (job.state, job.owner, job.started_s) == ("running", "a", 100.0)
    assert [j.id for j in store.jobs_in_states("cab2", frozenset({JobState.QUEUED}))] == [other]
    assert store.set_job_state(other, JobState.ABORTED)  # a queued job may be aborted without starting
    assert store.claim_job("cab2", "a", 100.0) is None


def test_racing_claimers_never_get_the_same_job(store: Store) -> None:
    jobs = {queue(store, "cab1") for _ in range(20)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (job_id := store.claim_job("cab1", name, 100.0)) is not None:
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=claimer, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60.0)
    assert sorted(claimed) == sorted(jobs)  # every job once, none twice
