"""What the visit store hands out: plain frozen values, checked where they are made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safety.screening import Question, Screening

PLAN_KINDS = ("breathing", "graded_exposure", "loading", "motor_control")


class StoreError(Exception):
    """The store cannot do what was asked; the message says why in plain words."""


class RecordHeadError(StoreError):
    """A record head that would move backwards, or move at all once closed."""


@dataclass(frozen=True, slots=True)
class RecordHead:
    record_id: str
    path: str
    count: int
    last_hash: str
    key_id: str | None
    closed: bool
    signature: str | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the patient responded: pain 0-10 before and after, how it felt, adverse events,
    and optionally pressure-pain thresholds (kPa) near the needles and at a remote site.
    A field that is None was not recorded (in an entry: not given in it)."""

    pain_before: int | None = None
    pain_after: int | None = None
    felt: str | None = None
    soreness: bool | None = None
    fainting: bool | None = None
    bleeding: bool | None = None
    other_events: str | None = None
    ppt_local_before_kpa: float | None = None
    ppt_local_after_kpa: float | None = None
    ppt_remote_before_kpa: float | None = None
    ppt_remote_after_kpa: float | None = None
    pain_before_at: datetime | None = None      # when the pain before was recorded

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

    def given(self) -> dict[str, Any]:
        """The fields this entry records (not None), `pain_before_at` aside."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "pain_before_at" and getattr(self, f.name) is not None}


OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome) if f.name != "pain_before_at")


@dataclass(frozen=True, slots=True)
class Entry:
    """Who recorded something, when, and why (the reason is given for a correction)."""

    recorded_at: datetime
    recorded_by: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutcomeEntry:
    outcome: Outcome
    entry: Entry


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
class PlanEntry:
    plan: Plan
    entry: Entry


@dataclass(frozen=True, slots=True)
class Dose:
    id: int
    program: str
    mechanism: str | None
    request: Mapping[str, Any]          # the options that ask for this dose again
    delivered: tuple[Mapping[str, Any], ...]
    completed: bool                     # False also when the session never said how it ended
    finished: bool                      # the session reported its end (a killed one never does)
    record_id: str | None
    recorded_at: datetime
    stopped_by: str | None = None       # what ended the session early, in plain words


@dataclass(frozen=True, slots=True)
class ScreeningEntry:
    """One screening answer as given (the first screening, or a change when screening again)."""

    question: Question
    answer: bool
    entry: Entry


@dataclass(frozen=True, slots=True)
class VisitRef:
    """How a person names a visit: its number among the patient's visits (`P001/3`, as the
    commands print it) or the store's own id (`57`)."""

    id: int | None = None
    patient: str | None = None
    number: int | None = None

    @classmethod
    def parse(cls, text: str) -> VisitRef:
        code, slash, number = text.strip().rpartition("/")
        if slash and code and number.isdigit() and int(number) > 0:
            return cls(patient=code, number=int(number))
        if not slash and number.isdigit():
            return cls(id=int(number))
        raise ValueError(f"visit {text!r}: give the patient's code and the visit's number (P001/3, as `estim "
                         "visit start` prints it) or the store's id of the visit")

    def __str__(self) -> str:
        return f"{self.patient}/{self.number}" if self.number is not None else str(self.id)


@dataclass(frozen=True, slots=True)
class Visit:
    id: int
    patient: str
    number: int                         # 1, 2, 3 of the patient's visits
    started_at: datetime
    ended_at: datetime | None
    clinician: str
    host: str
    sensitivity: str
    screening: Screening                # today's current answers: each question's newest entry
    screening_entries: tuple[ScreeningEntry, ...] = ()
    thresholds: tuple[Any, ...] = ()    # safety.thresholds.ChannelThresholds
    doses: tuple[Dose, ...] = ()
    outcomes: tuple[OutcomeEntry, ...] = ()
    plans: tuple[PlanEntry, ...] = ()
    records: tuple[tuple[str, str], ...] = field(default=())

    @property
    def outcome(self) -> Outcome | None:
        """Every outcome entry taken in order (a later one corrects what it gives again)."""
        if not self.outcomes:
            return None
        merged: dict[str, Any] = {}
        for item in self.outcomes:
            given = item.outcome.given()
            merged.update(given)
            if "pain_before" in given:
                merged["pain_before_at"] = item.outcome.pain_before_at or item.entry.recorded_at
        return Outcome(**merged)

    @property
    def plan(self) -> Plan | None:
        return self.plans[-1].plan if self.plans else None

    @property
    def name(self) -> str:
        """The visit as `--visit` takes it and people read it: P001/3."""
        return f"{self.patient}/{self.number}"


@dataclass(frozen=True, slots=True)
class PatientInfo:
    code: str
    created_at: datetime
    sensitivity: str
