"""The visit store: patients, their visits and everything a visit decides, in one database.

SQLite by default (one file in the user's data directory, readable by its user only); the
same store on a clinic's PostgreSQL server with one URL (`--store URL` or
`ESTIM_STORE_URL`, e.g. `postgresql+psycopg://estim@db.clinic/estim`). The schema is made
and kept current by the Alembic migrations shipped in this package; opening a current
store only reads its revision. Entries are appended, never changed: a second outcome or
plan for a visit is a correction with who made it and why, and the first stays readable.
Writes that check before they add (a second visit, a correction) take a lock first (the
patient's or the visit's row on PostgreSQL, the database on SQLite), so two treatment
rooms writing for one patient at once lose nothing and never meet a constraint error.
"""

from __future__ import annotations

import contextvars
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, func, inspect, or_, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from .models import (DoseResultRow, DoseRow, OutcomeEntryRow, PatientRow, PlanEntryRow, RecordHeadRow,
                     ScreeningEntryRow, ThresholdRow, VisitRecordRow, VisitRow)
from .values import (OUTCOME_FIELDS, Dose, Entry, Outcome, OutcomeEntry, PatientInfo, Plan, PlanEntry, RecordHead,
                     RecordHeadError, ScreeningEntry, StoreError, Visit, VisitRef)
from .screening import ENDED_AT_SCREENING, current_answers, end_if_ruled_out, taken_back
from .where import KNOWN_REVISIONS, SCHEMA_REVISION, STORE_URL_ENV, default_url

if TYPE_CHECKING:
    from safety.screening import Question, Screening

PATIENT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_MIGRATION_LOCK = 0x657374696D  # pg_advisory_xact_lock key: one migrating host at a time
_WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("estim_store_writing", default=False)


