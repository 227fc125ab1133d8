"""`estim titrate`: ramp one channel slowly, on the waveform of the dose to come, while the
clinician marks what the patient reports.

Keys: `s` first felt (sensory), `m` a visible twitch (motor; at 20 Hz and above a contraction),
`t` the top: by default strong but comfortable (`--aim comfortable`), which doses then stay
below, or with `--aim tolerance` no longer comfortable. At `t` the current drops to 0 mA at
once. The room's keys work as in every session: space or Esc STOP (e-stop), ↓ or - lower one
step and hold there, ↑ or + go on rising, p pause (current to 0 mA; p again starts the ramp
from 0), q end (current to 0 mA, nothing kept). Any other key is ignored, with the keys said.
With `--repeat N` the ramp runs N times and the marks are averaged. The thresholds are bound
to the patient, channel, both needle sites, the waveform and the time; they go into the
treatment record, into today's visit with `--patient` (with the channel's set-up, which check,
run and console then reuse), and with `--out` into a file written whole, only when the
titration finished.

Exit codes: 0 titration finished (output off); 2 refused or bad input before anything was
sent, not started (q at the question), no top mark, or marks out of order: titrate again;
3 a device fault, a lost link, the STOP key, `q` or the end of input (from a script) ended it;
4 the device could not be reached; 130 Ctrl-C (e-stop); 143 SIGTERM (e-stop).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import EXIT_DEVICE_FAULT, EXIT_OK, EXIT_REFUSED, Parser, refused, stoppable
from . import terminal
from .options import (PRESET_NAMES, add_session_options, fixed_waveform_setup, latched_at_start, open_session_record,
                      open_session, preflight, session_plan)
from .pairs import Pair
from .terminal import END, ENDED, LOWER, PAUSE, RAISE, STOP
from .visit_context import apply_last_dose, attach_visit, keep_record, keep_thresholds, store
from .visit_setup import fill_source, keep as keep_setup, pairs_for

MARKS = {"s": "sensory", "m": "motor", "t": "tolerance"}
POLL_S = 0.05
STEP_MA = 0.1  # one ↓ while titrating

EXAMPLES = """keys while ramping:
  s  the patient first feels it (sensory threshold)
  m  a visible twitch (motor threshold); at 20 Hz and above, a contraction
  t  the top: strong but comfortable (the default, --aim comfortable; doses stay below it), or with
     --aim tolerance no longer comfortable: the current drops to 0 mA at once; the titration ends
     (or the next repeat starts)
  space or Esc  STOP: every output off at once (e-stop, latched on the device)
  ↓ or -   lower one step and hold there (marks still count)     ↑ or +  go on rising
  p        pause: current to 0 mA; p again starts the ramp from 0 (marks so far are kept)
  q        end: current to 0 mA, nothing kept, nothing written to --out
  any other key is ignored (the keys are said again)

