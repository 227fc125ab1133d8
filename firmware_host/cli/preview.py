"""`estim preview`: a picture of a program before it runs — intensity and frequency per
channel over time, and a zoom on each distinct pulse with its phase charge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_REFUSED
from .options import (SENSITIVITY, ThresholdsError, add_program_options, check_writable, load_thresholds,
                      program_from_args)

EXAMPLES = """examples:
  estim preview programs/dense_disperse_2_100hz.toml --thresholds thresholds.json --out dd.png
  estim preview --preset descending_inhibition --sites left:hand,left:hand --thresholds thresholds.json \\
                --sensitivity hyper --out dnic.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="estim preview", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path, help="a dosing program (same as --program)")
    add_program_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="PNG", help="where to write the picture")
    parser.add_argument("--channel", type=int, default=1, help="with --preset: the channel (default 1)")
    parser.add_argument("--sites", metavar="SIDE:REGION,SIDE:REGION", help="with --preset: the channel's needles")
    parser.add_argument("--needle", default="0.25x15", metavar="DIAMETER_MMxLENGTH_MM")
    parser.add_argument("--sensitivity", choices=sorted(SENSITIVITY), default="typical")
    parser.add_argument("--minutes", type=float, help="with --preset: its length")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.file is not None:
        if args.program is not None or args.preset is not None:
            parser.error("give one program: FILE, --program FILE or --preset NAME")
        args.program = args.file
    if args.program is None and args.preset is None:
        parser.error("give --program FILE or --preset NAME")
    if args.preset is not None and args.sites is None:
        parser.error("--preset needs --sites SIDE:REGION,SIDE:REGION")
    from safety import SafetyError

    from ..waveforms import ProgramError
    from ..waveforms.preview import preview

    try:
        check_writable(args.out, "picture")
        program = program_from_args(args)
        marks = load_thresholds(args.thresholds, program) if args.thresholds is not None else None
    except (ProgramError, ThresholdsError, SafetyError, OSError, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    path = preview(program, args.out, thresholds=marks)
    print(f"{program.name}: {program.duration_s / 60:.1f} min -> {path}")
    return EXIT_OK
