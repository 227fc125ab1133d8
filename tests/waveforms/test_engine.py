"""The streaming engine against the in-process simulated device.

Acceleration: the device, the interlock's ramp rule and the device's slew check run on
real time, so only the engine's schedule is accelerated, and only once no amplitude is
rising: `Schedule` sleeps for real while any channel is still ramping in (the engine's
rate limiting works against real time), then jumps its virtual time on every sleep, so
the rest of an hour of frequency and phase changes at constant intensity streams as fast
as the device acknowledges. Each jump is logged so device-side times (the interlock's
ACK history, in real time) map back to program time.
"""

from __future__ import annotations

import bisect
import threading
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest

import firmware_host as fh
from firmware_host.waveforms.engine import Update, run_program
from safety import ChannelSetting
from waveforms.waveform_programs import SIM_DEVICE, dense_disperse_spec, program

CHANNELS = (1, 2, 3, 4)


def open_for(prog):  # type: ignore[no-untyped-def]
    """The in-process simulator, its watchdog at 2 s: these tests are about the schedule, and a
    test process starved for 300 ms on a loaded CI machine would trip the default one."""
    setup = prog.session_setup(SIM_DEVICE)
    return fh.open("sim://?watchdog_ms=2000", prescription=setup.prescription, placements=setup.placements, needles=setup.needles)


def acknowledged(stim) -> list[tuple[float, ChannelSetting]]:  # type: ignore[no-untyped-def]
    """Log each setting the device acknowledged (apply returns after the ACK), real time."""
    log: list[tuple[float, ChannelSetting]] = []
    send = stim.apply

    def apply(setting: ChannelSetting) -> None:
        send(setting)
        log.append((time.monotonic(), setting))

    stim.apply = apply
    return log


class Schedule:
    """Real time until `ready()`; then virtual time that jumps on each sleep."""

    def __init__(self, ready) -> None:  # type: ignore[no-untyped-def]
        self.ready = ready
        self.t = 0.0
        self.jumps_real: list[float] = []
        self.jumps_virtual: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        if not self.ready():
            time.sleep(dt)
        self.t += dt
        self.jumps_real.append(time.monotonic())
        self.jumps_virtual.append(self.t)

    def virtual(self, real_s: float) -> float:
        i = bisect.bisect_right(self.jumps_real, real_s) - 1
        return self.jumps_virtual[i] if i >= 0 else 0.0


class RampedIn:
    """Both dense and disperse were delivered at the programmed 1 mA on every channel: the
    ramp-in is over (the first switch to the more intense waveform is itself ramped)."""

    def __init__(self, history) -> None:  # type: ignore[no-untyped-def]
        self.history, self.seen, self.done = history, 0, False
        self.full: dict[int, set[float]] = {ch: set() for ch in CHANNELS}

    def channel(self, setting: ChannelSetting) -> bool:
        if setting.amplitude_ua == 1000:
            self.full[setting.channel].add(setting.frequency_hz)
        return len(self.full[setting.channel]) == 2

    def __call__(self) -> bool:
        while not self.done and self.seen < len(self.history):
            self.channel(self.history[self.seen][1])
            self.seen += 1
            self.done = all(len(f) == 2 for f in self.full.values())
        return self.done


def test_an_hour_of_four_channels_reaches_the_device_on_schedule() -> None:
    prog = program(60.0, {ch: dense_disperse_spec(1.0) for ch in CHANNELS})
    with open_for(prog) as stim:
        history = acknowledged(stim)
        schedule = Schedule(RampedIn(history))
        report = run_program(stim, prog, clock=schedule, sleep=schedule.sleep)
        assert stim.tripped is None and stim.enabled() == frozenset()
    assert report.completed and report.program_updates == 4 * 1200
    seg = prog.to_arrays(0.1)
    checked = 0
    ramp = RampedIn(history)
    for real_s, s in history:
        ramped_before = len(ramp.full[s.channel]) == 2
        ramp.channel(s)
        if not ramped_before:
            continue  # configuring, ramping in (rate-limited, its last step included)
        if s.amplitude_ua != 1000:
            continue  # ramping down at the end
        t = schedule.virtual(real_s)
        row = np.flatnonzero((seg.channel == s.channel) & (seg.t_s <= t + 1e-9))[-1]
        programmed = ChannelSetting(s.channel, s.shape, float(seg.frequency_hz[row]), float(seg.pulse_width_us[row]),
                                    float(seg.amplitude_ma[row]))
        assert s == programmed
        assert t - seg.t_s[row] <= 0.1  # within one update period of the programmed time
        checked += 1
    assert checked >= 4 * 1190  # every change after the ramp-in


