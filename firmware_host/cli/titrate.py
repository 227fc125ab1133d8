"""`estim titrate`: ramp one channel slowly, on the waveform of the dose to come, while the
clinician marks what the patient reports.

Keys: `s` first felt (sensory), `m` visible twitch (motor), `t` the top: no longer comfortable
(tolerance), or with `--aim comfortable` strong but comfortable, which doses then stay below.
At `t` the current drops to 0 mA at once. `q` stops the titration (current to 0 at once, no
e-stop, nothing written to --out). Any other key, Ctrl-C or the end of input is an e-stop.
With `--repeat N` the ramp runs N times and the marks are averaged. The thresholds are bound
to the patient, channel, both needle sites, the waveform and the time; they go into the
treatment record, into today's visit with `--patient`, and with `--out` into a file written
whole, only when the titration finished.

Exit codes: 0 titration finished (output off); 2 refused or bad input before anything was
sent (or marks out of order: titrate again); 3 a device fault, a lost link or `q` (STOP)
ended it; 4 the device could not be reached; 130 e-stop (other key, end of input, Ctrl-C);
143 SIGTERM (e-stop).
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import EXIT_DEVICE_FAULT, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, Parser, refused, stoppable
from .options import (PRESET_NAMES, add_session_options, fixed_waveform_setup, latched_at_start, open_record,
                      open_session, parse_sites, preflight, session_plan)
from .visit_context import attach_visit, keep_record, keep_thresholds, record_subject, store

MARKS = {"s": "sensory", "m": "motor", "t": "tolerance"}
STOP_KEY = "q"
POLL_S = 0.05

EXAMPLES = """keys while ramping:
  s  the patient first feels it (sensory threshold)
  m  a twitch is visible (motor threshold)
  t  no longer comfortable (tolerance) - or, with --aim comfortable, strong but comfortable:
     the current drops to 0 mA at once; the titration ends (or the next repeat starts)
  q  STOP: current to 0 mA at once, titration over, nothing written to --out
  any other key, or Ctrl-C: e-stop

examples:
  estim titrate --patient P001 --preset segmental_inhibition --channel 1 \\
                --sites left:forearm,left:hand:LI4 --inserted 10 --repeat 2
  estim titrate --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm \\
                --inserted 10 --out thresholds.json
  estim titrate --program programs/low_rate_2hz.toml --channel 2 --inserted 30 --aim comfortable --out th.json
"""


class Stopped(Exception):
    """The titration ended early: `estop` True for an e-stop key or the end of input."""

    def __init__(self, reason: str, estop: bool) -> None:
        super().__init__(reason)
        self.estop = estop


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="estim titrate",
        description="Threshold titration on the waveform of the dose to come: ramp one channel slowly from 0 mA "
                    "and mark when the patient first feels it, when a twitch is visible and the top.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--channel", type=int, required=True, help="channel number as printed on the device (1-based)")
    waveform = parser.add_mutually_exclusive_group()
    waveform.add_argument("--preset", choices=PRESET_NAMES, metavar="NAME",
                          help="titrate on this preset's waveform: " + ", ".join(PRESET_NAMES))
    waveform.add_argument("--program", type=Path, metavar="FILE",
                          help="titrate on this program's waveform for --channel (its needles and sites too)")
    parser.add_argument("--frequency", type=float, metavar="HZ", help="without --preset/--program: pulse rate in Hz")
    parser.add_argument("--pulse-width", type=float, metavar="US", help="without --preset/--program: phase width in µs")
    parser.add_argument("--max-amplitude", type=float, default=10.0, metavar="MA",
                        help="the ramp never goes above this (default 10 mA; the sensitivity scales it)")
    parser.add_argument("--ramp", type=float, default=0.2, metavar="MA_PER_S",
                        help="ramp rate in mA/s (default 0.2; the sensitivity may lower it)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="ramp N times and average the marks")
    parser.add_argument("--aim", choices=["tolerance", "comfortable"], default="tolerance",
                        help="what `t` marks: no longer comfortable (tolerance), or strong but comfortable")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the thresholds to FILE")
    parser.add_argument("--json", action="store_true", help="print the thresholds as JSON")
    add_session_options(parser, sites_required=False)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.program is None and args.sites is None:
        parser.error("give --sites SIDE:REGION,SIDE:REGION (or --program FILE, whose needles say where)")
    if args.preset is None and args.program is None and (args.frequency is None or args.pulse_width is None):
        parser.error("give --preset NAME, --program FILE, or --frequency and --pulse-width")
    if not 1 <= args.repeat <= 5:
        parser.error("--repeat is 1 to 5")
    return stoppable(lambda: _titrate(args))


def _waveforms(args: argparse.Namespace) -> tuple[Any, ...]:
    """The waveforms to titrate on (each phase of a dense-disperse alternation in turn), and with
    --program the channel's sites and needles from it."""
    from safety import Shape, TitrationWaveform

    from ..waveforms import Program
    from .options import unresolved_program

    if args.program is not None:
        program = Program.load(args.program)
        if args.channel not in program.needles:
            raise ValueError(f"{args.program} has no needles on channel {args.channel}")
        needle = program.needles[args.channel]
        args.sites = args.sites or ",".join(f"{s.side.value}:{s.region.value}" + (f":{s.point}" if s.point else "")
                                             for s in (needle.site_a, needle.site_b))
        args.inserted = args.inserted if args.inserted is not None else needle.inserted_mm
        args.needle = f"{needle.diameter_mm:g}x{needle.length_mm:g}"
        return program.titration_waveforms(args.channel, relative_only=False)
    if args.preset is not None:
        return unresolved_program(args).titration_waveforms(args.channel, relative_only=False)
    return (TitrationWaveform(Shape.BIPHASIC, args.frequency, args.pulse_width),)


