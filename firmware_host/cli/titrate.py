"""`estim titrate`: ramp one channel slowly while the clinician marks what the patient reports.

Keys: `s` first felt (sensory), `m` visible twitch (motor), `t` no longer comfortable
(tolerance: ends the titration and ramps down). Any other key e-stops at once, as does
Ctrl-C or the end of input. The marks are the acknowledged amplitude at the moment of the
key; they go into the treatment record (kind "thresholds") and, with `--out`, into a JSON
file that threshold-relative programs and presets read.

Exit codes: 0 titration finished (output ramped down and off); 2 refused or bad input before
anything was sent; 3 a device fault or lost link stopped it; 130 e-stop (a non-mark key,
end of input, or Ctrl-C); 143 SIGTERM (e-stop); 1 the device could not be reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from . import EXIT_DEVICE_FAULT, EXIT_INTERRUPTED, EXIT_OK, refused, stoppable
from .options import add_session_options, fixed_waveform_setup, open_record, open_session, session_plan

MARKS = {"s": "sensory", "m": "motor", "t": "tolerance"}
POLL_S = 0.05

EXAMPLES = """keys while ramping:
  s  the patient first feels it (sensory threshold)
  m  a twitch is visible (motor threshold)
  t  no longer comfortable (tolerance): ends the titration and ramps down
  any other key, or Ctrl-C: STOP at once (e-stop)

examples:
  estim titrate --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm \\
                --out thresholds.json
  estim titrate --device /dev/ttyUSB0 --channel 2 --frequency 100 --pulse-width 200 \\
                --sites right:lower_leg,right:lower_leg --max-amplitude 6 --sensitivity hyper --json
