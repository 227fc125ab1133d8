"""`estim run`: one supervised session — direct parameters (ramp up, hold, ramp down), a dosing
program file, or a preset for a target mechanism — on one or several needle pairs.

Before current starts it says what will happen (today's thresholds and the arithmetic of the
dose, the real peak, the swing, the ramp-in in seconds, the session's length) and on a terminal
waits for Enter (`--yes` does not). While it runs, the room's keys work as in the console:
space or Esc STOP, ↓/- lower, ↑/+ raise within every rule, p pause / resume, q end (ramps
down); the bell rings at the end and at every stop.

A flag is never silently unused: each combination either does what it says (`--max-amplitude`
and `--ramp` cap a program or preset, `--minutes`/`--seconds` set a preset's length) or is
refused, naming the conflict. Sessions longer than the standard's 60 minutes are refused
before anything is sent.

Exit codes (README, "Exit codes"): 0 completed, or ended early with q (ramped down, every output
off); 2 refused or bad input, or not started (q at the question), nothing sent; 3 a device
fault, a lost link, the STOP key or a stop latched from before; 4 the device was not found or
is in use; 130 Ctrl-C (e-stop); 143 SIGTERM (e-stop).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from safety import STANDARD

from . import EXIT_OK, EXIT_REFUSED, Parser, refused, stoppable
from . import terminal
from .options import (add_program_options, add_session_options, fixed_waveform_setup, latched_at_start, open_session_record,
                      open_program_session, open_session, preflight, program_from_args, session_plan)
from .live import stream
from .visit_context import apply_last_dose, attach_visit, keep_record, kept_dose
from .visit_setup import fill_source, keep as keep_setup, pairs_for

MAX_SESSION_MIN = STANDARD.max_session_minutes  # the standard's limit on one session
DEFAULTS = {"max_amplitude": 10.0, "ramp": 1.0, "shape": "biphasic"}

EXAMPLES = """examples:
  estim run --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 --seconds 20 \\
            --sites left:forearm,left:forearm --inserted 10
  estim run --patient P001 --preset segmental_inhibition --pair 1 left:forearm,left:hand:LI4 10
  estim run --patient P001                  (today's set-up, as the titration kept it)
  estim run --patient P001 --last-dose
  estim run --program dense_disperse_2_100hz --thresholds thresholds.json
  estim run --preset segmental_inhibition --pair 1 left:low_back,left:low_back 20 \\
            --pair 2 right:low_back,right:low_back 20 --thresholds thresholds.json --sensitivity hyper
  estim run --device /dev/ttyUSB0 --test-load --channel 2 --frequency 100 --pulse-width 200 --amplitude 3 \\
            --minutes 20 --sites right:lower_leg,right:lower_leg --inserted 20

keys while it runs (on a terminal):
  space or Esc  STOP: every output off at once (a stop is latched on the device)
  ↓ or -        lower the intensity one step (at once)     ↑ or +  raise it one step, within every rule
  p             pause: ramp down to 0 mA; p again ramps back up (the session's time keeps running)
  q             end now: ramp down, every output off
  1-8, a        with several channels: ↑/↓ change that channel, or all of them

who is connected (a device other than the built-in sim:// needs one):
  --patient CODE                          a patient screened in today's visit (thresholds from the store)
  --research-protocol ID --subject CODE   a participant screened under a research protocol
  --test-load [TEXT]                      a bench load: nobody is connected

which flags go with what:
  direct      --frequency --pulse-width --amplitude and --seconds or --minutes, on the needle pairs
              (optional: --shape --max-amplitude --ramp --needle --sensitivity --patient)
  --preset    on the needle pairs (optional: --minutes/--seconds for its length, --max-amplitude and
              --ramp as caps, --needle --sensitivity, --thresholds or --patient)
  --program   a file, or a shipped program by name (optional: --max-amplitude and --ramp as caps,
              --thresholds or --patient); the file sets the channels, needles, waveform, length, sensitivity
  needle pairs  --pair CH SITES MM for each channel, or --channel/--sites/--inserted groups; with
              --patient, today's set-up when none are given
  --patient CODE --last-dose   the patient's last dose (sites, needles, depth) at today's thresholds
"""

# flags each source of the dose decides itself, so giving them is a conflict
_NOT_WITH = {
    "program": ("pair", "channel", "sites", "needle", "inserted", "frequency", "pulse_width", "amplitude", "shape",
                "seconds", "minutes", "sensitivity"),
    "preset": ("frequency", "pulse_width", "amplitude", "shape"),
    "direct": ("thresholds",),
}
_WHY = {"program": "the program file sets it", "preset": "the preset sets it",
        "direct": "direct parameters are in mA, not relative to thresholds"}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim run",
        description="Run a stimulation session: ramp up at the prescribed rate, hold for the set time, "
        "ramp down and switch every output off. Ctrl-C stops output at once.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_program_options(parser)
    parser.add_argument("--frequency", type=float, metavar="HZ", help="pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, metavar="US", help="phase width in µs")
    parser.add_argument("--amplitude", type=float, metavar="MA", help="intensity in mA (on every channel)")
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--seconds", type=float, help="time at the set intensity (ramps come on top); "
                                                        "with --preset, its length")
    duration.add_argument("--minutes", type=float,
                          help="time at the set intensity (ramps come on top); with --preset, its length")
    parser.add_argument("--shape", choices=["biphasic", "alternating", "monophasic"],
                        help="pulse shape (default biphasic)")
    parser.add_argument("--max-amplitude", type=float, metavar="MA",
                        help="the prescription's cap in mA (default 10 for direct runs; with --program or "
                             "--preset it caps them: a dose above it is refused)")
    parser.add_argument("--ramp", type=float, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 1.0; at most 2; with --program or --preset a cap)")
    parser.add_argument("--step", type=float, default=0.2, metavar="MA",
                        help="how much one ↑ or ↓ changes a channel's peak (default 0.2 mA)")
    parser.add_argument("--yes", action="store_true",
                        help="start without waiting for Enter after the plan (for scripts on a terminal)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the engineering figures at the end (settings sent, send lateness, the "
                             "output at the needle); they always go to the log")
    parser.add_argument("--json", action="store_true", help="refusals and the outcome as JSON on stdout too")
    add_session_options(parser)
    parser.add_argument("--last-dose", action="store_true",
                        help="with --patient: the dose of the patient's last visit (program or preset, sites, "
                             "needles and depth, each said), at today's thresholds")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = _given(parser, argv)
    if args.last_dose:
        code = apply_last_dose(args)
        if code is not None:
            return code
    code = _conflicts(args, given)  # before anything is read: a flag that would go unused is said first
    if code is not None:
        return code
    code = attach_visit(args)
    if code is not None:
        return code
    if not args.last_dose:
        fill_source(args)
    code = _conflicts(args, given)  # again, for the preset or program of today's set-up
    if code is not None:
        return code
    mode = "program" if args.program else "preset" if args.preset else "direct"
    if mode != "program":
        from safety import SafetyError

        try:
            args.pairs = pairs_for(args)
        except SafetyError as exc:
            return refused(exc)
    needed = {"program": [], "preset": ["pairs"], "direct": ["pairs", "frequency", "pulse_width", "amplitude"]}[mode]
    missing = [("--pair CH SITES MM (or --channel/--sites/--inserted)" if flag == "pairs" else
                "--" + flag.replace("_", "-")) for flag in needed if not getattr(args, flag)]
    if mode == "direct" and args.seconds is None and args.minutes is None:
        missing.append("--seconds or --minutes")
    if missing:
        parser.error("missing for this kind of run: " + ", ".join(missing) + " (see the examples: estim run --help)")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None and (mode == "direct" or name == "shape"):
            setattr(args, name, value)
    if not args.step > 0:
        parser.error("--step is a positive number of mA")
    return stoppable(lambda: _run_program(args) if mode != "direct" else _run(args), device=args.device)


def _conflicts(args: argparse.Namespace, given: set[str]) -> int | None:
    """A flag the source of the dose decides itself (the program file, the preset, direct mA):
    refused, naming it."""
    mode = "program" if args.program else "preset" if args.preset else "direct"
    conflicts = [flag for flag in _NOT_WITH[mode] if flag in given]
    if not conflicts:
        return None
    from safety import Refusal

    flags = ", ".join("--" + flag.replace("_", "-") for flag in conflicts)
    source = {"program": "--program", "preset": "--preset", "direct": "direct parameters"}[mode]
    return refused(Refusal("usage.conflict", f"{flags} cannot be used with {source}: {_WHY[mode]}", value=flags,
                           limit=source))


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options the user typed (abbreviations are disallowed)."""
    options = parser._option_string_actions  # noqa: SLF001 - argparse keeps no public map
    return {options[a.split("=", 1)[0]].dest for a in argv if a.split("=", 1)[0] in options}


@contextlib.contextmanager
def _room() -> Iterator[terminal.ReadKey | None]:
    """The room's keys on a terminal (None from a script's pipe: no keys, no question)."""
    if not terminal.on_terminal():
        yield None
        return
    with terminal.keys() as read_key:
        yield read_key


def _go(read_key: terminal.ReadKey | None, args: argparse.Namespace, lines: list[str] = ()) -> bool:
    """The plan (if not said yet), then Enter on a terminal (unless --yes); False when the
    clinician left."""
    if lines:
        print("\n".join(lines))
    if read_key is None or args.yes:
        return True
    if terminal.confirm(read_key):
        return True
    print("not started: you left before any current; nothing was sent.", file=sys.stderr)
    return False


def _run(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, Refusal, SafetyError, Shape, describe_sensitivity

    from ..waveforms.engine import Steady
    from .plan import direct_plan

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    hold_s = args.seconds if args.seconds is not None else args.minutes * 60
    try:
        waveforms = {ch: ChannelSetting(ch, shapes[args.shape], args.frequency, args.pulse_width, args.amplitude)
                     for ch in args.pairs}
        if not hold_s > 0 or hold_s != hold_s or hold_s == float("inf"):
            raise Refusal("setup.duration", f"session time {hold_s!r} s is not a positive number",
                          value=hold_s, limit="> 0")
        if not args.ramp > 0:
            raise Refusal("setup.ramp", f"--ramp {args.ramp:g} mA/s is not a positive rate", value=args.ramp,
                          limit="> 0")
        total_min = (hold_s + 2 * args.amplitude / args.ramp) / 60
        if total_min > MAX_SESSION_MIN:
            longest = MAX_SESSION_MIN - 2 * args.amplitude / args.ramp / 60
            raise Refusal("session.too_long", f"a session of {total_min:.1f} minutes (ramps included) is longer "
                          f"than the {MAX_SESSION_MIN:g} minutes allowed: hold for at most {longest:.1f} minutes",
                          value=total_min, limit=MAX_SESSION_MIN)
        setup = fixed_waveform_setup(args, args.pairs, min(MAX_SESSION_MIN, total_min + 0.5), args.envelope)
    except (SafetyError, ValueError) as exc:
        return refused(exc)
    code = preflight(setup.envelope, setup.placements)
    if code is not None:
        return code
    keep_setup(args, args.pairs)
    print("sensitivity " + describe_sensitivity(setup.prescription.sensitivity, args.max_amplitude, args.ramp))
    record = open_session_record(args)
    if isinstance(record, int):
        return record

    with record, kept_dose(args, "direct", args.mechanism, record) as dose:
        try:
            record.append("session_plan", session_plan(args, hold_s=hold_s))
        except SafetyError as exc:  # the record cannot be written: nothing is sent
            return refused(exc)
        print(f"record: {record.path} (id {record.record_id})")
        keep_record(args, record)
        stim = dose.stim = open_session(args, setup, record)
        if isinstance(stim, int):
            dose.stim = None
            return stim
        with stim, _room() as read_key:
            ident = stim.identity
            print(f"device: {ident.serial} firmware {ident.fw_major}.{ident.fw_minor}, {ident.channels} channels, "
                  f"ICD v{ident.protocol_version}")
            latched = latched_at_start(stim, args)
            if latched is not None:
                return latched
            ceilings = {}
            for ch, setting in waveforms.items():
                refusals, warnings = stim.interlock.verdict(setting)
                if refusals:
                    return refused(refusals[0])
                for text in warnings:
                    print(f"warning: {text}")
                highest, stopper = stim.interlock.highest_allowed(setting.with_amplitude(0))
                if stopper is not None and stopper.rule.startswith("envelope."):
                    ceilings[ch] = f"today's ceiling on this waveform {highest:g} mA"
            ramp_rate = min(stim.interlock.limits(ch).ramp_ma_per_s for ch in waveforms)
            if not _go(read_key, args, direct_plan(waveforms, ramp_rate, hold_s, ceilings)):
                return EXIT_REFUSED
            ramp_s = max(w.amplitude_ma for w in waveforms.values()) / ramp_rate
            code, _ = stream(stim, Steady(waveforms, ramp_s + hold_s), args, read_key)
            dose.completed = code == EXIT_OK
            return code


def _run_program(args: argparse.Namespace) -> int:
    """A program file or a preset: checked whole against every rule before anything is sent,
    then streamed on time by the engine."""
    from safety import SafetyError, ThresholdError

    from ..waveforms import ProgramError
    from .plan import program_plan

    try:
        program, notes = program_from_args(args)
    except (ProgramError, ThresholdError, SafetyError) as exc:
        return refused(exc)
    except (OSError, ValueError) as exc:
        return refused(ValueError(f"{args.program or args.preset}: {exc}"))
    print("\n".join(program_plan(args, program, notes)))  # before the device is asked: it may refuse
    code = preflight(args.envelope, {ch: n.placement() for ch, n in program.needles.items()},
                     program.prescription.sensitivity)
    if code is not None:
        return code
    keep_setup(args, getattr(args, "pairs", None) or {})
    record = open_session_record(args)
    if isinstance(record, int):
        return record

    with record, kept_dose(args, program.name, str(program.mechanism), record) as dose:
        plan_entry = session_plan(args, program=program.name, duration_s=program.duration_s)
        try:
            record.append("session_plan", {**plan_entry, "mechanism": plan_entry["mechanism"] or str(program.mechanism)})
        except SafetyError as exc:  # the record cannot be written: nothing is sent
            return refused(exc)
        print(f"record: {record.path} (id {record.record_id})")
        keep_record(args, record)
        stim = open_program_session(args, program, record)
        if isinstance(stim, int):
            return stim
        dose.stim = stim
        with stim, _room() as read_key:
            latched = latched_at_start(stim, args)
            if latched is not None:
                return latched
            if not _go(read_key, args):
                return EXIT_REFUSED
            code, report = stream(stim, program, args, read_key)
            dose.completed = report is not None and report.completed
            return code
