"""`estim check FILE | --preset NAME`: the interlock's verdict on a whole program before anything is sent.

Every rule the interlock applies during a session is run over every segment of every
channel at once, so a problem at minute 40 is seen now, with its time, channel, value and
limit. The verdict depends on the device's own limits (amplitude, phase, frequency, charge,
step and slew): by default those of the simulated device as it ships (ICD section 7); with
`--device URL` the connected device's IDENTITY is read (a handshake only, no output command).
With `--patient CODE` the thresholds and the screening come from today's visit.

Exit codes: 0 the program passes every rule (warnings may remain); 2 refused, or the file
or thresholds are unusable; 4 the device could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import EXIT_NO_DEVICE, EXIT_OK, EXIT_REFUSED, Parser
from .options import add_patient_options, add_preset_options, add_program_options, program_from_args
from .plan import program_plan

EXAMPLES = """examples:
  estim check high_rate_100hz --thresholds thresholds.json
  estim check --preset segmental_inhibition --pair 1 left:forearm,left:hand 10 --thresholds thresholds.json
  estim check --patient P001                 (today's set-up, as the titration kept it)
  estim check --preset segmental_inhibition --pair 1 left:forearm,left:hand 10 --patient P001
  estim check my_program.toml --thresholds thresholds.json --json
  estim check my_program.toml --thresholds thresholds.json --device /dev/ttyUSB0

thresholds: the file `estim titrate --out FILE` writes; each threshold is used only on its own channel,
needle sites and waveform, on the day it was measured. Programs whose intensities are in mA need none.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim check",
        description="Check a dosing program (TOML or JSON) or a preset against every safety rule, for every "
                    "segment and channel, before a session. Device limits: the simulated device's defaults unless "
                    "--device names a device to read them from.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="the program file, or a shipped program's name (same as --program)")
    add_program_options(parser)
    add_preset_options(parser)
    parser.add_argument("--device", metavar="URL",
                        help="read the limits from this device's IDENTITY (sim://, /dev/ttyUSB0, socket://HOST:PORT)")
    add_patient_options(parser)
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pathlib import Path

    if args.file is not None:
        if args.program is not None or args.preset is not None:
            parser.error("give one program: FILE, --program FILE or --preset NAME")
        args.program = Path(args.file)
    from safety import SafetyError, ThresholdError

    from ..errors import EstimError
    from ..waveforms import ProgramError
    from ..waveforms.check import check
    from .visit_context import attach_visit
    from .visit_setup import keep, program_and_pairs

    code = attach_visit(args)
    if code is not None:
        return code
    try:
        program_and_pairs(args, parser)
        program, notes = program_from_args(args)
        keep(args, args.pairs)
    except (ProgramError, ThresholdError, SafetyError) as exc:
        return _bad_input(str(exc))
    except (OSError, ValueError) as exc:
        return _bad_input(f"{args.program or args.preset}: {exc}")
    try:
        device, source = _device_limits(args.device)
    except SafetyError as exc:
        return _bad_input(f"the device reports unusable limits: {exc}")
    except EstimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE
    result = check(program, device, args.envelope)  # placement, screening and the envelope included
    if args.json:
        print(json.dumps({"program": str(args.program or args.preset), "device_limits": source, **result.as_dict(),
                          "connected": args.envelope.describe(), "notes": list(notes)}, indent=2, default=str))
    else:
        print(f"program: {program.name} ({args.program or 'preset'}), {program.duration_s / 60:g} min\n"
              f"limits: {source}\nconnected: {args.envelope.describe()}")
        print("\n".join(program_plan(args, program, notes)))
        print(result.table())
    return EXIT_OK if result.ok else EXIT_REFUSED


def _bad_input(message: str) -> int:
    print(f"refused: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _device_limits(url: str | None) -> tuple[Any, str]:
    """(DeviceLimits, where they came from)."""
    from .. import units

    if url is None:
        from ..sim import SimConfig

        identity = SimConfig().identity()
        return units.device_limits(identity), "the simulated device's defaults (use --device URL for a real one)"
    from ..drivers import open_transport
    from ..link import Link

    link = Link(open_transport(url))
    try:
        identity = link.open(2.0)
    finally:
        link.close()
    return units.device_limits(identity), f"read from {url} ({identity.serial})"
