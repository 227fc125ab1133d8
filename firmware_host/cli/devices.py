"""`estim devices`: what could be a stimulator on this computer, and the URL to pass as --device.

Lists serial ports and USB devices (VID:PID, serial number, description; known stimulator IDs
are marked), and always `sim://`, the built-in simulated device. Looking is read-only: no
port is opened.
"""

from __future__ import annotations

import argparse
import json

from . import EXIT_OK, Parser

EXAMPLES = """examples:
  estim devices
  estim devices --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim devices",
        description="List serial ports and USB devices that look like stimulators, and sim://.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..drivers.discovery import format_devices, list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
    else:
        print(format_devices(devices))
    return EXIT_OK
