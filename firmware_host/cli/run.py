"""`estim run`: one supervised session with a live progress line — direct parameters (ramp
up, hold, ramp down), a dosing program file, or a preset for a target mechanism.

A flag is never silently unused: each combination either does what it says (`--max-amplitude`
and `--ramp` cap a program or preset, `--minutes`/`--seconds` set a preset's length) or is
refused, naming the conflict. Sessions longer than the standard's 60 minutes are refused
before anything is sent.

Exit codes (README, "Exit codes"): 0 completed (ramped down, every output off); 2 refused or
bad input, nothing sent; 3 a device fault, a lost link or a stop latched from before;
4 the device was not found or is in use; 130 Ctrl-C (e-stop); 143 SIGTERM (e-stop).
"""

from __future__ import annotations

import argparse
import sys
import time

from safety import STANDARD

from . import EXIT_DEVICE_FAULT, EXIT_OK, Parser, refused, stoppable, unreachable
from .options import (add_program_options, add_session_options, declare_hint, fixed_waveform_setup, latched_at_start,
                      open_record, open_session, preflight, print_dose, program_from_args, session_plan,
                      session_notices)
from .visit_context import apply_last_dose, attach_visit, keep_record, kept_dose, record_subject

MAX_SESSION_MIN = STANDARD.max_session_minutes  # the standard's limit on one session
DEFAULTS = {"max_amplitude": 10.0, "ramp": 1.0, "shape": "biphasic"}

EXAMPLES = """examples:
  estim run --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 --seconds 20 \\
            --sites left:forearm,left:forearm --inserted 10
  estim run --patient P001 --preset segmental_inhibition --channel 1 --sites left:forearm,left:hand:LI4 \\
            --inserted 10
  estim run --patient P001 --last-dose
  estim run --program programs/dense_disperse_2_100hz.toml --thresholds thresholds.json
  estim run --preset segmental_inhibition --channel 1 --sites left:forearm,left:forearm --inserted 10 \\
            --thresholds thresholds.json --sensitivity hyper --minutes 20
  estim run --device /dev/ttyUSB0 --patient P001 --channel 2 --frequency 100 --pulse-width 200 --amplitude 3 \\
            --minutes 20 --sites right:lower_leg,right:lower_leg --inserted 20
  estim run --device /dev/ttyUSB0 --test-load --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 \\
            --seconds 20 --sites left:forearm,left:forearm --inserted 10

who is connected (a device other than the built-in sim:// needs one):
  --patient CODE                          a patient screened in today's visit (thresholds from the store)
  --research-protocol ID --subject CODE   a participant screened under a research protocol
  --test-load [TEXT]                      a bench load: nobody is connected

which flags go with what:
  direct      --channel --sites --inserted --frequency --pulse-width --amplitude and --seconds or --minutes
              (optional: --shape --max-amplitude --ramp --needle --sensitivity --patient)
  --preset    --channel --sites --inserted (optional: --minutes/--seconds for its length, --max-amplitude and
              --ramp as caps, --needle --sensitivity, --thresholds or --patient)
  --program   (optional: --max-amplitude and --ramp as caps, --thresholds or --patient); the file sets the
              channels, needles, waveform, length and sensitivity
  --patient CODE --last-dose   the patient's last dose at today's thresholds
"""

