"""What the clinician changes while a program runs, for accommodation or discomfort: each
channel's intensity lowered or raised from the dose, a pause (down to 0 mA at the ramp rate,
then back up at the ramp rate when resumed, within the session's time) and an early end.

Each channel's level is its peak in mA; the engine scales every programmed intensity of the
channel by level / programmed peak, so a modulated or stepped program keeps its shape. A raise
never goes above the highest peak that every static rule and the patient's envelope allow on
every waveform the channel uses (`Headroom`, found once before the run from the interlock's
`highest_allowed`); the interlock still judges every frame the engine sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from safety.settings import ChannelSetting, Shape

if TYPE_CHECKING:
    from safety import Interlock

    from .patterns import Segments, TimedSetting

UPDATE_PERIOD_S = 0.1  # the grid the peaks are found on (as `check`)


class Schedule(Protocol):
    """What the engine streams: a resolved Program, or a fixed waveform held (`engine.Steady`)."""

    @property
    def channels(self) -> tuple[int, ...]: ...

    @property
    def duration_s(self) -> float: ...

    def settings(self, update_period_s: float) -> Iterator[TimedSetting]: ...

    def to_arrays(self, update_period_s: float) -> Segments: ...


@dataclass(frozen=True)
class Headroom:
    """A channel's programmed peak, the highest peak every rule allows it, and what holds it there."""

    peak_ma: float
    highest_ma: float
    why: str


class Adjust:
    """Thread-safe: keys change it (any thread), the engine reads it on every poll."""

    def __init__(self, headroom: Mapping[int, Headroom], step_ma: float = 0.2) -> None:
        self.headroom = dict(headroom)
        self.step_ma = step_ma
        self._lock = threading.Lock()
        self._level = {ch: h.peak_ma for ch, h in self.headroom.items()}
        self._paused = False
        self._ended = False

    @classmethod
    def for_run(cls, interlock: Interlock, schedule: Schedule, step_ma: float = 0.2) -> Adjust:
        """Each channel's headroom over every waveform of `schedule`, as `interlock` judges it."""
        return cls(headroom(interlock, schedule), step_ma)

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(sorted(self.headroom))

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def ended(self) -> bool:
        return self._ended

    def level(self, channel: int) -> float:
        """The channel's peak as now chosen, in mA."""
        return self._level[channel]

    def change(self, channel: int, delta_ma: float) -> float:
        """Move the channel's peak by `delta_ma`, within 0 and its headroom; the new peak."""
        with self._lock:
            room = self.headroom[channel]
            level = round(min(max(self._level[channel] + delta_ma, 0.0), room.highest_ma), 3)
            self._level[channel] = level
            return level

    def factor(self, channel: int) -> float:
        """What the engine multiplies the programmed intensity by, before a pause or an end."""
        peak = self.headroom[channel].peak_ma
        return self._level[channel] / peak if peak > 0 else 0.0

    def pause(self) -> bool:
        """Pause, or resume a pause; True when now paused."""
        with self._lock:
            self._paused = not self._paused and not self._ended
            return self._paused

    def end(self) -> None:
        """End early: every channel ramps down, then the outputs go off."""
        with self._lock:
            self._ended = True

    def at_most(self, channel: int) -> bool:
        return self._level[channel] >= self.headroom[channel].highest_ma - 1e-9


def headroom(interlock: Interlock, schedule: Schedule) -> dict[int, Headroom]:
    """Per channel: the programmed peak, and the highest peak for which every frame (each waveform
    at its own programmed peak, scaled alike) stays within what `interlock.highest_allowed` says."""
    seg = schedule.to_arrays(UPDATE_PERIOD_S)
    out = {}
    for ch in schedule.channels:
        rows = np.flatnonzero(seg.channel == ch)
        peak = float(seg.amplitude_ma[rows].max()) if len(rows) else 0.0
        factor, why = np.inf, "the prescription's cap"
        columns = np.stack([seg.shape[rows], seg.frequency_hz[rows], seg.pulse_width_us[rows], seg.asym_ratio[rows],
                            seg.interphase_us[rows], seg.burst_pulses[rows], seg.burst_rate_hz[rows]], axis=1)
        for wave in np.unique(columns, axis=0):
            on_wave = rows[np.all(columns == wave, axis=1)]
            wave_peak = float(seg.amplitude_ma[on_wave].max())
            if wave_peak <= 0:
                continue
            setting = ChannelSetting(ch, Shape(int(wave[0])), float(wave[1]), float(wave[2]), 0.0, int(wave[3]),
                                     float(wave[4]), int(wave[5]), float(wave[6]))
            highest, stopper = interlock.highest_allowed(setting)
            if highest / wave_peak < factor:
                factor = highest / wave_peak
                why = "the prescription's cap" if stopper is None else plain_rule(stopper)
        if not np.isfinite(factor):
            out[ch] = Headroom(peak, peak, why)
        else:  # below 1 only for a dose `check` refuses: then no raise at all
            out[ch] = Headroom(peak, max(peak, _floor_ua(peak * factor)) if factor >= 1 else _floor_ua(peak * factor), why)
    return out


def plain_rule(refusal: Exception) -> str:
    """What stops a raise, in the clinician's words (the patient's ceiling, or a safety rule)."""
    rule = getattr(refusal, "rule", "") or ""
    if rule.startswith("envelope."):
        return "this patient's ceiling from today's thresholds"
    if rule.startswith("needle."):
        return "the charge-density limit at these needles (--inserted, --needle)"
    return "the most the safety rules allow here"


def _floor_ua(ma: float) -> float:
    return int(ma * 1000 + 1e-6) / 1000
