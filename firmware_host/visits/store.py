"""The visit store: patients, their visits and everything a visit decides, in one database.

SQLite by default (one file in the user's data directory); the same store on a clinic's
PostgreSQL server with one URL (`--store URL` or `ESTIM_STORE_URL`, e.g.
`postgresql+psycopg://estim@db.clinic/estim`). The schema is made and kept current by the
Alembic migrations shipped in this package, run whenever a store is opened. Writes are
single transactions, so two treatment rooms writing visits for one patient lose nothing.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from safety.placement import ChannelPlacement
from safety.screening import Question, Screening

from safety.thresholds import MAX_AGE, ChannelThresholds, TitrationWaveform, site_from_key, site_key
from .models import (DoseRow, OutcomeRow, PatientRow, PlanRow, RecordHeadRow, ScreeningRow, ThresholdRow,
                     VisitRecordRow, VisitRow)

STORE_URL_ENV = "ESTIM_STORE_URL"
PATIENT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
PLAN_KINDS = ("breathing", "graded_exposure", "loading", "motor_control")
_MIGRATION_LOCK = 0x657374696D  # pg_advisory_xact_lock key: one migrating host at a time


class StoreError(Exception):
    """The store cannot do what was asked; the message says why in plain words."""


class RecordHeadError(StoreError):
    """A record head that would move backwards (a lower count than the one stored)."""


@dataclass(frozen=True, slots=True)
class RecordHead:
    record_id: str
    path: str
    count: int
    last_hash: str
    key_id: str | None
    closed: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the patient responded: pain 0-10 before and after, how it felt, adverse events,
    and optionally pressure-pain thresholds (kPa) near the needles and at a remote site."""

    pain_before: int | None = None
    pain_after: int | None = None
    felt: str = ""
    soreness: bool = False
    fainting: bool = False
    bleeding: bool = False
    other_events: str = ""
    ppt_local_before_kpa: float | None = None
    ppt_local_after_kpa: float | None = None
    ppt_remote_before_kpa: float | None = None
    ppt_remote_after_kpa: float | None = None

    def __post_init__(self) -> None:
        for name in ("pain_before", "pain_after"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 10):
                raise StoreError(f"{name.replace('_', ' ')} is {v!r}: give a whole number from 0 to 10")
        for name in ("ppt_local_before_kpa", "ppt_local_after_kpa", "ppt_remote_before_kpa", "ppt_remote_after_kpa"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v < 2000):
                raise StoreError(f"{name} is {v!r}: give a pressure in kPa above 0")

    @property
    def adverse_events(self) -> list[str]:
        events = [name for name in ("soreness", "fainting", "bleeding") if getattr(self, name)]
        return events + ([self.other_events] if self.other_events else [])


@dataclass(frozen=True, slots=True)
class Plan:
    """What follows the session: any of PLAN_KINDS, and free text."""

    kinds: tuple[str, ...] = ()
    text: str = ""

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in PLAN_KINDS]
        if unknown:
            raise StoreError(f"unknown plan {', '.join(unknown)}: choose from {', '.join(PLAN_KINDS)} or free text")
        if not self.kinds and not self.text.strip():
            raise StoreError("the plan is empty: name what follows the session (e.g. loading) or write it out")


@dataclass(frozen=True, slots=True)
class Dose:
    program: str
    mechanism: str | None
    request: Mapping[str, Any]          # the options that ask for this dose again
    delivered: tuple[Mapping[str, Any], ...]
    completed: bool
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Visit:
    id: int
    patient: str
    started_at: datetime
    ended_at: datetime | None
    clinician: str
    host: str
    sensitivity: str
    screening: Screening
    thresholds: tuple[ChannelThresholds, ...] = ()
    doses: tuple[Dose, ...] = ()
    outcome: Outcome | None = None
    plan: Plan | None = None
    records: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PatientInfo:
    code: str
    created_at: datetime
    sensitivity: str


