"""`estim patient`: patients by the clinic's code (no names). `add` registers one with their
sensitivity profile; `show` prints the last visits at a glance (screening and its changes,
thresholds, every session's dose with what stopped it, pain before and after, pressure-pain
thresholds, adverse events, plan); `trend` plots the outcomes over visits, one label each.

Exit codes: 0 done; 2 refused or bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import EXIT_OK, Parser, refused
from .visit_context import add_store_option

EXAMPLES = """examples:
  estim patient add P001 --sensitivity hyper
  estim patient show P001
  estim patient show P001 --visits 10 --json
  estim patient trend P001 --out P001-trend.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="estim patient", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a patient by the clinic's code")
    add.add_argument("patient", metavar="CODE")
    add.add_argument("--sensitivity", choices=["hyper", "typical", "hypo"], default="typical",
                     help="the patient's sensitivity profile (default typical)")
    show = sub.add_parser("show", help="the last visits at a glance")
    show.add_argument("patient", metavar="CODE")
    show.add_argument("--visits", type=int, default=5, metavar="N", help="how many visits (default 5)")
    show.add_argument("--json", action="store_true")
    trend = sub.add_parser("trend", help="pain before and after (and pressure-pain thresholds) over visits")
    trend.add_argument("patient", metavar="CODE")
    trend.add_argument("--out", type=Path, required=True, metavar="PNG")
    for p in (add, show, trend):
        add_store_option(p)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..visits import StoreError, VisitStore

    try:
        with VisitStore(args.store) as store:
            if args.action == "add":
                from .options import SENSITIVITY

                info = store.add_patient(args.patient, SENSITIVITY[args.sensitivity].value)
                print(f"patient {info.code} added ({info.sensitivity}); next: `estim visit start {info.code} ...`")
                return EXIT_OK
            visits = store.visits(args.patient, limit=args.visits if args.action == "show" else None)
            info = store.patient(args.patient)
    except (StoreError, ValueError) as exc:
        return refused(exc)
    if args.action == "trend":
        return _trend(args, list(reversed(visits)))
    if args.json:
        print(json.dumps([_plain(v) for v in visits], indent=2, default=str))
        return EXIT_OK
    print(f"patient {info.code} ({info.sensitivity}), {len(visits)} most recent visit(s), newest first")
    for visit in visits:
        print(_glance(visit))
    return EXIT_OK


def _glance(visit) -> str:  # noqa: ANN001 - visits.Visit
    from safety import Question

    lines = [f"\n{visit.started_at.astimezone():%Y-%m-%d %H:%M}  visit {visit.number} ({visit.name}, store id "
             f"{visit.id})  {visit.clinician or '-'}  ({visit.sensitivity}){'' if visit.ended_at else '  [open]'}"]
    flagged = [q.value.replace("_", " ") for q in Question if visit.screening.answers.get(q)]
    lines.append(f"  screening: {', '.join(flagged) if flagged else 'nothing raised'}")
    answered: dict = {}
    for item in visit.screening_entries:          # an answer seen again is a change when screened again
        if item.question in answered:
            lines.append(f"    screened again {item.entry.recorded_at.astimezone():%H:%M} by "
                         f"{item.entry.recorded_by or '-'}: {item.question.value.replace('_', ' ')} "
                         f"{'yes' if answered[item.question] else 'no'} -> {'yes' if item.answer else 'no'}"
                         + (f" (why: {item.entry.reason})" if item.entry.reason else ""))
        answered[item.question] = item.answer
    for t in visit.thresholds:
        marks = ", ".join(f"{k} {'-' if v is None else f'{v:g}'}" for k, v in
                          (("sensory", t.sensory_ma), ("motor", t.motor_ma), ("tolerance", t.tolerance_ma)))
        lines.append(f"  thresholds ch{t.channel} ({t.placement.a} / {t.placement.b}, {t.waveform}): {marks} mA")
    lines += [_dose_line(d) for d in visit.doses]
    o = visit.outcome
    if o is not None:
        pain = f"pain {o.pain_before if o.pain_before is not None else '-'} -> " \
               f"{o.pain_after if o.pain_after is not None else '-'}"
        lines.append(f"  outcome: {pain}; {', '.join(o.adverse_events) or 'no adverse events'}"
                     + (f"; felt: {o.felt}" if o.felt else ""))
        ppt = [f"{where} {_kpa(getattr(o, f'ppt_{key}_before_kpa'))} -> {_kpa(getattr(o, f'ppt_{key}_after_kpa'))} kPa"
               for key, where in (("local", "near the needles"), ("remote", "remote site"))
               if getattr(o, f"ppt_{key}_before_kpa") is not None or getattr(o, f"ppt_{key}_after_kpa") is not None]
        if ppt:
            lines.append(f"  pressure-pain threshold: {'; '.join(ppt)}")
    for item in visit.outcomes[1:]:
        if item.entry.reason:
            given = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in item.outcome.given().items())
            lines.append(f"    corrected {item.entry.recorded_at.astimezone():%H:%M} by {item.entry.recorded_by}: "
                         f"{given} (why: {item.entry.reason})")
    if visit.plan is not None:
        lines.append(f"  plan: {', '.join(visit.plan.kinds) or '-'}" + (f"; {visit.plan.text}" if visit.plan.text else ""))
    for item in visit.plans[1:]:
        lines.append(f"    plan corrected {item.entry.recorded_at.astimezone():%H:%M} by {item.entry.recorded_by} "
                     f"(why: {item.entry.reason}); first: {', '.join(visit.plans[0].plan.kinds) or '-'}"
                     + (f"; {visit.plans[0].plan.text}" if visit.plans[0].plan.text else ""))
    for record_id, path in visit.records:
        lines.append(f"  record {record_id}: {path}")
    return "\n".join(lines)


