"""The treatment-room console: one panel per channel, intensity keys, and a STOP that is always there.

Everything that changes the output goes through the session's Stimulator, so the interlock
decides; this module only chooses targets (`controls`): a fixed waveform per channel raised by
hand, or a program or preset the engine streams, lowered, raised, paused and ended by the same
keys. Raises ramp on a worker thread at the ramp rate (the UI stays live and STOP stays
instant); decreases go at once; a pause ramps down. Events from the supervisor thread are
queued and drawn on the UI's own timer, so a slow screen never holds up supervision. The end of
the session and every stop ring the terminal's bell and flash the screen.
"""

from __future__ import annotations

import queue
from collections import deque
from dataclasses import dataclass
from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Button, Footer, Header, RichLog, Sparkline, Static

from safety import ChannelSetting, Refusal, SafetyError, operator_name

from .. import INTENDED_USE, fault_text
from ..errors import EstimError
from ..link import LinkLost
from ..stimulator import DeviceFault, Notice, Stimulator
from .controls import ChannelControl, ProgramControl

HISTORY = 120      # sparkline samples (12 s at the 10 Hz refresh)
REFRESH_S = 0.1
FLASHES = 30       # redraws the alarm flashes for (3 s)


@dataclass(frozen=True)
class ConsoleSettings:
    """Step sizes chosen for this session (mA)."""

    step_ma: float = 0.2            # one operator raise / lower
    feedback_step_ma: float = 0.5   # "too strong" drops this much at once
    offer_step_ma: float = 0.2      # "can't feel it" offers this much more


class ChannelPanel(Vertical):
    """One channel's live view."""

    def __init__(self, channel: int) -> None:
        super().__init__(id=f"ch{channel}", classes="channel")
        self.channel = channel
        self.intensity: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self.load: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)

    def compose(self) -> ComposeResult:
        yield Static(id=f"ch{self.channel}-text", classes="readout", markup=False)
        yield Static("intensity", classes="label")
        yield Sparkline(list(self.intensity), id=f"ch{self.channel}-amp", classes="spark")
        yield Static("load", classes="label")
        yield Sparkline(list(self.load), id=f"ch{self.channel}-load", classes="spark")


