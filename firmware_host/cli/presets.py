"""`estim presets`: the presets, one per target mechanism; `estim presets show NAME` prints
one in full: mechanism, waveform, intensity rule, evidence and its sources, what to tell
the patient."""

from __future__ import annotations

import argparse

from . import EXIT_OK, Parser
from .options import PRESET_NAMES

EXAMPLES = """examples:
  estim presets
  estim presets show segmental_inhibition
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="estim presets", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action")
    show = sub.add_parser("show", help="one preset in full")
    show.add_argument("name", choices=PRESET_NAMES, metavar="NAME", help=", ".join(PRESET_NAMES))
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ..waveforms import PRESETS, Mechanism

    if args.action == "show":
        print(PRESETS[Mechanism(args.name)].describe())
        return EXIT_OK
    width = max(len(name) for name in PRESET_NAMES)
    for preset in PRESETS.values():
        print(f"{preset.name.ljust(width)}  {preset.title}; {preset.threshold.value}-relative; "
              f"{preset.confidence.value} confidence")
    print("\n`estim presets show NAME` prints one in full, with its sources.")
    return EXIT_OK
