"""`estim visit`: a visit as clinicians work it. `start` answers the screening checklist (every
question, recorded with the visit) and prints the visit's number among the patient's visits
(P001/3); the device commands with `--patient CODE` then belong to it (`--visit P001/3` names
it when the patient has two open, as when two rooms treat one patient at once); `start` again
the same day screens today's visit again; `outcome` records how the patient responded; `end`
stores the integration plan and closes the visit. Nothing is ever replaced: recording a value
again is a correction, kept beside the first with who made it and why (`--reason`).

Exit codes: 0 done; 2 refused or bad input (a screening that refuses stimulation today still
starts the visit, so it is on record, and says why; one that rules it out at any site ends it).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import EXIT_OK, EXIT_REFUSED, Parser, refused
from .visit_context import add_store_option, add_visit_option, visit_ref

EXAMPLES = """examples:
  estim visit start P001 --no all
  estim visit start P001 --yes bleeding_risk,faints_with_needling --no rest --operator JD
  estim visit start P001 --no all --reason "needles moved away from the lesion" --operator JD
                                                   (screening again today; taking back a yes needs why and who)
  estim visit outcome P001 --pain-before 6 --pain-after 3 --felt "strong buzzing" --soreness
  estim visit outcome P001 --pain-before 6 --pain-after 3 --ppt-local 250,310 --ppt-remote 400,405
  estim visit end P001 --plan loading,motor_control --text "step-downs 3x10, single-leg balance"
  estim visit outcome P001 --pain-after 4 --reason "patient re-rated after standing"   (a correction)
  estim visit start P001 --another --no all        (a second room treating P001 at the same time)
  estim visit end P001 --visit P001/3 --plan loading   (visit 3 of P001; the store's id works too)

{questions}
plans: {plans}, or free text
"""

START = """examples:
  estim visit start P001 --no all
  estim visit start P001 --yes bleeding_risk --no rest --operator JD
  estim visit start P001 --no all --reason "needles moved away from the lesion" --operator JD
  estim visit start P001 --another --no all        (a second room treating P001 at the same time)

Run again the same day, `start` screens today's open visit again: the answers that changed are
added (the first are kept), and a yes is taken back only with --reason and --operator. A yes to
{ends} ends the visit at once: nothing can be sent in it.

{questions}
"""


def _questions() -> str:
    """The screening questions by the names --yes and --no take, each with its plain question."""
    from safety import PERSISTENT, QUESTIONS, Question

    return ("screening questions (answer each yes or no; * a yes carries over to the next visit, which shows\n"
            "it and asks it again by name: --no all and --no rest do not take it back):\n"
            + "\n".join(f"  {q.value + (' *' if q in PERSISTENT else ''):<23} {QUESTIONS[q]}" for q in Question))


def build_parser() -> argparse.ArgumentParser:
    from safety import ENDS_VISIT

    from ..visits import PLAN_KINDS

    parser = Parser(
        prog="estim visit", description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES.format(questions=_questions(), plans=", ".join(PLAN_KINDS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start today's visit with the screening checklist (again: screen it again)",
                           description="Start today's visit with the screening checklist, or screen today's open "
                                       "visit again.",
                           epilog=START.format(questions=_questions(), ends=" or ".join(ENDS_VISIT)),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    start.add_argument("patient", metavar="CODE")
    start.add_argument("--yes", default="", metavar="Q,Q", help="questions answered yes")
    start.add_argument("--no", default="", metavar="Q,Q|rest|all", help="questions answered no ('rest': all others)")
    start.add_argument("--operator", metavar="NAME",
                       help="the clinician's name or initials (default: the login); needed to take back a yes")
    start.add_argument("--reason", default="", metavar="TEXT",
                       help="why, when screening again today takes back a yes (the first answer is kept)")
    start.add_argument("--sensitivity", choices=["hyper", "typical", "hypo"],
                       help="today's sensitivity profile (default: the patient's)")
    start.add_argument("--another", action="store_true",
                       help="a second visit while one is open today (a second room treating the patient at once)")
    start.add_argument("--visit", type=visit_ref, metavar="VISIT", dest="visit_id",
                       help="the open visit to screen again, when the patient has two open today (P001/3)")
    outcome = sub.add_parser("outcome", help="how the patient responded")
    outcome.add_argument("patient", metavar="CODE")
    outcome.add_argument("--pain-before", type=int, metavar="0-10")
    outcome.add_argument("--pain-after", type=int, metavar="0-10")
    outcome.add_argument("--felt", metavar="TEXT", help="how the stimulation felt, in the patient's words")
    for event in ("soreness", "fainting", "bleeding"):
        outcome.add_argument(f"--{event}", action="store_true", default=None, help=f"adverse event: {event}")
    outcome.add_argument("--other", metavar="TEXT", help="any other adverse event")
    outcome.add_argument("--ppt-local", metavar="BEFORE,AFTER", help="pressure-pain threshold near the needles, kPa")
    outcome.add_argument("--ppt-remote", metavar="BEFORE,AFTER", help="pressure-pain threshold at a remote site, kPa")
    end = sub.add_parser("end", help="store the integration plan and close the visit")
    end.add_argument("patient", metavar="CODE")
    end.add_argument("--plan", default="", metavar="KIND,KIND", help=", ".join(PLAN_KINDS))
    end.add_argument("--text", default="", help="the plan in words")
    for p in (outcome, end):
        add_visit_option(p)
        p.add_argument("--operator", default=os.environ.get("USER", ""), help="who records this")
        p.add_argument("--reason", default="", metavar="TEXT",
                       help="why, when this corrects what was recorded before (the first entry is kept)")
    for p in (start, outcome, end):
        add_store_option(p)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..visits import StoreError

    try:
        return {"start": _start, "outcome": _outcome, "end": _end}[args.action](args)
    except (StoreError, ValueError) as exc:
        return refused(exc)


def _names(text: str) -> list[str]:
    return [t.strip().replace("-", "_") for t in text.split(",") if t.strip()]


def _named(args: argparse.Namespace) -> tuple[dict, bool]:  # noqa: ANN202 - {safety.Question: bool}
    """The answers named on the command line, and whether --no rest/all answers the others no."""
    from safety import Question

    known = {q.value: q for q in Question}
    answers: dict[Question, bool] = {}
    for value, names in ((True, _names(args.yes)), (False, _names(args.no))):
        for name in names:
            if name in ("rest", "all"):
                continue
            if name not in known:
                raise ValueError(f"unknown screening question {name!r}; the questions: {', '.join(known)}")
            if known[name] in answers and answers[known[name]] is not value:
                raise ValueError(f"{name} is answered both yes and no")
            answers[known[name]] = value
    rest = bool({"rest", "all"} & set(_names(args.no)))
    if "all" in _names(args.no) and any(answers.values()):
        raise ValueError("--no all with --yes answers: use --no rest")
    return answers, rest


def _answers(args: argparse.Namespace, last):  # noqa: ANN001, ANN202 - visits.Visit | None, safety.Screening
    """Today's answers: those named, then a yes that carries over from `last` (PERSISTENT),
    which must be answered again by name (asked on a terminal), then --no rest, then any
    question still open (asked on a terminal)."""
    from safety import PERSISTENT, QUESTIONS, Question, Screening

    answers, rest = _named(args)
    carried = [q for q in Question if q in PERSISTENT and last is not None and last.screening.answers.get(q)
               and q not in answers]
    if carried and not sys.stdin.isatty():
        raise ValueError(f"at visit {last.name} ({last.started_at.astimezone():%d %b}) the answer was yes to "
                         + ", ".join(f"{q.value} ({QUESTIONS[q]})" for q in carried)
                         + "; a yes carries over until it is answered again by name: give --yes "
                         + ",".join(q.value for q in carried) + " if it still holds, or --no "
                         + ",".join(q.value for q in carried) + " (with --reason and --operator the same day)")
    for q in carried:
        answers[q] = _ask_yes_no(f"At visit {last.name} the answer was yes. {QUESTIONS[q]} Still yes?")
    if rest:
        answers = {q: answers.get(q, False) for q in Question}
    missing = [q for q in Question if q not in answers]
    if missing and sys.stdin.isatty():
        for q in missing:
            answers[q] = _ask_yes_no(QUESTIONS[q])
    return Screening(answers)


def _ask_yes_no(question: str) -> bool:
    while True:
        reply = input(f"{question} [y/n] ").strip().lower()
        if reply in ("y", "yes", "n", "no"):
            return reply.startswith("y")


def _start(args: argparse.Namespace) -> int:
    from safety import QUESTIONS, Question, check_placement, screen

    from ..visits import VisitStore
    from ..visits.values import StoreError
    from .options import SENSITIVITY

    if args.another and args.visit_id is not None:
        return refused(ValueError("--another starts a new visit; --visit names an open one to screen again: "
                                  "give one of them"))
    clinician = args.operator or os.environ.get("USER", "")
    with VisitStore(args.store) as store:
        newest = store.visits(args.patient, limit=1)
        again = None if args.another or not store.open_visits(args.patient) else store.visit_for(
            args.patient, args.visit_id)
        if again is None and args.visit_id is not None:
            raise StoreError(f"visit {args.visit_id} is not open today: screening again works on today's open visit")
        last = again or (newest[0] if newest else None)
        if last is not None and any(last.screening.answers.values()):
            print(f"{'today, visit' if again else 'last visit,'} {last.name} "
                  f"({last.started_at.astimezone():%d %b %H:%M}): yes to "
                  + ", ".join(q.value for q in Question if last.screening.answers.get(q)))
        screening = _answers(args, last)
        if screening.unanswered:
            return refused(ValueError("every screening question needs an answer; still open: " + "; ".join(
                f"{q.value} ({QUESTIONS[q]})" for q in screening.unanswered)))
        reason, by = _why_taken_back(args, last, screening)
        sensitivity = SENSITIVITY[args.sensitivity].value if args.sensitivity else None
        if again is not None:
            if sensitivity is not None and sensitivity != again.sensitivity:
                raise StoreError(f"visit {again.name} keeps the sensitivity profile it started with "
                                 f"({again.sensitivity}); end it and start a new visit for another profile")
            changed = store.rescreen(again.id, screening, clinician, by=by, reason=reason)
            visit = store.visit(again.id)
        else:
            visit = store.visit(store.start_visit(args.patient, screening, clinician=clinician, sensitivity=sensitivity,
                                                  another=args.another, by=by, reason=reason))
        others = [v.name for v in store.open_visits(args.patient) if v.id != visit.id]
    if again is None:
        print(f"visit {visit.number} of {visit.patient} started ({visit.sensitivity}; --visit {visit.name}, store id "
              f"{visit.id}); screening recorded")
    else:
        print(f"visit {visit.number} of {visit.patient} screened again: " + (", ".join(
            f"{q.value} {'yes' if again.screening.answers.get(q) else 'no'} -> "
            f"{'yes' if screening.answers[q] else 'no'}" for q in changed) or "no answer changed")
            + (f" (why: {reason}, by {by})" if reason else "") + "; the first answers are kept")
        print(f"note: for a second room treating {visit.patient} at the same time, "
              f"`estim visit start {visit.patient} --another ...`")
    if others:
        print(f"note: {args.patient} also has visit(s) {', '.join(others)} open: give --visit {visit.name} "
              "to the commands for this one")
    for question in Question:
        if screening.answers[question]:
            print(f"  yes: {QUESTIONS[question]}")
    verdict = screen(screening, {})
    for warning in verdict.warnings:
        print(f"caution: {warning}")
    refusals = [*check_placement({}, screening.patient()), *verdict.refusals]
    for refusal in refusals:
        print(f"no stimulation today: {refusal}", file=sys.stderr)
    if visit.ended_at is not None:
        print(f"visit {visit.name} ended at screening: nothing can be sent to {visit.patient} in it. Record what you "
              f"do instead as its plan: `estim visit end {visit.patient} --visit {visit.name} --text \"...\" "
              "--reason \"plan after screening\"`", file=sys.stderr)
    if refusals:
        return EXIT_REFUSED
    print("the needle sites are checked against these answers when you titrate or treat")
    return EXIT_OK


def _why_taken_back(args: argparse.Namespace, last, screening) -> tuple[str, str]:  # noqa: ANN001
    """--reason and --operator for a yes given today that is now no; asked on a terminal when
    missing (the store refuses without them). The name is never taken from the login."""
    from datetime import datetime, timezone

    from safety.thresholds import MAX_AGE

    today = last is not None and datetime.now(timezone.utc) - last.started_at <= MAX_AGE
    undone = today and any(yes and screening.answers.get(q) is False for q, yes in last.screening.answers.items())
    reason, by = args.reason, args.operator or ""
    if undone and sys.stdin.isatty():
        while not reason.strip():
            reason = input("A yes given today is now no. Why? ").strip()
        while sum(c.isalpha() for c in by) < 2:
            by = input("Your name or initials: ").strip()
    return reason, by


def _pair(text: str | None, name: str) -> tuple[float | None, float | None]:
    if text is None:
        return None, None
    try:
        before, after = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--{name} {text!r}: give BEFORE,AFTER in kPa, e.g. 250,310") from None
    return before, after


def _outcome(args: argparse.Namespace) -> int:
    from ..visits import Outcome, VisitStore

    local, remote = _pair(args.ppt_local, "ppt-local"), _pair(args.ppt_remote, "ppt-remote")
    outcome = Outcome(args.pain_before, args.pain_after, args.felt, args.soreness, args.fainting, args.bleeding,
                      args.other, *local, *remote)
    with VisitStore(args.store) as store:
        visit = _ended_or_open(store, args)
        corrected = store.add_outcome(visit.id, outcome, by=args.operator, reason=args.reason)
        now = store.visit(visit.id).outcome
    pain = f"pain {_score(now.pain_before)} -> {_score(now.pain_after)}"
    events = ", ".join(now.adverse_events) or "no adverse events"
    print(f"outcome recorded for visit {visit.name}: {pain}; {events}"
          + (f" (corrected: {', '.join(c.replace('_', ' ') for c in corrected)}; the first entry is kept)"
             if corrected else ""))
    if outcome.fainting:
        print("caution: the patient fainted: note it for the next visit's screening (faints with needling)")
    if now.pain_after is None:
        print(f"next: after the session, `estim visit outcome {args.patient} --pain-after N ...`")
    else:
        print(f"next: the plan, `estim visit end {args.patient} --plan KIND --text ...`")
    return EXIT_OK


def _score(value: int | None) -> str:
    return "-" if value is None else str(value)


def _end(args: argparse.Namespace) -> int:
    from ..visits import PLAN_KINDS, Plan, VisitStore

    kinds, text = tuple(_names(args.plan)), args.text
    if not kinds and not text and sys.stdin.isatty():
        print("What follows the session? " + ", ".join(f"{i}) {k}" for i, k in enumerate(PLAN_KINDS, 1)))
        picks = input("numbers, separated by commas (or none): ").replace(" ", "")
        kinds = tuple(PLAN_KINDS[int(i) - 1] for i in picks.split(",") if i.isdigit() and 0 < int(i) <= len(PLAN_KINDS))
        text = input("the plan in words: ").strip()
    plan = Plan(kinds, text)
    with VisitStore(args.store) as store:
        visit = _ended_or_open(store, args)
        ended = store.end_visit(visit.id, plan, by=args.operator, reason=args.reason)
    print(f"visit {visit.name} {'ended' if ended else 'keeps its end; plan corrected (the first is kept)'}; plan: "
          f"{', '.join(plan.kinds) or '-'}" + (f"; {plan.text}" if plan.text else ""))
    return EXIT_OK


def _ended_or_open(store, args: argparse.Namespace):  # noqa: ANN001, ANN202 - VisitStore, Visit
    """The visit `outcome` or `end` acts on: --visit P001/3 or the store's id (a correction may
    name an ended visit), else the patient's only open one."""
    if args.visit_id is not None:
        return store.patient_visit(args.patient, args.visit_id)
    return store.visit_for(args.patient)
