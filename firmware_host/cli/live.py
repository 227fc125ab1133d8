"""A session as `estim run` gives it: the engine streams the program (or the direct run's
steady waveform) while a watcher prints a progress line every second and, on a terminal, takes
the room's keys (`terminal`): STOP, lower, raise, pause / resume, end. The bell rings at the end
and at every stop; the figures an engineer needs go to the log (and with --verbose, the screen).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

from . import EXIT_DEVICE_FAULT, EXIT_OK
from . import terminal
from .terminal import END, ENDED, LOWER, PAUSE, RAISE, STOP, ReadKey

log = logging.getLogger(__name__)
TICK_S = 0.1


class Watcher(threading.Thread):
    """Progress every second; the room's keys when `read_key` is given (a terminal)."""

    def __init__(self, stim: Any, adjust: Any, duration_s: float, read_key: ReadKey | None) -> None:
        super().__init__(name="session-keys", daemon=True)
        self.stim, self.adjust, self.duration_s, self.read_key = stim, adjust, duration_s, read_key
        self.done = threading.Event()
        self.selected: tuple[int, ...] = adjust.channels
        self.started = time.monotonic()
        self.overwrite = sys.stdout.isatty()

    def run(self) -> None:
        shown = 0.0
        while not self.done.is_set():
            if time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                self.progress()
            if self.read_key is None:
                self.done.wait(TICK_S)
                continue
            key = self.read_key(TICK_S)
            if key is not None and key != ENDED:
                self.act(key)
            elif key == ENDED:
                self.read_key = None  # the terminal went away: no more keys, the session goes on

    def act(self, key: str) -> None:
        """One key, as the console takes it; each change goes into the treatment record."""
        if key == STOP:
            self.stim.estop("operator STOP (key)")
            self.note("operator_stop", {})
        elif key in (LOWER, RAISE):
            sign = 1 if key == RAISE else -1
            for ch in self.selected:
                level = self.adjust.change(ch, sign * self.adjust.step_ma)
                room = self.adjust.headroom[ch]
                self.note("intensity", {"channel": ch, "action": key, "peak_ma": level})
                top = f": the most allowed here ({room.why})" if sign > 0 and self.adjust.at_most(ch) else ""
                self.say(f"channel {ch}: {level:g} mA at the peak (programmed {room.peak_ma:g} mA){top}")
        elif key == PAUSE:
            paused = self.adjust.pause()
            self.note("intensity", {"action": "pause" if paused else "resume"})
            self.say("paused: ramping down to 0 mA; p to resume" if paused
                     else "resuming: ramping back up at the ramp rate (the session's time kept running)")
        elif key == END:
            self.adjust.end()
            self.note("intensity", {"action": "end"})
            self.say("ending: ramping every channel down, then outputs off")
        elif key.isdigit() and int(key) in self.adjust.channels:
            self.selected = (int(key),)
            self.say(f"↑ and ↓ now change channel {key} (a: every channel)")
        elif key == "a":
            self.selected = self.adjust.channels
            self.say("↑ and ↓ now change every channel")
        else:
            self.say(f"that key does nothing here. Keys: {terminal.LEGEND}")

    def note(self, kind: str, data: dict[str, Any]) -> None:
        if self.stim.record is not None:
            self.stim.record.append(kind, {"source": "keys", **data})

    def say(self, text: str) -> None:
        print(("\r" + " " * 100 + "\r" if self.overwrite else "") + text, file=sys.stderr, flush=True)

    def progress(self) -> None:
        parts = []
        for ch in self.adjust.channels:
            reading = self.stim.readings.get(ch)
            setting = self.stim.setting(ch)
            state = "on" if reading is not None and reading.enabled else "off"
            delivered = reading.amplitude_ma if reading is not None else 0.0
            load = ("-" if reading is None else "open circuit" if reading.load_ohm is None
                    else f"{reading.load_ohm:.0f} Ω")
            wave = "" if setting is None else f" {setting.frequency_hz:g} Hz"
            parts.append(f"ch{ch} {state} {delivered:5.2f} mA{wave} (peak {self.adjust.level(ch):g} mA) load {load}")
        left = max(0.0, self.duration_s - (time.monotonic() - self.started))
        state = "  PAUSED" if self.adjust.paused else "  ending" if self.adjust.ended else ""
        line = "   ".join(parts) + f"   {int(left // 60):02d}:{int(left % 60):02d} left{state}"
        print(line.ljust(100), end="\r" if self.overwrite else "\n", flush=True)


