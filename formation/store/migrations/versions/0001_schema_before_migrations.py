"""The schema as ``create_schema`` made it before migrations existed (formation at git commit 00694c5).

A database with these tables and no ``alembic_version`` is recognised as this revision by ``formation db upgrade``
(stamped, then upgraded). Written by hand from the models of that commit and checked against a database that
code made (``tests/fixtures/formation-00694c5.db``): same tables, columns, types, keys, indexes and constraints.

Revision ID: 0001
Revises:
Create Date: 2025-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _bigint_pk() -> sa.Column[int]:
    # SQLite only aliases the rowid (fast, auto-assigned) for a column declared exactly INTEGER PRIMARY KEY.
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "lot",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("product", sa.String(), nullable=True),
        sa.Column("created_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "recipe",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("chemistry", sa.String(), nullable=True),
        sa.Column("nominal_capacity_ah", sa.Float(), nullable=False),
        sa.Column("body_json", sa.String(), nullable=False),
        sa.Column("source_text", sa.String(), nullable=False),
        sa.Column("created_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "chamber_sample",
        _bigint_pk(),
        sa.Column("chamber", sa.String(), nullable=False),
        sa.Column("ts_s", sa.Float(), nullable=False),
        sa.Column("setpoint_c", sa.Float(), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("sensors_c", sa.String(), nullable=False),
        sa.Column("demand", sa.Float(), nullable=False),
        sa.Column("valves_open", sa.String(), nullable=False),
        sa.Column("stable", sa.Boolean(), nullable=False),
        sa.Column("in_band", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_chamber_sample_chamber_ts", "chamber_sample", ["chamber", "ts_s"])
    op.create_table(
        "valve_switches",
        sa.Column("chamber", sa.String(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("switches", sa.BigInteger(), nullable=False),
        sa.Column("open_s", sa.Float(), nullable=False),
        sa.Column("updated_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("chamber", "channel"),
    )
    op.create_table(
        "cell",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("lot_id", sa.String(), nullable=False),
        sa.Column("nominal_capacity_ah", sa.Float(), nullable=False),
        sa.Column("created_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cell_lot_id", "cell", ["lot_id"])
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recipe_sha256", sa.String(), nullable=False),
        sa.Column("cabinet", sa.String(), nullable=False),
        sa.Column("channels", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("clock_scale", sa.Float(), nullable=False),
        sa.Column("started_s", sa.Float(), nullable=False),
        sa.Column("ended_s", sa.Float(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["recipe_sha256"], ["recipe.sha256"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_recipe_sha256", "job", ["recipe_sha256"])
    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.String(), nullable=False),
        sa.Column("cabinet", sa.String(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("instrument_cell", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=True),
        sa.Column("seq_id", sa.Integer(), nullable=True),
        sa.Column("step_started_s", sa.Float(), nullable=True),
        sa.Column("journal", sa.String(), nullable=False),
        sa.Column("last_rec", sa.BigInteger(), nullable=False),
        sa.Column("started_s", sa.Float(), nullable=False),
        sa.Column("ended_s", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.ForeignKeyConstraint(["cell_id"], ["cell.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_run_cabinet_state", "run", ["cabinet", "state"])
    op.create_index("ix_run_cell_id", "run", ["cell_id"])
    op.create_index("ix_run_job_id", "run", ["job_id"])
    op.create_table(
        "step_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=True),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("started_s", sa.Float(), nullable=False),
        sa.Column("ended_s", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("ah", sa.Float(), nullable=False),
        sa.Column("wh", sa.Float(), nullable=False),
        sa.Column("start_voltage_v", sa.Float(), nullable=True),
        sa.Column("end_voltage_v", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(), nullable=False),
        sa.Column("details", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "step_index", name="uq_step_result_run_step"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
    )
    op.create_table(
        "sample",
        _bigint_pk(),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("rec", sa.BigInteger(), nullable=False),
        sa.Column("ts_s", sa.Float(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_time_s", sa.Float(), nullable=True),
        sa.Column("voltage_v", sa.Float(), nullable=True),
        sa.Column("current_a", sa.Float(), nullable=True),
        sa.Column("ah", sa.Float(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
    )
    op.create_index("ix_sample_run_rec", "sample", ["run_id", "rec"])
    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts_s", sa.Float(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
        sa.Column("cabinet", sa.String(), nullable=True),
        sa.Column("channel", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name="ck_alarm_severity"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alarm_job_id", "alarm", ["job_id"])
    op.create_index("ix_alarm_ts_s", "alarm", ["ts_s"])
    op.create_table(
        "grade",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.String(), nullable=False),
        sa.Column("lot_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("grade", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("capacity_ah", sa.Float(), nullable=True),
        sa.Column("dcir_mohm", sa.Float(), nullable=True),
        sa.Column("k_mv_per_day", sa.Float(), nullable=True),
        sa.Column("ocv_v", sa.Float(), nullable=True),
        sa.Column("recipe_sha256", sa.String(length=64), nullable=True),
        sa.Column("rules_sha256", sa.String(length=64), nullable=False),
        sa.Column("rules_name", sa.String(), nullable=False),
        sa.Column("graded_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cell_id", "rules_sha256", "run_id", name="uq_grade_cell_rules_run"),
        sa.ForeignKeyConstraint(["cell_id"], ["cell.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
    )
    op.create_index("ix_grade_lot_rules", "grade", ["lot_id", "rules_sha256"])


def downgrade() -> None:
    # Children first: every foreign key points at a table dropped later.
    for table in (
        "grade",
        "alarm",
        "sample",
        "step_result",
        "run",
        "job",
        "cell",
        "valve_switches",
        "chamber_sample",
        "recipe",
        "lot",
    ):
        op.drop_table(table)