class ConsoleApp(App[None]):
    """Live console for one supervised session (the caller opens and closes the Stimulator)."""

    TITLE = "estim console"
    AUTO_FOCUS = None
    CSS = """
    #info { height: auto; padding: 0 1; background: $boost; }
    #timer { height: 1; padding: 0 1; text-style: bold; }
    #channels { height: auto; }
    .channel { border: round $secondary; width: 1fr; height: auto; padding: 0 1; }
    .channel.selected { border: heavy $accent; }
    .channel.stopped { border: round $error; }
    .readout { height: auto; }
    .label { color: $text-muted; height: 1; }
    .spark { height: 2; }
    #timer.alarm { background: $error; color: $text; }
    #stop { width: 100%; height: 5; background: $error; color: $text; text-style: bold; }
    #offer { height: auto; padding: 0 1; color: $warning; }
    #messages { height: 1fr; min-height: 4; border: round $warning; }
    """
    BINDINGS = [
        Binding("space", "stop", "STOP", priority=True),
        Binding("escape", "stop", "STOP", show=False, priority=True),
        Binding("ctrl+c", "interrupt", "STOP and leave", show=False, priority=True),
        Binding("up,plus", "raise", "raise"),
        Binding("down,minus", "lower", "lower"),
        Binding("left", "select(-1)", "channel", show=False),
        Binding("right,tab", "select(1)", "next channel"),
        Binding("f", "too_strong", "too strong"),
        Binding("c", "cant_feel", "can't feel it"),
        Binding("y", "accept_offer", "yes", show=False),
        Binding("n", "decline_offer", "no", show=False),
        Binding("p", "pause", "pause / resume"),
        Binding("x", "clear", "clear a stop"),
        Binding("q", "finish", "end session"),
        Binding("enter", "start", "start the program", show=False),
    ] + [Binding(str(n), f"pick({n})", show=False) for n in range(1, 9)]

    def __init__(self, stim: Stimulator, waveforms: list[ChannelSetting],
                 settings: ConsoleSettings = ConsoleSettings(), operator: str = "", program: Any = None,
                 plan: str = "") -> None:
        super().__init__()
        self.stim = stim
        self.settings = settings
        self.operator = operator
        self.program = None if program is None else ProgramControl(stim, program, settings.step_ma)
        self.plan = plan
        self.controls = {w.channel: ChannelControl(stim, w) for w in waveforms}
        self.order = sorted(self.controls) if self.program is None else list(self.program.adjust.channels)
        self.selected = self.order[0]
        self.offer: tuple[int, float] | None = None
        self.finishing = False
        self.paused: dict[int, float] | None = None  # fixed waveforms: each channel's level before the pause
        self.interrupted = False  # left with Ctrl-C (the command exits 130)
        self.alarms: list[str] = []  # what rang the bell, in order
        self._said_end = False
        self._rung_for: str | None = None  # the stop the bell last rang for
        self._flash = 0
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._unsubscribe = stim.subscribe(self._events.put)

    # --- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self._info(), id="info", markup=False)
        yield Static(id="timer", markup=False)
        with Horizontal(id="channels"):
            for ch in self.order:
                yield ChannelPanel(ch)
        stop = Button("STOP   (space / Esc)", id="stop")
        stop.can_focus = False  # never focused, so Enter (start) never presses it; space and Esc are STOP
        yield stop
        yield Static(id="offer", markup=False)
        yield RichLog(id="messages", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        ident = self.stim.identity
        self.sub_title = f"{ident.serial} firmware {ident.fw_major}.{ident.fw_minor} · {INTENDED_USE}"
        if self.stim.tripped:
            self._say(f"the device has a stop latched from before: {self.stim.tripped}. Check the patient and the "
                      f"device, then press x to clear it in your name, or q to leave.")
        elif self.program is not None:
            for line in self.plan.splitlines():
                self._say(line)
            self._say("press Enter to start the program (nothing has been sent yet); then ↓ - lower, ↑ + raise, "
                      "p pause, q end, space STOP.")
        else:
            try:
                for control in self.controls.values():
                    control.prepare()
                self._say("ready: outputs are off. Select a channel (1-8, ←/→) and raise with ↑ or +.")
            except (SafetyError, EstimError) as exc:
                self._say(f"could not set up the channels: {exc}")
        self._refresh()
        self.set_interval(REFRESH_S, self._refresh)

    def on_unmount(self) -> None:
        self._unsubscribe()
        for control in self.controls.values():
            control.cancel()
        if self.program is not None and self.program.running():
            self.program.adjust.end()
            self.program.wait(5.0)

    def _info(self) -> str:
        rx = self.stim.interlock.setup.prescription
        envelope = self.stim.interlock.setup.envelope
        caps = ", ".join(f"ch{ch} ≤ {self._cap(ch)[0]:g} mA" for ch in self.order)
        flags = [name for name, on in (("implanted device", envelope.patient.implanted_device),
                                       ("pregnant", envelope.patient.pregnant)) if on]
        measured = [f"ch{t.channel} {t.waveform}: " + ", ".join(
            f"{k} {v:g}" for k in ("sensory", "motor", "tolerance") if (v := t.value(k)) is not None) + " mA"
            for t in envelope.thresholds if t.channel in self.order]
        running = "" if self.program is None else (
            f"program: {self.program.program.name}, {self.program.program.duration_s / 60:g} min; " + ", ".join(
                f"ch{ch} dose peak {self.program.adjust.headroom[ch].peak_ma:g} mA" for ch in self.order) + "\n")
        return (f"connected: {envelope.describe()}\n{running}"
                f"limits: {caps}; ramp {self.stim.interlock.limits(self.order[0]).ramp_ma_per_s:g} mA/s; "
                f"{rx.frequency_hz[0]:g}-{rx.frequency_hz[1]:g} Hz; {rx.pulse_width_us[0]:g}-{rx.pulse_width_us[1]:g} µs; "
                f"{rx.max_session_minutes:g} min\n"
                + (f"today's thresholds: {'; '.join(measured)}\n" if measured else "")
                + f"patient sensitivity: {self.stim.interlock.sensitivity.value}"
                + (f"; {', '.join(flags)}" if flags else "")
                + f"   operator: {self.operator or '-'}   step {self.settings.step_ma:g} mA")

    # --- actions --------------------------------------------------------------------

    def action_stop(self) -> None:
        """E-stop everything first, then tidy up the ramps."""
        self.stim.estop("operator STOP (console)")
        for control in self.controls.values():
            control.cancel()
        self.offer = None
        self._note("operator_stop", {})
        self._say("STOPPED: every output is off. Check the patient and the needles; then press x to clear the "
                  "stop in your name and go on, or q to end the session.")
        self._rung_for = self.stim.tripped
        self._alarm("STOP")
        self._refresh()

    def action_interrupt(self) -> None:
        """Ctrl-C: e-stop everything, then leave."""
        self.action_stop()
        self.interrupted = True
        self.exit()

    def action_start(self) -> None:
        """Enter: the program starts (it was shown first, nothing sent before)."""
        if self.program is None or self.program.started or self.stim.tripped or self.finishing:
            return
        self.program.start()
        self._say("program started: ↓ - lower, ↑ + raise, p pause, q end (ramps down), space STOP.")

    def action_clear(self) -> None:
        """Clear a stop in the operator's name: what was latched, why, and who cleared it go into
        the record; refused while any output is on (the interlock checks)."""
        if not self.stim.tripped:
            self._say("nothing to clear: the session is not stopped.")
            return
        try:
            operator_name(self.operator)
        except Refusal:
            self._say("clearing a stop needs your name or initials: start the console with --operator NAME.")
            return
        try:
            cleared = self.stim.clear_faults(self.operator)
        except (SafetyError, EstimError) as exc:
            self._say(f"not cleared: {exc}")
            return
        for code in sorted(cleared):
            self._say(f"cleared {fault_text.explain(code)}")
        if self.program is not None and self.program.started:
            self._say(f"stop cleared by {self.operator}. The program does not go on after a stop: press q to end, "
                      "and start a new session when ready.")
        else:
            self._say(f"stop cleared by {self.operator}. Outputs are off; raise a channel from 0 mA when ready.")
        for control in self.controls.values():
            control.target_ma = 0.0
        self._refresh()

    def action_raise(self) -> None:
        self._change(self.selected, self._level(self.selected) + self.settings.step_ma, "raise")

    def action_lower(self) -> None:
        self._change(self.selected, self._level(self.selected, lowest=True) - self.settings.step_ma, "lower")

    def action_select(self, delta: int) -> None:
        self._pick(self.order[(self.order.index(self.selected) + delta) % len(self.order)])

    def action_pick(self, channel: int) -> None:
        if channel in self.order:
            self._pick(channel)

    def action_too_strong(self) -> None:
        """The patient says it is too strong: drop at once by the feedback step."""
        ch = self.selected
        before = self._level(ch, lowest=True)
        to = self._change(ch, before - self.settings.feedback_step_ma, None)
        self._note("patient_feedback", {"channel": ch, "feedback": "too strong",
                                        "from_ma": before, "to_ma": to, "outcome": f"lowered to {to:g} mA"})
        if to is not None:
            self._say(f"patient: too strong on channel {ch}: lowered to {to:g} mA")

    def action_cant_feel(self) -> None:
        """The patient cannot feel it: offer one raise, never past the channel's cap."""
        ch = self.selected
        current = self._level(ch)
        cap, why = self._cap(ch)
        proposed = round(min(current + self.settings.offer_step_ma, cap), 3)
        if proposed <= current:
            self.offer = None
            self._note("patient_feedback", {"channel": ch, "feedback": "can't feel it",
                                            "outcome": f"at {why} {cap:g} mA"})
            self._say(f"patient: can't feel channel {ch}, but it is at {why} ({cap:g} mA). Check the needle "
                      "placement.")
        else:
            self.offer = (ch, proposed)
            self._note("patient_feedback", {"channel": ch, "feedback": "can't feel it",
                                            "outcome": f"offered {proposed:g} mA"})
        self._refresh()

    def action_accept_offer(self) -> None:
        if self.offer is None:
            return
        channel, proposed = self.offer
        self.offer = None
        to = self._change(channel, proposed, None)
        self._note("patient_feedback", {"channel": channel, "feedback": "can't feel it",
                                        "outcome": f"accepted raise to {proposed:g} mA"})
        if to is not None:
            self._say(f"channel {channel}: raising to {to:g} mA at the ramp rate")

    def action_decline_offer(self) -> None:
        if self.offer is None:
            return
        channel, proposed = self.offer
        self.offer = None
        self._note("patient_feedback", {"channel": channel, "feedback": "can't feel it",
                                        "outcome": f"declined raise to {proposed:g} mA"})
        self._refresh()

    def action_pause(self) -> None:
        """Pause: every channel down to 0 mA at the ramp rate; again: back up at the ramp rate to
        where it was (the session's time keeps running)."""
        if self.stim.tripped or self.finishing:
            return
        if self.program is not None:
            paused = self.program.adjust.pause()
        elif self.paused is None:
            self.paused = {ch: self._level(ch) for ch in self.order}
            for control in self.controls.values():
                control.set_target(0.0, gentle=True)
            paused = True
        else:
            levels, self.paused = self.paused, None
            for ch, level in levels.items():
                self.controls[ch].set_target(level)
            paused = False
        self._note("intensity", {"action": "pause" if paused else "resume"})
        self._say("paused: ramping down to 0 mA; p to resume" if paused else "resuming: ramping back up")
        self._refresh()

    def action_finish(self) -> None:
        """End the session: ramp every channel down gently, outputs off, then leave."""
        if self.finishing:
            return
        self.finishing = True
        for control in self.controls.values():
            control.cancel()
        if self.stim.tripped or (self.program is not None and not self.program.running()):
            self.exit()
            return
        self._say("ending: ramping every channel down…")
        self.run_worker(self._wind_down, thread=True, exclusive=True, group="finish")

    def _wind_down(self) -> None:
        try:
            if self.program is not None:
                self.program.adjust.end()
                self.program.wait(self.stim.interlock.session_remaining_s() + 30)
            for ch in self.order:
                if self.stim.setting(ch) is not None and not self.stim.tripped:
                    self.stim.ramp(ch, 0.0)
            if not self.stim.tripped:
                self.stim.safe_off()
        except (SafetyError, EstimError) as exc:
            self._events.put(Notice(None, f"ending the session: {exc}"))
        self.call_from_thread(self._ended)

    def _ended(self) -> None:
        if not self._said_end:
            self._said_end = True
            self._alarm("end")
        self.exit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "stop":
            self.action_stop()

    # --- helpers --------------------------------------------------------------------

    def _pick(self, channel: int) -> None:
        self.selected = channel
        self._refresh()

    def _level(self, ch: int, lowest: bool = False) -> float:
        """The channel's level as chosen: a program's peak, or a fixed waveform's target (the
        higher of target and applied, or the lower with `lowest`)."""
        if self.program is not None:
            return self.program.adjust.level(ch)
        control = self.controls[ch]
        return (min if lowest else max)(control.target_ma, control.applied_ma)

    def _cap(self, ch: int) -> tuple[float, str]:
        if self.program is not None:
            room = self.program.adjust.headroom[ch]
            return room.highest_ma, room.why
        return self.controls[ch].cap_ma, self.controls[ch].cap_why

    def _change(self, ch: int, amplitude_ma: float, verb: str | None) -> float | None:
        if self.stim.tripped:
            self._say(f"stopped: {self.stim.tripped}. Nothing is sent until a new session.")
            return None
        if self.paused is not None or (self.program is not None and self.program.adjust.paused):
            self._say("paused: press p to resume first.")
            return None
        try:
            if self.program is not None:
                to = self.program.adjust.change(ch, amplitude_ma - self.program.adjust.level(ch))
            else:
                to = self.controls[ch].set_target(amplitude_ma)
        except (SafetyError, EstimError) as exc:
            self._say(f"channel {ch}: {exc}")
            return None
        cap, why = self._cap(ch)
        if verb is not None:
            self._note("intensity", {"channel": ch, "action": verb, "target_ma": to})
            if to >= cap and verb == "raise":
                self._say(f"channel {ch}: at {why} ({cap:g} mA)")
            elif self.program is not None:
                self._say(f"channel {ch}: peak {to:g} mA (programmed {self.program.adjust.headroom[ch].peak_ma:g} mA)")
        self._refresh()
        return to

    def _alarm(self, what: str) -> None:
        """The end of the session or a stop: ring the terminal's bell and flash the timer."""
        self.alarms.append(what)
        self.bell()
        self._flash = FLASHES

    def _note(self, kind: str, data: dict[str, Any]) -> None:
        if self.stim.record is not None:
            self.stim.record.append(kind, {"source": "console", "operator": self.operator, **data})

    def _say(self, text: str) -> None:
        self.query_one("#messages", RichLog).write(text)

    def _refresh(self) -> None:
        try:
            self._redraw()
        except NoMatches:  # the timer fired while the screen was being torn down
            pass

    def _redraw(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, Notice):
                self._say(("" if event.channel is None else f"channel {event.channel}: ") + event.text)
            elif isinstance(event, DeviceFault):
                where = "device" if event.channel is None else f"channel {event.channel}"
                self._say(f"device fault {event.code} on the {where}")
            elif isinstance(event, LinkLost):
                self._say(f"connection to the device lost ({event.reason}). The device stops by itself "
                          "within its watchdog time; check the cable, then start a new session.")
        for control in [*self.controls.values(), *([self.program] if self.program is not None else [])]:
            while not control.errors.empty():
                self._say(control.errors.get())
        self._watch_the_end()
        self._draw_timer()
        for ch in self.order:
            self._draw_channel(self.query_one(f"#ch{ch}", ChannelPanel))
        offer = self.query_one("#offer", Static)
        offer.update("" if self.offer is None else
                     f"patient can't feel channel {self.offer[0]}: raise to {self.offer[1]:g} mA?  y = yes, n = no")

    def _watch_the_end(self) -> None:
        """Ring and say it once when the session ends or a stop comes from the device (the
        operator's own STOP rang already)."""
        if self.stim.tripped != self._rung_for:
            self._rung_for = self.stim.tripped
            if self.stim.tripped:
                self._alarm("stop")
        ended = self.stim.interlock.session_expired() or (
            self.program is not None and self.program.report is not None and not self.stim.tripped)
        if ended and not self._said_end:
            self._said_end = True
            report = None if self.program is None else self.program.report
            early = report is not None and report.ended_by_operator
            self._say(("session ended early: " if early else "session over: ") + "every output is off. Press q to "
                      "leave.")
            self._alarm("end")
        if self._flash > 0:
            self._flash -= 1
        self.query_one("#timer", Static).set_class(self._flash > 0 and (self._flash // 3) % 2 == 0, "alarm")

    def _draw_timer(self) -> None:
        remaining = max(0.0, self.stim.interlock.session_remaining_s())
        what = "session"
        if self.program is not None:
            remaining, what = min(remaining, self.program.remaining_s()), "program"
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        if self.stim.tripped:
            state = f"STOPPED — {self.stim.tripped}"
        elif self._said_end:
            state = "SESSION OVER: outputs ramped down and off — press q to leave"
        elif self.stim.interlock.session_expired():
            state = "session time over: outputs ramped down and off"
        elif self.paused is not None or (self.program is not None and self.program.adjust.paused):
            state = "PAUSED — p to resume"
        elif self.program is not None and not self.program.started:
            state = "ready — press Enter to start the program"
        elif self.stim.enabled():
            state = "stimulating"
        else:
            state = "outputs off"
        self.query_one("#timer", Static).update(f"{what} time left {minutes:02d}:{seconds:02d}   {state}")

    def _draw_channel(self, panel: ChannelPanel) -> None:
        ch = panel.channel
        control = self.controls.get(ch)
        reading = self.stim.readings.get(ch)
        setting = self.stim.setting(ch)
        applied, enabled = self.stim.interlock.applied(ch)
        delivered = reading.amplitude_ma if reading and reading.enabled else 0.0
        panel.intensity.append(delivered)
        panel.load.append((reading.load_ohm or 0.0) if reading else 0.0)
        if reading is None:
            load, charge, measured = "-", "-", "-"
        else:
            load = "open circuit" if reading.load_ohm is None else f"{reading.load_ohm:.0f} Ω"
            charge = f"{reading.charge_total_uc:.0f} µC"
            measured = f"{reading.amplitude_ma:.2f} mA" + (" (compliance-limited)" if reading.compliance_limited
                                                          else "")
        wave = control.waveform if setting is None and control is not None else setting
        marker = "▶ " if ch == self.selected else "  "
        status = "ON" if enabled else "off"
        if control is not None:
            level = (f" → {control.target_ma:.2f}" if control.ramping() else "") + f"  (cap {control.cap_ma:g})"
        else:
            room = self.program.adjust.headroom[ch]  # type: ignore[union-attr]
            level = f"  (peak {self._level(ch):g} of programmed {room.peak_ma:g}, at most {room.highest_ma:g})"
        rate = "-" if wave is None else (f"{wave.frequency_hz:g} Hz   phase {wave.pulse_width_us:g} µs  "
                                         f"{wave.shape.name.lower()}")
        panel.query_one(f"#ch{ch}-text", Static).update(
            f"{marker}channel {ch}  [{status}]\n"
            f"set      {(applied.amplitude_ma if applied else 0):.2f} mA{level}\n"
            f"device   {measured}\n"
            f"rate     {rate}\n"
            f"load     {load}\n"
            f"charge   {charge}")
        panel.query_one(f"#ch{ch}-amp", Sparkline).data = list(panel.intensity)
        panel.query_one(f"#ch{ch}-load", Sparkline).data = list(panel.load)
        panel.set_class(ch == self.selected, "selected")
        panel.set_class(bool(self.stim.tripped), "stopped")
