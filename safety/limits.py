"""Limits in layers: standard → device → needle → prescription (× sensitivity).

Each layer can only tighten the one above: `effective_limits` takes the tightest value
of every quantity and remembers which layer set it, so a refusal names that layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import Refusal
from .settings import exact_float


@dataclass(frozen=True)
class StandardLimits:
    """Fixed limits from IEC 60601-2-10 and FDA guidance for nerve/muscle stimulators."""

    max_rms_current_ma: float = 50.0        # r.m.s. into the reference load
    reference_load_ohm: float = 500.0
    max_frequency_hz: float = 400.0         # above: outside this product's scope
    max_pulse_energy_mj: float = 300.0      # per pulse into the reference load
    max_power_density_w_cm2: float = 0.25   # 1 s average at the electrode, strictly below
    max_session_minutes: float = 60.0       # product limit for one session
    max_ramp_ma_per_s: float = 2.0          # product limit on any prescribed ramp rate


STANDARD = StandardLimits()


@dataclass(frozen=True)
class NeedleRules:
    """Electrode-level limits for needles (charge balance and charge density)."""

    max_residual_current_ua: float = 10.0
    shannon_k_warn: float = 1.5             # warn at k >= 1.5
    shannon_k_max: float = 1.85             # refuse at k > 1.85
    # Plausible needles: filiform acupuncture / dry-needling needles are 0.12-0.40 mm thick;
    # a size outside these bounds is a typing error, and would make the density rules
    # meaningless (a 1e200 mm needle has no charge density to speak of).
    diameter_mm: tuple[float, float] = (0.1, 0.6)
    length_mm: tuple[float, float] = (1.0, 150.0)


NEEDLE_RULES = NeedleRules()


@dataclass(frozen=True)
class DeviceLimits:
    """What the connected device reports, in physical units."""

    channels: int
    max_amplitude_ma: float
    max_phase_us: float
    min_frequency_hz: float
    max_frequency_hz: float
    max_phase_charge_uc: float
    max_step_ma: float
    max_slew_ma_per_s: float
    compliance_v: float

    def __post_init__(self) -> None:
        for name, v in vars(self).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise Refusal("device.invalid_limit", f"device reports {name}={v!r}, not a positive number",
                              value=v, limit="> 0", detail=name)


@dataclass(frozen=True)
class Needle:
    """A needle electrode; its exposed area is the side of a cylinder, π·d·L."""

    diameter_mm: float = 0.25
    length_mm: float = 15.0

    def __post_init__(self) -> None:
        for name, what in (("diameter_mm", "diameter"), ("length_mm", "length")):
            given = getattr(self, name)
            v = exact_float(given)
            low, high = getattr(NEEDLE_RULES, name)
            if v is None or not low <= v <= high:
                raise Refusal("needle.invalid_size", f"needle {what} {given!r} mm is not a needle's: "
                              f"expected {low:g} to {high:g} mm", value=given, limit=(low, high), detail=name)
            object.__setattr__(self, name, v)

    @property
    def area_cm2(self) -> float:
        return math.pi * (self.diameter_mm / 10) * (self.length_mm / 10)

    def describe(self) -> str:
        return f"needle {self.diameter_mm:g} mm x {self.length_mm:g} mm"


class Sensitivity(str, Enum):
    HYPERSENSITIVE = "hypersensitive"
    TYPICAL = "typical"
    HYPOSENSITIVE = "hyposensitive"


@dataclass(frozen=True)
class SensitivityFactors:
    amplitude: float
    ramp: float


# Factors only ever reduce the prescription (all <= 1).
SENSITIVITY_FACTORS: Mapping[Sensitivity, SensitivityFactors] = {
    Sensitivity.HYPERSENSITIVE: SensitivityFactors(amplitude=0.6, ramp=0.5),
    Sensitivity.TYPICAL: SensitivityFactors(amplitude=0.85, ramp=1.0),
    Sensitivity.HYPOSENSITIVE: SensitivityFactors(amplitude=1.0, ramp=1.0),
}

def describe_sensitivity(sensitivity: Sensitivity, cap_ma: float, ramp_ma_per_s: float) -> str:
    """The one place sensitivity changes the prescription, in words: what it did to the cap
    and to the ramp rate."""
    f = SENSITIVITY_FACTORS[sensitivity]
    return (f"{sensitivity.value}: cap {cap_ma:g} mA x {f.amplitude:g} = {cap_ma * f.amplitude:.3g} mA, "
            f"ramp {ramp_ma_per_s:g} mA/s x {f.ramp:g} = {ramp_ma_per_s * f.ramp:.3g} mA/s")


PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Prescription(BaseModel):
    """This patient's prescription for this session (read from files or the CLI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_amplitude_ma: PositiveFinite | dict[Annotated[int, Field(ge=1)], PositiveFinite]
    max_session_minutes: float = Field(30.0, gt=0, le=STANDARD.max_session_minutes, allow_inf_nan=False)
    ramp_ma_per_s: float = Field(1.0, gt=0, le=STANDARD.max_ramp_ma_per_s, allow_inf_nan=False)
    frequency_hz: tuple[PositiveFinite, PositiveFinite]
    pulse_width_us: tuple[PositiveFinite, PositiveFinite]
    sensitivity: Sensitivity = Sensitivity.TYPICAL

    @field_validator("frequency_hz", "pulse_width_us")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"range {v} has its minimum above its maximum")
        return v

    @model_validator(mode="after")
    def _some_channel(self) -> Prescription:
        if isinstance(self.max_amplitude_ma, dict) and not self.max_amplitude_ma:
            raise ValueError("max_amplitude_ma names no channel")
        return self

    def amplitude_for(self, channel: int) -> float | None:
        """Prescribed amplitude cap for a channel; None when the channel is not prescribed."""
        if isinstance(self.max_amplitude_ma, dict):
            return self.max_amplitude_ma.get(channel)
        return self.max_amplitude_ma


