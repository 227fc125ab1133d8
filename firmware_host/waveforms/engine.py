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

While it runs, an `Adjust` (keys in the treatment room) may scale each channel's intensity,
pause (every channel down at its ramp rate, held at 0 mA, back up at the ramp rate) or end
early (down at the ramp rate, then outputs off); every frame still goes through the interlock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from itertools import chain
from typing import TYPE_CHECKING

from safety.dynamic import RAMP_TICK_S
from safety.settings import ChannelSetting

from .adjust import Adjust, Schedule
from .check import UPDATE_PERIOD_S
from .patterns import Continuous, Segments, Setting, TimedSetting, merge

if TYPE_CHECKING:
    from ..stimulator import Stimulator

POLL_S = 0.02
"""Longest wait between checks for a stop or a due ramp step (schedule clock)."""

RESERVOIR = 2048
"""Lateness samples kept for the quantiles: bounded whatever the session length."""


ENDED_BY_OPERATOR = "ended early by the operator"


@dataclass(frozen=True)
class Steady:
    """One waveform held on each channel for `duration_s` (a direct run): the engine brings it in
    at the prescribed ramp rate, the hold lasts to the end, then it ramps down."""

    waveforms: Mapping[int, ChannelSetting]
    duration_s: float
    name: str = "direct parameters"

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(sorted(self.waveforms))

    def _patterns(self) -> dict[int, Continuous]:
        return {ch: Continuous(Setting(**{f.name: getattr(w, f.name) for f in fields(Setting)}))
                for ch, w in self.waveforms.items()}

    def settings(self, update_period_s: float) -> Iterator[TimedSetting]:
        return merge(*(p.settings(ch, self.duration_s, update_period_s) for ch, p in self._patterns().items()))

    def to_arrays(self, update_period_s: float) -> Segments:
        return Segments.concatenate(p.to_arrays(self.duration_s, update_period_s, ch)
                                    for ch, p in self._patterns().items())


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

    @property
    def ended_by_operator(self) -> bool:
        return self.stop_reason == ENDED_BY_OPERATOR


class _Stopped(Exception):
    """Raised inside the run when the session trips, the caller cancels or the operator's early
    end has brought every channel down to 0 mA."""


class _Run:
    def __init__(self, stim: Stimulator, clock: Callable[[], float], sleep: Callable[[float], None],
                 cancel: threading.Event | None, on_update: Callable[[Update], None] | None,
                 adjust: Adjust | None, update_period_s: float) -> None:
        self.stim, self.clock, self.sleep, self.cancel = stim, clock, sleep, cancel
        self.on_update, self.adjust, self.period_s = on_update, adjust, update_period_s
        self.goal: dict[int, ChannelSetting] = {}     # as programmed
        self.target: dict[int, ChannelSetting] = {}   # as adjusted: what the channel moves toward
        self.descent: dict[int, tuple[float, float]] = {}  # paused or ending: (level mA, since) per channel
        self.winding_down = False
        self.lateness = Lateness()
        self.program_updates = self.sent = self.skipped = self.rate_limited = 0
        self.start = 0.0

    def stop_reason(self) -> str | None:
        if self.stim.tripped:
            return f"session stopped: {self.stim.tripped}"
        if self.cancel is not None and self.cancel.is_set():
            return "cancelled"
        if self.adjust is not None and self.adjust.ended and self.descent and all(
                level <= 0 for level, _ in self.descent.values()) and not any(
                (s := self.stim.setting(ch)) is not None and s.amplitude_ua for ch in self.goal):
            return ENDED_BY_OPERATOR
        return None

    def wait_until(self, deadline: float) -> None:
        """Sleep to an absolute deadline, following the operator's adjustments, stepping ramps
        and watching for a stop meanwhile."""
        while True:
            self.follow_adjust()
            if self.stop_reason():
                raise _Stopped
            self.step_ramps()
            remaining = deadline - self.clock()
            if remaining <= 0:
                return
            self.sleep(min(remaining, POLL_S))

    def adjusted(self, goal: ChannelSetting) -> ChannelSetting:
        """The programmed `goal` as the operator has scaled it, and while paused or ending no
        higher than the channel's descending level."""
        if self.adjust is None:
            return goal
        ch, asym = goal.channel, goal.asym_ratio
        ua = int(goal.amplitude_ua * self.adjust.factor(ch) + 1e-6)
        if ch in self.descent:
            ua = min(ua, int(self.descent[ch][0] * 1000 + 1e-6))
        return goal.with_amplitude(ua // asym * asym / 1000)

    def follow_adjust(self) -> None:
        """Bring every channel's target to the operator's latest choice; a lower target is sent at
        once (a pause or an end lowers it one ramp step per update period)."""
        if self.adjust is None or self.winding_down:
            return
        now = self.clock()
        if self.adjust.paused or self.adjust.ended:
            for ch in self.goal:
                current = self.stim.setting(ch)
                level = current.amplitude_ma if current is not None else 0.0
                if ch not in self.descent:
                    self.descent[ch] = (level, now)
                elif now - self.descent[ch][1] >= self.period_s:
                    rate = self.stim.interlock.limits(ch).ramp_ma_per_s
                    self.descent[ch] = (max(0.0, min(level, self.descent[ch][0]) - rate * self.period_s), now)
        else:
            self.descent.clear()
        for ch, goal in self.goal.items():
            self.target[ch] = target = self.adjusted(goal)
            current = self.stim.setting(ch)
            if current is not None and current.same_waveform(target) and target.amplitude_ua < current.amplitude_ua:
                self.send(target)

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

    def program_update(self, planned_s: float, programmed: ChannelSetting) -> None:
        self.program_updates += 1
        self.goal[programmed.channel] = programmed
        self.target[programmed.channel] = goal = self.adjusted(programmed)
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
        self.winding_down = True
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
    program: Schedule,
    *,
    update_period_s: float = UPDATE_PERIOD_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    cancel: threading.Event | None = None,
    on_update: Callable[[Update], None] | None = None,
    adjust: Adjust | None = None,
) -> EngineReport:
    """Stream a resolved program (or a `Steady` hold) to `stim`: configure at 0 mA, enable,
    send every setting at its deadline, ramp down, `safe_off()`. Returns early (outputs off)
    when the session trips, `cancel` is set or `adjust` ends it (after ramping down); any other
    error leaves the device safe and propagates (an interrupt propagates at once, to the e-stop
    of the session it unwinds)."""
    run = _Run(stim, clock, sleep, cancel, on_update, adjust, update_period_s)
    stream = iter(program.settings(update_period_s))  # type: ignore[attr-defined]
    channels = list(program.channels)
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
    except Exception:
        if stim.tripped is None:
            stim.safe_off()
        raise  # Ctrl-C and SIGTERM go straight on to the session's e-stop: nothing is sent before it
    return EngineReport(
        completed=reason is None, stop_reason=reason, program_updates=run.program_updates, sent=run.sent,
        skipped=run.skipped, rate_limited=run.rate_limited, late_p50_s=run.lateness.quantile(0.5),
        late_p99_s=run.lateness.quantile(0.99), late_max_s=run.lateness.max_s, elapsed_s=end_s,
    )
