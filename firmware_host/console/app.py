"""The treatment-room console: one panel per channel, intensity keys, and a STOP that is always there.

Everything that changes the output goes through the session's Stimulator, so the interlock
decides; this module only chooses targets. Raises ramp on a worker thread at the ramp rate
(the UI stays live and STOP stays instant); decreases go at once. Events from the supervisor
thread are queued and drawn on the UI's own timer, so a slow screen never holds up supervision.
"""

from __future__ import annotations

import queue
import threading
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
from ..stimulator import REPLY_TIMEOUT_S, DeviceFault, Notice, Stimulator

HISTORY = 120      # sparkline samples (12 s at the 10 Hz refresh)
REFRESH_S = 0.1


@dataclass(frozen=True)
class ConsoleSettings:
    """Step sizes chosen for this session (mA)."""

    step_ma: float = 0.2            # one operator raise / lower
    feedback_step_ma: float = 0.5   # "too strong" drops this much at once
    offer_step_ma: float = 0.2      # "can't feel it" offers this much more


class ChannelControl:
    """Intensity changes for one channel: raises ramp on a thread (cancelled by anything
    newer), decreases are sent at once."""

    def __init__(self, stim: Stimulator, waveform: ChannelSetting) -> None:
        self.stim = stim
        self.channel = waveform.channel
        self.waveform = waveform.with_amplitude(0)
        # the most this waveform may reach here: the prescription's cap, every static rule and the
        # patient's envelope (their ceiling from today's thresholds), as the interlock will judge
        self.cap_ma, above = stim.interlock.highest_allowed(self.waveform)
        self.cap_why = "the prescription's cap" if above is None else ("this patient's ceiling" if
                                                                         above.rule.startswith("envelope.") else
                                                                         "the most the safety rules allow here")
        self.target_ma = 0.0
        self.errors: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def applied_ma(self) -> float:
        setting = self.stim.setting(self.channel)
        return setting.amplitude_ma if setting else 0.0

    def prepare(self) -> None:
        """Send the waveform at 0 mA so the device shows the channel before any output."""
        self.stim.apply(self.waveform)

    def set_target(self, amplitude_ma: float) -> float:
        """Move toward `amplitude_ma` (clamped to 0..cap); returns the target taken."""
        target = round(min(max(amplitude_ma, 0.0), self.cap_ma), 3)
        self.cancel()
        self.target_ma = target
        if target <= self.applied_ma:
            self.stim.set_amplitude(self.channel, target)
            return target
        if self.channel not in self.stim.enabled():
            if self.applied_ma > 0:
                self.stim.set_amplitude(self.channel, 0.0)
            self.stim.enable(self.channel)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._ramp, args=(target, self._cancel),
                                        name=f"console-ramp-ch{self.channel}", daemon=True)
        self._thread.start()
        return target

    def cancel(self) -> None:
        """End a running ramp where it stands: the step already on its way completes (within
        the link's reply timeout) before anything newer is sent, so steps never cross."""
        self._cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=REPLY_TIMEOUT_S + 1.0)
        self._thread = None

    def ramping(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _ramp(self, target: float, cancel: threading.Event) -> None:
        try:
            self.stim.ramp(self.channel, target, cancel=cancel)
        except (SafetyError, EstimError) as exc:
            if not cancel.is_set():
                self.errors.put(f"channel {self.channel}: {exc}")


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
        Binding("x", "clear", "clear a stop"),
        Binding("q", "finish", "end session"),
    ] + [Binding(str(n), f"pick({n})", show=False) for n in range(1, 9)]

    def __init__(self, stim: Stimulator, waveforms: list[ChannelSetting],
                 settings: ConsoleSettings = ConsoleSettings(), operator: str = "") -> None:
        super().__init__()
        self.stim = stim
        self.settings = settings
        self.operator = operator
        self.controls = {w.channel: ChannelControl(stim, w) for w in waveforms}
        self.order = sorted(self.controls)
        self.selected = self.order[0]
        self.offer: tuple[int, float] | None = None
        self.finishing = False
        self.interrupted = False  # left with Ctrl-C (the command exits 130)
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
        yield Button("STOP   (space / Esc)", id="stop")
        yield Static(id="offer", markup=False)
        yield RichLog(id="messages", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        ident = self.stim.identity
        self.sub_title = f"{ident.serial} firmware {ident.fw_major}.{ident.fw_minor} · {INTENDED_USE}"
        self.query_one("#stop", Button).can_focus = False
        if self.stim.tripped:
            self._say(f"the device has a stop latched from before: {self.stim.tripped}. Check the patient and the "
                      f"device, then press x to clear it in your name, or q to leave.")
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

    def _info(self) -> str:
        rx = self.stim.interlock.setup.prescription
        envelope = self.stim.interlock.setup.envelope
        caps = ", ".join(f"ch{ch} ≤ {self.controls[ch].cap_ma:g} mA" for ch in self.order)
        flags = [name for name, on in (("implanted device", envelope.patient.implanted_device),
                                       ("pregnant", envelope.patient.pregnant)) if on]
        measured = [f"ch{t.channel} {t.waveform}: " + ", ".join(
            f"{k} {v:g}" for k in ("sensory", "motor", "tolerance") if (v := t.value(k)) is not None) + " mA"
            for t in envelope.thresholds if t.channel in self.controls]
        return (f"connected: {envelope.describe()}\n"
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
        self._refresh()

    def action_interrupt(self) -> None:
        """Ctrl-C: e-stop everything, then leave."""
        self.action_stop()
        self.interrupted = True
        self.exit()

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
        self._say(f"stop cleared by {self.operator}. Outputs are off; raise a channel from 0 mA when ready.")
        for control in self.controls.values():
            control.target_ma = 0.0
        self._refresh()

    def action_raise(self) -> None:
        control = self.controls[self.selected]
        self._change(control, max(control.target_ma, control.applied_ma) + self.settings.step_ma, "raise")

    def action_lower(self) -> None:
        control = self.controls[self.selected]
        self._change(control, min(control.target_ma, control.applied_ma) - self.settings.step_ma, "lower")

    def action_select(self, delta: int) -> None:
        self._pick(self.order[(self.order.index(self.selected) + delta) % len(self.order)])

    def action_pick(self, channel: int) -> None:
        if channel in self.controls:
            self._pick(channel)

    def action_too_strong(self) -> None:
        """The patient says it is too strong: drop at once by the feedback step."""
        control = self.controls[self.selected]
        before = control.applied_ma
        to = self._change(control, min(control.target_ma, before) - self.settings.feedback_step_ma, None)
        self._note("patient_feedback", {"channel": control.channel, "feedback": "too strong",
                                        "from_ma": before, "to_ma": to, "outcome": f"lowered to {to:g} mA"})
        if to is not None:
            self._say(f"patient: too strong on channel {control.channel}: lowered to {to:g} mA")

    def action_cant_feel(self) -> None:
        """The patient cannot feel it: offer one raise, never past the channel's cap."""
        control = self.controls[self.selected]
        current = max(control.target_ma, control.applied_ma)
        proposed = round(min(current + self.settings.offer_step_ma, control.cap_ma), 3)
        if proposed <= current:
            self.offer = None
            self._note("patient_feedback", {"channel": control.channel, "feedback": "can't feel it",
                                            "outcome": f"at {control.cap_why} {control.cap_ma:g} mA"})
            self._say(f"patient: can't feel channel {control.channel}, but it is at {control.cap_why} "
                      f"({control.cap_ma:g} mA). Check the needle placement.")
        else:
            self.offer = (control.channel, proposed)
            self._note("patient_feedback", {"channel": control.channel, "feedback": "can't feel it",
                                            "outcome": f"offered {proposed:g} mA"})
        self._refresh()

    def action_accept_offer(self) -> None:
        if self.offer is None:
            return
        channel, proposed = self.offer
        self.offer = None
        to = self._change(self.controls[channel], proposed, None)
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

    def action_finish(self) -> None:
        """End the session: ramp every channel down gently, outputs off, then leave."""
        if self.finishing:
            return
        self.finishing = True
        for control in self.controls.values():
            control.cancel()
        if self.stim.tripped:
            self.exit()
            return
        self._say("ending: ramping every channel down…")
        self.run_worker(self._wind_down, thread=True, exclusive=True, group="finish")

    def _wind_down(self) -> None:
        try:
            for ch in self.order:
                if self.stim.setting(ch) is not None and not self.stim.tripped:
                    self.stim.ramp(ch, 0.0)
            if not self.stim.tripped:
                self.stim.safe_off()
        except (SafetyError, EstimError) as exc:
            self._events.put(Notice(None, f"ending the session: {exc}"))
        self.call_from_thread(self.exit)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "stop":
            self.action_stop()

    # --- helpers --------------------------------------------------------------------

    def _pick(self, channel: int) -> None:
        self.selected = channel
        self._refresh()

    def _change(self, control: ChannelControl, amplitude_ma: float, verb: str | None) -> float | None:
        if self.stim.tripped:
            self._say(f"stopped: {self.stim.tripped}. Nothing is sent until a new session.")
            return None
        try:
            to = control.set_target(amplitude_ma)
        except (SafetyError, EstimError) as exc:
            self._say(f"channel {control.channel}: {exc}")
            return None
        if verb is not None:
            self._note("intensity", {"channel": control.channel, "action": verb, "target_ma": to})
            if to >= control.cap_ma and verb == "raise":
                self._say(f"channel {control.channel}: at {control.cap_why} ({control.cap_ma:g} mA)")
        self._refresh()
        return to

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
        for control in self.controls.values():
            while not control.errors.empty():
                self._say(control.errors.get())
        self._draw_timer()
        for ch in self.order:
            self._draw_channel(self.query_one(f"#ch{ch}", ChannelPanel))
        offer = self.query_one("#offer", Static)
        offer.update("" if self.offer is None else
                     f"patient can't feel channel {self.offer[0]}: raise to {self.offer[1]:g} mA?  y = yes, n = no")

    def _draw_timer(self) -> None:
        remaining = max(0.0, self.stim.interlock.session_remaining_s())
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        if self.stim.tripped:
            state = f"STOPPED — {self.stim.tripped}"
        elif self.stim.interlock.session_expired():
            state = "session time over: outputs ramped down and off"
        elif self.stim.enabled():
            state = "stimulating"
        else:
            state = "outputs off"
        self.query_one("#timer", Static).update(f"session time left {minutes:02d}:{seconds:02d}   {state}")

    def _draw_channel(self, panel: ChannelPanel) -> None:
        ch = panel.channel
        control = self.controls[ch]
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
        wave = control.waveform if setting is None else setting
        marker = "▶ " if ch == self.selected else "  "
        status = "ON" if enabled else "off"
        ramp = f" → {control.target_ma:.2f}" if control.ramping() else ""
        panel.query_one(f"#ch{ch}-text", Static).update(
            f"{marker}channel {ch}  [{status}]\n"
            f"set      {(applied.amplitude_ma if applied else 0):.2f} mA{ramp}  (cap {control.cap_ma:g})\n"
            f"device   {measured}\n"
            f"rate     {wave.frequency_hz:g} Hz   phase {wave.pulse_width_us:g} µs  {wave.shape.name.lower()}\n"
            f"load     {load}\n"
            f"charge   {charge}")
        panel.query_one(f"#ch{ch}-amp", Sparkline).data = list(panel.intensity)
        panel.query_one(f"#ch{ch}-load", Sparkline).data = list(panel.load)
        panel.set_class(ch == self.selected, "selected")
        panel.set_class(bool(self.stim.tripped), "stopped")
