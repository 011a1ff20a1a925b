"""Everything the models gained between revision 0001 and the first migrations, additive only.

- ``step_result.cycle``, ``sample.cycle``: the cycle number of a step in a repeat block (0 outside any block).
- ``sample.sub_step``: the instrument step within a recipe step's sequence (a DCIR's rest 1, its pulse 2; 0 unknown).
- ``job.continue_count``: how many times `formation run continue` released a job's hold steps.
- ``job.start_after_s``, ``job.owner``: the job queue of `formation serve` (start time, claiming daemon).
- ``cabinet_lease``: which daemon drives a cabinet until when.
- ``rack_position``: where a cell sits in the ageing room (one cell per place).
- ``line_timers``: long-horizon timers as plain rows. The age checkpoints still pending in APScheduler's old job
  store (``apscheduler_jobs``, which formation no longer reads) are carried over from its plain columns, the job id
  ``ocv:{cabinet}:{run}:{step}:{k}`` and ``next_run_time``; its pickles are never unpickled. The old table is left
  as it is.

Each column and table is added only where it is missing: formation between revision 0001 and this one created
new databases with ``create_all`` from models that already had some of them, recording no revision, so such a
database is recognised as 0001 yet may hold part of this revision.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _counter(name: str) -> sa.Column[int]:
    # NOT NULL with a server default: SQLite and PostgreSQL add it in place (no table copy) and give existing rows
    # 0, which is what "outside any repeat block", "never released" and "sub-step unknown" mean.
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _new_columns() -> dict[str, list[sa.Column[Any]]]:
    """table → the columns this revision adds to it (new objects on every call: a Column joins one table)."""
    return {
        "job": [
            _counter("continue_count"),
            sa.Column("start_after_s", sa.Float(), nullable=True),
            sa.Column("owner", sa.String(), nullable=True),
        ],
        "step_result": [_counter("cycle")],
        "sample": [_counter("cycle"), _counter("sub_step")],
    }


def _new_tables() -> dict[str, list[Any]]:
    """table name → its columns and constraints."""
    return {
        "cabinet_lease": [
            sa.Column("cabinet", sa.String(), nullable=False),
            sa.Column("owner", sa.String(), nullable=False),
            sa.Column("expires_unix_s", sa.Float(), nullable=False),
            sa.Column("acquired_unix_s", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("cabinet"),
        ],
        "line_timers": [
            sa.Column("id", sa.String(length=200), nullable=False),
            sa.Column("kind", sa.String(length=40), nullable=False),
            sa.Column("cabinet", sa.String(length=200), nullable=False),
            sa.Column("job_id", sa.Integer(), nullable=False),
            sa.Column("run_id", sa.Integer(), nullable=False),
            sa.Column("step_index", sa.Integer(), nullable=False),
            sa.Column("k", sa.Integer(), nullable=False),
            sa.Column("due_unix_s", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        ],
        "rack_position": [
            sa.Column("cell_id", sa.String(), nullable=False),
            sa.Column("rack", sa.String(length=200), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("loaded_s", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("cell_id"),
            sa.UniqueConstraint("rack", "position", name="uq_rack_position_place"),
            sa.ForeignKeyConstraint(["cell_id"], ["cell.id"]),
        ],
    }


def _checkpoint(job_id: str, due: Any, job_of_run: dict[int, int]) -> dict[str, Any] | None:
    """The line_timers row of one APScheduler job, or None when it is not a checkpoint of a known run."""
    if not job_id.startswith("ocv:") or due is None:
        return None
    parts = job_id[len("ocv:") :].rsplit(":", 3)  # the cabinet name may hold colons; the numbers cannot
    if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
        return None
    cabinet, run_id, step_index, k = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    if run_id not in job_of_run:
        return None
    return {
        "id": job_id,
        "kind": "ocv_checkpoint",
        "cabinet": cabinet,
        "job_id": job_of_run[run_id],
        "run_id": run_id,
        "step_index": step_index,
        "k": k,
        "due_unix_s": float(due),
    }


def _carry_over_checkpoints(bind: sa.Connection) -> None:
    jobs = sa.table("apscheduler_jobs", sa.column("id", sa.String()), sa.column("next_run_time", sa.Float()))
    run = sa.table("run", sa.column("id", sa.Integer()), sa.column("job_id", sa.Integer()))
    columns = [sa.column(c.name, c.type) for c in _new_tables()["line_timers"] if isinstance(c, sa.Column)]
    timers = sa.table("line_timers", *columns)
    job_of_run = {int(r): int(j) for r, j in bind.execute(sa.select(run.c.id, run.c.job_id))}
    known = set(bind.execute(sa.select(timers.c.id)).scalars())
    rows = [
        row
        for job_id, due in bind.execute(sa.select(jobs.c.id, jobs.c.next_run_time))
        if job_id not in known and (row := _checkpoint(str(job_id), due, job_of_run)) is not None
    ]
    if rows:
        bind.execute(timers.insert(), rows)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, columns in _new_columns().items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column)
    for table, elements in _new_tables().items():
        if not inspector.has_table(table):
            op.create_table(table, *elements)
    if inspector.has_table("apscheduler_jobs"):
        _carry_over_checkpoints(bind)


def downgrade() -> None:
    for table in reversed(_new_tables()):
        op.drop_table(table)
    for table, columns in reversed(_new_columns().items()):
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column.name)
