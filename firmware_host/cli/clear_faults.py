"""`estim clear-faults`: show what the device has latched and why, and clear it with your name.

Clearing a stop is a clinician's act: it needs the name or initials of the person doing it,
is refused while any output is on, and goes into a treatment record of its own.

Exit codes: 0 cleared (or nothing was latched); 2 refused (no name, an output on, a record
that cannot be written); 3 the device refused to clear; 4 the device was not found or is in use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import EXIT_DEVICE_FAULT, EXIT_OK, Parser, refused, unreachable

EXAMPLES = """examples:
  estim clear-faults --device /dev/ttyUSB0 --operator "J. Doe"
  estim clear-faults --device /dev/ttyUSB0 --operator "J. Doe" --fault overcurrent
  estim clear-faults --device socket://127.0.0.1:5000 --operator JD --json

A stop (ESTOP) or a lost controller (WATCHDOG) is cleared by name. Any other fault (OVERCURRENT,
HARDWARE, one this host does not know) is cleared only here, after checking the patient, the
needles, the leads and the device, and only when each is named with --fault.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim clear-faults",
        description="Show the faults the device has latched (a stop, a lost controller, an overcurrent...), "
                    "what each means, and clear them with the name of the person clearing them. Every output "
                    "must be off.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", required=True, metavar="URL",
                        help="the device: /dev/ttyUSB0, socket://HOST:PORT, usb://VID:PID, sim://")
    parser.add_argument("--operator", required=True, metavar="NAME",
                        help="your name or initials (written into the record)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME",
                        help="a fault beyond a stop or a lost controller that you checked and clear (e.g. "
                             "overcurrent, hardware); repeat for each")
    parser.add_argument("--record", type=Path, metavar="PATH",
                        help="treatment record for this act; default: a timestamped file in the user's data dir")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from safety import Refusal, SafetyError, operator_name

    from .options import open_record

    try:
        name = operator_name(args.operator)  # before the device is opened
    except Refusal as exc:
        return refused(Refusal(exc.rule, f"{exc}: give yours with --operator NAME", value=exc.value, limit=exc.limit))
    try:
        record = open_record(args.record, "clear-faults", getattr(args, "store", None))
    except SafetyError as exc:
        return refused(exc)
    with record:
        return _clear(args, name, record)


def _clear(args: argparse.Namespace, name: str, record: object) -> int:
    import firmware_host as fh
    from safety import Prescription, Refusal, SafetyError, SessionSetup

    from .. import fault_text, icd, units
    from ..stimulator import Stimulator

    try:
        link = fh.connect(args.device)
    except fh.EstimError as exc:
        return unreachable(exc)
    identity = link.identity
    latched = sorted(f.name for f in icd.faults_from_mask(identity.latched_faults))
    result = {"device": args.device, "serial": identity.serial, "latched": latched, "operator": name}
    if not latched:
        link.close()
        _say(args, f"{identity.serial}: nothing is latched; the device is ready for a session.",
             {**result, "outcome": "nothing to clear"})
        return EXIT_OK
    print(f"{identity.serial} has latched:", file=sys.stderr)
    for code in latched:
        print(f"  - {fault_text.explain(code)}", file=sys.stderr)
    limits = units.device_limits(identity)
    setup = SessionSetup(limits, Prescription(max_amplitude_ma=limits.max_amplitude_ma,
                                              frequency_hz=(limits.min_frequency_hz, limits.max_frequency_hz),
                                              pulse_width_us=(1, limits.max_phase_us)), placements={})
    try:
        with Stimulator(link, setup, record=record) as stim:  # type: ignore[arg-type]
            status = stim.status()
            if status.enabled:
                return refused(Refusal("clear.outputs_on", f"outputs {sorted(status.enabled)} are on: faults are "
                                       "cleared only with every output off", value=sorted(status.enabled),
                                       limit="every output off"))
            stim.clear_faults(name, frozenset(f.strip().upper() for f in args.fault))
            after = sorted(stim.status().latched_faults)
    except fh.DeviceRefused as exc:
        print(f"error: the device did not clear its faults: {exc}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    except SafetyError as exc:
        return refused(exc)
    except fh.EstimError as exc:
        return unreachable(exc)
    if after:
        print(f"error: still latched after clearing: {', '.join(after)}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    if identity.protocol_version < 2:
        print(f"note: {fault_text.v1_note(identity.serial, 'this command')}", file=sys.stderr)
    warning = " Have the device checked before it is used on a patient." if "HARDWARE" in latched else ""
    _say(args, f"cleared by {name}: {', '.join(latched)}. The device is ready for the next session.{warning}",
         {**result, "outcome": "cleared"})
    return EXIT_OK


def _say(args: argparse.Namespace, text: str, data: dict) -> None:
    print(json.dumps(data) if args.json else text)

