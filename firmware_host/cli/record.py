"""`estim record verify|show|report|export`: check a treatment record, summarise a session,
and hand it on as a PDF report or a FHIR R4 bundle.

`verify` exit codes: 0 intact and closed; 5 intact but not closed (it ends at a signed
line, or what follows its last signature is not signed and is not data); 6 altered, or not
a treatment record (also: shorter than, or different from, the signed head the visit store
kept, a copy of another record or a replaced one, or deleted); 7 cannot check (the key it
names is not on this computer, the file cannot be read, or the visit store has no head for
it or cannot be opened). `show`, `report` and `export` give the same verdict and exit code
and never show what is not signed; `export` refuses an altered record. `anchor` puts
records written while the store was out of reach in it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import (EXIT_OK, EXIT_RECORD_ALTERED, EXIT_RECORD_NOT_CLOSED, EXIT_RECORD_UNCHECKABLE, EXIT_REFUSED,
               Parser, refused)
from .visit_context import add_store_option
from ..reports.words import commands_text, ma, prescription_text, stop_text

EXAMPLES = """examples:
  estim record verify ~/.local/share/estim/records/session-20250101-093000.jsonl
  estim record verify session.jsonl --key k-3f9a0c1d2e4b5a60 --json
  estim record verify --id 5f0c2a9e8d7b4c3a9e1f2d3c4b5a6978      (the file may be gone)
  estim record show session.jsonl --plot session.png
  estim record report session.jsonl --out visit.pdf
  estim record export session.jsonl --fhir visit.json --patient-system https://clinic.example/patients
  estim record verify session.jsonl --no-store       (on another computer, with the clinic's public key)
  estim record anchor session.jsonl                   (written while the visit store was out of reach)
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
                            description="Check every line against the public key the record names, and the record "
                                        "against the signed head the visit store kept of it (so a cut-off end, a "
                                        "copied or replaced file, or a deleted one is caught). Exit 0: intact and "
                                        "closed; 5: intact but not closed; 6: altered, not a record, copied or "
                                        "deleted; 7: cannot check (key not on this computer, file unreadable, no "
                                        "entry in the visit store).")
    verify.add_argument("path", type=Path, metavar="PATH", nargs="?")
    verify.add_argument("--id", metavar="RECORD_ID", help="the record the visit store knows by this id (printed "
                                                          "when the session started), wherever it was written")
    verify.add_argument("--key", metavar="ID", help="insist the record was signed with this key")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    show = sub.add_parser("show", help="summarise a session: plan, operator, thresholds, commands, faults, output",
                          description="Summarise a session from the signed part of its record, with the same check "
                                      "as `verify`. The output table is what the device reported, per channel.")
    show.add_argument("path", type=Path, metavar="PATH")
    show.add_argument("--plot", type=Path, metavar="PNG", help="also draw intensity over time as delivered")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    report = sub.add_parser("report", help="write the session report a person reads (PDF, two pages)",
                            description="Write a two-page PDF: who, when, screening, sites and needles, "
                                        "thresholds, dose by channel, the intensity delivered with every stop, "
                                        "fault and patient remark marked, and the output summary at the needle; "
                                        "the record's check (as `verify`) heads it.")
    report.add_argument("path", type=Path, metavar="PATH")
    report.add_argument("--out", type=Path, required=True, metavar="PDF")
    export = sub.add_parser("export", help="export the session for a clinic system (FHIR R4 transaction bundle)",
                            description="Write a FHIR R4 transaction Bundle (Patient, Device, Procedure, "
                                        "Observations, AdverseEvents); a record that does not verify is marked, "
                                        "and an altered one is refused.")
    export.add_argument("path", type=Path, metavar="PATH")
    export.add_argument("--fhir", type=Path, required=True, metavar="JSON")
    export.add_argument("--patient-system", metavar="URI", default=os.environ.get(PATIENT_SYSTEM_ENV),
                        help=f"the clinic's identifier system for patient codes (default ${PATIENT_SYSTEM_ENV})")
    anchor = sub.add_parser("anchor", help="anchor records written while the visit store was out of reach",
                            description="Put each record's last signed head in the visit store and link it to the "
                                        "visit it names; on the computer that wrote it, lines a killed session left "
                                        "unsigned are checked and signed first.")
    anchor.add_argument("paths", type=Path, metavar="PATH", nargs="+")
    for p in (verify, show, report, export, anchor):
        add_store_option(p)
    for p in (verify, show, report, export):
        p.add_argument("--no-store", action="store_true",
                       help="check the signatures only, without the visit store (on another computer, say): a "
                            "cut-off end or a copied file is then not caught")
    return parser