def _utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every one stored is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class VisitStore:
    """One store, opened by URL; migrated to the current schema on open. With `create=False`
    a SQLite file that is not there is an error rather than a new, empty store."""

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        url = url or default_url()
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"{url!r} is not a database URL (e.g. sqlite:///visits.sqlite3 or "
                             "postgresql+psycopg://user@host/db)") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"the visit store runs on SQLite or PostgreSQL, not {parsed.get_backend_name()}")
        self.url = parsed.render_as_string(hide_password=True)
        sqlite_file = parsed.database if parsed.get_backend_name() == "sqlite" and parsed.database not in (
            None, "", ":memory:") else None
        if sqlite_file is not None:
            _prepare_sqlite_file(Path(sqlite_file), create)
        try:
            self._engine = create_engine(parsed, pool_pre_ping=True)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self._engine, "connect", _sqlite_connect)
                event.listen(self._engine, "begin", _sqlite_begin)
            if _revision(self._engine) != SCHEMA_REVISION:
                with _migration_lock(sqlite_file):
                    _migrate(self._engine, self.url)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the visit store at {self.url}: {_why(exc)}") from None

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> VisitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        token = _WRITING.set(write)
        try:
            with Session(self._engine) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"the visit store at {self.url} failed: {_why(exc)}") from None
        finally:
            _WRITING.reset(token)

    def _lock(self, s: Session, model: Any, key: Any) -> Any:
        """The row, locked until the transaction ends (SQLite: the write transaction is the lock)."""
        query = select(model).where(model.__table__.primary_key.columns.values()[0] == key)
        if self._engine.dialect.name == "postgresql":
            query = query.with_for_update()
        return s.scalars(query).first()

    # --- patients -------------------------------------------------------------------------

    def add_patient(self, code: str, sensitivity: str) -> PatientInfo:
        if not PATIENT_CODE.fullmatch(code):
            raise StoreError(f"patient code {code!r}: use the clinic's code (letters, digits, '.', '_' or '-', "
                             "at most 40), not a name")
        with self._session(write=True) as s:
            if s.get(PatientRow, code) is not None:
                raise StoreError(f"patient {code} already exists")
            row = PatientRow(code=code, created_at=_now(), sensitivity=sensitivity)
            s.add(row)
            return PatientInfo(code, row.created_at, sensitivity)

    def patient(self, code: str) -> PatientInfo | None:
        with self._session() as s:
            row = s.get(PatientRow, code)
            return None if row is None else PatientInfo(row.code, _utc(row.created_at), row.sensitivity)

    def _require_patient(self, s: Session, code: str, lock: bool = False) -> PatientRow:
        row = self._lock(s, PatientRow, code) if lock else s.get(PatientRow, code)
        if row is None:
            raise StoreError(f"no patient {code}: add them first with `estim patient add {code}`")
        return row

    # --- visits ---------------------------------------------------------------------------

    def start_visit(self, code: str, screening: Screening, clinician: str, sensitivity: str | None = None,
                    when: datetime | None = None, another: bool = False, by: str | None = None,
                    reason: str = "") -> int:
        """A new visit with its screening answers, numbered among the patient's visits; every
        question must be answered. While the patient has a visit open today a second one is
        refused, naming it and the ways on, unless `another` (a second room treating the
        patient at the same time). A yes given earlier today is taken back only with `reason`
        and the name of who does it (`by`, default the clinician); answers that rule out
        stimulation anywhere end the visit at once (`screening.end_if_ruled_out`)."""
        if screening.unanswered:
            raise StoreError("screening is not finished: " + ", ".join(q.value for q in screening.unanswered))
        when = when or _now()
        with self._session(write=True) as s:
            patient = self._require_patient(s, code, lock=True)
            open_now = self._open_rows(s, code, when)
            if open_now and not another:
                v = open_now[0]
                name = f"{code}/{v.number}"
                raise StoreError(
                    f"{code} already has visit {name} open (started {_utc(v.started_at).astimezone():%H:%M} on "
                    f"{v.host} by {v.clinician or 'no one named'}): work in it (commands take --visit {name}; "
                    f"`estim visit start {code}` again screens it again), end it with `estim visit end {code} "
                    f"--visit {name} --plan ...`, or, for a second room treating {code} at the same time, "
                    f"`estim visit start {code} --another ...`")
            today = self._today_rows(s, code, when)
            undone = taken_back(current_answers(s, today[-1].id) if today else {}, screening,
                                clinician if by is None else by, reason, "earlier today")
            number = (s.scalar(select(func.max(VisitRow.number)).where(VisitRow.patient_code == code)) or 0) + 1
            visit = VisitRow(patient_code=code, number=number, started_at=when, ended_at=None, clinician=clinician,
                             host=socket.gethostname(), sensitivity=sensitivity or patient.sensitivity)
            s.add(visit)
            s.flush()
            s.add_all(ScreeningEntryRow(visit_id=visit.id, question=q.value, answer=a, recorded_at=when,
                                        recorded_by=(clinician if by is None else by) if q in undone else clinician,
                                        reason=reason if q in undone else "")
                      for q, a in screening.answers.items())
            end_if_ruled_out(s, visit, screening, clinician, when)
            return visit.id

    def rescreen(self, visit_id: int, screening: Screening, clinician: str, by: str | None = None,
                 reason: str = "") -> list[Question]:
        """Today's open visit screened again: the answers that changed are appended (the first
        stay readable); a yes is taken back only with `reason` and the name of who does it
        (`by`, default the clinician). Answers that now rule out stimulation anywhere end the
        visit. Returns the questions whose answer changed."""
        if screening.unanswered:
            raise StoreError("screening is not finished: " + ", ".join(q.value for q in screening.unanswered))
        now = _now()
        with self._session(write=True) as s:
            visit = self._require_visit(s, visit_id, lock=True)
            if visit.ended_at is not None:
                raise StoreError(f"visit {visit.patient_code}/{visit.number} ended at "
                                 f"{_utc(visit.ended_at).astimezone():%H:%M}: screening again starts a new visit")
            before = current_answers(s, visit_id)
            who = clinician if by is None else by
            undone = taken_back(before, screening, who, reason, "in this visit")
            changed = [q for q, a in screening.answers.items() if before.get(q) is not a]
            s.add_all(ScreeningEntryRow(visit_id=visit_id, question=q.value, answer=screening.answers[q],
                                        recorded_at=now, recorded_by=who if q in undone else clinician,
                                        reason=reason if q in undone else "") for q in changed)
            end_if_ruled_out(s, visit, screening, clinician, now)
            return changed

    def _today_rows(self, s: Session, code: str, now: datetime, open_only: bool = False) -> list[VisitRow]:
        """The patient's visits started today (within the thresholds' lifetime), oldest first."""
        from safety.thresholds import MAX_AGE

        query = select(VisitRow).where(VisitRow.patient_code == code)
        if open_only:
            query = query.where(VisitRow.ended_at.is_(None))
        return [r for r in s.scalars(query.order_by(VisitRow.number)).all() if now - _utc(r.started_at) <= MAX_AGE]

    def _open_rows(self, s: Session, code: str, now: datetime) -> list[VisitRow]:
        return self._today_rows(s, code, now, open_only=True)

    def open_visits(self, code: str, now: datetime | None = None) -> list[Visit]:
        """The patient's visits started today (within the thresholds' lifetime) and not ended."""
        with self._session() as s:
            return self._visits(s, self._open_rows(s, code, now or _now()))

    def visit_for(self, code: str, ref: VisitRef | int | None = None, now: datetime | None = None) -> Visit:
        """The visit a command acts on: the one named (it must be the patient's and open
        today), else the patient's only open visit; refuses, saying what to do, otherwise."""
        now = now or _now()
        open_now = self.open_visits(code, now)
        if ref is not None:
            ref = VisitRef(id=ref) if isinstance(ref, int) else ref
            found = next((v for v in open_now if _names(v, ref)), None)
            if found is None:
                raise StoreError(f"visit {ref} is not an open visit of {code} today"
                                 + (f"; open now: {_listed(open_now)}" if open_now else ""))
            return found
        if not open_now:
            with self._session() as s:
                ended = self._today_rows(s, code, now)[-1:]
                last = self._visits(s, ended)
            why = "".join(f" (visit {v.name} ended at {v.ended_at.astimezone():%H:%M}"
                          + (f", at screening: {v.plan.text.removeprefix(ENDED_AT_SCREENING + ': ')}"
                             if v.plan and v.plan.text.startswith(ENDED_AT_SCREENING) else "") + ")" for v in last)
            raise StoreError(f"no visit open today for {code}{why}: start one with `estim visit start {code} ...`")
        if len(open_now) > 1:
            raise StoreError(f"{code} has {len(open_now)} visits open today ({_listed(open_now)}): name the one this "
                             f"is for with --visit (e.g. --visit {open_now[-1].name})")
        return open_now[0]

    def patient_visit(self, code: str, ref: VisitRef) -> Visit:
        """Any visit of the patient (open or ended), by its number or the store's id."""
        with self._session() as s:
            self._require_patient(s, code)
            query = select(VisitRow).where(VisitRow.patient_code == code)
            query = query.where(VisitRow.id == ref.id) if ref.number is None else query.where(
                VisitRow.patient_code == ref.patient, VisitRow.number == ref.number)
            row = s.scalars(query).first()
            if row is None:
                raise StoreError(f"{code} has no visit {ref}")
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

    def add_thresholds(self, visit_id: int, thresholds: Any) -> None:
        """A titration's result (safety.thresholds.ChannelThresholds) into the visit."""
        from safety.thresholds import site_key

        with self._session(write=True) as s:
            visit = self._require_visit(s, visit_id)
            w = thresholds.waveform
            s.add(ThresholdRow(
                patient_code=visit.patient_code, visit_id=visit_id, channel=thresholds.channel,
                site_a=site_key(thresholds.placement.a), site_b=site_key(thresholds.placement.b),
                shape=w.shape.name.lower(), frequency_hz=w.frequency_hz, pulse_width_us=w.pulse_width_us,
                burst_pulses=w.burst_pulses, burst_rate_hz=w.burst_rate_hz, sensory_ma=thresholds.sensory_ma,
                motor_ma=thresholds.motor_ma, tolerance_ma=thresholds.tolerance_ma, repeats=thresholds.repeats,
                measured_at=thresholds.measured_at))

    def thresholds(self, code: str) -> list[Any]:
        """Every threshold measured on the patient, newest first."""
        with self._session() as s:
            rows = s.scalars(select(ThresholdRow).where(ThresholdRow.patient_code == code)
                             .order_by(ThresholdRow.measured_at.desc(), ThresholdRow.id.desc())).all()
            return [_thresholds(r) for r in rows]

    # --- doses ----------------------------------------------------------------------------

    def start_dose(self, visit_id: int, program: str, mechanism: str | None, request: Mapping[str, Any],
                   record_id: str | None) -> int:
        """A dose as its session starts; it reads as not completed until `finish_dose`."""
        with self._session(write=True) as s:
            self._require_visit(s, visit_id)
            row = DoseRow(visit_id=visit_id, program=program, mechanism=mechanism, request=dict(request),
                          record_id=record_id, recorded_at=_now())
            s.add(row)
            s.flush()
            return row.id

    def finish_dose(self, dose_id: int, delivered: Iterable[Mapping[str, Any]], completed: bool,
                    stopped_by: str | None = None) -> None:
        """What the device delivered for a dose, appended when its session ends, and what
        stopped it when it ended early."""
        with self._session(write=True) as s:
            if s.get(DoseRow, dose_id) is None:
                raise StoreError(f"no dose {dose_id}")
            s.add(DoseResultRow(dose_id=dose_id, delivered=[dict(d) for d in delivered], completed=completed,
                                stopped_by=stopped_by, recorded_at=_now()))

    def last_dose(self, code: str) -> Dose | None:
        """The newest completed dose of the patient's visits."""
        with self._session() as s:
            row = s.scalars(select(DoseRow).join(VisitRow).join(DoseResultRow)
                            .where(VisitRow.patient_code == code, DoseResultRow.completed.is_(True))
                            .order_by(DoseRow.recorded_at.desc(), DoseRow.id.desc()).limit(1)).first()
            return None if row is None else self._doses(s, [row])[0]

    # --- outcomes and plans: entries, never changed ---------------------------------------------

    def add_outcome(self, visit_id: int, outcome: Outcome, by: str, reason: str = "") -> list[str]:
        """Append what was recorded now; a field already recorded with another value is a
        correction and needs `reason`. Returns the fields it corrected."""
        if not outcome.given():
            raise StoreError("nothing to record: give the pain scores, how it felt, or an adverse event")
        with self._session(write=True) as s:
            self._require_visit(s, visit_id, lock=True)
            before = self._visits(s, [s.get(VisitRow, visit_id)])[0].outcome
            corrected = [name for name, value in outcome.given().items()
                         if before is not None and getattr(before, name) not in (None, value)]
            if corrected and not reason.strip():
                raise StoreError(f"visit {visit_id} already has {', '.join(n.replace('_', ' ') for n in corrected)} "
                                 "recorded; a correction keeps the first entry and needs a reason: add "
                                 "--reason \"why\"")
            if corrected and not by.strip():
                raise StoreError("a correction needs the name of whoever makes it: add --operator NAME")
            s.add(OutcomeEntryRow(visit_id=visit_id, recorded_at=_now(), recorded_by=by, reason=reason,
                                  pain_before_at=_now() if outcome.pain_before is not None else None,
                                  **outcome.given()))
            return corrected

    def end_visit(self, visit_id: int, plan: Plan, by: str, reason: str = "") -> bool:
        """Store the integration plan and end the visit; a visit already ended keeps its end,
        and a new plan for it is a correction that needs `reason`. True when this ended it."""
        with self._session(write=True) as s:
            visit = self._require_visit(s, visit_id, lock=True)
            ending = visit.ended_at is None
            if not ending and not reason.strip():
                raise StoreError(f"visit {visit_id} ended at {_utc(visit.ended_at).astimezone():%H:%M}; a new plan "
                                 "for it is a correction that keeps the first and needs a reason: add --reason \"why\"")
            if not ending and not by.strip():
                raise StoreError("a correction needs the name of whoever makes it: add --operator NAME")
            s.add(PlanEntryRow(visit_id=visit_id, kinds=list(plan.kinds), text=plan.text, recorded_at=_now(),
                               recorded_by=by, reason=reason))
            if ending:
                visit.ended_at = _now()
            return ending

    # --- treatment records -------------------------------------------------------------------

    def link_record(self, visit_id: int, record_id: str, path: str | Path) -> None:
        """A treatment record written during this visit (its path made absolute)."""
        with self._session(write=True) as s:
            self._require_visit(s, visit_id)
            s.merge(VisitRecordRow(visit_id=visit_id, record_id=record_id, path=str(Path(path).resolve())))

    def put_record_head(self, record_id: str, path: str, count: int, last_hash: str, key_id: str | None,
                        closed: bool, signature: str | None = None) -> None:
        """Insert or advance a record's head in one statement; a head never moves backwards
        (a lower count, or the same count with another hash) and a closed head never moves."""
        values = dict(record_id=record_id, path=str(Path(path).resolve()), count=count, last_hash=last_hash,
                      key_id=key_id, closed=closed, signature=signature, updated_at=_now())
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(RecordHeadRow).values(**values)
        stored = RecordHeadRow.__table__.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["record_id"],
            set_={k: stmt.excluded[k] for k in values if k != "record_id"},
            where=~stored.closed & or_(stored.count < stmt.excluded.count,
                                       (stored.count == stmt.excluded.count)
                                       & (stored.last_hash == stmt.excluded.last_hash))
        ).returning(stored.record_id)
        with self._session(write=True) as s:
            if s.connection().execute(stmt).first() is None:
                have = s.execute(select(RecordHeadRow.count, RecordHeadRow.last_hash, RecordHeadRow.closed)
                                 .where(RecordHeadRow.record_id == record_id)).one()
                if have.closed and (have.count, have.last_hash) == (count, last_hash) and closed:
                    return
                raise RecordHeadError(
                    f"record {record_id}: its head was closed at {have.count} lines and never moves" if have.closed
                    else f"record {record_id}: the head would move back from {have.count} lines to {count}"
                    if count < have.count else f"record {record_id}: a different last hash at the same count {count}")

    def get_record_head(self, record_id: str) -> RecordHead | None:
        with self._session() as s:
            row = s.get(RecordHeadRow, record_id)
            return None if row is None else _head(row)

    def record_at(self, path: str) -> str | None:
        """The record the store keeps at this path (the newest, if one replaced another)."""
        with self._session() as s:
            return s.scalars(select(RecordHeadRow.record_id).where(RecordHeadRow.path == str(Path(path).resolve()))
                             .order_by(RecordHeadRow.updated_at.desc()).limit(1)).first()

    # --- reading visits -------------------------------------------------------------------

    def _require_visit(self, s: Session, visit_id: int, lock: bool = False) -> VisitRow:
        row = self._lock(s, VisitRow, visit_id) if lock else s.get(VisitRow, visit_id)
        if row is None:
            raise StoreError(f"no visit {visit_id}")
        return row

    def _doses(self, s: Session, rows: list[DoseRow]) -> list[Dose]:
        """Each dose with its result, when its session reported one (the last, if several)."""
        results = {r.dose_id: r for r in s.scalars(select(DoseResultRow).where(
            DoseResultRow.dose_id.in_([d.id for d in rows])).order_by(DoseResultRow.id))}
        return [Dose(d.id, d.program, d.mechanism, dict(d.request),
                     tuple(results[d.id].delivered) if d.id in results else (),
                     d.id in results and results[d.id].completed, d.id in results, d.record_id, _utc(d.recorded_at),
                     results[d.id].stopped_by if d.id in results else None)
                for d in rows]

    def _visits(self, s: Session, rows: list[VisitRow]) -> list[Visit]:
        from safety.screening import Question, Screening

        ids = [r.id for r in rows]

        def by_visit(model: Any, order: Any = None) -> dict[int, list[Any]]:
            out: dict[int, list[Any]] = {i: [] for i in ids}
            query = select(model).where(model.visit_id.in_(ids))
            for item in s.scalars(query.order_by(order) if order is not None else query):
                out[item.visit_id].append(item)
            return out

        answers = by_visit(ScreeningEntryRow, ScreeningEntryRow.id)
        thresholds = by_visit(ThresholdRow, ThresholdRow.id)
        doses: dict[int, list[Dose]] = {i: [] for i in ids}
        dose_rows = {d.id: d.visit_id for ds in by_visit(DoseRow, DoseRow.id).values() for d in ds}
        for dose in self._doses(s, [s.get(DoseRow, i) for i in dose_rows]) if dose_rows else []:
            doses[dose_rows[dose.id]].append(dose)
        outcomes = by_visit(OutcomeEntryRow, OutcomeEntryRow.id)
        plans = by_visit(PlanEntryRow, PlanEntryRow.id)
        records = by_visit(VisitRecordRow, VisitRecordRow.record_id)
        return [Visit(
            id=r.id, patient=r.patient_code, number=r.number, started_at=_utc(r.started_at),
            ended_at=None if r.ended_at is None else _utc(r.ended_at), clinician=r.clinician, host=r.host,
            sensitivity=r.sensitivity,
            screening=Screening({Question(a.question): a.answer for a in answers[r.id]}),   # the newest wins
            screening_entries=tuple(ScreeningEntry(Question(a.question), a.answer, _entry(a)) for a in answers[r.id]),
            thresholds=tuple(_thresholds(t) for t in thresholds[r.id]),
            doses=tuple(doses[r.id]),
            outcomes=tuple(OutcomeEntry(Outcome(**{n: getattr(o, n) for n in OUTCOME_FIELDS},
                                                pain_before_at=None if o.pain_before_at is None
                                                else _utc(o.pain_before_at)), _entry(o)) for o in outcomes[r.id]),
            plans=tuple(PlanEntry(Plan(tuple(p.kinds), p.text), _entry(p)) for p in plans[r.id]),
            records=tuple((v.record_id, v.path) for v in records[r.id]),
        ) for r in rows]


