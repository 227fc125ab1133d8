"""`estim console`: the full-screen treatment-room console for one supervised session.

Exit codes: 0 the session ended (outputs ramped down and off); 2 refused or bad input before
anything was sent; 3 a device fault, lost link or the operator's STOP ended it (outputs off)
and was not cleared; 4 the device was not found or is in use; 130 Ctrl-C (e-stop).
"""

from __future__ import annotations

import argparse
import sys

from . import EXIT_DEVICE_FAULT, EXIT_INTERRUPTED, EXIT_OK, Parser, refused, stoppable
from .options import add_session_options, fixed_waveform_setup, open_record, open_session, preflight, session_plan
from .visit_context import attach_visit, keep_record, kept_dose, record_subject

EXAMPLES = """keys:
  ↑ or +   raise the selected channel one step (ramps at the prescribed rate)
  ↓ or -   lower it one step (at once)
  1-8 ← →  select a channel
  f        patient: "too strong"   — drops the channel by the feedback step at once
  c        patient: "can't feel it" — offers one step more within the prescription (y / n)
  q        end the session: ramp everything down, outputs off
  x        clear a stop in your name (--operator): after a STOP, or a stop latched from before
  space, Esc, or the STOP button: e-stop everything at once
  Ctrl-C   e-stop everything and leave

examples:
  estim console --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm
  estim console --device /dev/ttyUSB0 --channel 1 --sites left:forearm,left:forearm \\
                --channel 2 --sites right:forearm,right:forearm \\
                --frequency 100 --pulse-width 200 --max-amplitude 6 --minutes 20 --sensitivity hyper
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim console",
        description="Full-screen console for the treatment room: live channel panels, intensity keys, "
                    "patient feedback, session timer and an always-visible STOP.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        conflict_handler="resolve",
    )
    parser.add_argument("--channel", type=int, action="append", required=True,
                        help="a channel to use (1-based); repeat for more, each with its own --sites")
    parser.add_argument("--frequency", type=float, required=True, metavar="HZ", help="pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, required=True, metavar="US", help="phase width in µs")
    parser.add_argument("--shape", choices=["biphasic", "alternating", "monophasic"], default="biphasic")
    parser.add_argument("--max-amplitude", type=float, default=10.0, metavar="MA",
                        help="the prescription's cap per channel in mA (default 10; scaled by the sensitivity "
                             "profile: hyper x0.6, typical x0.85, hypo x1.0)")
    parser.add_argument("--ramp", type=float, default=1.0, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 1.0; hyper halves it)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="session time (default 20); intensities ramp down to 0 by its end")
    parser.add_argument("--step", type=float, default=0.2, metavar="MA", help="one raise or lower (default 0.2 mA)")
    parser.add_argument("--feedback-step", type=float, default=0.5, metavar="MA",
                        help='how much "too strong" drops at once (default 0.5 mA)')
    add_session_options(parser)
    parser.add_argument("--sites", action="append", required=True, metavar="SIDE:REGION,SIDE:REGION",
                        help="the two needle sites of each --channel, in the same order")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    code = attach_visit(args)
    if code is not None:
        return code
    return stoppable(lambda: _console(args))


def _console(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, Refusal, SafetyError, Shape

    from ..console import ConsoleApp, ConsoleSettings

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    try:
        if len(args.sites) != len(args.channel) or len(set(args.channel)) != len(args.channel):
            raise Refusal("setup.sites", f"give each channel once with its own --sites: {len(args.channel)} "
                          f"--channel and {len(args.sites)} --sites", value=len(args.sites),
                          limit=len(args.channel))
        for name in ("step", "feedback_step"):
            if not getattr(args, name) > 0:
                raise Refusal("setup.step", f"--{name.replace('_', '-')} must be a positive number of mA",
                              value=getattr(args, name), limit="> 0")
        waveforms = [ChannelSetting(ch, shapes[args.shape], args.frequency, args.pulse_width, 0.0)
                     for ch in args.channel]
        setup = fixed_waveform_setup(args, dict(zip(args.channel, args.sites)), args.minutes, args.envelope)
    except (SafetyError, ValueError) as exc:
        return refused(exc)
    code = preflight(setup.envelope, setup.placements)
    if code is not None:
        return code
    try:
        record = open_record(args.record, store=args.store, **record_subject(args))
    except (SafetyError, ValueError) as exc:
        return refused(exc)

    try:
        record.append("session_plan", session_plan(args, console=True))
    except SafetyError as exc:  # the record cannot be written: nothing is sent
        record.close()
        return refused(exc)
    keep_record(args, record)
    try:
        with kept_dose(args, "console", args.mechanism, record) as dose:
            stim = open_session(args, setup, record)
            if isinstance(stim, int):
                return stim
            dose.stim = stim
            with stim:
                for waveform in waveforms:  # a waveform the patient's envelope refuses: said before the console opens
                    refusals, _ = stim.interlock.verdict(waveform)
                    if refusals:
                        return refused(refusals[0])
                app = ConsoleApp(stim, waveforms, ConsoleSettings(args.step, args.feedback_step, args.step),
                                 operator=args.operator)
                app.run()
                tripped = stim.tripped
                dose.completed = not app.interrupted and not tripped
    finally:
        record.close()
    print(f"record: {record.path} (id {record.record_id})")
    if app.interrupted:
        print("stopped: Ctrl-C — output off (e-stop)", file=sys.stderr)
        return EXIT_INTERRUPTED
    if tripped:
        print(f"stopped: {tripped}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    print("session ended: every output off.")
    return EXIT_OK
