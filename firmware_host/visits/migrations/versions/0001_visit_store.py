"""The visit store: patients, visits, screening, thresholds, doses, outcomes, plans,
the treatment records of each visit and the record heads they are anchored to.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sensitivity", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_patients"),
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_code", sa.String(40), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("clinician", sa.String(80), nullable=False),
        sa.Column("host", sa.String(120), nullable=False),
        sa.Column("sensitivity", sa.String(20), nullable=False),
        sa.ForeignKeyConstraint(["patient_code"], ["patients.code"], name="fk_visits_patient_code"),
        sa.PrimaryKeyConstraint("id", name="pk_visits"),
    )
    op.create_index("ix_visits_patient_code", "visits", ["patient_code"])
    op.create_table(
        "screening_answers",
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("question", sa.String(40), nullable=False),
        sa.Column("answer", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_screening_answers_visit_id"),
        sa.PrimaryKeyConstraint("visit_id", "question", name="pk_screening_answers"),
    )
    op.create_table(
        "thresholds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("patient_code", sa.String(40), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("site_a", sa.String(80), nullable=False),
        sa.Column("site_b", sa.String(80), nullable=False),
        sa.Column("shape", sa.String(20), nullable=False),
        sa.Column("frequency_hz", sa.Float(), nullable=False),
        sa.Column("pulse_width_us", sa.Float(), nullable=False),
        sa.Column("burst_pulses", sa.Integer(), nullable=False),
        sa.Column("burst_rate_hz", sa.Float(), nullable=False),
        sa.Column("sensory_ma", sa.Float(), nullable=True),
        sa.Column("motor_ma", sa.Float(), nullable=True),
        sa.Column("tolerance_ma", sa.Float(), nullable=True),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("measured_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["patient_code"], ["patients.code"], name="fk_thresholds_patient_code"),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_thresholds_visit_id"),
        sa.PrimaryKeyConstraint("id", name="pk_thresholds"),
    )
    op.create_index("ix_thresholds_patient_code", "thresholds", ["patient_code"])
    op.create_table(
        "doses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("program", sa.String(200), nullable=False),
        sa.Column("mechanism", sa.String(40), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("delivered", sa.JSON(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_doses_visit_id"),
        sa.PrimaryKeyConstraint("id", name="pk_doses"),
    )
    op.create_index("ix_doses_visit_id", "doses", ["visit_id"])
    op.create_table(
        "outcomes",
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("pain_before", sa.Integer(), nullable=True),
        sa.Column("pain_after", sa.Integer(), nullable=True),
        sa.Column("felt", sa.Text(), nullable=False),
        sa.Column("soreness", sa.Boolean(), nullable=False),
        sa.Column("fainting", sa.Boolean(), nullable=False),
        sa.Column("bleeding", sa.Boolean(), nullable=False),
        sa.Column("other_events", sa.Text(), nullable=False),
        sa.Column("ppt_local_before_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_local_after_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_remote_before_kpa", sa.Float(), nullable=True),
        sa.Column("ppt_remote_after_kpa", sa.Float(), nullable=True),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_outcomes_visit_id"),
        sa.PrimaryKeyConstraint("visit_id", name="pk_outcomes"),
    )
    op.create_table(
        "plans",
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_plans_visit_id"),
        sa.PrimaryKeyConstraint("visit_id", name="pk_plans"),
    )
    op.create_table(
        "visit_records",
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.String(80), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_visit_records_visit_id"),
        sa.PrimaryKeyConstraint("visit_id", "record_id", name="pk_visit_records"),
    )
    op.create_table(
        "record_heads",
        sa.Column("record_id", sa.String(80), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(80), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_record_heads"),
    )


def downgrade() -> None:
    for table in ("record_heads", "visit_records", "plans", "outcomes", "doses", "thresholds",
                  "screening_answers", "visits", "patients"):
        op.drop_table(table)