def default_url() -> str:
    """ESTIM_STORE_URL, else a SQLite file in the user's data directory."""
    if os.environ.get(STORE_URL_ENV):
        return os.environ[STORE_URL_ENV]
    import platformdirs

    return f"sqlite:///{platformdirs.user_data_path('estim') / 'visits.sqlite3'}"


def _utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every one stored is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class VisitStore:
    """One store, opened by URL; migrated to the current schema on open."""

    def __init__(self, url: str | None = None) -> None:
        url = url or default_url()
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"{url!r} is not a database URL (e.g. sqlite:///visits.sqlite3 or "
                             "postgresql+psycopg://user@host/db)") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"the visit store runs on SQLite or PostgreSQL, not {parsed.get_backend_name()}")
        sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" and parsed.database not in (
            None, "", ":memory:") else None
        if sqlite_file is not None:
            Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
        self.url = parsed.render_as_string(hide_password=True)
        try:
            self._engine = create_engine(parsed, pool_pre_ping=True)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self._engine, "connect", _sqlite_pragmas)
            with _migration_lock(sqlite_file):
                _migrate(self._engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the visit store at {self.url}: {exc.orig or exc}") from None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> VisitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self._engine) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"the visit store at {self.url} failed: {getattr(exc, 'orig', None) or exc}") from None

    # --- patients -------------------------------------------------------------------------

    def add_patient(self, code: str, sensitivity: str) -> PatientInfo:
        if not PATIENT_CODE.fullmatch(code):
            raise StoreError(f"patient code {code!r}: use the clinic's code (letters, digits, '.', '_' or '-', "
                             "at most 40), not a name")
        with self._session() as s:
            if s.get(PatientRow, code) is not None:
                raise StoreError(f"patient {code} already exists")
            row = PatientRow(code=code, created_at=_now(), sensitivity=sensitivity)
            s.add(row)
            return PatientInfo(code, row.created_at, sensitivity)

    def patient(self, code: str) -> PatientInfo | None:
        with self._session() as s:
            row = s.get(PatientRow, code)
            return None if row is None else PatientInfo(row.code, _utc(row.created_at), row.sensitivity)

    def _require_patient(self, s: Session, code: str) -> PatientRow:
        row = s.get(PatientRow, code)
        if row is None:
            raise StoreError(f"no patient {code}: add them first with `estim patient add {code}`")
        return row

    # --- visits ---------------------------------------------------------------------------

    def start_visit(self, code: str, screening: Screening, clinician: str, sensitivity: str | None = None,
                    when: datetime | None = None) -> int:
        """A new visit with its screening answers; every question must be answered."""
        if screening.unanswered:
            raise StoreError("screening is not finished: " + ", ".join(q.value for q in screening.unanswered))
        with self._session() as s:
            patient = self._require_patient(s, code)
            visit = VisitRow(patient_code=code, started_at=when or _now(), ended_at=None, clinician=clinician,
                             host=socket.gethostname(), sensitivity=sensitivity or patient.sensitivity)
            s.add(visit)
            s.flush()
            s.add_all(ScreeningRow(visit_id=visit.id, question=q.value, answer=a) for q, a in screening.answers.items())
            return visit.id

    def open_visit(self, code: str, now: datetime | None = None) -> Visit | None:
        """Today's visit not yet ended (started within the thresholds' lifetime), if any."""
        now = now or _now()
        with self._session() as s:
            row = s.scalars(select(VisitRow).where(VisitRow.patient_code == code, VisitRow.ended_at.is_(None))
                            .order_by(VisitRow.started_at.desc(), VisitRow.id.desc()).limit(1)).first()
            if row is None or now - _utc(row.started_at) > MAX_AGE:
                return None
            return self._visits(s, [row])[0]

    def visit(self, visit_id: int) -> Visit:
        with self._session() as s:
            row = s.get(VisitRow, visit_id)
            if row is None:
                raise StoreError(f"no visit {visit_id}")
            return self._visits(s, [row])[0]

    def visits(self, code: str, limit: int | None = None) -> list[Visit]:
        """The patient's visits, newest first."""
        with self._session() as s:
            self._require_patient(s, code)
            rows = s.scalars(select(VisitRow).where(VisitRow.patient_code == code)
                             .order_by(VisitRow.started_at.desc(), VisitRow.id.desc()).limit(limit)).all()
            return self._visits(s, list(rows))

    def add_thresholds(self, visit_id: int, thresholds: ChannelThresholds) -> None:
        with self._session() as s:
            visit = self._require_visit(s, visit_id)
            w = thresholds.waveform
            s.add(ThresholdRow(
                patient_code=visit.patient_code, visit_id=visit_id, channel=thresholds.channel,
                site_a=site_key(thresholds.placement.a), site_b=site_key(thresholds.placement.b),
                shape=w.shape.name.lower(), frequency_hz=w.frequency_hz, pulse_width_us=w.pulse_width_us,
                burst_pulses=w.burst_pulses, burst_rate_hz=w.burst_rate_hz, sensory_ma=thresholds.sensory_ma,
                motor_ma=thresholds.motor_ma, tolerance_ma=thresholds.tolerance_ma, repeats=thresholds.repeats,
                measured_at=thresholds.measured_at))

    def thresholds(self, code: str) -> list[ChannelThresholds]:
        """Every threshold measured on the patient, newest first."""
        with self._session() as s:
            rows = s.scalars(select(ThresholdRow).where(ThresholdRow.patient_code == code)
                             .order_by(ThresholdRow.measured_at.desc(), ThresholdRow.id.desc())).all()
            return [_thresholds(r) for r in rows]

    def add_dose(self, visit_id: int, program: str, mechanism: str | None, request: Mapping[str, Any],
                 delivered: Iterable[Mapping[str, Any]], completed: bool) -> None:
        with self._session() as s:
            self._require_visit(s, visit_id)
            s.add(DoseRow(visit_id=visit_id, program=program, mechanism=mechanism, request=dict(request),
                          delivered=[dict(d) for d in delivered], completed=completed, recorded_at=_now()))

    def last_dose(self, code: str) -> Dose | None:
        """The newest completed dose of the patient's visits."""
        with self._session() as s:
            row = s.scalars(select(DoseRow).join(VisitRow).where(VisitRow.patient_code == code,
                                                                  DoseRow.completed.is_(True))
                            .order_by(DoseRow.recorded_at.desc(), DoseRow.id.desc()).limit(1)).first()
            return None if row is None else _dose(row)

    def set_outcome(self, visit_id: int, outcome: Outcome) -> None:
        with self._session() as s:
            self._require_visit(s, visit_id)
            s.merge(OutcomeRow(visit_id=visit_id, recorded_at=_now(), **{
                name: getattr(outcome, name) for name in Outcome.__dataclass_fields__}))

    def end_visit(self, visit_id: int, plan: Plan) -> None:
        """Store the integration plan and close the visit."""
        with self._session() as s:
            visit = self._require_visit(s, visit_id)
            s.merge(PlanRow(visit_id=visit_id, kinds=list(plan.kinds), text=plan.text, recorded_at=_now()))
            visit.ended_at = _now()

    def link_record(self, visit_id: int, record_id: str, path: str) -> None:
        """A treatment record written during this visit."""
        with self._session() as s:
            self._require_visit(s, visit_id)
            s.merge(VisitRecordRow(visit_id=visit_id, record_id=record_id, path=path))

    def _require_visit(self, s: Session, visit_id: int) -> VisitRow:
        row = s.get(VisitRow, visit_id)
        if row is None:
            raise StoreError(f"no visit {visit_id}")
        return row

    def _visits(self, s: Session, rows: list[VisitRow]) -> list[Visit]:
        ids = [r.id for r in rows]

        def by_visit(model: Any, order: Any = None) -> dict[int, list[Any]]:
            out: dict[int, list[Any]] = {i: [] for i in ids}
            query = select(model).where(model.visit_id.in_(ids))
            for item in s.scalars(query.order_by(order) if order is not None else query):
                out[item.visit_id].append(item)
            return out

        answers = by_visit(ScreeningRow)
        thresholds = by_visit(ThresholdRow, ThresholdRow.id)
        doses = by_visit(DoseRow, DoseRow.id)
        outcomes = by_visit(OutcomeRow)
        plans = by_visit(PlanRow)
        records = by_visit(VisitRecordRow, VisitRecordRow.record_id)
        return [Visit(
            id=r.id, patient=r.patient_code, started_at=_utc(r.started_at),
            ended_at=None if r.ended_at is None else _utc(r.ended_at), clinician=r.clinician, host=r.host,
            sensitivity=r.sensitivity,
            screening=Screening({Question(a.question): a.answer for a in answers[r.id]}),
            thresholds=tuple(_thresholds(t) for t in thresholds[r.id]),
            doses=tuple(_dose(d) for d in doses[r.id]),
            outcome=next((Outcome(**{n: getattr(o, n) for n in Outcome.__dataclass_fields__})
                          for o in outcomes[r.id]), None),
            plan=next((Plan(tuple(p.kinds), p.text) for p in plans[r.id]), None),
            records=tuple((v.record_id, v.path) for v in records[r.id]),
        ) for r in rows]

    # --- treatment-record heads ----------------------------------------------------------------

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool) -> None:
        """Insert or advance a record's head in one statement; a head never moves backwards
        (a lower count, or the same count with another hash, is a RecordHeadError)."""
        values = dict(record_id=record_id, path=path, count=count, last_hash=last_hash, key_id=key_id,
                      closed=closed, updated_at=_now())
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(RecordHeadRow).values(**values)
        stored = RecordHeadRow.__table__.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["record_id"],
            set_={k: stmt.excluded[k] for k in values if k != "record_id"},
            where=or_(stored.count < stmt.excluded.count,
                      (stored.count == stmt.excluded.count) & (stored.last_hash == stmt.excluded.last_hash))
        ).returning(stored.record_id)
        with self._session() as s:
            if s.connection().execute(stmt).first() is None:
                have = s.execute(select(RecordHeadRow.count, RecordHeadRow.last_hash)
                                 .where(RecordHeadRow.record_id == record_id)).one()
                raise RecordHeadError(f"record {record_id}: the head would move back from {have.count} records "
                                      f"to {count}" if count < have.count else
                                      f"record {record_id}: a different last hash at the same count {count}")

    def get_record_head(self, record_id: str) -> RecordHead | None:
        with self._session() as s:
            row = s.get(RecordHeadRow, record_id)
            if row is None:
                return None
            return RecordHead(row.record_id, row.path, row.count, row.last_hash, row.key_id, row.closed,
                              _utc(row.updated_at))


