"""`estim preview`: a picture of a program before it runs — intensity and frequency per
channel over time, and a zoom on each distinct pulse with its phase charge."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_REFUSED, Parser
from .options import add_preset_options, add_program_options, check_writable, envelope, program_from_args

EXAMPLES = """examples:
  estim preview programs/dense_disperse_2_100hz.toml --thresholds thresholds.json --out dd.png
  estim preview --preset descending_modulation --sites left:hand,left:forearm --inserted 10 \\
                --thresholds thresholds.json --sensitivity hyper --out dm.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="estim preview", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path, help="a dosing program (same as --program)")
    add_program_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="PNG", help="where to write the picture")
    add_preset_options(parser)
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
        args.envelope = envelope(args)
        program, _notes = program_from_args(args)
        marks = threshold_lines(args.thresholds) if args.thresholds is not None else None
    except (ProgramError, SafetyError, OSError, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    path = preview(program, args.out, thresholds=marks)
    print(f"{program.name}: {program.duration_s / 60:.1f} min -> {path}")
    return EXIT_OK


def threshold_lines(path: Path) -> dict[int, dict[str, float | None]]:
    """The latest thresholds per channel in a titration file, drawn as lines on the picture."""
    from safety.thresholds import load

    latest: dict[int, dict[str, float | None]] = {}
    for t in sorted(load(path), key=lambda t: t.measured_at):
        latest[t.channel] = {"sensory": t.sensory_ma, "motor": t.motor_ma, "tolerance": t.tolerance_ma}
    return latest