# flags each source of the dose decides itself, so giving them is a conflict
_NOT_WITH = {
    "program": ("channel", "sites", "needle", "inserted", "frequency", "pulse_width", "amplitude", "shape",
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
    parser.add_argument("--channel", type=int, help="channel number as printed on the device (1-based)")
    parser.add_argument("--frequency", type=float, metavar="HZ", help="pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, metavar="US", help="phase width in µs")
    parser.add_argument("--amplitude", type=float, metavar="MA", help="intensity in mA")
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
    parser.add_argument("--json", action="store_true", help="refusals and the outcome as JSON on stdout too")
    add_session_options(parser, sites_required=False)
    parser.add_argument("--last-dose", action="store_true",
                        help="with --patient: the dose of the patient's last visit (program or preset, sites, "
                             "needles), at today's thresholds")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.last_dose:
        if not args.patient:
            parser.error("--last-dose needs --patient CODE")
        code = apply_last_dose(args)
        if code is not None:
            return code
    given = _given(parser, argv)
    mode = "program" if args.program else "preset" if args.preset else "direct"
    conflicts = [flag for flag in _NOT_WITH[mode] if flag in given]
    if conflicts:
        from safety import Refusal

        flags = ", ".join("--" + flag.replace("_", "-") for flag in conflicts)
        source = {"program": "--program", "preset": "--preset", "direct": "direct parameters"}[mode]
        return refused(Refusal("usage.conflict", f"{flags} cannot be used with {source}: {_WHY[mode]}",
                               value=flags, limit=source))
    needed = {"program": [], "preset": ["channel", "sites"],
              "direct": ["channel", "sites", "frequency", "pulse_width", "amplitude"]}[mode]
    missing = ["--" + flag.replace("_", "-") for flag in needed if getattr(args, flag) is None]
    if mode == "direct" and args.seconds is None and args.minutes is None:
        missing.append("--seconds or --minutes")
    if missing:
        parser.error("missing for this kind of run: " + ", ".join(missing) + " (see the examples: estim run --help)")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None and (mode == "direct" or name == "shape"):
            setattr(args, name, value)
    code = attach_visit(args)
    if code is not None:
        return code
    return stoppable(lambda: _run_program(args) if mode != "direct" else _run(args))


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options the user typed (abbreviations are disallowed)."""
    options = parser._option_string_actions  # noqa: SLF001 - argparse keeps no public map
    return {options[a.split("=", 1)[0]].dest for a in argv if a.split("=", 1)[0] in options}


def _run(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, Refusal, SafetyError, Shape

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    hold_s = args.seconds if args.seconds is not None else args.minutes * 60
    try:
        setting = ChannelSetting(args.channel, shapes[args.shape], args.frequency, args.pulse_width, args.amplitude)
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
        setup = fixed_waveform_setup(args, {args.channel: args.sites}, min(MAX_SESSION_MIN, total_min + 0.5),
                                     args.envelope)
    except (SafetyError, ValueError) as exc:
        return refused(exc)
    code = preflight(setup.envelope, setup.placements)
    if code is not None:
        return code
    from safety import describe_sensitivity

    print("sensitivity " + describe_sensitivity(setup.prescription.sensitivity, args.max_amplitude, args.ramp))
    try:
        record = open_record(args.record, store=args.store, **record_subject(args))
    except (SafetyError, ValueError) as exc:
        return refused(exc)

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
        with stim:
            code = _session(stim, setting, hold_s, args)
            dose.completed = code == EXIT_OK
            return code


def _session(stim, setting, hold_s: float, args: argparse.Namespace) -> int:  # noqa: ANN001
    import firmware_host as fh
    from safety import SafetyError, output_summary

    ident = stim.identity
    print(f"device: {ident.serial} firmware {ident.fw_major}.{ident.fw_minor}, {ident.channels} channels, "
          f"watchdog {ident.watchdog_ms} ms, ICD v{ident.protocol_version}")
    latched = latched_at_start(stim, args)
    if latched is not None:
        return latched
    ch = setting.channel
    refusals, warnings = stim.interlock.verdict(setting)
    if refusals:
        return refused(refusals[0])
    for text in warnings:
        print(f"warning: {text}")
    ramp_rate = stim.interlock.limits(ch).ramp_ma_per_s
    ramp_s = setting.amplitude_ma / ramp_rate
    print(f"plan: channel {ch}: {setting.frequency_hz:g} Hz, {setting.pulse_width_us:g} µs, "
          f"{setting.amplitude_ma:g} mA; ramp up {ramp_s:.1f} s at {ramp_rate:g} mA/s, hold {hold_s:g} s, "
          f"ramp down {ramp_s:.1f} s (total {hold_s + 2 * ramp_s:.1f} s)")
    def step(_amplitude_ma: float) -> None:
        _progress(stim, ch, None)

    try:
        stim.apply(setting.with_amplitude(0))
        stim.enable(ch)
        stim.ramp(ch, setting.amplitude_ma, on_step=step)
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline and not stim.tripped:
            _progress(stim, ch, deadline - time.monotonic())
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
        if not stim.tripped:
            stim.ramp(ch, 0.0, on_step=step)
            stim.safe_off()
    except (SafetyError, fh.EstimError) as exc:
        if not stim.tripped:
            stim.estop(f"the session could not go on: {exc}")
        print(f"\nerror: {exc}", file=sys.stderr)
    print()
    if stim.tripped:
        return _stopped(stim, args)
    device_charge = {c: r.charge_total_uc for c, r in stim.readings.items()}
    needles = {c: stim.interlock.setup.needle(c) for c in stim.channels}
    _, table = output_summary(stim.interlock.applied_doses(), needles, device_charge)
    print("session complete: every output off.\n" + table)
    return EXIT_OK


def _progress(stim, channel: int, remaining_s: float | None) -> None:  # noqa: ANN001
    reading = stim.readings.get(channel)
    left = "ramping" if remaining_s is None else f"{remaining_s:5.0f} s left"
    if reading is None:
        line = f"ch{channel}: {left}, waiting for telemetry"
    else:
        load = "open" if reading.load_ohm is None else f"{reading.load_ohm:.0f} Ω"
        state = "on" if reading.enabled else "off"
        line = (f"ch{channel} {state}: {left}  {reading.amplitude_ma:5.2f} mA  {reading.frequency_hz:g} Hz  "
                f"{reading.pulse_width_us:g} µs  load {load}  charge {reading.charge_total_uc:.0f} µC")
    end = "\r" if sys.stdout.isatty() else "\n"
    print(line.ljust(100), end=end, flush=True)


def _stopped(stim, args: argparse.Namespace) -> int:  # noqa: ANN001 - Stimulator
    """The session ended early: why, in plain words, and how to go on."""
    from ..fault_text import clear_hint

    print(f"stopped: {stim.tripped}", file=sys.stderr)
    if stim.connected:
        state = "every output is off."
    else:  # nothing can confirm it over a lost link: say what the device itself guarantees
        state = (f"the device can no longer be reached: its watchdog switches its outputs off within "
                 f"{stim.identity.watchdog_ms} ms of the last frame it received. Check that it shows no output.")
    print(f"{state} Before the next session, check the patient and the device, then clear the stop "
          f"with your name: {clear_hint(args.device, stim.identity.protocol_version)}", file=sys.stderr)
    return EXIT_DEVICE_FAULT


def _run_program(args: argparse.Namespace) -> int:
    """A program file or a preset: checked whole against every rule before anything is sent,
    then streamed on time by the engine."""
    import firmware_host as fh
    from safety import SafetyError

    from ..stimulator import Stimulator
    from ..units import device_limits
    from ..waveforms import ProgramError
    from ..waveforms.check import check
    from ..waveforms.engine import run_program
    from safety import ThresholdError

    try:
        program, notes = program_from_args(args)
    except (ProgramError, ThresholdError, SafetyError) as exc:
        return refused(exc)
    except (OSError, ValueError) as exc:
        return refused(ValueError(f"{args.program or args.preset}: {exc}"))
    print_dose(args, program, notes)
    code = preflight(args.envelope, {ch: n.placement() for ch, n in program.needles.items()},
                     program.prescription.sensitivity)
    if code is not None:
        return code
    try:
        record = open_record(args.record, store=args.store, **record_subject(args))
    except (SafetyError, OSError, ValueError) as exc:
        return refused(exc)

    with record, kept_dose(args, program.name, str(program.mechanism), record) as dose:
        plan = session_plan(args, program=program.name, duration_s=program.duration_s)
        try:
            record.append("session_plan", {**plan, "mechanism": plan["mechanism"] or str(program.mechanism)})
        except SafetyError as exc:  # the record cannot be written: nothing is sent
            return refused(exc)
        print(f"record: {record.path} (id {record.record_id})")
        keep_record(args, record)
        try:
            link = fh.connect(args.device)
        except fh.EstimError as exc:
            return unreachable(exc)
        try:
            limits = device_limits(link.identity)
            verdict = check(program, limits, args.envelope)
            if not verdict.ok:
                print(verdict.table(), file=sys.stderr)
                link.close()
                return refused(ValueError(f"{program.name!r} breaks the rules above"))
            stim = Stimulator(link, program.session_setup(limits, args.envelope), record=record)
        except SafetyError as exc:
            link.close()
            return refused(declare_hint(exc))
        except BaseException:
            link.close()
            raise
        session_notices(stim.identity, args.envelope)
        dose.stim = stim
        with stim:
            latched = latched_at_start(stim, args)
            if latched is not None:
                return latched
            print(f"plan: {program.name} ({program.mechanism}), {program.duration_s / 60:.1f} min on channel(s) "
                  + ", ".join(str(ch) for ch in sorted(program.needles)) + "; ramps are part of the program")
            last = [0.0]

            def progress(update) -> None:  # noqa: ANN001 - engine.Update
                if update.sent_s - last[0] >= 1.0:
                    last[0] = update.sent_s
                    _progress(stim, update.setting.channel, program.duration_s - update.planned_s)

            report = None
            try:
                report = run_program(stim, program, on_update=progress)
            except (SafetyError, fh.EstimError) as exc:
                if not stim.tripped:
                    stim.estop(f"the program could not go on: {exc}")
                print(f"\nerror: {exc}", file=sys.stderr)
            dose.completed = report is not None and report.completed
            print()
            if stim.tripped:
                return _stopped(stim, args)
            print(f"program complete: every output off. {report.sent} updates sent, send lateness "
                  f"p50 {report.late_p50_s * 1e3:.1f} ms / p99 {report.late_p99_s * 1e3:.1f} ms")
            return EXIT_OK

