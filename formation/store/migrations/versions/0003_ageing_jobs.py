"""The ageing room's jobs, readings and K results (issue 8), and the ACIR column of a grade; additive only, and only
where missing (as 0002).

- ``ageing_job``: one ageing plan run on a lot's cells on one rack (plan as canonical JSON, state, time zero).
- ``ageing_reading``: one cell's OCV/ACIR at one checkpoint, with time, temperatures, chamber state and a reason
  when the tester gave no number; unique per (job, checkpoint, cell).
- ``ageing_result``: K by regression per (job, cell), its standard error, window, temperature and last readings.
- ``grade.acir_mohm``: the ACIR a grade was given with (NULL in older rows).

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _new_tables() -> dict[str, list[Any]]:
    """table name → its columns and constraints (parents first)."""
    return {
        "ageing_job": [
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("lot_id", sa.String(), nullable=False),
            sa.Column("rack", sa.String(length=200), nullable=False),
            sa.Column("tester", sa.String(length=200), nullable=True),
            sa.Column("chamber", sa.String(length=200), nullable=True),
            sa.Column("plan_name", sa.String(), nullable=False),
            sa.Column("plan_sha256", sa.String(length=64), nullable=False),
            sa.Column("plan_json", sa.String(), nullable=False),
            sa.Column("state", sa.String(length=20), nullable=False),
            sa.Column("started_s", sa.Float(), nullable=False),
            sa.Column("ended_s", sa.Float(), nullable=True),
            sa.Column("owner", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.ForeignKeyConstraint(["lot_id"], ["lot.id"]),
        ],
        "ageing_reading": [
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
            sa.Column("ageing_job_id", sa.Integer(), nullable=False),
            sa.Column("cell_id", sa.String(), nullable=False),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("k", sa.Integer(), nullable=False),
            sa.Column("stage", sa.Integer(), nullable=False),
            sa.Column("ts_s", sa.Float(), nullable=False),
            sa.Column("ocv_v", sa.Float(), nullable=True),
            sa.Column("acir_mohm", sa.Float(), nullable=True),
            sa.Column("cell_temperature_c", sa.Float(), nullable=True),
            sa.Column("chamber_setpoint_c", sa.Float(), nullable=True),
            sa.Column("chamber_temperature_c", sa.Float(), nullable=True),
            sa.Column("chamber_in_band", sa.Boolean(), nullable=True),
            sa.Column("chamber_stable", sa.Boolean(), nullable=True),
            sa.Column("reason", sa.String(), nullable=True),
            sa.PrimaryKeyConstraint("id"),
            sa.ForeignKeyConstraint(["ageing_job_id"], ["ageing_job.id"]),
            sa.ForeignKeyConstraint(["cell_id"], ["cell.id"]),
            sa.UniqueConstraint("ageing_job_id", "k", "cell_id", name="uq_ageing_reading_job_k_cell"),
        ],
        "ageing_result": [
            sa.Column("ageing_job_id", sa.Integer(), nullable=False),
            sa.Column("cell_id", sa.String(), nullable=False),
            sa.Column("k_mv_per_day", sa.Float(), nullable=True),
            sa.Column("k_se_mv_per_day", sa.Float(), nullable=True),
            sa.Column("n_points", sa.Integer(), nullable=False),
            sa.Column("window_start_s", sa.Float(), nullable=True),
            sa.Column("window_end_s", sa.Float(), nullable=True),
            sa.Column("temperature_c", sa.Float(), nullable=True),
            sa.Column("reference_c", sa.Float(), nullable=False),
            sa.Column("ocv_v", sa.Float(), nullable=True),
            sa.Column("acir_mohm", sa.Float(), nullable=True),
            sa.Column("reason", sa.String(), nullable=False),
            sa.Column("computed_s", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("ageing_job_id", "cell_id"),
            sa.ForeignKeyConstraint(["ageing_job_id"], ["ageing_job.id"]),
            sa.ForeignKeyConstraint(["cell_id"], ["cell.id"]),
        ],
    }


#: table → [(index name, columns)]
_INDEXES: dict[str, list[tuple[str, list[str]]]] = {
    "ageing_job": [("ix_ageing_job_lot_id", ["lot_id"]), ("ix_ageing_job_rack_state", ["rack", "state"])],
    "ageing_reading": [("ix_ageing_reading_cell", ["cell_id"])],
    "ageing_result": [("ix_ageing_result_cell_id", ["cell_id"])],
}


def upgrade() -> None:
    # Only what is missing, as 0002 does: a database made unversioned by create_all from today's models is
    # recognised as 0001 and may already hold all of this.
    inspector = sa.inspect(op.get_bind())
    for table, elements in _new_tables().items():
        if not inspector.has_table(table):
            op.create_table(table, *elements)
            for name, columns in _INDEXES[table]:
                op.create_index(name, table, columns)
    if "acir_mohm" not in {c["name"] for c in inspector.get_columns("grade")}:
        op.add_column("grade", sa.Column("acir_mohm", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("grade") as batch:
        batch.drop_column("acir_mohm")
    for table in reversed(list(_new_tables())):
        for name, _columns in _INDEXES[table]:
            op.drop_index(name, table_name=table)
        op.drop_table(table)
