"""Channel settings and telemetry readings in physical units (channels are 1-based).

Every setting is validated at construction, and every field is stored as a plain `int`
or `float` copied out of whatever number was given: a subclass that overrides arithmetic
cannot pass the checks as one value and reach the wire as another, because the rules and
the encoder read the same stored values. NaN, infinities, negative numbers, values off the
device's resolution grid (1 µA, 1 mHz, 1 µs) or beyond the wire field's width are refused
with a `Refusal` naming the field, the value and the limit.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import Refusal

MAX_U8 = 255
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_WORDS = {  # a setting's fields as a person reads them in a refusal
    "amplitude_ma": "the amplitude (mA)",
    "frequency_hz": "the frequency (Hz)",
    "burst_rate_hz": "the burst rate (Hz)",
    "pulse_width_us": "the phase width (µs)",
    "interphase_us": "the interphase gap (µs)",
    "asym_ratio": "the asymmetry ratio",
    "burst_pulses": "the pulses per burst",
}

_GRID = {  # field -> (steps per unit, resolution text, largest value in steps the wire carries)
    "amplitude_ma": (1000, "1 µA", _U32),
    "frequency_hz": (1000, "1 mHz", _U32),
    "burst_rate_hz": (1000, "1 mHz", _U32),
    "pulse_width_us": (1, "1 µs", _U16),
    "interphase_us": (1, "1 µs", _U16),
}


def exact_int(value: Any) -> int | None:
    """A plain int copied from an integer (int subclasses and NumPy integers included), or
    None for anything else (bool, floats, strings)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def exact_float(value: Any) -> float | None:
    """A plain float copied from a real number (float/int subclasses included; overridden
    methods are never called), or None when it is not one or does not fit a float."""
    if isinstance(value, float):
        return float.__float__(value)
    integer = exact_int(value)
    if integer is None:
        return None
    try:
        return float(integer)
    except OverflowError:
        return math.inf


class Shape(IntEnum):
    """Pulse shapes; only the biphasic ones are charge-balanced."""

    BIPHASIC = 0
    BIPHASIC_ALTERNATING = 1
    MONOPHASIC = 2