"""



class Stopped(Exception):
    """The operator stopped the titration with a key that is not a mark, or input ended."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estim titrate",
        description="Threshold titration: ramp one channel slowly from 0 mA and mark when the patient first "
                    "feels it, when a twitch is visible and when it stops being comfortable.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--channel", type=int, required=True, help="channel number as printed on the device (1-based)")
    parser.add_argument("--frequency", type=float, required=True, metavar="HZ", help="pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, required=True, metavar="US", help="phase width in µs")
    parser.add_argument("--max-amplitude", type=float, default=10.0, metavar="MA",
                        help="the ramp never goes above this (default 10 mA; the sensitivity profile scales it: "
                             "hyper x0.6, typical x0.85, hypo x1.0)")
    parser.add_argument("--ramp", type=float, default=0.2, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 0.2; hyper halves it)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help='write {"sensory": mA, "motor": mA, "tolerance": mA} to FILE')
    parser.add_argument("--json", action="store_true", help="print the thresholds as JSON")
    add_session_options(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return stoppable(lambda: _titrate(args))



def _titrate(args: argparse.Namespace) -> int:
    from safety import ChannelSetting, SafetyError, Shape

    try:
        setting = ChannelSetting(args.channel, Shape.BIPHASIC, args.frequency, args.pulse_width, 0.0)
        ramp_s = args.max_amplitude / args.ramp if args.ramp > 0 else float("inf")
        setup = fixed_waveform_setup(
            args, {args.channel: args.sites}, min(60.0, 2 * ramp_s / 60 + 1))
    except (SafetyError, ValueError) as exc:
        return refused(exc)

    record = open_record(args.record)
    record.append("session_plan", session_plan(args, titration=True))
    print(f"record: {record.path}", file=sys.stderr)
    stim = open_session(args, setup, record)
    if isinstance(stim, int):
        return stim
    try:
        with stim:
            return _session(stim, setting, args)
    finally:
        record.close()


def _session(stim, setting, args: argparse.Namespace) -> int:  # noqa: ANN001 - Stimulator, ChannelSetting
    import firmware_host as fh
    from safety import SafetyError

    ch = setting.channel
    if stim.tripped:
        print(f"refused: {stim.tripped}; clear the device's faults first", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    limits = stim.interlock.limits(ch)
    print(f"titrating channel {ch}: {setting.frequency_hz:g} Hz, {setting.pulse_width_us:g} µs, "
          f"from 0 to at most {limits.max_amplitude_ma:g} mA at {limits.ramp_ma_per_s:g} mA/s", file=sys.stderr)
    print("keys: s = first felt, m = twitch visible, t = no longer comfortable (ends); "
          "any other key = STOP", file=sys.stderr)
    marks: dict[str, float | None] = {name: None for name in MARKS.values()}
    cancel = threading.Event()
    failure: list[BaseException] = []

    def ramp_up() -> None:
        try:
            stim.ramp(ch, limits.max_amplitude_ma, cancel=cancel, on_step=lambda ma: _progress(ma))
        except (SafetyError, fh.EstimError) as exc:
            failure.append(exc)

    stim.apply(setting)
    stim.enable(ch)
    worker = threading.Thread(target=ramp_up, name="titration-ramp", daemon=True)
    worker.start()
    try:
        with _keys() as read_key:
            while marks["tolerance"] is None:
                if stim.tripped or failure:
                    break
                if not worker.is_alive():
                    print(f"\nreached the cap {limits.max_amplitude_ma:g} mA without a tolerance mark; "
                          "ramping down", file=sys.stderr)
                    break
                key = read_key(POLL_S)
                if key is None:
                    continue
                name = MARKS.get(key)
                if name is None:
                    stim.estop(f"operator stop during titration (key {key!r})")
                    raise Stopped(f"key {key!r}" if key else "end of input")
                current = stim.setting(ch)
                marks[name] = current.amplitude_ma if current else 0.0
                stim.record.append("threshold_mark", {"channel": ch, "kind": name, "amplitude_ma": marks[name]})
                print(f"\n{name}: {marks[name]:g} mA", file=sys.stderr)
    except Stopped as stop:
        cancel.set()
        _write(stim, ch, setting, marks, args)
        print(f"\nstopped: {stop} — output off (e-stop)", file=sys.stderr)
        return EXIT_INTERRUPTED
    cancel.set()
    worker.join()
    if not stim.tripped:
        try:
            stim.ramp(ch, 0.0, on_step=_progress)
            stim.safe_off()
        except (SafetyError, fh.EstimError) as exc:
            if not stim.tripped:
                raise
            failure.append(exc)
    _write(stim, ch, setting, marks, args)
    if stim.tripped:
        print(f"\nstopped: {stim.tripped}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    print("\ntitration complete: output off.", file=sys.stderr)
    return EXIT_OK


def _write(stim, ch: int, setting, marks: dict[str, float | None],  # noqa: ANN001
           args: argparse.Namespace) -> None:
    """Thresholds go to the record always, and to stdout and `--out` as asked."""
    stim.record.append("thresholds", {"channel": ch, "frequency_hz": setting.frequency_hz,
                                      "pulse_width_us": setting.pulse_width_us, "operator": args.operator, **marks})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(marks, indent=2) + "\n")
    if args.json:
        print(json.dumps({"channel": ch, **marks}))
    else:
        print(f"channel {ch} thresholds: " + ", ".join(
            f"{name} {'-' if value is None else f'{value:g} mA'}" for name, value in marks.items()))


def _progress(amplitude_ma: float) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"  {amplitude_ma:5.2f} mA".ljust(20), end=end, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _keys() -> Iterator:
    """A `read_key(timeout) -> str | None` reading single keys: cbreak on a terminal; from a pipe,
    characters as they arrive with line ends skipped (tests feed "s\\n"). '' means input ended."""
    fd = sys.stdin.fileno()
    tty_mode = os.isatty(fd)
    pending: list[str] = []

    def read_key(timeout: float) -> str | None:
        while not pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(fd, 64).decode(errors="replace")
            if not chunk:
                return ""
            pending.extend(c for c in chunk if tty_mode or c not in "\r\n")
        return pending.pop(0)

    if not tty_mode:
        yield read_key
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield read_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
