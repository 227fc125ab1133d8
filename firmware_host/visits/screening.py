"""Screening in the visit store: each answer is an entry, never changed; the visit's current
answers are each question's newest entry. A yes kept a hazard in view, so it is taken back
only with a note of why and the name of whoever does it; answers that rule out stimulation at
every site and dose end the visit at screening."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import PlanEntryRow, ScreeningEntryRow, VisitRow
from .values import StoreError

if TYPE_CHECKING:
    from safety.screening import Question, Screening


def current_answers(s: Session, visit_id: int) -> dict[Question, bool]:
    """The visit's current screening: each question's newest entry."""
    from safety.screening import Question

    return {Question(e.question): e.answer for e in s.scalars(
        select(ScreeningEntryRow).where(ScreeningEntryRow.visit_id == visit_id).order_by(ScreeningEntryRow.id))}


ENDED_AT_SCREENING = "ended at screening, no stimulation"


def taken_back(before: Mapping[Question, bool], after: Screening, by: str, reason: str, when: str) -> list[Question]:
    """The yes answers `after` takes back. A yes kept a hazard in view; it is undone only with a
    note of why and the name of whoever undoes it (the first answer stays readable)."""
    taken = [q for q, yes in before.items() if yes and after.answers.get(q) is False]
    if taken and not reason.strip():
        raise StoreError(f"{', '.join(q.value for q in taken)} was answered yes {when}; a yes is taken back only with "
                         "a note of why and your name: add --reason \"why\" --operator NAME (the first answer is kept)")
    if taken and sum(c.isalpha() for c in by) < 2:
        raise StoreError(f"taking back the yes to {', '.join(q.value for q in taken)} needs the name of whoever does "
                         "it: add --operator NAME")
    return taken


def end_if_ruled_out(s: Session, visit: VisitRow, screening: Screening, by: str, now: datetime) -> None:
    """A visit whose answers rule out stimulation at every site and dose (safety ENDS_VISIT)
    ends at screening, its plan saying why, rather than three commands later."""
    why = screening.ends_visit()
    if why and visit.ended_at is None:
        s.add(PlanEntryRow(visit_id=visit.id, kinds=[], text=f"{ENDED_AT_SCREENING}: {'; '.join(why)}",
                           recorded_at=now, recorded_by=by, reason=""))
        visit.ended_at = now
