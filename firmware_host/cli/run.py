"""`estim run`: one supervised session with a live progress line — direct parameters (ramp
up, hold, ramp down), a dosing program file, or a preset for a target mechanism.

Exit codes: 0 completed (ramped down, every output off); 2 refused by a safety rule or bad
input, before any stimulation command was sent; 3 a device fault or lost link stopped the
session; 130 Ctrl-C (e-stop); 143 SIGTERM (e-stop); 1 the device could not be reached.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import EXIT_DEVICE_FAULT, EXIT_NO_DEVICE, EXIT_OK, refused, stoppable
from .options import (add_program_options, add_session_options, fixed_waveform_setup, open_record, open_session,
                      patient, print_dose, program_from_args, session_plan)
from .visit_context import (apply_last_dose, attach_visit, dose_request, keep_dose, keep_record,
                            screening_verdict)


EXAMPLES = """examples:
  estim run --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 --seconds 20 \\
            --sites left:forearm,left:forearm --inserted 10
  estim run --patient P001 --preset segmental_inhibition --channel 1 --sites left:forearm,left:hand:LI4 \\
            --inserted 10
  estim run --patient P001 --last-dose
  estim run --program programs/dense_disperse_2_100hz.toml --thresholds thresholds.json
  estim run --preset segmental_inhibition --channel 1 --sites left:forearm,left:forearm --inserted 10 \\
            --thresholds thresholds.json --sensitivity hyper --minutes 20
  estim run --device /dev/ttyUSB0 --channel 2 --frequency 100 --pulse-width 200 --amplitude 3 \\
            --minutes 20 --sites right:lower_leg,right:lower_leg --inserted 20 --sensitivity hyper
"""



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    duration.add_argument("--seconds", type=float, help="time at the set intensity (ramps come on top)")
    duration.add_argument("--minutes", type=float,
                          help="time at the set intensity (ramps come on top); with --preset, its length")
    parser.add_argument("--shape", choices=["biphasic", "alternating", "monophasic"], default="biphasic")
    parser.add_argument("--max-amplitude", type=float, default=10.0, metavar="MA",
                        help="the prescription's cap in mA (default 10; the sensitivity profile scales it: "
                             "hyper x0.6, typical x0.85, hypo x1.0)")
    parser.add_argument("--ramp", type=float, default=1.0, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 1.0; the sensitivity profile may lower it)")
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
    if args.program is None:
        needed = ["--channel", "--sites"] + ([] if args.preset else
                                             ["--frequency", "--pulse-width", "--amplitude", "--seconds"])
        missing = [flag for flag in needed if getattr(args, flag[2:].replace("-", "_")) is None
                   and not (flag == "--seconds" and args.minutes is not None)]
        if missing:
            parser.error("give --program FILE, --preset NAME, or direct parameters; missing: "
                         + ", ".join(m if m != "--seconds" else "--seconds/--minutes" for m in missing))
    code = attach_visit(args)
    if code is not None:
        return code
    return stoppable(lambda: _run_program(args) if args.program or args.preset else _run(args))



def _run(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, Refusal, SafetyError, Shape

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    hold_s = args.seconds if args.seconds is not None else (args.minutes or 0) * 60
    try:
        setting = ChannelSetting(args.channel, shapes[args.shape], args.frequency, args.pulse_width, args.amplitude)
        if not hold_s > 0 or hold_s != hold_s:
            raise Refusal("setup.duration", f"session time {hold_s!r} s is not a positive number",
                          value=hold_s, limit="> 0")
        ramp_s = args.amplitude / args.ramp if args.ramp > 0 else float("inf")
        setup = fixed_waveform_setup(
            args, {args.channel: args.sites}, min(60.0, (hold_s + 2 * ramp_s) / 60 + 0.5))
    except (SafetyError, ValueError) as exc:
        return refused(exc)
    code = screening_verdict(args, setup[1])
    if code is not None:
        return code
    from safety import describe_sensitivity

    print("sensitivity " + describe_sensitivity(setup[0].sensitivity, args.max_amplitude, args.ramp))

    with open_record(args.record) as record:
        record.append("session_plan", session_plan(args, hold_s=hold_s))
        print(f"record: {record.path}")
        keep_record(args, record.path)
        stim = open_session(args, setup, record)
        if isinstance(stim, int):
            return stim
        with stim:
            return _session(stim, setting, hold_s)


def _session(stim, setting, hold_s: float) -> int:  # noqa: ANN001 - Stimulator, ChannelSetting
    import firmware_host as fh
    from safety import SafetyError, check_setting, output_summary

    ident = stim.identity
    print(f"device: {ident.serial} firmware {ident.fw_major}.{ident.fw_minor}, {ident.channels} channels, "
          f"watchdog {ident.watchdog_ms} ms")
    if stim.tripped:
        print(f"refused: {stim.tripped}; clear the device's faults before a session", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    ch = setting.channel
    verdict = check_setting(setting, stim.interlock.limits(ch))
    if verdict.refusals:
        return refused(verdict.refusals[0])
    for text in verdict.warnings:
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
            raise
        print(f"\nerror: {exc}", file=sys.stderr)
    print()
    if stim.tripped:
        print(f"stopped: {stim.tripped}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
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
    from ..waveforms.thresholds import ThresholdError

    try:
        program, notes = program_from_args(args)
    except (ProgramError, ThresholdError, SafetyError) as exc:
        return refused(exc)
    except (OSError, ValueError) as exc:
        return refused(ValueError(f"{args.program or args.preset}: {exc}"))
    print_dose(args, program, notes)
    code = screening_verdict(args, {ch: n.placement() for ch, n in program.needles.items()})
    if code is not None:
        return code

    with open_record(args.record) as record:
        plan = session_plan(args, program=program.name, duration_s=program.duration_s)
        record.append("session_plan", {**plan, "mechanism": plan["mechanism"] or str(program.mechanism)})
        print(f"record: {record.path}")
        keep_record(args, record.path)
        try:
            link = fh.connect(args.device)
        except fh.EstimError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NO_DEVICE
        try:
            limits = device_limits(link.identity)
            verdict = check(program, limits, patient(args))
            if not verdict.ok:
                print(verdict.table(), file=sys.stderr)
                link.close()
                return refused(ValueError(f"{program.name!r} breaks the rules above"))
            stim = Stimulator(link, program.session_setup(limits, patient(args)), record=record)
        except SafetyError as exc:
            link.close()
            return refused(exc)
        except BaseException:
            link.close()
            raise
        with stim:
            if stim.tripped:
                print(f"refused: {stim.tripped}; clear the device's faults before a session", file=sys.stderr)
                return EXIT_DEVICE_FAULT
            print(f"plan: {program.name} ({program.mechanism}), {program.duration_s / 60:.1f} min on channel(s) "
                  + ", ".join(str(ch) for ch in sorted(program.needles)) + "; ramps are part of the program")
            last = [0.0]

            def progress(update) -> None:  # noqa: ANN001 - engine.Update
                if update.sent_s - last[0] >= 1.0:
                    last[0] = update.sent_s
                    _progress(stim, update.setting.channel, program.duration_s - update.planned_s)

            report = run_program(stim, program, on_update=progress)
            keep_dose(args, program, dose_request(args), stim, report.completed)
            print()
            if not report.completed:
                print(f"stopped: {report.stop_reason}", file=sys.stderr)
                return EXIT_DEVICE_FAULT
            print(f"program complete: every output off. {report.sent} updates sent, send lateness "
                  f"p50 {report.late_p50_s * 1e3:.1f} ms / p99 {report.late_p99_s * 1e3:.1f} ms")
            return EXIT_OK

