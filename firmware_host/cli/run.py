"""`estim run`: one supervised session — ramp up, hold, ramp down — with a live progress line.

Exit codes: 0 completed (ramped down, every output off); 2 refused by a safety rule or bad
input, before any stimulation command was sent; 3 a device fault or lost link stopped the
session; 130 Ctrl-C (e-stop); 143 SIGTERM (e-stop); 1 the device could not be reached.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from . import EXIT_DEVICE_FAULT, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED
from .options import SENSITIVITY, add_session_options, open_record, parse_needle, parse_sites, patient

EXIT_TERMINATED = 143

EXAMPLES = """examples:
  estim run --channel 1 --frequency 2 --pulse-width 200 --amplitude 2 --seconds 20 \\
            --sites left:forearm,left:forearm
  estim run --device /dev/ttyUSB0 --channel 2 --frequency 100 --pulse-width 200 --amplitude 3 \\
            --minutes 20 --sites right:lower_leg,right:lower_leg --sensitivity hyper
"""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the same e-stop path as Ctrl-C runs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estim run",
        description="Run a stimulation session: ramp up at the prescribed rate, hold for the set time, "
        "ramp down and switch every output off. Ctrl-C stops output at once.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--channel", type=int, required=True, help="channel number as printed on the device (1-based)")
    parser.add_argument("--frequency", type=float, required=True, metavar="HZ", help="pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, required=True, metavar="US", help="phase width in µs")
    parser.add_argument("--amplitude", type=float, required=True, metavar="MA", help="intensity in mA")
    duration = parser.add_mutually_exclusive_group(required=True)
    duration.add_argument("--seconds", type=float, help="time at the set intensity (ramps come on top)")
    duration.add_argument("--minutes", type=float, help="time at the set intensity (ramps come on top)")
    parser.add_argument("--shape", choices=["biphasic", "alternating", "monophasic"], default="biphasic")
    parser.add_argument("--max-amplitude", type=float, default=10.0, metavar="MA",
                        help="the prescription's cap in mA (default 10; the sensitivity profile scales it: "
                             "hyper x0.6, typical x0.85, hypo x1.0)")
    parser.add_argument("--ramp", type=float, default=1.0, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 1.0; the sensitivity profile may lower it)")
    add_session_options(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\nstopped: Ctrl-C — output off (e-stop)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("\nstopped: SIGTERM — output off (e-stop)", file=sys.stderr)
        return EXIT_TERMINATED


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def _run(args: argparse.Namespace) -> int:
    import firmware_host as fh
    from safety import ChannelSetting, Prescription, Refusal, SafetyError, Shape

    shapes = {"biphasic": Shape.BIPHASIC, "alternating": Shape.BIPHASIC_ALTERNATING, "monophasic": Shape.MONOPHASIC}
    hold_s = args.seconds if args.seconds is not None else (args.minutes or 0) * 60
    try:
        setting = ChannelSetting(args.channel, shapes[args.shape], args.frequency, args.pulse_width, args.amplitude)
        if not hold_s > 0 or hold_s != hold_s:
            raise Refusal("setup.duration", f"session time {hold_s!r} s is not a positive number",
                          value=hold_s, limit="> 0")
        ramp_s = args.amplitude / args.ramp if args.ramp > 0 else float("inf")
        prescription = Prescription(
            max_amplitude_ma={args.channel: args.max_amplitude},
            max_session_minutes=min(60.0, (hold_s + 2 * ramp_s) / 60 + 0.5),
            ramp_ma_per_s=args.ramp,
            frequency_hz=(args.frequency, args.frequency),
            pulse_width_us=(args.pulse_width, args.pulse_width),
            sensitivity=SENSITIVITY[args.sensitivity],
        )
        placements = {args.channel: parse_sites(args.sites)}
        needles = {args.channel: parse_needle(args.needle)}
    except (SafetyError, ValueError) as exc:
        return _refused(exc)

    with open_record(args.record) as record:
        record.append("session_plan", {"operator": args.operator, "argv": sys.argv[1:], "hold_s": hold_s})
        print(f"record: {record.path}")
        try:
            stim = fh.open(args.device, prescription=prescription, placements=placements, needles=needles,
                           patient=patient(args), record=record)
        except SafetyError as exc:
            return _refused(exc)
        except fh.EstimError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        with stim:
            return _session(stim, setting, hold_s)


def _refused(exc: Exception) -> int:
    print(f"refused: {exc}\nnothing was sent to the device.", file=sys.stderr)
    return EXIT_REFUSED


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
        return _refused(verdict.refusals[0])
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