def _titrate(args: argparse.Namespace) -> int:
    from safety import SafetyError, ThresholdError

    from ..waveforms import ProgramError
    from .options import check_writable

    code = attach_visit(args)
    if code is not None:
        return code
    try:
        if args.out is not None:
            check_writable(args.out, "thresholds file")
            if not _whose(args):
                raise ValueError("the thresholds file must say whose thresholds they are: give --patient CODE, or "
                                 "--subject CODE outside the visit store")
        waves = _waveforms(args)
        args.frequency, args.pulse_width = waves[0].frequency_hz, waves[0].pulse_width_us
        args.envelope = args.envelope.titration(args.channel, waves)
        ramp_s = args.max_amplitude / args.ramp if args.ramp > 0 else float("inf")
        setup = fixed_waveform_setup(args, {args.channel: args.sites},
                                     min(60.0, len(waves) * args.repeat * 2 * ramp_s / 60 + 1), args.envelope,
                                     frequency_hz=(min(w.frequency_hz for w in waves), max(w.frequency_hz for w in waves)),
                                     pulse_width_us=(min(w.pulse_width_us for w in waves),
                                                     max(w.pulse_width_us for w in waves)))
    except (SafetyError, ProgramError, ThresholdError, OSError, ValueError) as exc:
        return refused(exc)
    code = preflight(setup.envelope, setup.placements)
    if code is not None:
        return code
    previous = {wave: _previous(args, setup.placements[args.channel], wave) for wave in waves}

    record = open_record(args.record, store=args.store, **record_subject(args))
    record.append("session_plan", session_plan(args, titration=True, waveform=waves[0].as_dict(),
                                               waveforms=[w.as_dict() for w in waves], aim=args.aim))
    print(f"record: {record.path} (id {record.record_id})", file=sys.stderr)
    keep_record(args, record)
    stim = open_session(args, setup, record)
    if isinstance(stim, int):
        return stim
    try:
        with stim:
            return _session(stim, waves, args, previous)
    finally:
        record.close()


def _whose(args: argparse.Namespace) -> str | None:
    """Whose thresholds these are: the patient's code, or the person's code outside the store."""
    return getattr(args, "patient", None) or getattr(args, "subject", None) or args.envelope.who or None


