"""`formation status --database`: the line's state as its database holds it — who drives which cabinet, the jobs
running, queued and interrupted with their runs, the latest alarms. Works with or without a broker."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from formation.cli.app import add_text_row, console
from formation.states import JobState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from formation.config import CabinetConfig
    from formation.store import Store

#: Jobs worth showing: the ones a daemon is working on or will.
OPEN_JOB_STATES = (JobState.RUNNING, JobState.ABORTING, JobState.QUEUED, JobState.INTERRUPTED)
LATEST_ALARMS = 10


def print_database_status(site: Path | None, db: str | None) -> None:
    """Print leases, open jobs with their runs' states, and the latest alarms, once."""
    from formation.cli.run import open_store
    from formation.orchestrator.timebase import unix_wall_s

    cfg, store = open_store(site, db)
    with store:
        _print_cabinets(cfg.cabinets, store, unix_wall_s())
        _print_jobs(store)
        _print_alarms(store)


def _when(unix_s: float | None) -> str:
    return "—" if unix_s is None else datetime.fromtimestamp(unix_s).strftime("%Y-%m-%d %H:%M:%S")


def _print_cabinets(cabinets: Sequence[CabinetConfig], store: Store, now_unix_s: float) -> None:
    leases = {lease.cabinet: lease for lease in store.leases()}
    names = sorted({c.name for c in cabinets} | set(leases))
    table = Table(title="Cabinets")
    for column in ("cabinet", "driven by", "lease until", "state"):
        table.add_column(column)
    for name in names:
        lease = leases.get(name)
        if lease is None:
            add_text_row(table, name, "—", "—", "not driven")
            continue
        live = lease.expires_unix_s >= now_unix_s
        add_text_row(table, name, lease.owner, _when(lease.expires_unix_s), "leased" if live else "lease expired")
    console.print(table)


def _print_jobs(store: Store) -> None:
    jobs = [j for j in store.list_jobs() if j.state in {s.value for s in OPEN_JOB_STATES}]
    if not jobs:
        console.print("no job running, queued or interrupted")
        return
    table = Table(title="Open jobs")
    for column in ("job", "cabinet", "state", "runs", "driven by", "starts"):
        table.add_column(column)
    for job in jobs:
        assert job.id is not None
        runs = Counter(r.state for r in store.job_runs(job.id))
        counts = ", ".join(f"{n} {state}" for state, n in sorted(runs.items()))
        starts = _when(job.start_after_s) if job.state == JobState.QUEUED else _when(job.started_s)
        add_text_row(table, str(job.id), job.cabinet, job.state, counts, job.owner or "—", starts)
    console.print(table)


def _print_alarms(store: Store) -> None:
    alarms = store.alarms()[-LATEST_ALARMS:]
    if not alarms:
        return
    table = Table(title=f"Latest alarms ({len(alarms)})")
    for column in ("time", "severity", "code", "where", "message"):
        table.add_column(column)
    for a in alarms:
        where = "/".join(str(x) for x in (a.cabinet, a.channel) if x is not None) or "—"
        add_text_row(table, _when(a.ts_s), a.severity, a.code, where, a.message)
    console.print(table)
