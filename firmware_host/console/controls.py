"""What the console's keys move: one fixed waveform per channel raised and lowered by hand
(`ChannelControl`), or a program or preset streamed by the engine and adjusted while it runs
(`ProgramControl`). Both only choose targets; the session's Stimulator and its interlock decide
what reaches the device.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from safety import ChannelSetting, SafetyError

from ..errors import EstimError
from ..stimulator import REPLY_TIMEOUT_S, Stimulator
from ..waveforms.adjust import Adjust, plain_rule


class ChannelControl:
    """Intensity changes for one channel: raises ramp on a thread (cancelled by anything
    newer), decreases are sent at once unless gentle (a pause ramps down)."""

    def __init__(self, stim: Stimulator, waveform: ChannelSetting) -> None:
        self.stim = stim
        self.channel = waveform.channel
        self.waveform = waveform.with_amplitude(0)
        # the most this waveform may reach here: the prescription's cap, every static rule and the
        # patient's envelope (their ceiling from today's thresholds), as the interlock will judge
        self.cap_ma, above = stim.interlock.highest_allowed(self.waveform)
        self.cap_why = "the prescription's cap" if above is None else plain_rule(above)
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

    def set_target(self, amplitude_ma: float, gentle: bool = False) -> float:
        """Move toward `amplitude_ma` (clamped to 0..cap); returns the target taken. A decrease
        goes at once, or with `gentle` at the ramp rate."""
        target = round(min(max(amplitude_ma, 0.0), self.cap_ma), 3)
        self.cancel()
        self.target_ma = target
        if target <= self.applied_ma and not gentle:
            self.stim.set_amplitude(self.channel, target)
            return target
        if target > self.applied_ma and self.channel not in self.stim.enabled():
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


class ProgramControl:
    """A program or preset run by the engine on a worker thread; the keys scale each channel's
    intensity, pause it and end it early through an `Adjust` (the engine and the interlock
    keep every frame within the rules)."""

    def __init__(self, stim: Stimulator, program: Any, step_ma: float) -> None:
        self.stim, self.program = stim, program
        self.adjust = Adjust.for_run(stim.interlock, program, step_ma)
        self.report: Any = None
        self.started_at: float | None = None
        self.errors: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def remaining_s(self) -> float:
        """The program's time left (all of it before the start)."""
        if self.started_at is None:
            return self.program.duration_s
        return max(0.0, self.program.duration_s - (time.monotonic() - self.started_at))

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="console-program", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        from ..waveforms.engine import run_program

        try:
            self.report = run_program(self.stim, self.program, adjust=self.adjust)
        except (SafetyError, EstimError) as exc:
            if not self.stim.tripped:
                self.stim.estop(f"the program could not go on: {exc}")
            self.errors.put(f"the program stopped: {exc}")
