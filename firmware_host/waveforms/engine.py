"""Run a resolved program on a device, on time, through the interlock.

Each update has an absolute deadline (session start + its program time), so a slow
reply, a retransmission or lost telemetry delays one update and never shifts the ones
after it. The merged settings generator is consumed one item at a time and only
O(channels) state is kept, so memory does not grow with the session's length.

The interlock refuses an increase (of amplitude, charge per phase or r.m.s. current)
faster than the ramp rate or larger than the device step; the engine never asks for one:
it sends each programmed setting capped at the highest amplitude the interlock accepts for
that waveform now (`Interlock.highest_amplitude_now`) and keeps stepping toward the
programmed amplitude between updates. `estim check` predicts the same capping, so a
program that passes it without rate-limit warnings is delivered as written.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from safety.dynamic import RAMP_TICK_S
from safety.settings import ChannelSetting

from .check import UPDATE_PERIOD_S
from .program import Program

if TYPE_CHECKING:
    from ..stimulator import Stimulator

POLL_S = 0.02
"""Longest wait between checks for a stop or a due ramp step (schedule clock)."""

RESERVOIR = 2048
"""Lateness samples kept for the quantiles: bounded whatever the session length."""


@dataclass(frozen=True, slots=True)
class Update:
    """A programmed setting as sent: planned and actual send times on the schedule clock,
    both relative to the session start; `rate_limited` when the amplitude was capped."""

    planned_s: float
    sent_s: float
    setting: ChannelSetting
    rate_limited: bool


class Lateness:
    """Send lateness (actual - planned) as count, max and a uniform reservoir sample."""

    def __init__(self, size: int = RESERVOIR, seed: int = 0) -> None:
        self._size = size
        self._rng = random.Random(seed)
        self._sample: list[float] = []
        self.count = 0
        self.max_s = 0.0

    def add(self, late_s: float) -> None:
        self.count += 1
        self.max_s = max(self.max_s, late_s)
        if len(self._sample) < self._size:
            self._sample.append(late_s)
        else:
            j = self._rng.randrange(self.count)
            if j < self._size:
                self._sample[j] = late_s

    def quantile(self, q: float) -> float:
        if not self._sample:
            return 0.0
        ordered = sorted(self._sample)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class EngineReport:
    completed: bool
    stop_reason: str | None
    program_updates: int     # settings taken from the program
    sent: int                # SET_CHANNEL commands sent (program updates and ramp steps)
    skipped: int             # program updates equal to the channel's current setting
    rate_limited: int        # sends whose amplitude the ramp/step rules capped
    late_p50_s: float
    late_p99_s: float
    late_max_s: float
    elapsed_s: float         # schedule clock, session start to the end of the program or the stop


class _Stopped(Exception):
    """Raised inside the run when the session trips or the caller cancels."""


class _Run:
    def __init__(self, stim: Stimulator, clock: Callable[[], float], sleep: Callable[[float], None],
                 cancel: threading.Event | None, on_update: Callable[[Update], None] | None) -> None:
        self.stim, self.clock, self.sleep, self.cancel = stim, clock, sleep, cancel
        self.on_update = on_update
        self.target: dict[int, ChannelSetting] = {}
        self.lateness = Lateness()
        self.program_updates = self.sent = self.skipped = self.rate_limited = 0
        self.start = 0.0

    def stop_reason(self) -> str | None:
        if self.stim.tripped:
            return f"session stopped: {self.stim.tripped}"
        if self.cancel is not None and self.cancel.is_set():
            return "cancelled"
        return None

    def wait_until(self, deadline: float) -> None:
        """Sleep to an absolute deadline, stepping ramps and watching for a stop meanwhile."""
        while True:
            if self.stop_reason():
                raise _Stopped
            self.step_ramps()
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self.sleep(min(remaining, POLL_S))

    def toward(self, channel: int, goal: ChannelSetting) -> ChannelSetting:
        """`goal` with its amplitude capped at what the interlock accepts for its waveform now
        (whole µA, a multiple of the recovery ratio, so the cap never creates a residual)."""
        current = self.stim.setting(channel)
        cap_ma = self.stim.interlock.highest_amplitude_now(goal)
        if goal.amplitude_ma <= cap_ma:
            return goal
        if current is not None and current.same_waveform(goal) and cap_ma <= current.amplitude_ma:
            return current  # nothing more allowed yet: stay where the channel is
        return goal.with_amplitude(cap_ma)

    def send(self, setting: ChannelSetting) -> bool:
        """Send unless equal to what the channel has; True when sent."""
        if setting == self.stim.setting(setting.channel):
            return False
        self.stim.apply(setting)
        self.sent += 1
        return True

    def step_ramps(self) -> None:
        """Move every channel still below its programmed amplitude one allowed step closer,
        once a full ramp tick (or the whole remaining gap) is allowed."""
        for channel, goal in self.target.items():
            current = self.stim.setting(channel)
            if current is None or goal.amplitude_ua <= current.amplitude_ua:
                continue
            limits = self.stim.interlock.limits(channel)
            tick_ma = min(limits.max_step_ma, limits.ramp_ma_per_s * RAMP_TICK_S)
            gap_ma = (goal.amplitude_ua - current.amplitude_ua) / 1000
            if self.stim.interlock.highest_amplitude_now(goal) - current.amplitude_ma >= min(tick_ma, gap_ma) - 1e-9:
                capped = self.toward(channel, goal)
                if self.send(capped) and capped != goal:
                    self.rate_limited += 1

    def program_update(self, planned_s: float, goal: ChannelSetting) -> None:
        self.program_updates += 1
        self.target[goal.channel] = goal
        sent_s = self.clock() - self.start
        setting = self.toward(goal.channel, goal)
        limited = setting != goal
        if not self.send(setting):  # equal to the current setting: nothing to send
            self.rate_limited += limited
            self.skipped += not limited
            return
        self.rate_limited += limited
        self.lateness.add(sent_s - planned_s)
        if self.on_update is not None:
            self.on_update(Update(planned_s, sent_s, setting, limited))

    def ramp_down(self, period_s: float) -> None:
        """End of program: every channel down at its ramp rate together (comfort; a stop
        never ramps), paced by the schedule clock."""
        self.target = {ch: goal.with_amplitude(0.0) for ch, goal in self.target.items()}
        deadline = self.clock()
        while True:
            lowered = False
            for channel in self.target:
                current = self.stim.setting(channel)
                if current is None or current.amplitude_ua == 0:
                    continue
                step_ua = max(1, int(self.stim.interlock.limits(channel).ramp_ma_per_s * period_s * 1000))
                self.send(current.with_amplitude(max(0, current.amplitude_ua - step_ua) / 1000))
                lowered = True
            if not lowered:
                return
            deadline += period_s
            self.wait_until(deadline)


def run_program(
    stim: Stimulator,
    program: Program,
    *,
    update_period_s: float = UPDATE_PERIOD_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
    on_update: Callable[[Update], None] | None = None,
) -> EngineReport:
    """Stream a resolved program to `stim`: configure at 0 mA, enable, send every setting at
    its deadline, ramp down, `safe_off()`. Returns early (outputs off) when the session
    trips or `cancel` is set; any other error leaves the device safe and propagates."""
    run = _Run(stim, clock, sleep, cancel, on_update)
    stream = iter(program.settings(update_period_s))
    channels = sorted(program.needles)
    head = []
    for item in stream:  # every channel's first setting is at t = 0, so these come first
        head.append(item)
        if len(head) == len(channels):
            break
    reason: str | None = None
    try:
        for item in head:
            run.send(item.channel_setting().with_amplitude(0.0))
        stim.enable(*channels)
        run.start = clock()
        for item in chain(head, stream):
            run.wait_until(run.start + item.t_s)
            run.program_update(item.t_s, item.channel_setting())
        run.wait_until(run.start + program.duration_s)
        end_s = clock() - run.start
        run.ramp_down(update_period_s)
        stim.safe_off()
    except _Stopped:
        end_s = clock() - run.start
        reason = run.stop_reason()
        stim.safe_off()
    except BaseException:
        if stim.tripped is None:
            stim.safe_off()
        raise
    return EngineReport(
        completed=reason is None, stop_reason=reason, program_updates=run.program_updates, sent=run.sent,
        skipped=run.skipped, rate_limited=run.rate_limited, late_p50_s=run.lateness.quantile(0.5),
        late_p99_s=run.lateness.quantile(0.99), late_max_s=run.lateness.max_s, elapsed_s=end_s,
    )
