"""Dynamic rules: how fast what a channel delivers may rise.

An increase is an increase whatever field carries it. Three quantities rise only by
ramping, each on its own ramp clock:

- the amplitude, counted from the lowest level the channel may be at (applied or any
  command in flight), as the device's own step and slew rules count it;
- the strength of each pulse: its amplitude as a multiple of the threshold at its phase
  width, by the Weiss strength–duration model (`thresholds.strength`, A / (1 + 300 µs / w)),
  so a wider phase at the same current is the larger stimulus it is; and
- the r.m.s. current over the densest second (power density is its square over the same
  needle, so it rises exactly when r.m.s. does), which grows with the pulse rate,

each of the last two above its *ceiling*, the highest value this channel has delivered in
this session. A rise in strength counts in mA of the new waveform (a strength rise of s at
phase width w is s × (1 + 300 µs / w) mA): 10 mA at 50 µs → 10 mA at 200 µs is a 6.4 mA
rise, refused with the amplitude the wider phase may start at. A rise in r.m.s. current
counts in mA of the channel's most intense allowed waveform (highest frequency, widest
phase). Ramping at the ramp rate is the fastest any of them may grow, and one step may add
no more than the device's largest step. Alternating between states already delivered at
their level (dense-disperse) needs no ramp at all.

Ramp clocks are kept as a debt (`RampClock`): the 5 ms allowance for scheduler jitter is
granted once, not per step, so rapid small steps cannot ramp faster than the rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .limits import EffectiveLimits
from .rules import SettingArrays, compute_metrics
from .settings import ChannelSetting, Shape
from .thresholds import strength

JITTER_S = 0.005       # clock-jitter allowance on the ramp clocks (granted once)
RAMP_TICK_S = 0.1      # ramp step spacing (one telemetry period at 10 Hz)
METRICS = ("strength", "rms_current")
_LABEL = {"amplitude": "amplitude", "strength": "strength (threshold multiples)", "rms_current": "r.m.s. current"}
_UNIT = {"amplitude": "mA", "strength": "", "rms_current": "mA"}


@dataclass
class RampClock:
    """A ramp budget as a debt: `ref_s` is when what was raised so far would have been reached
    at the ramp rate. An increase of x mA is allowed once x ≤ rate × (now − ref_s + jitter);
    after it, ref_s = max(now, ref_s + x / rate)."""

    ref_s: float

    def allowed_ma(self, rate: float, now: float, jitter_s: float = JITTER_S) -> float:
        return rate * max(0.0, now - self.ref_s + jitter_s)

    def wait_s(self, increase_ma: float, rate: float, now: float) -> float:
        """Seconds from `now` until `increase_ma` is allowed without the jitter allowance."""
        return max(0.0, self.ref_s + increase_ma / rate - now)

    def spend(self, increase_ma: float, rate: float, now: float) -> None:
        if increase_ma > 0:
            self.ref_s = max(now, self.ref_s + increase_ma / rate)


def intensity(setting: ChannelSetting, area_cm2: float) -> dict[str, float]:
    """Strength (threshold multiples at a 1 mA rheobase) and r.m.s. current over the densest
    second (mA) of a setting."""
    m = compute_metrics(SettingArrays.from_settings([setting]), np.array([area_cm2]))
    return {"strength": strength(setting.amplitude_ma, setting.pulse_width_us),
            "rms_current": float(m.rms_current_ma[0])}


@dataclass(frozen=True)
class Increase:
    """One ramped quantity's rise for a proposed setting: `size_ma` in mA (of the setting's own
    waveform for the amplitude and the strength, of the channel's most intense waveform for
    the r.m.s. current)."""

    quantity: str
    size_ma: float
    allowed_ma: float
    step_ma: float
    before: float
    after: float

    @property
    def too_fast(self) -> bool:
        return self.size_ma > self.allowed_ma * (1 + 1e-9) + 1e-12

    @property
    def too_large(self) -> bool:
        return self.size_ma > self.step_ma * (1 + 1e-9) + 1e-12

    def describe(self) -> str:
        unit = _UNIT[self.quantity]
        return f"{_LABEL[self.quantity]} {self.before:.3g} → {self.after:.3g}{' ' + unit if unit else ''}"


@dataclass
class ChannelDynamics:
    """One channel's ramp state: its clocks, and the ceilings of what it has delivered."""

    limits: EffectiveLimits
    amplitude: RampClock | None = None          # None while the channel is disabled
    metric_clocks: dict[str, RampClock] = field(default_factory=dict)  # from the first enable
    ceilings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    reference: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        strongest = ChannelSetting(self.limits.channel, Shape.BIPHASIC, self.limits.max_frequency_hz,
                                   self.limits.max_pulse_width_us, 1.0)
        self.reference = intensity(strongest, self.limits.needle.area_cm2)

    @property
    def rate(self) -> float:
        return self.limits.ramp_ma_per_s

    def _per_ma(self, name: str, setting: ChannelSetting) -> float:
        """How much of quantity `name` one mA of a rise is worth (see the module's docstring)."""
        return strength(1.0, setting.pulse_width_us) if name == "strength" else self.reference[name]

    def increases(self, setting: ChannelSetting, lowest_ua: int, now: float) -> list[Increase]:
        """Every quantity `setting` would raise, with what is allowed now (empty: no rise)."""
        out = []
        delta_ma = (setting.amplitude_ua - lowest_ua) / 1000
        if delta_ma > 0:
            allowed = self.amplitude.allowed_ma(self.rate, now) if self.amplitude else 0.0
            out.append(Increase("amplitude", delta_ma, allowed, self.limits.max_step_ma,
                                lowest_ua / 1000, setting.amplitude_ma))
        values = intensity(setting, self.limits.needle.area_cm2)
        for name in METRICS:
            excess = values[name] - self.ceilings[name]
            if excess > 0 and setting.amplitude_ua > 0:
                clock = self.metric_clocks.get(name)
                allowed = clock.allowed_ma(self.rate, now) if clock else 0.0
                out.append(Increase(name, excess / self._per_ma(name, setting), allowed, self.limits.max_step_ma,
                                    self.ceilings[name], values[name]))
        return out

    def wait_s(self, setting: ChannelSetting, lowest_ua: int, now: float) -> float:
        """Seconds until `setting` passes every ramp clock (inf when it never will: a disabled
        channel, or a rise larger than one step)."""
        wait = 0.0
        for rise in self.increases(setting, lowest_ua, now):
            clock = self.amplitude if rise.quantity == "amplitude" else self.metric_clocks.get(rise.quantity)
            if clock is None or rise.too_large:
                return math.inf
            wait = max(wait, clock.wait_s(rise.size_ma, self.rate, now))
        return wait

    def highest_amplitude_ua(self, waveform: ChannelSetting, lowest_ua: int, now: float) -> int:
        """The largest amplitude of `waveform` (whole µA, a multiple of its recovery ratio) that
        passes every ramp clock now, without the jitter allowance; 0 on a disabled channel."""
        if self.amplitude is None:
            return 0
        asym = waveform.asym_ratio
        caps = [lowest_ua + int(min(self.limits.max_step_ma, self.amplitude.allowed_ma(self.rate, now, 0.0)) * 1000)]
        per_ma = intensity(waveform.with_amplitude(1.0), self.limits.needle.area_cm2)
        for name in METRICS:
            clock = self.metric_clocks.get(name)
            if per_ma[name] <= 0 or clock is None:
                continue
            budget = self._per_ma(name, waveform) * min(self.limits.max_step_ma, clock.allowed_ma(self.rate, now, 0.0))
            caps.append(int((self.ceilings[name] + budget) / per_ma[name] * 1000))
        cap = max(0, min(caps)) // asym * asym
        # the recovery phase's integer µA division makes the quantities only nearly linear
        while cap > 0 and any(r.too_fast or r.too_large
                              for r in self.increases(waveform.with_amplitude(cap / 1000), lowest_ua, now)):
            cap -= asym
        return cap

    # --- what the device acknowledged ------------------------------------------------

    def enabled(self, setting: ChannelSetting | None, now: float) -> None:
        """The channel was switched on (at 0 mA): its amplitude ramp starts now."""
        self.amplitude = RampClock(now)
        for name in METRICS:
            self.metric_clocks.setdefault(name, RampClock(now))
        if setting is not None:
            self.delivered(setting, now)

    def disabled(self) -> None:
        self.amplitude = None

    def applied(self, setting: ChannelSetting, before_ua: int, now: float) -> None:
        """A setting was acknowledged on the enabled channel: spend the clocks, raise ceilings."""
        if self.amplitude is not None:
            self.amplitude.spend((setting.amplitude_ua - before_ua) / 1000, self.rate, now)
        self.delivered(setting, now)

    def delivered(self, setting: ChannelSetting, now: float) -> None:
        values = intensity(setting, self.limits.needle.area_cm2)
        for name in METRICS:
            excess = values[name] - self.ceilings[name]
            if excess > 0:
                self.metric_clocks[name].spend(excess / self._per_ma(name, setting), self.rate, now)
                self.ceilings[name] = values[name]


def refusal_text(channel: int, setting: ChannelSetting, rise: Increase, highest_ma: float) -> str:
    """The clinician's message for a rise that must be ramped, with the way to ramp it."""
    if rise.quantity == "amplitude":
        what = f"raising channel {channel} to {setting.amplitude_ma:g} mA is an increase of {rise.size_ma:.3f} mA"
        way = "raise it gradually (ramp)"
    else:
        what = (f"changing channel {channel} to {setting.frequency_hz:g} Hz / {setting.pulse_width_us:g} µs at "
                f"{setting.amplitude_ma:g} mA would raise its {rise.describe()}, above anything this channel has "
                f"delivered in this session: an increase like raising the amplitude by {rise.size_ma:.3f} mA")
        way = f"start this waveform at {highest_ma:g} mA or less and raise it gradually (ramp)"
    if rise.too_large:
        limit = f"more than the {rise.step_ma:g} mA allowed in one step"
    else:
        limit = f"more than the prescribed ramp allows now ({rise.allowed_ma:.3f} mA)"
    return f"{what}, {limit}. To get there, {way}"
