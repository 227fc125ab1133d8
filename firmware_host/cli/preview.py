"""`estim preview`: a picture of a program before it runs — intensity and frequency per
channel over time, and a zoom on each distinct pulse with its phase charge. With `--patient`,
the patient's actual dose: today's set-up and thresholds, held at their ceilings, with the
thresholds drawn as lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_REFUSED, Parser
from .options import add_patient_options, add_preset_options, add_program_options, check_writable, program_from_args

EXAMPLES = """examples:
  estim preview --patient P001 --out today.png      (today's set-up and thresholds: the actual dose)
  estim preview dense_disperse_2_100hz --thresholds thresholds.json --out dd.png
  estim preview --preset descending_modulation --pair 1 left:hand,left:forearm 10 \\
                --thresholds thresholds.json --sensitivity hyper --out dm.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="estim preview", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=Path, help="a dosing program (same as --program)")
    add_program_options(parser)
    parser.add_argument("--out", type=Path, required=True, metavar="PNG", help="where to write the picture")
    add_preset_options(parser)
    add_patient_options(parser)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.file is not None:
        if args.program is not None or args.preset is not None:
            parser.error("give one program: FILE, --program FILE or --preset NAME")
        args.program = args.file
    from safety import SafetyError

    from ..waveforms import ProgramError
    from ..waveforms.preview import preview
    from .visit_context import attach_visit
    from .visit_setup import program_and_pairs

    code = attach_visit(args)
    if code is not None:
        return code
    try:
        check_writable(args.out, "picture")
        program_and_pairs(args, parser)
        program, notes = program_from_args(args)
    except (ProgramError, SafetyError, OSError, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    path = preview(program, args.out, thresholds=threshold_lines(args.envelope.thresholds) or None)
    for note in notes:
        print(f"dose: {note}")
    print(f"{program.name}: {program.duration_s / 60:.1f} min -> {path}")
    return EXIT_OK


def threshold_lines(thresholds) -> dict[int, dict[str, float | None]]:  # noqa: ANN001 - ChannelThresholds
    """The latest thresholds per channel, drawn as lines on the picture."""
    latest: dict[int, dict[str, float | None]] = {}
    for t in sorted(thresholds, key=lambda t: t.measured_at):
        latest[t.channel] = {"sensory": t.sensory_ma, "motor": t.motor_ma, "tolerance": t.tolerance_ma}
    return latest