def _listed(visits: list[Visit]) -> str:
    return ", ".join(f"visit {v.name} (started {v.started_at.astimezone():%H:%M} on {v.host} by "
                     f"{v.clinician or 'no one named'})" for v in visits)


def _names(visit: Visit, ref: VisitRef) -> bool:
    return visit.id == ref.id if ref.number is None else (visit.patient, visit.number) == (ref.patient, ref.number)


def _entry(row: Any) -> Entry:
    return Entry(_utc(row.recorded_at), row.recorded_by, row.reason)


def _head(row: RecordHeadRow) -> RecordHead:
    return RecordHead(row.record_id, row.path, row.count, row.last_hash, row.key_id, row.closed, row.signature,
                      _utc(row.updated_at))


def _thresholds(r: ThresholdRow) -> Any:
    from safety.placement import ChannelPlacement
    from safety.settings import Shape

    from safety.thresholds import ChannelThresholds, TitrationWaveform, site_from_key

    return ChannelThresholds(
        channel=r.channel, placement=ChannelPlacement(site_from_key(r.site_a), site_from_key(r.site_b)),
        waveform=TitrationWaveform(Shape[r.shape.upper()], r.frequency_hz, r.pulse_width_us, r.burst_pulses,
                                   r.burst_rate_hz),
        measured_at=_utc(r.measured_at), sensory_ma=r.sensory_ma, motor_ma=r.motor_ma, tolerance_ma=r.tolerance_ma,
        patient=r.patient_code, repeats=r.repeats)


