"""`estim console`: the full-screen treatment-room console for one supervised session: a fixed
waveform per channel raised by hand, or a preset or program (today's set-up with --patient)
that the same keys lower, raise, pause and end while it runs.

Exit codes: 0 the session ended (outputs ramped down and off); 2 refused or bad input before
anything was sent; 3 a device fault, lost link or the operator's STOP ended it (outputs off)
and was not cleared; 4 the device was not found or is in use; 130 Ctrl-C (e-stop).
"""

from __future__ import annotations

import argparse
import sys

from . import EXIT_DEVICE_FAULT, EXIT_INTERRUPTED, EXIT_OK, Parser, refused, said_stopped, stoppable
from .options import (add_program_options, add_session_options, fixed_waveform_setup, open_program_session,
                      open_session_record, open_session, preflight, program_from_args, session_plan)
from .visit_context import attach_visit, keep_record, kept_dose
from .visit_setup import fill_source, keep as keep_setup, pairs_for

EXAMPLES = """keys:
  Enter    with a preset or program: start it (it is shown first; nothing is sent before)
  ↑ or +   raise the selected channel one step (ramps at the prescribed rate, within every rule)
  ↓ or -   lower it one step (at once)
  p        pause: every channel down to 0 mA at the ramp rate; p again ramps back up
  1-8 ← →  select a channel
  f        patient: "too strong"   — drops the channel by the feedback step at once
  c        patient: "can't feel it" — offers one step more within the prescription (y / n)
  q        end the session: ramp everything down, outputs off
  x        clear a stop in your name (--operator): after a STOP, or a stop latched from before
  space, Esc, or the STOP button: e-stop everything at once
  Ctrl-C   e-stop everything and leave
  the bell rings and the timer flashes at the end of the session and at every stop

examples:
  estim console --patient P001                 (today's set-up: its preset on its needle pairs)
  estim console --preset segmental_inhibition --pair 1 left:forearm,left:hand:LI4 10 --thresholds th.json
  estim console --frequency 2 --pulse-width 200 --pair 1 left:forearm,left:forearm 10
  estim console --device /dev/ttyUSB0 --test-load --pair 1 left:lower_leg,left:foot 20 \\
                --pair 2 right:lower_leg,right:foot 20 --frequency 100 --pulse-width 200 --max-amplitude 6 \\
                --minutes 20 --sensitivity hyper
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim console",
        description="Full-screen console for the treatment room: live channel panels, intensity keys, "
                    "patient feedback, session timer and an always-visible STOP; a fixed waveform raised by hand, "
                    "or a preset or program adjusted while it runs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_program_options(parser)
    parser.add_argument("--frequency", type=float, metavar="HZ", help="without --preset/--program: pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, metavar="US",
                        help="without --preset/--program: phase width in µs")
    parser.add_argument("--shape", choices=["biphasic", "alternating", "monophasic"],
                        help="without --preset/--program: the pulse shape (default biphasic)")
    parser.add_argument("--max-amplitude", type=float, metavar="MA",
                        help="the prescription's cap per channel in mA (default 10; scaled by the sensitivity "
                             "profile: hyper x0.6, typical x0.85, hypo x1.0); with a preset or program, a cap on it")
    parser.add_argument("--ramp", type=float, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 1.0; hyper halves it); with a preset or program, a cap")
    parser.add_argument("--minutes", type=float,
                        help="session time (default 20, or the preset's); intensities ramp down to 0 by its end")
    parser.add_argument("--step", type=float, default=0.2, metavar="MA", help="one raise or lower (default 0.2 mA)")
    parser.add_argument("--feedback-step", type=float, default=0.5, metavar="MA",
                        help='how much "too strong" drops at once (default 0.5 mA)')
    add_session_options(parser)
    return parser


def main(argv: list[str]) -> int:
    from safety import SafetyError

    parser = build_parser()
    args = parser.parse_args(argv)
    code = attach_visit(args)
    if code is not None:
        return code
    fill_source(args)
    fixed = args.program is None and args.preset is None
    if fixed and (args.frequency is None or args.pulse_width is None):
        parser.error("give --frequency and --pulse-width, or --preset NAME or --program FILE")
    unused = [flag for flag, value in (("--frequency", args.frequency), ("--pulse-width", args.pulse_width),
                                       ("--shape", args.shape)) if value is not None and not fixed]
    if args.program is not None and args.minutes is not None:
        unused.append("--minutes")
    if unused:
        parser.error(f"{', '.join(unused)} cannot be used with {'--program' if args.program else 'a preset'}: it "
                     "sets them")
    try:
        args.pairs = {} if args.program is not None else pairs_for(args)
    except SafetyError as exc:
        return refused(exc)
    if args.program is None and not args.pairs:
        parser.error("give the needles: --pair CH SITES MM for each channel (or --channel/--sites/--inserted)")
    return stoppable(lambda: _console(args), device=args.device)


def _console(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, Refusal, SafetyError, Shape, ThresholdError

    from ..console import ConsoleApp, ConsoleSettings
    from ..waveforms import ProgramError
    from .plan import program_plan

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    program, plan = None, ""
    try:
        for name in ("step", "feedback_step"):
            if not getattr(args, name) > 0:
                raise Refusal("setup.step", f"--{name.replace('_', '-')} must be a positive number of mA",
                              value=getattr(args, name), limit="> 0")
        if args.program is not None or args.preset is not None:
            program, notes = program_from_args(args)
            plan = "\n".join(program_plan(args, program, notes))
            placements = {ch: n.placement() for ch, n in program.needles.items()}
            code = preflight(args.envelope, placements, program.prescription.sensitivity)
            waveforms = []
        else:
            args.max_amplitude = 10.0 if args.max_amplitude is None else args.max_amplitude
            args.ramp = 1.0 if args.ramp is None else args.ramp
            waveforms = [ChannelSetting(ch, shapes[args.shape or "biphasic"], args.frequency, args.pulse_width, 0.0)
                         for ch in args.pairs]
            setup = fixed_waveform_setup(args, args.pairs, args.minutes or 20.0, args.envelope)
            code = preflight(setup.envelope, setup.placements)
    except (SafetyError, ProgramError, ThresholdError, ValueError) as exc:
        return refused(exc)
    if code is not None:
        return code
    keep_setup(args, args.pairs)
    record = open_session_record(args)
    if isinstance(record, int):
        return record

    try:
        record.append("session_plan", session_plan(args, console=True))
    except SafetyError as exc:  # the record cannot be written: nothing is sent
        record.close()
        return refused(exc)
    keep_record(args, record)
    try:
        name, mechanism = (program.name, str(program.mechanism)) if program is not None else ("console", args.mechanism)
        with kept_dose(args, name, mechanism, record) as dose:
            stim = open_program_session(args, program, record) if program is not None else \
                open_session(args, setup, record)
            if isinstance(stim, int):
                return stim
            dose.stim = stim
            with stim:
                for waveform in waveforms:  # a waveform the patient's envelope refuses: said before the console opens
                    refusals, _ = stim.interlock.verdict(waveform)
                    if refusals:
                        return refused(refusals[0])
                app = ConsoleApp(stim, waveforms, ConsoleSettings(args.step, args.feedback_step, args.step),
                                 operator=args.operator, program=program, plan=plan)
                app.run()
                tripped = stim.tripped
                report = app.program.report if app.program is not None else None
                dose.completed = not app.interrupted and not tripped and (report is None or report.completed)
    finally:
        record.close()
    print(f"record: {record.path} (id {record.record_id})")
    if app.interrupted:
        said_stopped("Ctrl-C", args.device)
        return EXIT_INTERRUPTED
    if tripped:
        print(f"stopped: {tripped}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    print("session ended: every output off.")
    return EXIT_OK
