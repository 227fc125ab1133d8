"""The session report a person reads: two A4 pages, matplotlib's PDF backend.

Page 1: who and when (patient code, date and times in local time, clinician, device, record
and its check), screening, sites and needles, thresholds, program and dose by channel, what
happened, outcomes (pain, pressure-pain thresholds, adverse events) and the integration plan.
Page 2: the delivered-intensity plot with the thresholds as dashed lines and every stop,
e-stop, fault, refusal and piece of patient feedback marked, and the output summary at the
needle rebuilt from the readings. Every page carries the patient code, the date, the record
id and its page number. Everything comes from the signed part of the record (and its check,
as `estim record verify` gives it) and, for a session run for a patient, from the visit the
record names (screening, thresholds, outcomes, plan); a field neither holds is printed as
"not recorded". The file is readable by its user only.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import INTENDED_USE
from .output import write_private
from .session import Session, output_summaries
from .words import NOT_RECORDED, commands_text, ma as _ma, prescription_text, stop_text

A4 = (8.27, 11.69)
FONT_PT = 8.5
LINE_CHARS = 96
"""Monospaced characters that fit across the page at FONT_PT; longer lines wrap."""


def write_report(session: Session, verdict: Any, out: Path, visit: Any = None) -> Path:
    """Write the PDF; `verdict` is the record's `safety.RecordVerdict`, `visit` the visit
    store's `Visit` the record belongs to, if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from .plots import record_figure

    _visit_thresholds(session, visit)
    header = (f"patient {session.patient_code or NOT_RECORDED}  |  {_local(session.started, '%Y-%m-%d') or NOT_RECORDED}"
              f"  |  record {session.record_id or '-'}")
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": f"Needle e-stim session report {session.record_id or ''}".strip(),
                                    "Creator": "estim record report"}) as pdf:
        first = plt.figure(figsize=A4)
        _text_page(first, _page_one(session, verdict, visit))
        _frame(first, header, 1)
        pdf.savefig(first)
        plt.close(first)
        second = plt.figure(figsize=A4, layout="constrained")
        second.get_layout_engine().set(rect=(0.02, 0.04, 0.96, 0.92))
        plot, text = second.subfigures(2, 1, height_ratios=[1.1, 1])
        record_figure(session, fig=plot)
        _text_page(text, _page_two(session), top=0.97, step=0.034)
        _frame(second, header, 2)
        pdf.savefig(second)
        plt.close(second)
    write_private(out, buffer.getvalue())
    return out


def _frame(fig: Any, header: str, page: int) -> None:
    fig.text(0.06, 0.985, header, fontsize=FONT_PT, va="top")
    fig.text(0.94, 0.015, f"page {page} of 2", fontsize=FONT_PT, ha="right", va="bottom")
    fig.text(0.06, 0.015, INTENDED_USE, fontsize=FONT_PT, style="italic", va="bottom")


def _text_page(fig: Any, blocks: list[tuple[str, list[str]]], top: float = 0.955, step: float = 0.0165) -> None:
    """Headed blocks of monospaced lines, top to bottom (`step`: one line, in figure height)."""
    import textwrap

    y = top
    for heading, lines in blocks:
        fig.text(0.06, y, heading, fontsize=11, weight="bold", va="top")
        y -= 1.5 * step
        for line in lines:
            for part in textwrap.wrap(line, LINE_CHARS, subsequent_indent="    ") or [""]:
                fig.text(0.08, y, part, fontsize=FONT_PT, family="monospace", va="top")
                y -= step
        y -= 0.7 * step


def _local(iso: str | None, fmt: str) -> str:
    """A record's UTC time in this computer's local time (as `estim patient show` prints it)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime(fmt)
    except ValueError:
        return ""


def _visit_thresholds(session: Session, visit: Any) -> None:
    """A session run for a patient takes its thresholds from the visit when its record has none
    (titration is a session of its own), so the page and the plot's dashed lines show them."""
    if session.thresholds or visit is None:
        return
    for t in visit.thresholds:
        session.thresholds.append({"channel": t.channel, "sensory": t.sensory_ma, "motor": t.motor_ma,
                                   "tolerance": t.tolerance_ma, "t": t.measured_at.isoformat()})