@dataclass(frozen=True)
class ChannelSetting:
    """One channel's stimulation setting; the recovery phase is amplitude/asym_ratio for
    pulse_width × asym_ratio, with the device's integer-µA recovery amplitude."""

    channel: int
    shape: Shape
    frequency_hz: float
    pulse_width_us: float
    amplitude_ma: float
    asym_ratio: int = 1
    interphase_us: float = 0.0
    burst_pulses: int = 0
    burst_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        ch = exact_int(self.channel)
        if ch is None or not 1 <= ch <= MAX_U8:
            raise Refusal("setting.channel", f"channel {self.channel!r} is not a channel number (1, 2, ...)",
                          value=self.channel, limit=f"1..{MAX_U8}", channel=None, detail="channel")
        self._store("channel", ch)
        if type(self.shape) is not Shape:
            raise Refusal("setting.shape", f"shape {self.shape!r} is not a known pulse shape on channel {ch}",
                          value=self.shape, limit="Shape", channel=ch, detail="shape")
        for name, low in (("asym_ratio", 1), ("burst_pulses", 0)):
            v = exact_int(getattr(self, name))
            if v is None or not low <= v <= MAX_U8:
                raise Refusal("setting.invalid_number",
                              f"{_WORDS[name]} must be a whole number from {low} to {MAX_U8} "
                              f"(given: {getattr(self, name)!r}) on channel {ch}", value=getattr(self, name), limit=f"{low}..{MAX_U8}", channel=ch,
                              detail=name)
            self._store(name, v)
        for name, (steps, text, wire_max) in _GRID.items():
            given = getattr(self, name)
            v = exact_float(given)
            if v is None or math.isnan(v) or v < 0 or (math.isinf(v) and isinstance(given, float)):
                raise Refusal("setting.invalid_number",
                              f"{_WORDS[name]} must be a finite number, 0 or more (given: {given!r}) on channel {ch}",
                              value=given, limit="finite and >= 0", channel=ch, detail=name)
            if v * steps > wire_max:  # also integers too large for a float
                shown = f"{v:g}" if math.isfinite(v) else "a number too large for any device"
                raise Refusal("setting.out_of_range",
                              f"{_WORDS[name]} {shown} is beyond what a device can be sent (at most "
                              f"{wire_max / steps:g}) on channel {ch}", value=v, limit=wire_max / steps, channel=ch, detail=name)
            if abs(v * steps - round(v * steps)) > 1e-6:
                raise Refusal("setting.resolution",
                              f"{_WORDS[name]} {v!r} is not a whole multiple of {text} on channel {ch}",
                              value=v, limit=text, channel=ch, detail=name)
            self._store(name, v)

    def _store(self, name: str, value: int | float) -> None:
        object.__setattr__(self, name, value)

    @property
    def bursting(self) -> bool:
        return self.burst_pulses >= 2

    @property
    def pulse_rate_hz(self) -> float:
        """Mean pulses per second, counting bursts (what charge and power scale with)."""
        return self.burst_pulses * self.burst_rate_hz if self.bursting else self.frequency_hz

    @property
    def amplitude_ua(self) -> int:
        return round(self.amplitude_ma * 1000)

    @property
    def phase_charge_uc(self) -> float:
        """Charge of the primary (cathodic) phase, µC."""
        return self.amplitude_ma * self.pulse_width_us / 1000.0

    @property
    def recovery_amplitude_ma(self) -> float:
        """Recovery-phase amplitude as the device computes it (integer µA division)."""
        if self.shape is Shape.MONOPHASIC:
            return 0.0
        return (self.amplitude_ua // self.asym_ratio) / 1000.0

    @property
    def residual_charge_uc(self) -> float:
        """Net charge left per pulse (µC) after the recovery phase."""
        if self.shape is Shape.MONOPHASIC:
            return self.phase_charge_uc
        rest_ua = self.amplitude_ua - (self.amplitude_ua // self.asym_ratio) * self.asym_ratio
        return rest_ua * self.pulse_width_us / 1e6

    def with_amplitude(self, amplitude_ma: float) -> ChannelSetting:
        """The same waveform at another amplitude (rounded to the 1 µA grid; the number is
        copied to a plain float before any arithmetic touches it). Anything else goes to the
        constructor untouched, which refuses it as it refuses any other field."""
        value = exact_float(amplitude_ma)
        rounded = round(value * 1000) / 1000 if value is not None and 0 <= value < math.inf else amplitude_ma
        return ChannelSetting(self.channel, self.shape, self.frequency_hz, self.pulse_width_us, rounded,
                              self.asym_ratio, self.interphase_us, self.burst_pulses, self.burst_rate_hz)

    def same_waveform(self, other: ChannelSetting) -> bool:
        """True when only the amplitude differs."""
        return self.with_amplitude(0) == other.with_amplitude(0)


@dataclass(frozen=True)
class ChannelReading:
    """One telemetry reading in physical units; `load_ohm` None means open circuit.

    The waveform fields after `charge_total_uc` are what ICD v2 telemetry adds (the
    registers as applied); a v1 device does not report them and they stay None."""

    channel: int
    device_time_s: float
    enabled: bool
    compliance_limited: bool
    amplitude_ma: float
    frequency_hz: float
    pulse_width_us: float
    load_ohm: float | None
    charge_total_uc: float
    shape: int | None = None
    asym_ratio: int | None = None
    burst_pulses: int | None = None
    interphase_us: float | None = None
    burst_rate_hz: float | None = None

    @property
    def whole_waveform(self) -> bool:
        """True when the device reported every register (ICD v2)."""
        return self.shape is not None
