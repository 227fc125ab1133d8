"""`estim check FILE`: the interlock's verdict on a whole program before anything is sent.

Every rule the interlock applies during a session is run over every segment of every
channel at once, so a problem at minute 40 is seen now, with its time, channel, value and
limit. The verdict depends on the device's own limits (amplitude, phase, frequency, charge,
step and slew): by default those of the simulated device as it ships (ICD section 7); with
`--device URL` the connected device's IDENTITY is read (a handshake only, no output command).

Exit codes: 0 the program passes every rule (warnings may remain); 2 refused, or the file
or thresholds are unusable; 1 the device could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import EXIT_NO_DEVICE, EXIT_OK, EXIT_REFUSED
from .options import ThresholdsError, load_thresholds

EXAMPLES = """examples:
  estim check programs/high_rate_100hz.toml --thresholds thresholds.json
  estim check my_program.toml --thresholds thresholds.json --json
  estim check my_program.toml --thresholds thresholds.json --device /dev/ttyUSB0

thresholds: the JSON `estim titrate --out` writes, {"sensory": mA, "motor": mA, "tolerance": mA},
used for every channel; or per channel, {"1": {"sensory": 1.2}, "2": {"sensory": 1.5}}.
Programs whose intensities are in mA need no thresholds.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estim check",
        description="Check a dosing program (TOML or JSON) against every safety rule, for every segment and "
                    "channel, before a session. Device limits: the simulated device's defaults unless --device "
                    "names a device to read them from.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("program", type=Path, metavar="FILE", help="the program file")
    parser.add_argument("--thresholds", type=Path, metavar="FILE",
                        help="measured thresholds for threshold-relative intensities (see below)")
    parser.add_argument("--device", metavar="URL",
                        help="read the limits from this device's IDENTITY (sim://, /dev/ttyUSB0, socket://HOST:PORT)")
    parser.add_argument("--implanted-device", action="store_true",
                        help="the patient has a pacemaker, ICD or other implanted electronic device")
    parser.add_argument("--pregnant", action="store_true", help="the patient is pregnant")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from safety import Patient, SafetyError

    from ..errors import EstimError
    from ..waveforms import Program, ProgramError
    from ..waveforms.check import check

    try:
        program = Program.load(args.program)
        if program.needed_thresholds:
            program = program.resolve(load_thresholds(args.thresholds, program))
    except (ProgramError, ThresholdsError) as exc:
        return _bad_input(str(exc))
    except (OSError, ValueError) as exc:
        return _bad_input(f"{args.program}: {exc}")
    try:
        device, source = _device_limits(args.device)
    except SafetyError as exc:
        return _bad_input(f"the device reports unusable limits: {exc}")
    except EstimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_DEVICE
    result = check(program, device, Patient(implanted_device=args.implanted_device, pregnant=args.pregnant))
    if args.json:
        print(json.dumps({"program": str(args.program), "device_limits": source, **result.as_dict()}, indent=2,
                         default=str))
    else:
        print(f"program: {program.name} ({args.program}), {program.duration_s:g} s\nlimits: {source}")
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