def _page_one(s: Session, verdict: Any, visit: Any) -> list[tuple[str, list[str]]]:
    from .fhir import status_of

    plan, setup = s.plan, s.setup
    patient = (setup.get("envelope") or {}).get("patient") or {}
    rx = setup.get("prescription") or {}
    zone = _local(s.started, "%Z")
    return [
        ("Needle e-stim session report", [
            f"patient code:   {s.patient_code or NOT_RECORDED}" + (f"   visit {visit.id}" if visit else ""),
            f"date:           {_local(s.started, '%Y-%m-%d') or NOT_RECORDED}  ({_local(s.started, '%H:%M:%S') or '-'}"
            f" to {_local(s.ended, '%H:%M:%S') or '-'} {zone})",
            f"clinician:      {s.operator or (visit.clinician if visit else None) or NOT_RECORDED}",
            f"device:         {s.device['serial'] or NOT_RECORDED}, firmware {s.device['firmware'] or '-'}",
            f"record:         {s.path.name} (id {s.record_id or '-'})",
            f"record check:   {verdict.status.value}" + (f"; signed with key {verdict.key_id}" if verdict.key_id
                                                         else "") + ("" if verdict.closed else f": {verdict.reason}"),
        ] + ([f"visit store:    {verdict.anchor}"] if verdict.anchor else [])),
        ("Screening" + (f" (visit {visit.id})" if visit else ""), [
            *(_screening(visit) or [f"implanted electronic device: {_yes_no(patient.get('implanted_device'))}",
                                    f"pregnant: {_yes_no(patient.get('pregnant'))}"]),
            f"sensitivity: {plan.get('sensitivity') or rx.get('sensitivity') or NOT_RECORDED}",
        ]),
        ("Sites and needles", _sites(setup) or [NOT_RECORDED]),
        ("Thresholds", [_thresholds(t) + (f" (measured {_local(t['t'], '%H:%M')})" if t.get("t") else "")
                        for t in s.thresholds]
         or [_plan_thresholds(plan)]),
        ("Program and dose by channel", [
            f"target mechanism: {plan.get('mechanism') or NOT_RECORDED}; program: {plan.get('program') or 'direct'}",
            prescription_text(rx),
            *[f"channel {d.channel}: {'/'.join(d.shapes)}, {_join(d.frequencies_hz, 'Hz')}, "
              f"{_join(d.pulse_widths_us, 'µs')}, up to {d.max_amplitude_ma:g} mA"
              + ("".join(f"; bursts of {n} at {r:g} Hz" for n, r in d.burst)) for d in s.doses],
        ]),
        ("What happened", [
            *([f"the session never reached the device ({s.not_started})"] if s.not_started else []),
            "commands: " + commands_text(s.commands),
            f"stops: {len(s.stops)}; faults: {len(s.faults)}; refusals: {len(s.refusals)}; "
            f"patient feedback: {len(s.feedback)}",
            *[f"stopped: {stop_text(reason)}" for reason in s.stops[:6]],
            *[f"patient said (channel {f.get('channel')}): {f.get('feedback')} - {f.get('outcome', '')}"
              for f in s.feedback[:6]],
            _ending(s, status_of(s, verdict)),
        ]),
        ("Outcomes and integration plan", _outcomes(visit) + [
            f"integration plan: {_plan_text(visit) or plan.get('integration_plan') or NOT_RECORDED}",
        ]),
    ]


def _ending(s: Session, status: str) -> str:
    if status == "completed":
        return "the session ran to its end; the record was closed"
    if status == "not-done":
        return "no output was delivered" + ("" if s.closed else "; the record was NOT closed")
    return ("the session ended early (a stop)" if s.stops or s.faults else "the session did not end normally") + (
        "; the record was closed" if s.closed else "; the record was NOT closed")