def _dose_line(d) -> str:  # noqa: ANN001 - visits.Dose
    """One session of the visit: what kind, what was asked, what the device delivered, and
    whether it ran to its end or what stopped it."""
    r = d.request
    kind = {"direct": "direct run", "console": "console session"}.get(d.program, d.program)
    if r.get("preset") or r.get("program"):
        kind = f"{'preset' if r.get('preset') else 'program'} {d.program}"
    asked = ", ".join(f"{r[k]:g} {unit}" for k, unit in (("frequency", "Hz"), ("pulse_width", "µs"),
                                                         ("amplitude", "mA")) if isinstance(r.get(k), (int, float)))
    delivered = ", ".join(f"ch{c['channel']} {c['peak_ma']:g} mA for {_duration(c['stimulation_s'])}"
                          for c in d.delivered) or "nothing delivered"
    state = ("completed" if d.completed else f"stopped: {d.stopped_by or 'before its end'}" if d.finished
             else "not completed: the session never ended (killed, or still running)")
    return (f"  dose {d.recorded_at.astimezone():%H:%M} {kind}" + (f" ({asked})" if asked else "")
            + f", {state}: {delivered}" + (f"  [record {d.record_id}]" if d.record_id else ""))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _kpa(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _plain(visit) -> dict:  # noqa: ANN001 - visits.Visit
    from dataclasses import asdict

    return {"id": visit.id, "number": visit.number, "visit": visit.name, "started_at": visit.started_at.isoformat(),
            "ended_at": visit.ended_at and visit.ended_at.isoformat(), "clinician": visit.clinician,
            "sensitivity": visit.sensitivity,
            "screening": {q.value: a for q, a in visit.screening.answers.items()},
            "screening_entries": [{"question": e.question.value, "answer": e.answer, **asdict(e.entry)}
                                  for e in visit.screening_entries],
            "thresholds": [t.as_dict() for t in visit.thresholds],
            "doses": [{"program": d.program, "mechanism": d.mechanism, "request": dict(d.request),
                       "delivered": list(d.delivered), "completed": d.completed, "finished": d.finished,
                       "stopped_by": d.stopped_by, "recorded_at": d.recorded_at.isoformat(),
                       "record_id": d.record_id} for d in visit.doses],
            "outcome": None if visit.outcome is None else asdict(visit.outcome),
            "outcome_entries": [{**item.outcome.given(), **asdict(item.entry)} for item in visit.outcomes],
            "plan": None if visit.plan is None else {"kinds": list(visit.plan.kinds), "text": visit.plan.text},
            "plan_entries": [{"kinds": list(p.plan.kinds), "text": p.plan.text, **asdict(p.entry)}
                             for p in visit.plans],
            "records": [{"record_id": r, "path": p} for r, p in visit.records]}


def _trend(args: argparse.Namespace, visits: list) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [v for v in visits if v.outcome is not None]
    if not scored:
        return refused(ValueError(f"{args.patient} has no outcomes recorded yet (`estim visit outcome ...`)"))
    n = range(1, len(scored) + 1)
    labels = _labels(scored)
    ppt = [v for v in scored if v.outcome.ppt_local_before_kpa is not None]
    fig, axes = plt.subplots(2 if ppt else 1, 1, figsize=(7, 5.5 if ppt else 3.5), squeeze=False, sharex=True)
    ax = axes[0][0]
    ax.plot(n, [v.outcome.pain_before for v in scored], "o-", color="tab:red", label="pain before")
    ax.plot(n, [v.outcome.pain_after for v in scored], "o-", color="tab:blue", label="pain after")
    for i, v in zip(n, scored):
        if v.outcome.adverse_events:
            ax.annotate(", ".join(v.outcome.adverse_events), (i, 10), fontsize=7, ha="center", va="top")
    ax.set_ylim(0, 10.5)
    ax.set_ylabel("pain (0-10)")
    ax.set_title(f"{args.patient}: outcomes over visits")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    if ppt:
        ax2 = axes[1][0]
        idx = [scored.index(v) + 1 for v in ppt]
        ax2.plot(idx, [v.outcome.ppt_local_before_kpa for v in ppt], "s--", color="tab:gray", label="local before")
        ax2.plot(idx, [v.outcome.ppt_local_after_kpa for v in ppt], "s-", color="tab:green", label="local after")
        remote = [(i, v.outcome) for i, v in zip(idx, ppt) if v.outcome.ppt_remote_before_kpa is not None]
        if remote:
            ax2.plot([i for i, _ in remote], [o.ppt_remote_before_kpa for _, o in remote], "^--", color="tab:gray",
                     label="remote before")
            ax2.plot([i for i, _ in remote], [o.ppt_remote_after_kpa for _, o in remote], "^-", color="tab:purple",
                     label="remote after")
        ax2.set_ylabel("pressure-pain threshold (kPa)")
        ax2.legend(loc="lower left", fontsize=8, framealpha=0.8)
    axes[-1][0].set_xticks(list(n), labels, fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"{len(scored)} visit(s) -> {args.out}: " + "; ".join(label.replace("\n", ", ") for label in labels))
    return EXIT_OK


def _labels(visits: list) -> list[str]:
    """One label per visit: its number and day, with the time when the day has more than one
    visit (two rooms, or screened again after a visit ended), so no two read the same."""
    from collections import Counter

    days = Counter(v.started_at.astimezone().date() for v in visits)
    return [f"visit {v.number}\n{v.started_at.astimezone():%d %b}"
            + (f" {v.started_at.astimezone():%H:%M}" if days[v.started_at.astimezone().date()] > 1 else "")
            for v in visits]
