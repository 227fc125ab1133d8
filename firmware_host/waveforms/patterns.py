"""Stimulation patterns: piecewise-constant settings over time, as lazy generators or arrays.

A pattern is a carrier (what the device is set to) optionally wrapped by modifiers that
change one parameter over time. Every pattern answers two vectorised questions — where
may the parameters change (`breakpoints`) and what are they over a segment (`values`) —
so the lazy generator and the array form are the same computation on different windows:
the generator walks fixed windows (constant memory whatever the session length) and the
array form evaluates one window (milliseconds for an hour of four channels).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from safety.settings import ChannelSetting, Shape

from .shapes import Pulse

PARAMS = (
    "shape", "frequency_hz", "pulse_width_us", "amplitude_ma",
    "asym_ratio", "interphase_us", "burst_pulses", "burst_rate_hz",
)
"""Per-segment parameters; names match `safety.settings.ChannelSetting`."""

_INTEGER_PARAMS = ("shape", "asym_ratio", "burst_pulses")
_TIME_DECIMALS = 9  # breakpoints are snapped to 1 ns so k×period from two sources coincide
_WINDOW_UPDATES = 256  # update periods per generator window


@dataclass(frozen=True, slots=True)
class Setting:
    """What one channel is set to: `safety.settings.ChannelSetting` without the channel."""

    shape: Shape
    frequency_hz: float
    pulse_width_us: float
    amplitude_ma: float
    asym_ratio: int = 1
    interphase_us: float = 0.0
    burst_pulses: int = 0
    burst_rate_hz: float = 0.0

    @property
    def pulse(self) -> Pulse:
        return Pulse(self.shape, self.pulse_width_us, self.amplitude_ma, self.asym_ratio, self.interphase_us)


class TimedSetting(NamedTuple):
    """A setting that takes effect on `channel` (1-based) at `t_s` and holds until the next."""

    t_s: float
    channel: int
    shape: Shape
    frequency_hz: float
    pulse_width_us: float
    amplitude_ma: float
    asym_ratio: int
    interphase_us: float
    burst_pulses: int
    burst_rate_hz: float

    @property
    def setting(self) -> Setting:
        return Setting(*self[2:])

    def channel_setting(self) -> ChannelSetting:
        """What the interlock approves and the device receives (values are on the device grid)."""
        return ChannelSetting(self.channel, *self[2:])


Columns = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Segments:
    """Piecewise-constant settings as arrays: row i holds over [t_s[i], t_end_s[i]) on channel[i].

    `shape` holds `safety.settings.Shape` values; every column is on the device grid
    (see `_quantise`), so these arrays are exactly what would be sent.
    """

    t_s: np.ndarray
    t_end_s: np.ndarray
    channel: np.ndarray
    shape: np.ndarray
    frequency_hz: np.ndarray
    pulse_width_us: np.ndarray
    amplitude_ma: np.ndarray
    asym_ratio: np.ndarray
    interphase_us: np.ndarray
    burst_pulses: np.ndarray
    burst_rate_hz: np.ndarray

    def __len__(self) -> int:
        return len(self.t_s)

    def rows(self) -> Iterator[TimedSetting]:
        return (self.row(i) for i in range(len(self)))

    def row(self, i: int) -> TimedSetting:
        return TimedSetting(
            float(self.t_s[i]), int(self.channel[i]), Shape(int(self.shape[i])),
            float(self.frequency_hz[i]), float(self.pulse_width_us[i]),
            float(self.amplitude_ma[i]), int(self.asym_ratio[i]),
            float(self.interphase_us[i]), int(self.burst_pulses[i]),
            float(self.burst_rate_hz[i]),
        )

    @staticmethod
    def concatenate(parts: Iterable[Segments]) -> Segments:
        """Join segment tables and order rows by (time, channel)."""
        parts = list(parts)
        joined = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Segments)}
        order = np.lexsort((joined["channel"], joined["t_s"]))
        return Segments(**{name: col[order] for name, col in joined.items()})


def _constant(value: float, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.float64)


def _code(value: object) -> float:
    """A parameter as a float column value (a Shape by its integer value)."""
    return float(value)  # type: ignore[arg-type]


_GRID_STEPS = {"frequency_hz": 1000, "burst_rate_hz": 1000, "pulse_width_us": 1, "interphase_us": 1}
"""Steps per unit of the device grid (1 mHz, 1 µs), as `safety.settings` requires."""


def _quantise(cols: Columns) -> Columns:
    """Put every column on the device grid; amplitudes round down to 1 µA so a modulated or
    ramped amplitude never exceeds the envelope that produced it."""
    for name, steps in _GRID_STEPS.items():
        cols[name] = np.round(cols[name] * steps) / steps
    cols["amplitude_ma"] = np.floor(cols["amplitude_ma"] * 1000 + 1e-6) / 1000
    for name in _INTEGER_PARAMS:
        cols[name] = cols[name].astype(np.int64)
    return cols


def _snap(t: np.ndarray) -> np.ndarray:
    return np.round(t, _TIME_DECIMALS)


def _multiples(step: float, start: float, stop: float, offset: float = 0.0) -> np.ndarray:
    """offset + k·step for every k that lands in [start, stop]."""
    k = np.arange(np.floor((start - offset) / step), np.ceil((stop - offset) / step) + 1)
    return offset + k * step


def _phase(t: np.ndarray, cycle_s: float) -> np.ndarray:
    """Position within a cycle, seconds."""
    return np.mod(t, cycle_s)


class Pattern(ABC):
    """A channel's settings as a function of time since the pattern started."""

    @abstractmethod
    def _changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        """Candidate change times near [start, stop] (unsorted, may repeat or overshoot)."""

    @abstractmethod
    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        """Parameters held over each segment [t0, t1); segments never straddle a breakpoint."""

    def breakpoints(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        """Sorted times strictly inside (start, stop) where the parameters may change."""
        t = _snap(self._changes(start_s, stop_s, update_period_s))
        return np.unique(t[(t > start_s) & (t < stop_s)])

    def _window(self, start_s: float, stop_s: float, update_period_s: float, channel: int) -> Segments:
        start_s, stop_s = round(start_s, _TIME_DECIMALS), round(stop_s, _TIME_DECIMALS)
        inner = self.breakpoints(start_s, stop_s, update_period_s)
        t0 = np.concatenate(([start_s], inner))
        t1 = np.concatenate((inner, [stop_s]))
        cols = _quantise(self.values(t0, t1))
        return Segments(t_s=t0, t_end_s=t1, channel=np.full(len(t0), channel, dtype=np.int64), **cols)

    def to_arrays(self, duration_s: float, update_period_s: float, channel: int = 1) -> Segments:
        """All segments of [0, duration), consecutive equal settings merged."""
        _check_times(duration_s, update_period_s)
        return _merge_repeats(self._window(0.0, duration_s, update_period_s, channel), None)

    def settings(
        self, channel: int, duration_s: float, update_period_s: float, offset_s: float = 0.0
    ) -> Iterator[TimedSetting]:
        """Lazily yield the settings of [0, duration), times shifted by `offset_s`."""
        _check_times(duration_s, update_period_s)
        window_s = update_period_s * _WINDOW_UPDATES
        last: np.ndarray | None = None
        for k in range(int(np.ceil(duration_s / window_s))):
            start_s = k * window_s
            if round(start_s, _TIME_DECIMALS) >= round(duration_s, _TIME_DECIMALS):
                break  # float ceil may add an empty last window
            seg = self._window(start_s, min(start_s + window_s, duration_s), update_period_s, channel)
            seg = _merge_repeats(seg, last)
            if len(seg):
                last = _param_matrix(seg)[-1]
            for row in seg.rows():
                yield row._replace(t_s=row.t_s + offset_s)


def _check_times(duration_s: float, update_period_s: float) -> None:
    if not (np.isfinite(duration_s) and duration_s > 0 and np.isfinite(update_period_s) and update_period_s > 0):
        raise ValueError(f"duration ({duration_s}) and update period ({update_period_s}) must be finite and > 0")


def _param_matrix(seg: Segments) -> np.ndarray:
    return np.column_stack([getattr(seg, name) for name in PARAMS]).astype(np.float64)


def _merge_repeats(seg: Segments, previous: np.ndarray | None) -> Segments:
    """Drop rows equal to the row before (the first compared with `previous`), extending ends."""
    params = _param_matrix(seg)
    if len(params) == 0:
        return seg
    first_changed = previous is None or bool(np.any(params[0] != previous))
    changed = np.concatenate(([first_changed], np.any(params[1:] != params[:-1], axis=1)))
    keep = np.flatnonzero(changed)
    if len(keep) == len(seg):
        return seg
    cols = {f.name: getattr(seg, f.name)[keep] for f in fields(Segments)}
    # A kept row now lasts until the next kept row starts.
    cols["t_end_s"] = np.concatenate((seg.t_s[keep[1:]], seg.t_end_s[-1:]))[: len(keep)]
    return Segments(**cols)


# --- Carriers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Continuous(Pattern):
    """One fixed setting for the whole pattern; with burst fields set, the device bursts."""

    setting: Setting

    def _changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        return np.empty(0)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        return {name: _constant(_code(getattr(self.setting, name)), len(t0)) for name in PARAMS}


def burst(setting: Setting, burst_pulses: int, burst_rate_hz: float) -> Continuous:
    """Bursts of `burst_pulses` pulses at setting.frequency_hz, repeated at `burst_rate_hz`."""
    return Continuous(replace(setting, burst_pulses=burst_pulses, burst_rate_hz=burst_rate_hz))


@dataclass(frozen=True, slots=True)
class DenseDisperse(Pattern):
    """Alternates two settings: `first` for first_s, then `second` for second_s, repeating."""

    first: Setting
    second: Setting
    first_s: float
    second_s: float

    def _changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        cycle = self.first_s + self.second_s
        return np.concatenate((_multiples(cycle, start_s, stop_s), _multiples(cycle, start_s, stop_s, self.first_s)))

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        in_first = _phase((t0 + t1) / 2, self.first_s + self.second_s) < self.first_s
        return {
            name: np.where(in_first, _code(getattr(self.first, name)), _code(getattr(self.second, name))).astype(np.float64)
            for name in PARAMS
        }


# --- Modifiers -----------------------------------------------------------------------


class Modifier(Pattern):
    """Wraps another pattern and changes one parameter over time."""

    inner: Pattern

    def _changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        return np.concatenate(
            (self.inner._changes(start_s, stop_s, update_period_s), self._own_changes(start_s, stop_s, update_period_s))
        )

    @abstractmethod
    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class Intermittent(Modifier):
    """On for on_s, off (amplitude 0) for off_s, repeating — rest periods against fatigue.

    Each on-phase may ramp up over ramp_up_s and down over ramp_down_s (a contraction's
    ramps on a stimulator), stepped each update period and never above the envelope."""

    inner: Pattern
    on_s: float
    off_s: float
    ramp_up_s: float = 0.0
    ramp_down_s: float = 0.0

    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        cycle = self.on_s + self.off_s
        edges = [_multiples(cycle, start_s, stop_s, offset) for offset in
                 (0.0, self.on_s, self.ramp_up_s, self.on_s - self.ramp_down_s)]
        if self.ramp_up_s or self.ramp_down_s:
            grid = _multiples(update_period_s, start_s, stop_s)
            x = _phase(grid, cycle)
            edges.append(grid[(x <= self.ramp_up_s) | ((x >= self.on_s - self.ramp_down_s) & (x <= self.on_s))])
        return np.concatenate(edges)

    def _envelope(self, t: np.ndarray) -> np.ndarray:
        x = _phase(t, self.on_s + self.off_s)
        up = x / self.ramp_up_s if self.ramp_up_s > 0 else np.ones_like(x)
        down = (self.on_s - x) / self.ramp_down_s if self.ramp_down_s > 0 else np.ones_like(x)
        return np.clip(np.minimum(up, down), 0.0, 1.0)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        cols = self.inner.values(t0, t1)
        on = _phase((t0 + t1) / 2, self.on_s + self.off_s) < self.on_s
        envelope = np.minimum(self._envelope(t0), self._envelope(t1))
        cols["amplitude_ma"] = np.where(on, cols["amplitude_ma"] * envelope, 0.0)
        return cols


class Waveform(StrEnum):
    SINE = "sine"
    TRIANGLE = "triangle"


def _unit_wave(waveform: Waveform, t: np.ndarray, period_s: float) -> np.ndarray:
    """A periodic wave in [-1, 1] starting at +1 (full amplitude at t = 0)."""
    x = _phase(t, period_s) / period_s
    if waveform is Waveform.SINE:
        return np.cos(2 * np.pi * x)
    return 4.0 * np.abs(x - 0.5) - 1.0


@dataclass(frozen=True, slots=True)
class AmplitudeModulation(Modifier):
    """Slow amplitude swing between (1 - depth) and 1 of the programmed amplitude.

    The programmed amplitude is the peak, so modulation never exceeds the prescription;
    the swing counters habituation. Each update period holds the mid-period value.
    """

    inner: Pattern
    period_s: float
    depth: float
    waveform: Waveform = Waveform.SINE

    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        return _multiples(update_period_s, start_s, stop_s)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        cols = self.inner.values(t0, t1)
        wave = _unit_wave(self.waveform, (t0 + t1) / 2, self.period_s)
        cols["amplitude_ma"] = cols["amplitude_ma"] * (1.0 - self.depth * (1.0 - wave) / 2.0)
        return cols


@dataclass(frozen=True, slots=True)
class FrequencySweep(Modifier):
    """Frequency moves linearly low -> high -> low over each period (triangle), held per update period."""

    inner: Pattern
    low_hz: float
    high_hz: float
    period_s: float

    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        return _multiples(update_period_s, start_s, stop_s)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        cols = self.inner.values(t0, t1)
        rising = (1.0 - _unit_wave(Waveform.TRIANGLE, (t0 + t1) / 2, self.period_s)) / 2.0
        cols["frequency_hz"] = self.low_hz + (self.high_hz - self.low_hz) * rising
        return cols


@dataclass(frozen=True, slots=True)
class Stepwise(Modifier):
    """Amplitude rises by step_ma every every_s, never above cap_ma.

    Adds to whatever the inner pattern gives, so wrap it inside Intermittent, not outside,
    or rests would be stepped up too (program specs apply modifiers in that order).
    """

    inner: Pattern
    step_ma: float
    every_s: float
    cap_ma: float

    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        return _multiples(self.every_s, start_s, stop_s)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        cols = self.inner.values(t0, t1)
        steps = np.floor((t0 + t1) / 2 / self.every_s)
        cols["amplitude_ma"] = np.minimum(cols["amplitude_ma"] + self.step_ma * steps, self.cap_ma)
        return cols


@dataclass(frozen=True, slots=True)
class Ramp(Modifier):
    """Linear envelope 0 -> 1 over in_s from the start and 1 -> 0 over out_s before end_s.

    Each update period holds the envelope's lower end value, so the amplitude never
    exceeds the envelope; with in_s and out_s > 0 the first and last segments are at zero.
    """

    inner: Pattern
    in_s: float
    out_s: float
    end_s: float

    def _own_changes(self, start_s: float, stop_s: float, update_period_s: float) -> np.ndarray:
        grid = _multiples(update_period_s, start_s, stop_s)
        ramping = (grid <= self.in_s) | (grid >= self.end_s - self.out_s)
        return np.concatenate((grid[ramping], [self.in_s, self.end_s - self.out_s]))

    def envelope(self, t: np.ndarray) -> np.ndarray:
        rise = t / self.in_s if self.in_s > 0 else np.ones_like(t)
        fall = (self.end_s - t) / self.out_s if self.out_s > 0 else np.ones_like(t)
        return np.clip(np.minimum(rise, fall), 0.0, 1.0)

    def values(self, t0: np.ndarray, t1: np.ndarray) -> Columns:
        cols = self.inner.values(t0, t1)
        cols["amplitude_ma"] = cols["amplitude_ma"] * np.minimum(self.envelope(t0), self.envelope(t1))
        return cols


# --- Composition across channels -----------------------------------------------------


def merge(*streams: Iterable[TimedSetting]) -> Iterator[TimedSetting]:
    """Interleave per-channel streams by (time, channel), lazily."""
    return heapq.merge(*streams, key=attrgetter("t_s", "channel"))