def _why(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _prepare_sqlite_file(path: Path, create: bool) -> None:
    """The SQLite file made (readable by its user only), or why it cannot be."""
    if path.exists():
        return
    if not create:
        raise StoreError(f"there is no visit store at {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise StoreError(f"the visit store cannot be made at {path} ({exc.strerror or exc}): choose a writable place "
                         f"with --store or {STORE_URL_ENV}") from None


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None      # transactions are begun by _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except Exception:  # a store on read-only media is read in its own journal mode
        pass
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    """A writing transaction takes the database's write lock at once (BEGIN IMMEDIATE), so a
    check and the write that follows it are never interleaved with another writer's."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if _WRITING.get() else "BEGIN")


def _revision(engine: Engine) -> str | None:
    """The store's schema revision (None: no schema yet), read without loading Alembic."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _migration_lock(sqlite_file: str | None) -> Iterator[None]:
    """Two programs opening a new SQLite store at once must not both create its tables (one
    would fail): they take turns on a lock file beside it. PostgreSQL uses an advisory lock."""
    if sqlite_file is None:
        yield
        return
    import fcntl

    try:
        fd = os.open(f"{sqlite_file}.migration-lock", os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"the visit store at {sqlite_file} needs its schema brought up to date and cannot be "
                         f"written ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _migrate(engine: Engine, url: str) -> None:
    """Bring the schema to the newest migration; a revision this estim does not know is an
    error that says so (a newer estim made the store)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", "firmware_host.visits:migrations")
    token = _WRITING.set(True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            current = MigrationContext.configure(conn).get_current_revision()
            if current == SCHEMA_REVISION:
                return
            if current is not None and current not in KNOWN_REVISIONS:
                raise StoreError(f"the visit store at {url} was made by a newer estim (schema revision {current}); "
                                 "use that version, or update this one")
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        _WRITING.reset(token)