PATIENT_SYSTEM_ENV = "ESTIM_PATIENT_SYSTEM"


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "verify" and (args.path is None) == (args.id is None):
        parser.error("give the record's PATH, or --id RECORD_ID")
    if args.action == "anchor":
        return _anchor(args.paths, args.store)
    if args.path is not None and not args.path.is_file():
        print(f"error: {args.path}: no such record file" + (
            "; if it was deleted, `estim record verify --id RECORD_ID` asks the visit store what it saw"
            if args.action == "verify" else ""), file=sys.stderr)
        return EXIT_RECORD_UNCHECKABLE if args.action == "verify" else EXIT_REFUSED
    if args.action == "verify":
        return _verify(args)
    checked = _checked(args.path, None if args.no_store else args.store, args.no_store)
    if checked is None:
        return EXIT_RECORD_UNCHECKABLE
    verdict, entries, visit = checked
    from ..reports.session import read_session

    session = read_session(args.path, entries)
    if args.action == "report":
        return _report(session, verdict, visit, args.out)
    if args.action == "export":
        return _export(session, verdict, visit, args.fhir, args.patient_system)
    return _show(session, verdict, args.plot, args.json)


def _checked(path: Path, store_url: str | None, no_store: bool) -> tuple[Any, list[dict[str, Any]], Any] | None:
    """The record's verdict (as `verify` gives it, against the visit store unless --no-store),
    the entries of its signed part, and the visit it belongs to; a warning line when it does
    not verify (its signed content is still shown: that is what a reviewer needs to see)."""
    from safety import read_record

    from ..visits import StoreError, VisitStore

    store, unreadable = None, None
    if not no_store:
        try:
            store = VisitStore(store_url, create=False)
        except StoreError as exc:
            unreadable = str(exc)
    try:
        verdict, entries = read_record(path, anchors=store)
        visit = _visit(store, verdict) if store is not None else None
    except OSError as exc:
        print(f"error: {path}: cannot read the record ({exc.strerror or exc})", file=sys.stderr)
        return None
    finally:
        if store is not None:
            store.close()
    if unreadable and verdict.ok:  # as `verify` says: the end cannot be checked without the store
        from dataclasses import replace

        from safety import RecordStatus

        verdict = replace(verdict, status=RecordStatus.UNCHECKABLE, reason=f"cannot be checked: {unreadable}")
    if not verdict.ok or verdict.status.name == "TRUNCATED":
        print(f"warning: {path}: {verdict.status.value}: {verdict.reason}", file=sys.stderr)
    return verdict, entries, visit


def _visit(store: Any, verdict: Any) -> Any:
    """The visit the record names in its first line (and the store links it to), or None."""
    from ..visits import StoreError

    if verdict.visit is None:
        return None
    try:
        visit = store.visit(verdict.visit)
    except StoreError:
        return None
    return visit if visit.patient == verdict.patient else None


