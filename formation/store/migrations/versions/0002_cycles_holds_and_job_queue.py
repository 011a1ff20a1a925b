"""Everything the models gained between revision 0001 and the first migrations, additive only.

- ``step_result.cycle``, ``sample.cycle``: the cycle number of a step in a repeat block (0 outside any block).
- ``job.continue_count``: how many times `formation run continue` released a job's hold steps.
- ``job.start_after_s``, ``job.owner``: the job queue of `formation serve` (start time, claiming daemon).
- ``cabinet_lease``: which daemon drives a cabinet until when.

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
    # 0, which is what "outside any repeat block" and "never released" mean.
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
        "sample": [_counter("cycle")],
    }


def _create_cabinet_lease() -> None:
    op.create_table(
        "cabinet_lease",
        sa.Column("cabinet", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("expires_unix_s", sa.Float(), nullable=False),
        sa.Column("acquired_unix_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cabinet"),
    )


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in _new_columns().items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in present:
                op.add_column(table, column)
    if not inspector.has_table("cabinet_lease"):
        _create_cabinet_lease()


def downgrade() -> None:
    op.drop_table("cabinet_lease")
    for table, columns in reversed(_new_columns().items()):
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column.name)
