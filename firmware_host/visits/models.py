"""The visit store's tables (SQLAlchemy 2 declarative). The schema itself is made by the
Alembic migrations beside this file; a test checks the two agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
          "pk": "pk_%(table_name)s"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PatientRow(Base):
    """A patient, known only by the code the clinic chose (no names)."""

    __tablename__ = "patients"
    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sensitivity: Mapped[str] = mapped_column(String(20))


class VisitRow(Base):
    """A visit: `id` is the store's own (unique across patients, in records and links); `number`
    counts the patient's visits (1, 2, 3 of P001), given under the patient's lock."""

    __tablename__ = "visits"
    __table_args__ = (Index("uq_visits_patient_number", "patient_code", "number", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_code: Mapped[str] = mapped_column(ForeignKey("patients.code"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clinician: Mapped[str] = mapped_column(String(80))
    host: Mapped[str] = mapped_column(String(120))
    sensitivity: Mapped[str] = mapped_column(String(20))


class ScreeningEntryRow(Base):
    """A screening answer as given at one time; never changed: screening again appends the
    answers that changed, and taking back a yes carries who did it and why. The visit's
    screening is each question's newest entry."""

    __tablename__ = "screening_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    question: Mapped[str] = mapped_column(String(40))
    answer: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)


class ThresholdRow(Base):
    __tablename__ = "thresholds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_code: Mapped[str] = mapped_column(ForeignKey("patients.code"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id"))
    channel: Mapped[int] = mapped_column(Integer)
    site_a: Mapped[str] = mapped_column(String(80))
    site_b: Mapped[str] = mapped_column(String(80))
    shape: Mapped[str] = mapped_column(String(20))
    frequency_hz: Mapped[float] = mapped_column(Float)
    pulse_width_us: Mapped[float] = mapped_column(Float)
    burst_pulses: Mapped[int] = mapped_column(Integer)
    burst_rate_hz: Mapped[float] = mapped_column(Float)
    sensory_ma: Mapped[float | None] = mapped_column(Float)
    motor_ma: Mapped[float | None] = mapped_column(Float)
    tolerance_ma: Mapped[float | None] = mapped_column(Float)
    repeats: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DoseRow(Base):
    """A dose given in a visit, stored when its session starts: what was asked (to repeat it)
    and the record it is written in. What the device delivered comes later (DoseResultRow): a
    session killed before its end leaves a dose without one, which reads as not completed."""

    __tablename__ = "doses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    program: Mapped[str] = mapped_column(String(200))
    mechanism: Mapped[str | None] = mapped_column(String(40))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)     # how to ask for the same dose again
    record_id: Mapped[str | None] = mapped_column(String(80))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DoseResultRow(Base):
    """What the device delivered for a dose (per channel, from the session), appended at its end."""

    __tablename__ = "dose_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dose_id: Mapped[int] = mapped_column(ForeignKey("doses.id"), index=True)
    delivered: Mapped[list[Any]] = mapped_column(JSON)
    completed: Mapped[bool] = mapped_column(Boolean)
    stopped_by: Mapped[str | None] = mapped_column(Text)      # what ended a session early, in plain words
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutcomeEntryRow(Base):
    """What was recorded of how the patient responded, at one time (a field left NULL was not
    given then); never changed: a correction is a later entry with who made it and why. The
    visit's outcome is the entries taken in order."""

    __tablename__ = "outcome_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    pain_before: Mapped[int | None] = mapped_column(Integer)
    pain_after: Mapped[int | None] = mapped_column(Integer)
    felt: Mapped[str | None] = mapped_column(Text)
    soreness: Mapped[bool | None] = mapped_column(Boolean)
    fainting: Mapped[bool | None] = mapped_column(Boolean)
    bleeding: Mapped[bool | None] = mapped_column(Boolean)
    other_events: Mapped[str | None] = mapped_column(Text)
    ppt_local_before_kpa: Mapped[float | None] = mapped_column(Float)
    ppt_local_after_kpa: Mapped[float | None] = mapped_column(Float)
    ppt_remote_before_kpa: Mapped[float | None] = mapped_column(Float)
    ppt_remote_after_kpa: Mapped[float | None] = mapped_column(Float)
    pain_before_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)


class PlanEntryRow(Base):
    """The integration plan that ends a visit; never changed: a correction is a later entry."""

    __tablename__ = "plan_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    kinds: Mapped[list[str]] = mapped_column(JSON)
    text: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)


class VisitRecordRow(Base):
    """A treatment record written during a visit."""

    __tablename__ = "visit_records"
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    path: Mapped[str] = mapped_column(Text)


class RecordHeadRow(Base):
    """The newest known head of a treatment record's chain, signed by the record's key: a
    record cut short, copied, replaced or deleted no longer matches it."""

    __tablename__ = "record_heads"
    record_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    path: Mapped[str] = mapped_column(Text, index=True)
    count: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(80))
    closed: Mapped[bool] = mapped_column(Boolean)
    signature: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
