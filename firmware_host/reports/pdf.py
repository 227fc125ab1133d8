"""The session report a person reads: two A4 pages, matplotlib's PDF backend.

Page 1: who and when (patient code, date, clinician, device, record and its check),
screening as the record has it, sites and needles, thresholds, program and dose by
channel, the target and the integration plan. Page 2: the delivered-intensity plot with
every stop, e-stop, fault, refusal and piece of patient feedback marked, and the output
summary at the needle rebuilt from the readings. Everything comes from the record (and
its verdict) and, when the session was run for a patient, from the visit the record is
linked to in the visit store (screening, outcomes, plan); a field neither holds is
printed as "not recorded".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import INTENDED_USE
from .session import Session, output_summaries

A4 = (8.27, 11.69)
NOT_RECORDED = "not recorded"
LINE_CHARS = 105
"""Monospaced characters that fit across the page at 7.8 pt."""


def write_report(session: Session, verdict: Any, out: Path, visit: Any = None) -> Path:
    """Write the PDF; `verdict` is the record's `safety.RecordVerdict`, `visit` the visit
    store's `Visit` the record belongs to, if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from .plots import record_figure

    out.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(out, metadata={"Title": f"Needle e-stim session report {session.record_id or ''}".strip(),
                                 "Creator": "estim record report"}) as pdf:
        first = plt.figure(figsize=A4)
        _text_page(first, _page_one(session, verdict, visit))
        first.text(0.06, 0.02, INTENDED_USE, fontsize=7, style="italic", va="bottom")
        pdf.savefig(first)
        plt.close(first)
        second = plt.figure(figsize=A4, layout="constrained")
        plot, text = second.subfigures(2, 1, height_ratios=[1.1, 1])
        record_figure(session, fig=plot)
        _text_page(text, _page_two(session), top=0.97, step=0.033)
        pdf.savefig(second)
        plt.close(second)
    return out


def _text_page(fig: Any, blocks: list[tuple[str, list[str]]], top: float = 0.96, step: float = 0.0155) -> None:
    """Headed blocks of monospaced lines, top to bottom (`step`: one line, in figure height)."""
    import textwrap

    y = top
    for heading, lines in blocks:
        fig.text(0.06, y, heading, fontsize=11, weight="bold", va="top")
        y -= 1.5 * step
        widest = max((len(line) for line in lines), default=0)
        size = max(6.0, min(7.8, 7.8 * LINE_CHARS / max(widest, 1)))   # a table shrinks to fit
        for line in lines:
            for part in textwrap.wrap(line, int(LINE_CHARS * 7.8 / size), subsequent_indent="    ") or [""]:
                fig.text(0.08, y, part, fontsize=size, family="monospace", va="top")
                y -= step
        y -= 0.8 * step