def _previous(args: argparse.Namespace, placement: Any, wave: Any) -> Any:
    """Last time's thresholds on this channel, sites and waveform, shown before the ramp starts."""
    if getattr(args, "visit", None) is None:
        return None
    from safety.thresholds import for_dose

    with store(args) as visits:
        earlier = [t for t in visits.thresholds(args.patient) if t.measured_at < args.visit.started_at]
    try:
        found = for_dose(earlier, args.channel, placement, wave, now=max((t.measured_at for t in earlier),
                                                                         default=None))
    except ValueError:
        print(f"no earlier thresholds on this channel, these sites and {wave}: starting fresh", file=sys.stderr)
        return None
    last = max(earlier, key=lambda t: t.measured_at)
    print(f"last time on {wave} ({last.measured_at.astimezone():%Y-%m-%d}): " +
          ", ".join(f"{k} {v:g} mA" for k, v in found.values.items()), file=sys.stderr)
    return found.values


def _session(stim, waves, args: argparse.Namespace, previous) -> int:  # noqa: ANN001
    from safety import ChannelSetting, describe_sensitivity

    ch = args.channel
    latched = latched_at_start(stim, args)
    if latched is not None:
        return latched
    limits = stim.interlock.limits(ch)
    rx = stim.interlock.setup.prescription
    top = "strong but comfortable" if args.aim == "comfortable" else "no longer comfortable"
    print(f"titrating channel {ch} at {limits.ramp_ma_per_s:g} mA/s (sensitivity "
          f"{describe_sensitivity(rx.sensitivity, args.max_amplitude, args.ramp)})", file=sys.stderr)
    print(f"keys: s = first felt, {'m = contraction' if any(w.frequency_hz >= 20 for w in waves) else 'm = twitch visible'}"
          f", t = {top} (drops to 0), q = STOP, any other key = e-stop", file=sys.stderr)
    results: list[tuple[Any, dict[str, float | None], int]] = []
    try:
        with _keys() as read_key:
            for i, wave in enumerate(waves, 1):
                setting = ChannelSetting(ch, wave.shape, wave.frequency_hz, wave.pulse_width_us, 0.0,
                                         burst_pulses=wave.burst_pulses, burst_rate_hz=wave.burst_rate_hz)
                highest, stopper = stim.interlock.highest_allowed(setting)
                part = f" (waveform {i} of {len(waves)})" if len(waves) > 1 else ""
                print(f"\non {wave}{part}: from 0 to at most {highest:g} mA"
                      + (f" (above it: {stopper})" if stopper is not None else ""), file=sys.stderr)
                runs: list[dict[str, float | None]] = []
                for n in range(1, args.repeat + 1):
                    if args.repeat > 1:
                        print(f"ramp {n} of {args.repeat}", file=sys.stderr)
                    runs.append(_one_ramp(stim, setting, highest, stopper, read_key))
                    if stim.tripped or runs[-1]["tolerance"] is None:
                        break
                results.append((wave, _keep_marks(stim, ch, wave, runs, args), len(runs)))
                if stim.tripped:
                    break
    except Stopped as stop:
        if stop.estop:
            print(f"\nstopped: {stop} — output off (e-stop)", file=sys.stderr)
            return EXIT_INTERRUPTED
        stim.safe_off()
        print(f"\nstopped: {stop} — output off; the titration is over and nothing was kept", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    if not stim.tripped:
        stim.safe_off()
    if stim.tripped:
        print(f"\nstopped: {stim.tripped}", file=sys.stderr)
        return EXIT_DEVICE_FAULT
    return _finish(ch, results, args, previous)


def _one_ramp(stim, setting, highest: float, stopper, read_key) -> dict[str, float | None]:  # noqa: ANN001
    """Ramp from 0 until the top mark, or to the highest the rules allow (`highest`, stopped there
    by `stopper`); the current is back at 0 mA on return."""
    import firmware_host as fh
    from safety import SafetyError

    ch = setting.channel
    marks: dict[str, float | None] = {name: None for name in MARKS.values()}
    cancel = threading.Event()
    failure: list[BaseException] = []

    def ramp_up() -> None:
        try:
            stim.ramp(ch, highest, cancel=cancel, on_step=_progress)
        except (SafetyError, fh.EstimError) as exc:
            failure.append(exc)

    current = stim.setting(ch)
    if current is None or not current.same_waveform(setting):
        if current is not None and current.amplitude_ua:
            stim.set_amplitude(ch, 0.0)
        stim.apply(setting)
    if ch not in stim.enabled():
        stim.enable(ch)
    worker = threading.Thread(target=ramp_up, name="titration-ramp", daemon=True)
    worker.start()
    try:
        while marks["tolerance"] is None and not stim.tripped and not failure:
            if not worker.is_alive():
                why = f": {stopper}" if stopper is not None else " (the cap of this titration)"
                print(f"\nstopped rising at {highest:g} mA without a top mark{why}", file=sys.stderr)
                break
            key = read_key(POLL_S)
            if key is None:
                continue
            name = MARKS.get(key)
            if name is None:
                if key == STOP_KEY:
                    raise Stopped("STOP", estop=False)
                stim.estop(f"operator stop during titration (key {key!r})")
                raise Stopped(f"key {key!r}" if key else "end of input", estop=True)
            applied = stim.setting(ch)
            marks[name] = applied.amplitude_ma if applied else 0.0
            stim.record.append("threshold_mark", {"channel": ch, "kind": name, "amplitude_ma": marks[name]})
            print(f"\n{name}: {marks[name]:g} mA", file=sys.stderr)
    finally:
        cancel.set()
        worker.join()
        if not stim.tripped:
            stim.set_amplitude(ch, 0.0)      # at the top, at STOP or at the highest allowed: down at once
    if failure and not stim.tripped:
        print(f"\nthe ramp stopped: {failure[0]}", file=sys.stderr)
    return marks


def _average(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for kind in MARKS.values():
        values = [r[kind] for r in runs if r.get(kind) is not None]
        out[kind] = round(sum(values) / len(values), 3) if values else None
    return out


def _keep_marks(stim, ch: int, wave, runs, args: argparse.Namespace) -> dict[str, float | None]:  # noqa: ANN001
    """The (averaged) marks of one waveform go to the record always, whatever ended the titration."""
    marks = _average(runs) if runs else {name: None for name in MARKS.values()}
    stim.record.append("thresholds", {"channel": ch, "frequency_hz": wave.frequency_hz,
                                      "pulse_width_us": wave.pulse_width_us, "waveform": wave.as_dict(),
                                      "operator": args.operator, "repeats": len(runs), "aim": args.aim, **marks})
    return marks


def _finish(ch: int, results, args: argparse.Namespace, previous) -> int:  # noqa: ANN001
    """Thresholds with a top mark are bound and kept (visit, --out); a waveform without one is
    said, and the titration exits 2 (nothing of that waveform is kept)."""
    from safety import ChannelThresholds, ThresholdError
    from safety.thresholds import save

    kept, missing = [], []
    for wave, marks, repeats in results:
        if marks["tolerance"] is None:
            missing.append(wave)
            continue
        try:
            kept.append(ChannelThresholds(ch, parse_sites(args.sites), wave, datetime.now(timezone.utc),
                                          marks["sensory"], marks["motor"], marks["tolerance"], _whose(args), repeats))
        except ThresholdError as exc:
            print(f"\nrefused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"channel {ch} on {wave}: " + ", ".join(
            f"{name} {'-' if value is None else f'{value:g} mA'}" for name, value in marks.items()))
        before = previous.get(wave)
        if before:
            print("since last time: " + ", ".join(_change(k, before.get(k), marks[k]) for k in MARKS.values()
                                                   if before.get(k) is not None and marks[k] is not None),
                  file=sys.stderr)
    for thresholds in kept:
        keep_thresholds(args, thresholds)
    if args.out is not None and kept:
        save(args.out, kept)
    if args.json:
        print(json.dumps({"channel": ch, "thresholds": [t.as_dict() for t in kept],
                          "without_top_mark": [w.as_dict() for w in missing]}))
    if args.aim == "comfortable" and kept:
        print("the top mark is strong but comfortable: doses stay below it", file=sys.stderr)
    if missing:
        print("\nno top mark on " + " and ".join(map(str, missing)) + ": no thresholds were kept for it. Titrate "
              "again (the patient marks the top with t), or lower what the rules limit (a shorter phase, a deeper "
              "insertion) if the ramp stopped below the top; output off.", file=sys.stderr)
        return EXIT_REFUSED
    print("\ntitration complete: output off.", file=sys.stderr)
    return EXIT_OK


def _change(kind: str, before: float, now: float) -> str:
    return f"{kind} {before:g} -> {now:g} mA ({(now - before) / before:+.0%})"


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
