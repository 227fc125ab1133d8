"""`estim record verify|show|report|export`: check a treatment record, summarise a session,
and hand it on as a PDF report or a FHIR R4 bundle.

`verify` exit codes: 0 intact and closed; 5 intact but not closed (cut at a record
boundary, or mid-line by a killed process); 6 altered, or not a treatment record (also:
shorter than, or different from, the head the visit store kept, or deleted); 7 cannot check
(the key it names is not on this computer, the file cannot be read, or the visit store has
no head for it or cannot be opened).
`show`, `report` and `export` read what the record holds and say when it does not verify.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import (EXIT_OK, EXIT_RECORD_ALTERED, EXIT_RECORD_NOT_CLOSED, EXIT_RECORD_UNCHECKABLE, EXIT_REFUSED,
               Parser)
from .visit_context import add_store_option

EXAMPLES = """examples:
  estim record verify ~/.local/share/estim/records/session-20250101-093000.jsonl
  estim record verify session.jsonl --key k-3f9a0c1d2e4b5a60 --json
  estim record verify --id 5f0c2a9e8d7b4c3a9e1f2d3c4b5a6978      (the file may be gone)
  estim record show session.jsonl --plot session.png
  estim record report session.jsonl --out visit.pdf
  estim record export session.jsonl --fhir visit.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim record",
        description="Check treatment records, summarise a session, write its report or FHIR export.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="check a record: signed with the clinic's key, nothing changed "
                                           "(exit 0 / 5 / 6 / 7)",
                            description="Check every line against the key the record names, and the record "
                                        "against the head the visit store kept of it (so a cut-off end or a "
                                        "deleted file is caught). Exit 0: intact and closed; 5: intact but not "
                                        "closed; 6: altered, not a record, or deleted; 7: cannot check (key not on "
                                        "this computer, file unreadable, no entry in the visit store).")
    verify.add_argument("path", type=Path, metavar="PATH", nargs="?")
    verify.add_argument("--id", metavar="RECORD_ID", help="the record the visit store knows by this id (printed "
                                                          "when the session started), wherever it was written")
    add_store_option(verify)
    verify.add_argument("--key", metavar="ID", help="insist the record was signed with this key")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    show = sub.add_parser("show", help="summarise a session: plan, operator, thresholds, commands, faults, output",
                          description="Summarise a session from its record. The output table is what the "
                                      "device reported in telemetry, per channel.")
    show.add_argument("path", type=Path, metavar="PATH")
    show.add_argument("--plot", type=Path, metavar="PNG", help="also draw intensity over time as delivered")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    report = sub.add_parser("report", help="write the session report a person reads (PDF, two pages)",
                            description="Write a two-page PDF: who, when, screening, sites and needles, "
                                        "thresholds, dose by channel, the intensity delivered with every stop, "
                                        "fault and patient remark marked, and the output summary at the needle.")
    report.add_argument("path", type=Path, metavar="PATH")
    report.add_argument("--out", type=Path, required=True, metavar="PDF")
    add_store_option(report)
    export = sub.add_parser("export", help="export the session for a clinic system (FHIR R4 bundle, JSON)",
                            description="Write a FHIR R4 (4.3, R4B) collection Bundle: Device, Procedure with "
                                        "the dose per channel as extensions, and pain Observations when recorded.")
    export.add_argument("path", type=Path, metavar="PATH")
    export.add_argument("--fhir", type=Path, required=True, metavar="JSON")
    add_store_option(export)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "verify" and (args.path is None) == (args.id is None):
        parser.error("give the record's PATH, or --id RECORD_ID")
    if args.path is not None and not args.path.is_file():
        print(f"error: {args.path}: no such record file" + (
            "; if it was deleted, `estim record verify --id RECORD_ID` asks the visit store what it saw"
            if args.action == "verify" else ""), file=sys.stderr)
        return EXIT_RECORD_UNCHECKABLE if args.action == "verify" else EXIT_REFUSED
    if args.action == "verify":
        return _verify(args, args.json)
    if args.action == "report":
        return _report(args.path, args.out, args.store)
    if args.action == "export":
        return _export(args.path, args.fhir, args.store)
    return _show(args.path, args.plot, args.json)


def _checked(path: Path) -> Any:
    """The record's verdict, with a warning line when it does not verify (its content is
    still shown: that is what a reviewer needs to see)."""
    from safety import verify_record

    verdict = verify_record(path)
    if not verdict.ok:
        print(f"warning: {path}: {verdict.status.value}: {verdict.reason}", file=sys.stderr)
    return verdict