def _page_one(s: Session, verdict: Any, visit: Any) -> list[tuple[str, list[str]]]:
    plan, setup = s.plan, s.setup
    patient = (setup.get("envelope") or {}).get("patient") or {}
    rx = setup.get("prescription") or {}
    blocks = [
        ("Needle e-stim session report", [
            f"patient code:   {s.patient_code or NOT_RECORDED}",
            f"date:           {(s.started or '')[:10] or NOT_RECORDED}  ({_clock(s.started)} to {_clock(s.ended)} UTC)",
            f"clinician:      {s.operator or (visit.clinician if visit else None) or NOT_RECORDED}",
            f"device:         {s.device['serial'] or NOT_RECORDED}, firmware {s.device['firmware'] or '-'}",
            f"record:         {s.path.name} (id {s.record_id or '-'})",
            f"record check:   {verdict.status.value}" + (f"; signed with key {verdict.key_id}" if verdict.key_id
                                                         else "") + ("" if verdict.ok else f": {verdict.reason}"),
        ]),
        ("Screening" + (f" (visit {visit.id})" if visit else ""), [
            *(_screening(visit) or [f"implanted electronic device: {_yes_no(patient.get('implanted_device'))}",
                                    f"pregnant: {_yes_no(patient.get('pregnant'))}"]),
            f"sensitivity: {plan.get('sensitivity') or rx.get('sensitivity') or NOT_RECORDED}",
        ]),
        ("Sites and needles", _sites(setup) or [NOT_RECORDED]),
        ("Thresholds", [f"channel {t.get('channel')}: first felt {_ma(t.get('sensory'))}, visible twitch "
                        f"{_ma(t.get('motor'))}, tolerance {_ma(t.get('tolerance'))}" for t in s.thresholds]
         or [_plan_thresholds(plan)]),
        ("Program and dose by channel", [
            f"target mechanism: {plan.get('mechanism') or NOT_RECORDED}; program: {plan.get('program') or 'direct'}",
            f"prescription: cap {rx.get('max_amplitude_ma')} mA, ramp {rx.get('ramp_ma_per_s')} mA/s, "
            f"{rx.get('frequency_hz')} Hz, {rx.get('pulse_width_us')} µs, {_minutes(rx.get('max_session_minutes'))}",
            *[f"channel {d.channel}: {'/'.join(d.shapes)}, {_join(d.frequencies_hz, 'Hz')}, "
              f"{_join(d.pulse_widths_us, 'µs')}, up to {d.max_amplitude_ma:g} mA"
              + ("".join(f"; bursts of {n} at {r:g} Hz" for n, r in d.burst)) for d in s.doses],
        ]),
        ("What happened", [
            *([f"the session never reached the device ({s.not_started})"] if s.not_started else []),
            f"commands: " + (", ".join(f"{n} {k}" for k, n in sorted(s.commands.items())) or "none"),
            f"stops: {len(s.stops)}; faults: {len(s.faults)}; refusals: {len(s.refusals)}; "
            f"patient feedback: {len(s.feedback)}",
            *[f"stopped: {reason}" for reason in s.stops[:6]],
            *[f"patient said ({f.get('channel')}): {f.get('feedback')} - {f.get('outcome', '')}" for f in s.feedback[:6]],
            "session ended " + ("at its prescribed time" if s.session_end else "before its prescribed time or "
                                "without a timed end") + ("; record closed" if s.closed else "; record NOT closed"),
        ]),
        ("Outcomes and integration plan", _outcomes(visit) + [
            f"integration plan: {_plan_text(visit) or plan.get('integration_plan') or NOT_RECORDED}",
        ]),
    ]
    return blocks


def _page_two(s: Session) -> list[tuple[str, list[str]]]:
    _, table = output_summaries(s)
    return [
        ("Output summary at the needle (from the device's readings, 0.1 s resolution)", table.splitlines()),
        ("Marks on the plot", ["numbered lines: red stop, dark red e-stop, orange fault, purple refusal, "
                               "green patient feedback", "dashed horizontal lines: the patient's thresholds"]),
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
    return [f"pain (0-10): {_score(outcome.pain_before)} before, {_score(outcome.pain_after)} after",
            f"how it felt: {outcome.felt or NOT_RECORDED}",
            f"adverse events: {', '.join(outcome.adverse_events) or 'none'}"]


def _plan_text(visit: Any) -> str:
    plan = visit.plan if visit is not None else None
    return "" if plan is None else "; ".join([*plan.kinds, plan.text] if plan.text else plan.kinds)


def _score(value: int | None) -> str:
    return NOT_RECORDED if value is None else str(value)


def _sites(setup: dict[str, Any]) -> list[str]:
    needles = setup.get("needles") or {}
    return [f"channel {ch}: {' to '.join(pair)}; needle " + (
        f"{needles[ch]['diameter_mm']:g} x {needles[ch]['length_mm']:g} mm" if ch in needles else NOT_RECORDED)
        for ch, pair in sorted((setup.get("sites") or {}).items())]


def _plan_thresholds(plan: dict[str, Any]) -> str:
    given = plan.get("thresholds")
    return f"as given for the program: {given}" if given else NOT_RECORDED


def _yes_no(value: Any) -> str:
    return NOT_RECORDED if value is None else ("yes" if value else "no")


def _ma(value: Any) -> str:
    return "-" if value is None else f"{value:g} mA"


def _join(values: tuple[float, ...], unit: str) -> str:
    return "/".join(f"{v:g}" for v in values) + f" {unit}"


def _minutes(value: Any) -> str:
    return f"{value:.1f} min" if isinstance(value, (int, float)) else NOT_RECORDED


def _clock(iso: str | None) -> str:
    return iso[11:19] if iso and len(iso) >= 19 else "-"