def test_ramp_in_is_rate_limited_never_above_the_program() -> None:
    prog = program(5 / 60, {1: dense_disperse_spec(1.5, phase_s=0.5)})
    updates: list[Update] = []
    with open_for(prog) as stim:
        history = acknowledged(stim)
        report = run_program(stim, prog, on_update=updates.append)
        amplitudes = [s.amplitude_ma for _, s in history]
    assert report.completed and report.rate_limited > 0
    assert max(amplitudes) == 1.5 and all(np.diff(amplitudes[: amplitudes.index(1.5) + 1]) <= 1.0)
    assert [u.planned_s for u in updates] == sorted(u.planned_s for u in updates)


def test_engine_stops_when_the_session_trips() -> None:
    prog = program(60.0, {ch: dense_disperse_spec(1.0, phase_s=0.5) for ch in (1, 2)})
    with open_for(prog) as stim:
        threading.Timer(1.0, stim.estop).start()
        report = run_program(stim, prog)
        assert stim.enabled() == frozenset()
    assert not report.completed and "e-stop" in (report.stop_reason or "")
    assert report.elapsed_s < prog.duration_s


def test_engine_stops_when_cancelled() -> None:
    prog = program(60.0, {1: dense_disperse_spec(0.5, phase_s=0.2)})
    cancel = threading.Event()
    seen: list[Update] = []

    def on_update(update: Update) -> None:
        seen.append(update)
        if len(seen) == 5:
            cancel.set()

    with open_for(prog) as stim:
        report = run_program(stim, prog, cancel=cancel, on_update=on_update)
        assert stim.enabled() == frozenset() and stim.setting(1).amplitude_ua == 0
    assert report.stop_reason == "cancelled" and len(seen) == 5


@dataclass
class _Limits:
    ramp_ma_per_s: float = 1.0
    max_step_ma: float = 1.0


class _Interlock:
    def limits(self, channel: int) -> _Limits:
        return _Limits()

    def highest_amplitude_now(self, waveform: ChannelSetting) -> float:
        return waveform.amplitude_ma


class FakeStim:
    """Keeps only the current setting per channel: measures the engine, not the device."""

    tripped = None
    interlock = _Interlock()

    def __init__(self) -> None:
        self.settings: dict[int, ChannelSetting] = {}

    def setting(self, channel: int) -> ChannelSetting | None:
        return self.settings.get(channel)

    def apply(self, setting: ChannelSetting) -> None:
        self.settings[setting.channel] = setting

    def enable(self, *channels: int) -> None:
        pass

    def safe_off(self) -> None:
        self.settings = {ch: s.with_amplitude(0) for ch, s in self.settings.items()}


def peak_bytes(minutes: float) -> int:
    prog = program(minutes, {ch: dense_disperse_spec(1.0, modulation={"period_s": 20.0, "depth": 0.1}) for ch in CHANNELS})
    clock = Schedule(lambda: True)
    clock.sleep = lambda dt: setattr(clock, "t", clock.t + dt)  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        report = run_program(FakeStim(), prog, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.completed
    return peak


def test_memory_does_not_grow_with_session_length() -> None:
    short, long = peak_bytes(1.0), peak_bytes(6.0)
    assert long < 1.3 * short + 100_000, (short, long)


def test_a_raise_while_a_program_runs_stops_at_the_highest_every_rule_allows_on_every_waveform() -> None:
    """The room's ↑ during a dense-disperse preset: each waveform is judged at its own peak by the
    interlock's `highest_allowed` (the patient's ceiling here, 0.9 x tolerance on each phase), and
    the channel's level never passes the lowest of them; ↓ never goes below 0 mA."""
    from firmware_host.waveforms import Mechanism, Needle, Site, preset_program
    from firmware_host.waveforms.adjust import Adjust
    from safety import Interlock
    from support import envelope_for

    needle = Needle(diameter_mm=0.3, length_mm=40, inserted_mm=25, site_a=Site(region="lower_leg", side="left"),
                    site_b=Site(region="lower_leg", side="left"))
    unresolved = preset_program(Mechanism.DESCENDING_MODULATION, {1: needle}, "typical", 10)
    dosed, envelope, _ = unresolved.dose(envelope_for(unresolved, {"sensory": 0.5, "motor": 1.0, "tolerance": 3.0}))
    interlock = Interlock(dosed.session_setup(SIM_DEVICE, envelope))
    adjust = Adjust.for_run(interlock, dosed, step_ma=0.2)
    room = adjust.headroom[1]
    assert room.peak_ma == 2.25 and room.highest_ma == 2.7 and "ceiling" in room.why   # 0.75 / 0.9 x tolerance 3
    for _ in range(10):
        adjust.change(1, 0.2)
    assert adjust.level(1) == 2.7 and adjust.at_most(1) and adjust.factor(1) == pytest.approx(1.2)
    for _ in range(20):
        adjust.change(1, -0.2)
    assert adjust.level(1) == 0.0
    assert adjust.pause() and adjust.paused and not adjust.pause()
