"""Screening kept as entries and visits counted per patient: each screening answer becomes an
entry (screening again appends what changed, with who and why), every visit gets its number
among its patient's visits (1, 2, 3 of P001, in the order they were stored) beside the store's
own id, and a dose's result says what stopped its session.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "screening_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=False),
        sa.Column("question", sa.String(40), nullable=False),
        sa.Column("answer", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("recorded_by", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["visit_id"], ["visits.id"], name="fk_screening_entries_visit_id"),
        sa.PrimaryKeyConstraint("id", name="pk_screening_entries"),
    )
    op.create_index("ix_screening_entries_visit_id", "screening_entries", ["visit_id"])
    conn = op.get_bind()
    conn.execute(sa.text(
        "INSERT INTO screening_entries (visit_id, question, answer, recorded_at, recorded_by, reason) "
        "SELECT s.visit_id, s.question, s.answer, v.started_at, v.clinician, '' FROM screening_answers s "
        "JOIN visits v ON v.id = s.visit_id ORDER BY s.visit_id, s.question"))
    op.drop_table("screening_answers")
    # SQLite adds a NOT NULL column only with a default; every visit stored from now on is given
    # its number by the store, and the unique index refuses a second number 0.
    conn.execute(sa.text("ALTER TABLE visits ADD COLUMN number INTEGER NOT NULL DEFAULT 0"))
    conn.execute(sa.text("UPDATE visits SET number = (SELECT COUNT(*) FROM visits AS earlier "
                         "WHERE earlier.patient_code = visits.patient_code AND earlier.id <= visits.id)"))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ALTER TABLE visits ALTER COLUMN number DROP DEFAULT"))
    op.create_index("uq_visits_patient_number", "visits", ["patient_code", "number"], unique=True)
    op.add_column("dose_results", sa.Column("stopped_by", sa.Text(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the visit store is append-only: screening entries are not folded back into one row")