def _report(session: Any, verdict: Any, visit: Any, out: Path) -> int:
    from ..reports.pdf import write_report

    try:
        write_report(session, verdict, out, visit)
    except OSError as exc:
        print(f"error: cannot write {out} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_REFUSED
    print(f"report: {out}")
    return EXIT_BY_STATUS[verdict.status.name]


def _export(session: Any, verdict: Any, visit: Any, out: Path, patient_system: str | None) -> int:
    from ..reports.fhir import build_bundle
    from ..reports.output import write_private

    if verdict.status.name == "ALTERED":
        print(f"refused: {session.path} is altered or not a treatment record ({verdict.reason}); nothing was "
              "exported. Keep the file as it is and report it.", file=sys.stderr)
        return EXIT_RECORD_ALTERED
    try:
        bundle = build_bundle(session, verdict, visit, patient_system)
        write_private(out, (bundle.json(indent=2) + "\n").encode())
    except OSError as exc:
        print(f"error: cannot write {out} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:  # nothing to export for a patient, or no identifier system: say what to do
        print(f"refused: {exc}; nothing was exported.", file=sys.stderr)
        return EXIT_REFUSED
    print(f"FHIR bundle: {out} ({len(bundle.entry)} resources)")
    return EXIT_BY_STATUS[verdict.status.name]


EXIT_BY_STATUS = {"CLOSED": EXIT_OK, "OPEN": EXIT_RECORD_NOT_CLOSED, "TRUNCATED": EXIT_RECORD_NOT_CLOSED,
                  "ALTERED": EXIT_RECORD_ALTERED, "UNCHECKABLE": EXIT_RECORD_UNCHECKABLE}

NEXT_STEP = {
    "CLOSED": "",
    "OPEN": " The session did not close its record (the host stopped or was killed).",
    "TRUNCATED": " The session did not close its record; what follows its last signed line is not part of it.",
    "ALTERED": " Do not rely on this file; keep it as it is and tell whoever looks after the clinic's records.",
    "UNCHECKABLE": "",
}


def _verify(args: argparse.Namespace) -> int:
    from safety.record_read import verify_anchored, verify_record

    path = args.path
    store = None
    if not args.no_store:
        from ..visits.heads import open_heads
        from ..visits.values import StoreError

        try:
            store = open_heads(args.store)
        except StoreError as exc:
            return _say(args, path or args.id, "UNCHECKABLE", f"cannot be checked: {exc}.", None)
    elif path is None:
        return _say(args, args.id, "UNCHECKABLE", "cannot be checked: --id asks the visit store, and --no-store "
                                                  "leaves it out.", None)
    try:
        verdict = verify_anchored(args.id, store) if path is None else \
            verify_record(path, expect_key=args.key, anchors=store)
    except OSError as exc:
        print(f"error: {path}: cannot read the record ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_RECORD_UNCHECKABLE
    finally:
        if store is not None:
            store.close()
    status = verdict.status.name
    signer = f"signed with key {verdict.key_id}" + (f" ({verdict.key_label})" if verdict.key_label else "")
    if status in ("CLOSED", "OPEN", "TRUNCATED"):
        text = (f"{verdict.status.value}: {verdict.records} line(s), {signer}; "
                f"record {verdict.record_id}" + (f", patient {verdict.patient}" if verdict.patient else "")
                + (f", visit {verdict.visit}" if verdict.visit is not None else "") + "." + NEXT_STEP[status])
        if status == "TRUNCATED":
            text += (f" {verdict.unsigned_lines} line(s) ({verdict.unsigned_bytes} bytes) after line {verdict.records} "
                     "are not signed: they are not data (`estim record anchor` on the computer that wrote the record "
                     "signs what that computer wrote).")
    elif status == "ALTERED":
        text = f"ALTERED: {verdict.reason}." + (f" The {verdict.records} line(s) before it verify."
                                                 if verdict.records else "") + NEXT_STEP[status]
    else:
        text = f"cannot be checked: {verdict.reason}."
    if verdict.anchor and verdict.ok:
        text += f"\nvisit store: {verdict.anchor}."
    elif args.no_store and verdict.ok:
        text += "\nvisit store: not asked (--no-store): a cut-off end, a copy or a replaced file is not caught."
    return _say(args, path or args.id, status, text, verdict)


def _say(args: argparse.Namespace, what: Any, status: str, text: str, verdict: Any) -> int:
    if args.json:
        body = asdict(verdict) if verdict is not None else {"reason": text}
        print(json.dumps({"path": str(what), **body, "status": status, "exit": EXIT_BY_STATUS[status]}, indent=2,
                         default=str))
    else:
        print(f"{what}: {text}")
    return EXIT_BY_STATUS[status]


def _anchor(paths: list[Path], store_url: str | None) -> int:
    from ..visits import StoreError, VisitStore
    from .anchoring import anchor_record

    try:
        store = VisitStore(store_url)
    except StoreError as exc:
        return refused(exc)
    worst = EXIT_OK
    with store:
        for path in paths:
            try:
                verdict, done = anchor_record(path, store)
            except OSError as exc:
                print(f"{path}: cannot be read ({exc.strerror or exc})", file=sys.stderr)
                worst = max(worst, EXIT_RECORD_UNCHECKABLE)
                continue
            except (StoreError, ValueError) as exc:
                print(f"{path}: not anchored: {exc}", file=sys.stderr)
                worst = max(worst, EXIT_REFUSED)
                continue
            print(f"{path}: {done}." if done else f"{path}: not anchored: {verdict.reason}.")
            if not done:
                worst = max(worst, EXIT_BY_STATUS[verdict.status.name])
    return worst


def _show(session: Any, verdict: Any, plot: Path | None, as_json: bool) -> int:
    summary = _summary(session)
    summary["integrity"] = {"status": verdict.status.name, "ok": verdict.ok, "records": verdict.records,
                            "first_bad_line": verdict.first_bad_line, "reason": verdict.reason,
                            "key_id": verdict.key_id, "record_id": verdict.record_id, "anchor": verdict.anchor,
                            "unsigned_lines": verdict.unsigned_lines}
    if plot is not None:
        from ..reports.plots import save_record_plot

        save_record_plot(session, plot)
        summary["plot"] = str(plot)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format(session.path, summary, session.outputs))
    return EXIT_BY_STATUS[verdict.status.name]


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
        check = f"{integrity['records']} lines verify, signed with key {integrity['key_id']}" + (
            f"; {integrity['unsigned_lines']} unsigned line(s) after them are not shown"
            if integrity["status"] == "TRUNCATED" else "") + (
            f"; {integrity['anchor']}" if integrity["anchor"] else "")
    rx = s["prescription"] or {}
    lines = [
        f"record:     {path} (id {integrity['record_id']})",
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
        lines.append(prescription_text(rx))
    for t in s["thresholds"]:
        lines.append(f"thresholds: channel {t.get('channel')}: sensory {ma(t.get('sensory'))}, "
                     f"motor {ma(t.get('motor'))}, tolerance {ma(t.get('tolerance'))}")
    for f in s["patient_feedback"]:
        lines.append(f"patient:    channel {f.get('channel')}: {f.get('feedback')} ({f.get('outcome', '')})")
    lines.append("commands:   " + commands_text(s["commands"])
                 + (f"; {len(s['naks'])} refused by the device" if s["naks"] else ""))
    lines.append(f"faults:     {len(s['faults'])}")
    lines += [f"  - {f.get('code')} on {_where(f.get('channel'))} at {f.get('device_time_s')} s" for f in s["faults"]]
    lines.append(f"refusals:   {len(s['refusals'])}")
    lines += [f"  - {r.get('message')}" for r in s["refusals"]]  # the rule ids are in --json
    lines += [f"stopped:    {stop_text(reason)}" for reason in s["stops"]]
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


def _where(channel: int | None) -> str:
    return "the device" if channel is None else f"channel {channel}"