def _page_two(s: Session) -> list[tuple[str, list[str]]]:
    _, table = output_summaries(s)
    return [
        ("Output summary at the needle (from the device's readings, 0.1 s resolution)", table.splitlines()),
        ("Marks on the plot", ["numbered lines: red stop, dark red e-stop, orange fault, purple refusal, "
                               "green patient feedback", "dashed horizontal lines: the patient's thresholds"
                               + ("" if s.thresholds else f" ({NOT_RECORDED} for this session)")]),
    ]


def _screening(visit: Any) -> list[str]:
    """Every screening answer of the visit, the yes answers first."""
    if visit is None:
        return []
    answers = sorted(visit.screening.answers.items(), key=lambda qa: (not qa[1], str(qa[0])))
    yes = [str(q).replace("_", " ") for q, a in answers if a]
    no = [str(q).replace("_", " ") for q, a in answers if not a]
    return [f"yes: {', '.join(yes) or 'none'}", f"no: {', '.join(no) or 'none'}"]


def _outcomes(visit: Any) -> list[str]:
    outcome = visit.outcome if visit is not None else None
    if outcome is None:
        return [f"outcomes: {NOT_RECORDED}"]
    lines = [f"pain (0-10): {_score(outcome.pain_before)} before, {_score(outcome.pain_after)} after",
             f"how it felt: {outcome.felt or NOT_RECORDED}",
             f"adverse events: {', '.join(outcome.adverse_events) or 'none'}"]
    for where in ("local", "remote"):
        before, after = (getattr(outcome, f"ppt_{where}_{when}_kpa") for when in ("before", "after"))
        if before is not None or after is not None:
            lines.append(f"pressure-pain threshold, {'near the needles' if where == 'local' else 'remote site'}: "
                         f"{_kpa(before)} before, {_kpa(after)} after")
    corrections = [o for o in visit.outcomes[1:] if o.entry.reason]
    lines += [f"corrected {_local(o.entry.recorded_at.isoformat(), '%H:%M')} by {o.entry.recorded_by}: "
              f"{o.entry.reason}" for o in corrections]
    return lines


def _kpa(value: float | None) -> str:
    return NOT_RECORDED if value is None else f"{value:g} kPa"


def _plan_text(visit: Any) -> str:
    plan = visit.plan if visit is not None else None
    return "" if plan is None else "; ".join([*plan.kinds, plan.text] if plan.text else plan.kinds)


def _score(value: int | None) -> str:
    return NOT_RECORDED if value is None else str(value)


def _sites(setup: dict[str, Any]) -> list[str]:
    needles = setup.get("needles") or {}
    return [f"channel {ch}: {' to '.join(pair)}; needle " + (
        f"{needles[ch]['diameter_mm']:g} mm across, inserted {needles[ch]['length_mm']:g} mm" if ch in needles
        else NOT_RECORDED)
        for ch, pair in sorted((setup.get("sites") or {}).items())]


def _thresholds(t: dict[str, Any]) -> str:
    return (f"channel {t.get('channel')}: first felt {_ma(t.get('sensory'))}, visible twitch {_ma(t.get('motor'))}, "
            f"tolerance {_ma(t.get('tolerance'))}")


def _plan_thresholds(plan: dict[str, Any]) -> str:
    given = plan.get("thresholds")
    if isinstance(given, dict):
        given = given.get("thresholds", [given])
    if isinstance(given, list):
        return "; ".join(f"from the thresholds file: {_thresholds(t)}" for t in given if isinstance(t, dict)) \
            or NOT_RECORDED
    return f"as given for the program: {given}" if isinstance(given, str) else NOT_RECORDED


def _yes_no(value: Any) -> str:
    return NOT_RECORDED if value is None else ("yes" if value else "no")


def _join(values: tuple[float, ...], unit: str) -> str:
    return "/".join(f"{v:g}" for v in values) + f" {unit}"
