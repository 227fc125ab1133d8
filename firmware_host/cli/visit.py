"""`estim visit`: a visit as clinicians work it. `start` answers the screening checklist (every
question, recorded with the visit) and prints the visit's number; the device commands with
`--patient CODE` then belong to it (`--visit ID` names it when the patient has two open, as
when two rooms treat one patient at once); `outcome` records how the patient responded;
`end` stores the integration plan and closes the visit. Nothing is ever replaced: recording
a value again is a correction, kept beside the first with who made it and why (`--reason`).

Exit codes: 0 done; 2 refused or bad input (a screening that refuses stimulation today still
starts the visit, so it is on record, and says why).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import EXIT_OK, EXIT_REFUSED, Parser, refused
from .visit_context import add_store_option, add_visit_option

EXAMPLES = """examples:
  estim visit start P001 --no all
  estim visit start P001 --yes bleeding_risk,faints_with_needling --no rest --operator JD
  estim visit outcome P001 --pain-before 6 --pain-after 3 --felt "strong buzzing" --soreness
  estim visit outcome P001 --pain-before 6 --pain-after 3 --ppt-local 250,310 --ppt-remote 400,405
  estim visit end P001 --plan loading,motor_control --text "step-downs 3x10, single-leg balance"
  estim visit outcome P001 --pain-after 4 --reason "patient re-rated after standing"   (a correction)
  estim visit start P001 --another --no all        (a second room treating P001 at the same time)

screening questions (answer each yes or no): {questions}
plans: {plans}, or free text
"""


def build_parser() -> argparse.ArgumentParser:
    from safety import Question

    from ..visits import PLAN_KINDS

    parser = Parser(
        prog="estim visit", description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES.format(questions=", ".join(q.value for q in Question), plans=", ".join(PLAN_KINDS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="start today's visit with the screening checklist")
    start.add_argument("patient", metavar="CODE")
    start.add_argument("--yes", default="", metavar="Q,Q", help="questions answered yes")
    start.add_argument("--no", default="", metavar="Q,Q|rest|all", help="questions answered no ('rest': all others)")
    start.add_argument("--operator", default=os.environ.get("USER", ""), help="the clinician's name or initials")
    start.add_argument("--sensitivity", choices=["hyper", "typical", "hypo"],
                       help="today's sensitivity profile (default: the patient's)")
    start.add_argument("--another", action="store_true",
                       help="a second visit while one is open today (a second room treating the patient at once)")
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


def _answers(args: argparse.Namespace):  # noqa: ANN202 - safety.Screening
    from safety import QUESTIONS, Question, Screening

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
    if {"rest", "all"} & set(_names(args.no)):
        if "all" in _names(args.no) and any(answers.values()):
            raise ValueError("--no all with --yes answers: use --no rest")
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
    from safety import QUESTIONS, screen

    from ..visits import VisitStore
    from .options import SENSITIVITY

    screening = _answers(args)
    if screening.unanswered:
        return refused(ValueError("every screening question needs an answer; still open: " + "; ".join(
            f"{q.value} ({QUESTIONS[q]})" for q in screening.unanswered)))
    with VisitStore(args.store) as store:
        sensitivity = SENSITIVITY[args.sensitivity].value if args.sensitivity else None
        visit_id = store.start_visit(args.patient, screening, clinician=args.operator, sensitivity=sensitivity,
                                     another=args.another)
        visit = store.visit(visit_id)
        others = [v.id for v in store.open_visits(args.patient) if v.id != visit_id]
    print(f"visit {visit_id} started for {args.patient} ({visit.sensitivity}); screening recorded")
    if others:
        print(f"note: {args.patient} also has visit(s) {', '.join(map(str, others))} open: give --visit {visit_id} "
              "to the commands for this one")
    for question, yes in screening.answers.items():
        if yes:
            print(f"  yes: {QUESTIONS[question]}")
    verdict = screen(screening, {})
    for warning in verdict.warnings:
        print(f"caution: {warning}")
    if verdict.refusals:
        for refusal in verdict.refusals:
            print(f"no stimulation today: {refusal}", file=sys.stderr)
        return EXIT_REFUSED
    print("the needle sites are checked against these answers when you titrate or treat")
    return EXIT_OK


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
    print(f"outcome recorded for visit {visit.id}: {pain}; {events}"
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
    print(f"visit {visit.id} {'ended' if ended else 'keeps its end; plan corrected (the first is kept)'}; plan: "
          f"{', '.join(plan.kinds) or '-'}" + (f"; {plan.text}" if plan.text else ""))
    return EXIT_OK


def _ended_or_open(store, args: argparse.Namespace):  # noqa: ANN001, ANN202 - VisitStore, Visit
    """The visit `outcome` or `end` acts on: --visit ID (a correction may name an ended visit),
    else the patient's only open one."""
    if args.visit_id is not None:
        visit = store.visit(args.visit_id)
        if visit.patient != args.patient:
            raise ValueError(f"visit {args.visit_id} is not a visit of {args.patient}")
        return visit
    return store.visit_for(args.patient)
