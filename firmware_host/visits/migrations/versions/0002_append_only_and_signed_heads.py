"""Append-only visits and signed record heads: outcomes and plans become entries (a
correction is a new entry with who and why), a dose is stored when its session starts and
its result appended at the end, record heads keep the record key's signature and are
found by path.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
MIGRATED = "recorded before corrections were kept"


def upgrade() -> None:
    op.create_table(
        "dose_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dose_id", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.JSON(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["dose_id"], ["doses.id"], name="fk_dose_results_dose_id"),
        sa.PrimaryKeyConstraint("id", name="pk_dose_results"),
    )
    op.create_index("ix_dose_results_dose_id", "dose_results", ["dose_id"])
    op.create_table(
        "outcome_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("pain_before", sa.Integer(), nullable=True),
        sa.Column("pain_after", sa.Integer(), nullable=True),
        sa.Column("felt", sa.Text(), nullable=True),
        sa.Column("soreness", sa.Boolean(), nullable=True),
        sa.Column("fainting", sa.Boolean(), nullable=True),
        sa.Column("bleeding", sa.Boolean(), nullable=True),
        sa.Column("other_events", sa.Text(), nullable=True),
        sa.Column("ppt_local_before_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_local_after_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_remote_before_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_remote_after_kpa", sa.Float(), nullable=True),
        sa.Column("pain_before_at", TZ, nullable=True),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("recorded_by", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_outcome_entries_visit_id"),
        sa.PrimaryKeyConstraint("id", name="pk_outcome_entries"),
    )
    op.create_index("ix_outcome_entries_visit_id", "outcome_entries", ["visit_id"])
    op.create_table(
        "plan_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("recorded_by", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_plan_entries_visit_id"),
        sa.PrimaryKeyConstraint("id", name="pk_plan_entries"),
    )
    op.create_index("ix_plan_entries_visit_id", "plan_entries", ["visit_id"])
    conn = op.get_bind()
    conn.execute(sa.text("INSERT INTO dose_results (dose_id, delivered, completed, recorded_at) "
                         "SELECT id, delivered, completed, recorded_at FROM doses"))
    fields = ("pain_before, pain_after, felt, soreness, fainting, bleeding, other_events, ppt_local_before_kpa, "
              "ppt_local_after_kpa, ppt_remote_before_kpa, ppt_remote_after_kpa")
    conn.execute(sa.text(
        f"INSERT INTO outcome_entries (visit_id, {fields}, recorded_at, recorded_by, reason) "
        f"SELECT o.visit_id, {', '.join('o.' + f.strip() for f in fields.split(','))}, o.recorded_at, v.clinician, "
        f":why FROM outcomes o JOIN visits v ON v.id = o.visit_id"), {"why": MIGRATED})
    conn.execute(sa.text(
        "INSERT INTO plan_entries (visit_id, kinds, text, recorded_at, recorded_by, reason) "
        "SELECT p.visit_id, p.kinds, p.text, p.recorded_at, v.clinician, :why FROM plans p "
        "JOIN visits v ON v.id = p.visit_id"), {"why": MIGRATED})
    op.drop_table("outcomes")
    op.drop_table("plans")
    conn.execute(sa.text("ALTER TABLE doses DROP COLUMN delivered"))
    conn.execute(sa.text("ALTER TABLE doses DROP COLUMN completed"))
    op.add_column("doses", sa.Column("record_id", sa.String(80), nullable=True))
    op.add_column("record_heads", sa.Column("signature", sa.String(100), nullable=True))
    op.create_index("ix_record_heads_path", "record_heads", ["path"])


def downgrade() -> None:
    raise NotImplementedError("the visit store is append-only: entries are not folded back into one row")