def _thresholds(r: ThresholdRow) -> ChannelThresholds:
    from safety.settings import Shape

    return ChannelThresholds(
        channel=r.channel, placement=ChannelPlacement(site_from_key(r.site_a), site_from_key(r.site_b)),
        waveform=TitrationWaveform(Shape[r.shape.upper()], r.frequency_hz, r.pulse_width_us, r.burst_pulses,
                                   r.burst_rate_hz),
        measured_at=_utc(r.measured_at), sensory_ma=r.sensory_ma, motor_ma=r.motor_ma, tolerance_ma=r.tolerance_ma,
        patient=r.patient_code, repeats=r.repeats)


def _dose(r: DoseRow) -> Dose:
    return Dose(r.program, r.mechanism, dict(r.request), tuple(r.delivered), r.completed, _utc(r.recorded_at))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


@contextmanager
def _migration_lock(sqlite_file: str | None) -> Iterator[None]:
    """Two programs opening a new SQLite store at once must not both create its tables (one
    would fail): they take turns on a lock file beside it. PostgreSQL uses an advisory lock."""
    if sqlite_file is None:
        yield
        return
    import fcntl

    with open(f"{sqlite_file}.migration-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is current)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "firmware_host.visits:migrations")
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if MigrationContext.configure(conn).get_current_revision() != head:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