examples:
  estim titrate --patient P001 --preset segmental_inhibition --pair 1 left:forearm,left:hand:LI4 10
  estim titrate --patient P001 --channel 2          (channel 2 of today's set-up)
  estim titrate --patient P001 --last-dose          (the next visit: the last dose's preset and needles)
  estim titrate --channel 1 --frequency 2 --pulse-width 200 --sites left:forearm,left:forearm \\
                --inserted 10 --subject S01 --out thresholds.json
  estim titrate --program low_rate_2hz --channel 2 --subject S01 --out th.json
"""


class Stopped(Exception):
    """The titration ended early: `estop` True for the STOP key or the end of input."""

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
    parser.add_argument("--aim", choices=["comfortable", "tolerance"], default="comfortable",
                        help="what `t` marks: strong but comfortable (the default), or no longer comfortable "
                             "(tolerance); doses stay below 0.9 x the mark either way")
    parser.add_argument("--yes", action="store_true",
                        help="start the ramp without waiting for Enter (for scripts on a terminal)")
    parser.add_argument("--last-dose", action="store_true",
                        help="with --patient: titrate for the patient's last dose (its preset or program, sites, "
                             "needles and depth, each said); with several channels, pick one with --channel N")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the thresholds to FILE")
    parser.add_argument("--json", action="store_true", help="print the thresholds as JSON")
    add_session_options(parser)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 5:
        parser.error("--repeat is 1 to 5")
    if args.last_dose:
        code = apply_last_dose(args)
        if code is not None:
            return code
    code = attach_visit(args)
    if code is not None:
        return code
    fill_source(args)
    if args.preset is None and args.program is None and (args.frequency is None or args.pulse_width is None):
        parser.error("give --preset NAME, --program FILE, or --frequency and --pulse-width")
    return stoppable(lambda: _titrate(args), device=args.device)


def _pair(args: argparse.Namespace) -> Pair:
    """The one channel titrated: --program's needles on --channel, or the pair typed (or kept in
    today's set-up); raises Refusal or ValueError."""
    from safety import Refusal

    from ..programs import find
    from ..waveforms import Program

    if args.program is not None:
        program = Program.load(find(args.program))
        channels = args.channel or []
        if len(channels) != 1 or channels[0] not in program.needles:
            raise ValueError(f"{args.program} has needles on channel(s) {', '.join(map(str, program.needles))}: "
                             "give one of them with --channel N")
        needle = program.needles[channels[0]]
        sites = ",".join(f"{s.side.value}:{s.region.value}" + (f":{s.point}" if s.point else "")
                         for s in (needle.site_a, needle.site_b))
        depth = args.inserted[0] if args.inserted else needle.inserted_mm
        return Pair(channels[0], sites, depth, f"{needle.diameter_mm:g}x{needle.length_mm:g}")
    pairs = pairs_for(args)
    if len(pairs) != 1:
        have = ", ".join(map(str, pairs)) or "none"
        raise Refusal("usage.repeated", f"a titration measures one channel at a time (given: channel(s) {have}): "
                      "give --pair CH SITES MM, or --channel N to pick one of today's set-up", value=have,
                      limit="one channel")
    return next(iter(pairs.values()))


def _waveforms(args: argparse.Namespace) -> tuple[Any, ...]:
    """The waveforms to titrate on (each phase of a dense-disperse alternation in turn)."""
    from safety import Shape, TitrationWaveform

    from ..programs import find
    from ..waveforms import Program
    from .options import unresolved_program

    if args.program is not None:
        return Program.load(find(args.program)).titration_waveforms(args.pair.channel, relative_only=False)
    if args.preset is not None:
        args.pairs = {args.pair.channel: args.pair}
        return unresolved_program(args).titration_waveforms(args.pair.channel, relative_only=False)
    return (TitrationWaveform(Shape.BIPHASIC, args.frequency, args.pulse_width),)


def _titrate(args: argparse.Namespace) -> int:
    from safety import SafetyError, ThresholdError

    from ..waveforms import ProgramError
    from .options import check_writable

    try:
        if terminal.in_background():
            raise ValueError("a titration needs this terminal's keys (s, m, t, STOP): run it in the foreground, "
                             "not with &")
        args.pair = _pair(args)
        if args.out is not None:
            check_writable(args.out, "thresholds file")
            if not _whose(args):
                raise ValueError("the thresholds file must say whose thresholds they are: give --patient CODE, or "
                                 "--subject CODE outside the visit store")
        waves = _waveforms(args)
        args.frequency, args.pulse_width = waves[0].frequency_hz, waves[0].pulse_width_us
        args.envelope = args.envelope.titration(args.pair.channel, waves)
        ramp_s = args.max_amplitude / args.ramp if args.ramp > 0 else float("inf")
        setup = fixed_waveform_setup(args, {args.pair.channel: args.pair},
                                     min(60.0, len(waves) * args.repeat * 2 * ramp_s / 60 + 1), args.envelope,
                                     frequency_hz=(min(w.frequency_hz for w in waves), max(w.frequency_hz for w in waves)),
                                     pulse_width_us=(min(w.pulse_width_us for w in waves),
                                                     max(w.pulse_width_us for w in waves)))
    except (SafetyError, ProgramError, ThresholdError, OSError, ValueError) as exc:
        return refused(exc)
    code = preflight(setup.envelope, setup.placements)
    if code is not None:
        return code
    keep_setup(args, {args.pair.channel: args.pair})
    previous = {wave: _previous(args, setup.placements[args.pair.channel], wave) for wave in waves}

    record = open_session_record(args)
    if isinstance(record, int):
        return record
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
        found = for_dose(earlier, args.pair.channel, placement, wave, now=max((t.measured_at for t in earlier),
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

    ch = args.pair.channel
    latched = latched_at_start(stim, args)
    if latched is not None:
        return latched
    limits = stim.interlock.limits(ch)
    rx = stim.interlock.setup.prescription
    top = "strong but comfortable" if args.aim == "comfortable" else "no longer comfortable"
    print(f"titrating {args.pair.describe()}, rising {limits.ramp_ma_per_s:g} mA/s (sensitivity "
          f"{describe_sensitivity(rx.sensitivity, args.max_amplitude, args.ramp)})", file=sys.stderr)
    print(f"keys: s = first felt, {'m = contraction' if any(w.frequency_hz >= 20 for w in waves) else 'm = twitch'}"
          f", t = {top} (drops to 0); space or Esc = STOP, ↓ or - = lower and hold, ↑ or + = go on rising, "
          "p = pause / resume, q = end (nothing kept)", file=sys.stderr)
    results: list[tuple[Any, dict[str, float | None], int]] = []
    interactive = terminal.on_terminal()
    try:
        with terminal.keys() as read_key:
            for i, wave in enumerate(waves, 1):
                setting = ChannelSetting(ch, wave.shape, wave.frequency_hz, wave.pulse_width_us, 0.0,
                                         burst_pulses=wave.burst_pulses, burst_rate_hz=wave.burst_rate_hz)
                highest, stopper = stim.interlock.highest_allowed(setting)
                part = f" (waveform {i} of {len(waves)})" if len(waves) > 1 else ""
                print(f"\non {wave}{part}: from 0 to at most {highest:g} mA, about {highest / limits.ramp_ma_per_s:.0f} s"
                      + (f" (above it: {stopper})" if stopper is not None else ""), file=sys.stderr)
                if i == 1 and interactive and not args.yes and not terminal.confirm(read_key, "start the ramp"):
                    print("not started: you left before any current; nothing was sent.", file=sys.stderr)
                    return EXIT_REFUSED
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
            terminal.bell(f"\nstopped: {stop} — output off (e-stop)")
            return EXIT_DEVICE_FAULT
        stim.safe_off()
        terminal.bell(f"\nended: {stop} — output off; the titration is over and nothing was kept")
        return EXIT_DEVICE_FAULT
    if not stim.tripped:
        stim.safe_off()
    if stim.tripped:
        terminal.bell(f"\nstopped: {stim.tripped}")
        return EXIT_DEVICE_FAULT
    return _finish(ch, results, args, previous)


class _Rise:
    """The ramp up of one titration on a worker thread (the keys stay live): started, halted
    where it stands, started again from wherever the channel is."""

    def __init__(self, stim, channel: int, highest: float) -> None:  # noqa: ANN001
        self.stim, self.channel, self.highest = stim, channel, highest
        self.failure: list[BaseException] = []
        self.rising = False
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self.halt()
        self._cancel = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(self._cancel,), name="titration-ramp", daemon=True)
        self.rising = True
        self._worker.start()

    def halt(self) -> None:
        self.rising = False
        self._cancel.set()
        if self._worker is not None:
            self._worker.join()
        self._worker = None

    def reached_the_top(self) -> bool:
        return self.rising and self._worker is not None and not self._worker.is_alive()

    def _run(self, cancel: threading.Event) -> None:
        import firmware_host as fh
        from safety import SafetyError

        try:
            self.stim.ramp(self.channel, self.highest, cancel=cancel, on_step=_progress)
        except (SafetyError, fh.EstimError) as exc:
            self.failure.append(exc)


def _one_ramp(stim, setting, highest: float, stopper, read_key) -> dict[str, float | None]:  # noqa: ANN001
    """Ramp from 0 until the top mark, or to the highest the rules allow (`highest`, stopped there
    by `stopper`), taking the room's keys meanwhile; the current is back at 0 mA on return."""
    ch = setting.channel
    marks: dict[str, float | None] = {name: None for name in MARKS.values()}
    current = stim.setting(ch)
    if current is None or not current.same_waveform(setting):
        if current is not None and current.amplitude_ua:
            stim.set_amplitude(ch, 0.0)
        stim.apply(setting)
    if ch not in stim.enabled():
        stim.enable(ch)
    rise = _Rise(stim, ch, highest)
    rise.start()
    paused = False
    try:
        while marks["tolerance"] is None and not stim.tripped and not rise.failure:
            if rise.reached_the_top():
                why = f": {stopper}" if stopper is not None else " (the cap of this titration)"
                print(f"\nstopped rising at {highest:g} mA without a top mark{why}", file=sys.stderr)
                break
            key = read_key(POLL_S)
            if key is None:
                continue
            if key in (STOP, ENDED):
                stim.estop("operator STOP during titration" if key == STOP else "input ended during titration")
                raise Stopped("STOP" if key == STOP else "the input ended", estop=True)
            if key == END:
                raise Stopped("q", estop=False)
            level = stim.setting(ch).amplitude_ma
            if key in MARKS and not paused:
                marks[MARKS[key]] = level
                stim.record.append("threshold_mark", {"channel": ch, "kind": MARKS[key], "amplitude_ma": level})
                what = {"m": f"motor ({'contraction' if setting.frequency_hz >= 20 else 'twitch'})",
                        "s": "sensory (first felt)", "t": "top"}[key]
                print(f"\n{what}: {level:g} mA", file=sys.stderr)
            elif key == PAUSE:
                paused = not paused
                if paused:
                    rise.halt()
                    stim.set_amplitude(ch, 0.0)
                    print("\npaused at 0 mA: p starts the ramp again from 0 (the marks so far are kept)",
                          file=sys.stderr)
                else:
                    rise.start()
            elif key == LOWER and not paused:
                rise.halt()
                stim.set_amplitude(ch, max(0.0, round(level - STEP_MA, 3)))
                print(f"\nholding at {stim.setting(ch).amplitude_ma:g} mA: ↑ or + goes on rising", file=sys.stderr)
            elif key == RAISE and not paused and not rise.rising:
                rise.start()
            elif key not in MARKS and key not in (LOWER, RAISE):
                print(f"\nthat key does nothing here ({'paused: p resumes; ' if paused else ''}s, m, t mark; "
                      f"{terminal.LEGEND})", file=sys.stderr)
    finally:
        rise.halt()
        if not stim.tripped:
            stim.set_amplitude(ch, 0.0)      # at the top, at the end or at the highest allowed: down at once
    if rise.failure and not stim.tripped:
        print(f"\nthe ramp stopped: {rise.failure[0]}", file=sys.stderr)
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
            kept.append(ChannelThresholds(ch, args.pair.placement(), wave, datetime.now(timezone.utc),
                                          marks["sensory"], marks["motor"], marks["tolerance"], _whose(args), repeats))
        except ThresholdError as exc:
            print(f"\nrefused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"channel {ch} on {wave}: " + ", ".join(
            f"{name} {'-' if value is None else f'{value:g} mA'}" for name, value in marks.items()))
        if marks["motor"] is None:
            twitch = "contraction" if wave.frequency_hz >= 20 else "twitch"
            print(f"no {twitch} was marked (m) on {wave}: a sensory-level dose on it is held only below 0.9 x the top "
                  "mark; watch for a twitch, or titrate again and mark it", file=sys.stderr)
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
        terminal.bell("\nno top mark on " + " and ".join(map(str, missing)) + ": no thresholds were kept for it. "
                      "Titrate again (the patient marks the top with t), or, if the ramp stopped below the top, ease "
                      "what the rules limit: a deeper insertion (--inserted MM) or a thicker needle (--needle "
                      "DIAMETERxLENGTH); output off.")
        return EXIT_REFUSED
    terminal.bell("\ntitration complete: output off.")
    if getattr(args, "visit", None) is not None:
        print(f"next: estim check --patient {args.patient}, then estim run --patient {args.patient} (today's set-up "
              "is kept: no need to type it again)", file=sys.stderr)
    return EXIT_OK


def _change(kind: str, before: float, now: float) -> str:
    return f"{kind} {before:g} -> {now:g} mA ({(now - before) / before:+.0%})"


def _progress(amplitude_ma: float) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"  {amplitude_ma:5.2f} mA".ljust(20), end=end, file=sys.stderr, flush=True)