@dataclass(frozen=True)
class EffectiveLimits:
    """The tightest limit of every quantity for one channel, with the layer that set it."""

    channel: int
    needle: Needle
    max_amplitude_ma: float
    min_pulse_width_us: float
    max_pulse_width_us: float
    min_frequency_hz: float
    max_frequency_hz: float
    max_phase_charge_uc: float
    max_interphase_us: float
    min_burst_rate_hz: float
    max_step_ma: float
    ramp_ma_per_s: float
    session_s: float
    compliance_v: float
    sources: Mapping[str, str] = field(default_factory=dict)


def _tightest(kind: str, *candidates: tuple[str, float]) -> tuple[float, str]:
    """Smallest (kind 'max') or largest (kind 'min') value; earlier layer wins ties."""
    pick = min if kind == "max" else max
    best = pick(v for _, v in candidates)
    return best, next(layer for layer, v in candidates if v == best)


def effective_limits(device: DeviceLimits, prescription: Prescription, channel: int,
                     needle: Needle | None = None, standard: StandardLimits = STANDARD) -> EffectiveLimits:
    """Combine the layers for one channel; refuses a channel the device or the prescription lacks."""
    needle = needle or Needle()
    if not 1 <= channel <= device.channels:
        raise Refusal("device.channel", f"channel {channel} does not exist (device has {device.channels})",
                      value=channel, limit=device.channels, channel=channel)
    rx_amp = prescription.amplitude_for(channel)
    if rx_amp is None:
        raise Refusal("prescription.channel", f"channel {channel} has no prescribed amplitude",
                      value=channel, limit="prescribed channels", channel=channel)
    factors = SENSITIVITY_FACTORS[prescription.sensitivity]
    sources: dict[str, str] = {}

    def take(name: str, kind: str, *candidates: tuple[str, float]) -> float:
        value, sources[name] = _tightest(kind, *candidates)
        return value

    limits = EffectiveLimits(
        channel=channel,
        needle=needle,
        max_amplitude_ma=take("amplitude_max", "max", ("device", device.max_amplitude_ma),
                              ("prescription", min(rx_amp, rx_amp * factors.amplitude))),
        min_pulse_width_us=take("pulse_width_min", "min", ("prescription", prescription.pulse_width_us[0])),
        max_pulse_width_us=take("pulse_width_max", "max", ("device", device.max_phase_us),
                                ("prescription", prescription.pulse_width_us[1])),
        min_frequency_hz=take("frequency_min", "min", ("device", device.min_frequency_hz),
                              ("prescription", prescription.frequency_hz[0])),
        max_frequency_hz=take("frequency_max", "max", ("standard", standard.max_frequency_hz),
                              ("device", device.max_frequency_hz),
                              ("prescription", prescription.frequency_hz[1])),
        max_phase_charge_uc=take("phase_charge_max", "max", ("device", device.max_phase_charge_uc)),
        max_interphase_us=take("interphase_max", "max", ("device", device.max_phase_us)),
        min_burst_rate_hz=take("burst_rate_min", "min", ("device", device.min_frequency_hz)),
        max_step_ma=take("step_max", "max", ("device", device.max_step_ma)),
        ramp_ma_per_s=take("ramp", "max", ("device", 0.8 * device.max_slew_ma_per_s),
                           ("prescription", min(prescription.ramp_ma_per_s,
                                                prescription.ramp_ma_per_s * factors.ramp))),
        session_s=60.0 * take("session", "max", ("standard", standard.max_session_minutes),
                              ("prescription", prescription.max_session_minutes)),
        compliance_v=device.compliance_v,
        sources=sources,
    )
    for name, key, unit, low, high in (
            ("frequency", "frequency", "Hz", limits.min_frequency_hz, limits.max_frequency_hz),
            ("phase width", "pulse_width", "µs", limits.min_pulse_width_us, limits.max_pulse_width_us)):
        if low > high:
            by_low, by_high = _LAYER_TEXT[sources[f"{key}_min"]], _LAYER_TEXT[sources[f"{key}_max"]]
            change = "prescription" if "prescription" in (sources[f"{key}_min"], sources[f"{key}_max"]) \
                else "device"
            raise Refusal("limits.empty_range",
                          f"no {name} fits every limit on channel {channel}: {by_low} at least {low:g} {unit}, "
                          f"but {by_high} at most {high:g} {unit}. Change the {change}'s {name} range to fit",
                          value=low, limit=high, channel=channel, detail=f"{sources[f'{key}_min']} / "
                                                                          f"{sources[f'{key}_max']}")
    return limits


_LAYER_TEXT = {"prescription": "the prescription asks for", "device": "the device allows",
               "standard": "the safety standard allows"}