def _visit(session: Any, store_url: str | None) -> Any:
    """The visit this record was written in (linked by its id in the visit store), or None."""
    if not session.patient_code or not session.record_id:
        return None
    from ..visits import StoreError, VisitStore

    try:
        with VisitStore(store_url) as store:
            visits = store.visits(session.patient_code)
    except StoreError as exc:
        print(f"warning: the visit store cannot be read ({exc}); the report holds what the record holds",
              file=sys.stderr)
        return None
    return next((v for v in visits if any(rid == session.record_id for rid, _ in v.records)), None)


def _report(path: Path, out: Path, store_url: str | None) -> int:
    from ..reports.pdf import write_report
    from ..reports.session import read_session

    verdict = _checked(path)
    session = read_session(path)
    try:
        write_report(session, verdict, out, _visit(session, store_url))
    except OSError as exc:
        print(f"error: cannot write {out} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_REFUSED
    print(f"report: {out}")
    return EXIT_OK if verdict.ok else EXIT_BY_STATUS[verdict.status.name]


def _export(path: Path, out: Path, store_url: str | None) -> int:
    from ..reports.fhir import build_bundle
    from ..reports.session import read_session

    verdict = _checked(path)
    session = read_session(path)
    visit = _visit(session, store_url)
    outcome = visit.outcome if visit is not None else None
    bundle = build_bundle(session, (outcome.pain_before, outcome.pain_after) if outcome else (None, None))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(bundle.json(indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {out} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_REFUSED
    print(f"FHIR bundle: {out} ({len(bundle.entry)} resources)")
    return EXIT_OK if verdict.ok else EXIT_BY_STATUS[verdict.status.name]


EXIT_BY_STATUS = {"CLOSED": EXIT_OK, "OPEN": EXIT_RECORD_NOT_CLOSED, "TRUNCATED": EXIT_RECORD_NOT_CLOSED,
                  "ALTERED": EXIT_RECORD_ALTERED, "UNCHECKABLE": EXIT_RECORD_UNCHECKABLE}

NEXT_STEP = {
    "CLOSED": "",
    "OPEN": " The session did not close its record (the host stopped or was killed between records).",
    "TRUNCATED": " The writing process stopped in the middle of a line (killed, or the power went).",
    "ALTERED": " Do not rely on this file; keep it as it is and tell whoever looks after the clinic's records.",
    "UNCHECKABLE": "",
}


def _verify(args: argparse.Namespace, as_json: bool) -> int:
    from safety import verify_anchored, verify_record

    from ..visits import StoreError, VisitStore

    path = args.path
    try:
        store = VisitStore(args.store)
    except StoreError as exc:
        print(f"{path or args.id}: cannot be checked: {exc}.")
        return EXIT_RECORD_UNCHECKABLE
    try:
        with store:
            verdict = verify_anchored(args.id, store) if path is None else \
                verify_record(path, expect_key=args.key, anchors=store)
    except OSError as exc:
        print(f"error: {path}: cannot read the record ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_RECORD_UNCHECKABLE
    path = path or args.id
    status = verdict.status.name
    if as_json:
        body = {k: v for k, v in asdict(verdict).items() if k != "fragment"}
        print(json.dumps({"path": str(path), **body, "status": status, "exit": EXIT_BY_STATUS[status]}, indent=2))
        return EXIT_BY_STATUS[status]
    signer = f"signed with key {verdict.key_id}" + (f" ({verdict.key_label})" if verdict.key_label else "")
    if status in ("CLOSED", "OPEN", "TRUNCATED"):
        print(f"{path}: {verdict.status.value}: {verdict.records} record(s) and {verdict.readings} reading(s), "
              f"{signer}." + NEXT_STEP[status])
    elif status == "ALTERED":
        print(f"{path}: ALTERED: {verdict.reason}." + (f" The {verdict.records} record(s) before it verify."
                                                       if verdict.records else "") + NEXT_STEP[status])
    else:
        print(f"{path}: cannot be checked: {verdict.reason}.")
    if verdict.anchor and verdict.ok:
        print(f"visit store: {verdict.anchor}.")
    return EXIT_BY_STATUS[status]


def _show(path: Path, plot: Path | None, as_json: bool) -> int:
    from safety import verify_record

    from ..reports.session import read_session

    verdict = verify_record(path)
    session = read_session(path)
    summary = _summary(session)
    summary["integrity"] = {"status": verdict.status.name, "ok": verdict.ok, "records": verdict.records,
                            "first_bad_line": verdict.first_bad_line, "reason": verdict.reason,
                            "key_id": verdict.key_id}
    if plot is not None:
        from ..reports.plots import save_record_plot

        save_record_plot(session, plot)
        summary["plot"] = str(plot)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format(path, summary, session.outputs))
    return EXIT_OK if verdict.ok else EXIT_BY_STATUS[verdict.status.name]


def _summary(s: Any) -> dict[str, Any]:  # reports.session.Session
    return {
        "started": s.started, "ended": s.ended, "operator": s.operator, "plan": s.plan, "device": s.device,
        "channels": s.setup.get("channels"), "patient": s.setup.get("patient"),
        "prescription": s.setup.get("prescription"), "thresholds": s.thresholds, "patient_feedback": s.feedback,
        "commands": dict(s.commands), "naks": s.naks, "faults": s.faults, "refusals": s.refusals,
        "stops": s.stops, "not_started": s.not_started, "notices": s.notices, "session_end": s.session_end,
        "closed": s.closed,
        "output": [{**{k: v for k, v in asdict(o).items() if k != "samples"},
                    "frequencies_hz": sorted(o.frequencies_hz), "pulse_widths_us": sorted(o.pulse_widths_us)}
                   for o in s.outputs],
    }


def _format(path: Path, s: dict[str, Any], outputs: list[Any]) -> str:
    integrity = s["integrity"]
    if not integrity["ok"]:
        check = f"{integrity['reason']} (run `estim record verify` for details)"
    else:
        check = f"{integrity['records']} records verify, signed with key {integrity['key_id']}"
    rx = s["prescription"] or {}
    lines = [
        f"record:     {path}",
        f"integrity:  {check}",
        f"time:       {s['started']} .. {s['ended']}" + ("" if s["closed"] else " (no close record)"),
        f"operator:   {s['operator'] or '-'}",
        f"device:     {s['device']['serial'] or '-'} firmware {s['device']['firmware'] or '-'}",
        f"command:    estim {' '.join(s['plan'].get('argv', [])) or '-'}",
        f"target:     {s['plan'].get('mechanism') or '-'}; sensitivity {s['plan'].get('sensitivity') or '-'}",
        f"after:      {s['plan'].get('integration_plan') or '-'}",
    ]
    if s["not_started"]:
        lines.append(f"not started: {s['not_started']}")
    if rx:
        lines.append(f"prescription: channels {s['channels']}, cap {rx.get('max_amplitude_ma')} mA, "
                     f"ramp {rx.get('ramp_ma_per_s')} mA/s, {rx.get('frequency_hz')} Hz, "
                     f"{rx.get('pulse_width_us')} µs, {rx.get('max_session_minutes', 0):.1f} min, "
                     f"sensitivity {rx.get('sensitivity')}")
    for t in s["thresholds"]:
        lines.append(f"thresholds: channel {t.get('channel')}: sensory {_ma(t.get('sensory'))}, "
                     f"motor {_ma(t.get('motor'))}, tolerance {_ma(t.get('tolerance'))}")
    for f in s["patient_feedback"]:
        lines.append(f"patient:    channel {f.get('channel')}: {f.get('feedback')} ({f.get('outcome', '')})")
    lines.append("commands:   " + (", ".join(f"{n} {k}" for k, n in sorted(s["commands"].items())) or "none")
                 + (f"; {len(s['naks'])} refused by the device" if s["naks"] else ""))
    lines.append(f"faults:     {len(s['faults'])}")
    lines += [f"  - {f.get('code')} on {_where(f.get('channel'))} at {f.get('device_time_s')} s" for f in s["faults"]]
    lines.append(f"refusals:   {len(s['refusals'])}")
    lines += [f"  - [{r.get('rule')}] {r.get('message')}" for r in s["refusals"]]
    lines += [f"stopped:    {reason}" for reason in s["stops"]]
    lines += [f"notice:     {n.get('reason')}" for n in s["notices"]]
    lines.append("")
    lines.append("output as delivered (device telemetry):")
    if not outputs:
        lines.append("  no channel delivered any output")
    else:
        head = ("ch", "peak mA", "on s", "charge µC", "Hz", "µs", "load Ω", "compliance-limited")
        rows = [head] + [(
            str(o.channel), f"{o.peak_ma:.2f}", f"{o.on_s:.1f}", f"{o.charge_device_uc:.0f}",
            "/".join(f"{f:g}" for f in sorted(o.frequencies_hz)) or "-",
            "/".join(f"{w:g}" for w in sorted(o.pulse_widths_us)) or "-",
            "-" if o.load_min_ohm is None else f"{o.load_min_ohm:.0f}-{o.load_max_ohm:.0f}",
            str(o.compliance_limited_readings)) for o in outputs]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _ma(value: float | None) -> str:
    return "-" if value is None else f"{value:g} mA"


def _where(channel: int | None) -> str:
    return "the device" if channel is None else f"channel {channel}"