def stream(stim: Any, schedule: Any, args: argparse.Namespace, read_key: ReadKey | None) -> tuple[int, Any]:
    """Run `schedule` on `stim` with the room's keys; the exit code and the engine's report
    (None when the session failed before the end)."""
    import firmware_host as fh
    from safety import SafetyError

    from ..waveforms.adjust import Adjust
    from ..waveforms.engine import run_program

    adjust = Adjust.for_run(stim.interlock, schedule, args.step)
    if read_key is not None:
        print(f"keys: {terminal.LEGEND}" + ("; 1-8 pick a channel, a = every channel" if len(adjust.channels) > 1
                                            else ""), file=sys.stderr)
    watcher = Watcher(stim, adjust, schedule.duration_s, read_key)
    watcher.start()
    report = None
    try:
        report = run_program(stim, schedule, adjust=adjust)
    except (SafetyError, fh.EstimError) as exc:
        if not stim.tripped:
            stim.estop(f"the session could not go on: {exc}")
        print(f"\nerror: {exc}", file=sys.stderr)
    finally:
        watcher.done.set()
        watcher.join(timeout=2.0)
        if watcher.overwrite:
            print()
    if stim.tripped:
        return stopped(stim, args), report
    _summary(stim, report, args)
    return EXIT_OK, report


def _summary(stim: Any, report: Any, args: argparse.Namespace) -> None:
    """The end in plain words (and the bell); the engineering figures to the log, and with
    --verbose to the screen too."""
    from safety import output_summary

    elapsed = report.elapsed_s
    early = f" ended early by you at {int(elapsed // 60):02d}:{int(elapsed % 60):02d};" if report.ended_by_operator else ""
    terminal.bell(f"session complete:{early} every output off.", sys.stdout)
    device_charge = {c: r.charge_total_uc for c, r in stim.readings.items()}
    needles = {c: stim.interlock.setup.needle(c) for c in stim.channels}
    summaries, table = output_summary(stim.interlock.applied_doses(), needles, device_charge)
    for s in summaries:
        peak = max((d.setting.amplitude_ma for d in stim.interlock.applied_doses()
                    if d.channel == s.channel and d.enabled and d.setting is not None), default=0.0)
        charge = s.delivered_charge_device_uc if s.delivered_charge_device_uc is not None else s.delivered_charge_host_uc
        print(f"channel {s.channel}: stimulated {s.stimulation_s:.0f} s, highest {peak:g} mA, charge delivered "
              f"{charge:.0f} µC")
    figures = (f"{report.sent} settings sent ({report.program_updates} from the program, {report.rate_limited} held "
               f"to the ramp rate), send lateness p50 {report.late_p50_s * 1e3:.1f} ms / p99 "
               f"{report.late_p99_s * 1e3:.1f} ms / max {report.late_max_s * 1e3:.1f} ms")
    log.info("session figures: %s\n%s", figures, table)
    if getattr(args, "verbose", False):
        print(f"{figures}\noutput at the needle:\n{table}")


def stopped(stim: Any, args: argparse.Namespace) -> int:
    """The session ended early: why, in plain words (with the bell), and how to go on."""
    from ..fault_text import clear_hint

    terminal.bell(f"stopped: {stim.tripped}")
    if stim.connected:
        state = "every output is off."
    else:  # nothing can confirm it over a lost link: say what the device itself guarantees
        state = (f"the device can no longer be reached: its watchdog switches its outputs off within "
                 f"{stim.identity.watchdog_ms} ms of the last frame it received. Check that it shows no output.")
    if args.device.startswith("sim://"):
        print(f"{state} The built-in simulated device starts afresh with the next command: nothing stays latched.",
              file=sys.stderr)
        return EXIT_DEVICE_FAULT
    print(f"{state} A stop is latched on the device: before the next session, check the patient and the device, "
          f"then clear it with your name: {clear_hint(args.device, stim.identity.protocol_version)}", file=sys.stderr)
    return EXIT_DEVICE_FAULT
