"""Pulse shapes: exact per-pulse metrics from parameters, and vectorised sample rendering.

Metrics are computed from the parameters the device actually uses (amplitude quantised to
whole µA, recovery amplitude `amplitude_ua // asym_ratio` as in ICD SET_CHANNEL), so a
charge figure here is the charge the device delivers, not an idealisation. Rendering is
for inspection and tests only; it never feeds the metrics.

Sign convention: the cathodic (leading, stimulating) phase is negative current.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safety.settings import Shape


def amplitude_ua(amplitude_ma: float) -> int:
    """The whole-µA amplitude the device is sent for a mA setting."""
    return int(round(amplitude_ma * 1000.0))


@dataclass(frozen=True, slots=True)
class Pulse:
    """One pulse's parameters; field names match `safety.settings.ChannelSetting`."""

    shape: Shape
    pulse_width_us: float
    amplitude_ma: float
    asym_ratio: int = 1
    interphase_us: float = 0.0

    def __post_init__(self) -> None:
        if not (self.pulse_width_us > 0 and np.isfinite(self.pulse_width_us)):
            raise ValueError(f"pulse_width_us must be finite and > 0, got {self.pulse_width_us}")
        if not (self.amplitude_ma >= 0 and np.isfinite(self.amplitude_ma)):
            raise ValueError(f"amplitude_ma must be finite and >= 0, got {self.amplitude_ma}")
        if self.asym_ratio < 1:
            raise ValueError(f"asym_ratio must be >= 1, got {self.asym_ratio}")
        if not (self.interphase_us >= 0 and np.isfinite(self.interphase_us)):
            raise ValueError(f"interphase_us must be finite and >= 0, got {self.interphase_us}")

    @property
    def cathodic_ua(self) -> int:
        return amplitude_ua(self.amplitude_ma)

    @property
    def recovery_ua(self) -> int:
        """Recovery-phase amplitude exactly as the device computes it (integer division)."""
        if self.shape is Shape.MONOPHASIC:
            return 0
        return self.cathodic_ua // self.asym_ratio

    @property
    def recovery_width_us(self) -> float:
        return 0.0 if self.shape is Shape.MONOPHASIC else self.pulse_width_us * self.asym_ratio

    @property
    def duration_us(self) -> float:
        """Leading phase + gap + recovery phase: what must fit inside one pulse period."""
        if self.shape is Shape.MONOPHASIC:
            return self.pulse_width_us
        return self.pulse_width_us + self.interphase_us + self.recovery_width_us


def phase_charge_uc(pulse: Pulse) -> float:
    """Charge of the leading (cathodic) phase, µC — the figure the ICD phase-charge limit bounds."""
    return pulse.cathodic_ua * pulse.pulse_width_us * 1e-6


def recovery_charge_uc(pulse: Pulse) -> float:
    """Charge of the recovery (anodic) phase, µC (0 for monophasic)."""
    return pulse.recovery_ua * pulse.recovery_width_us * 1e-6


def net_charge_uc(pulse: Pulse) -> float:
    """Residual charge one pulse leaves in the tissue, µC.

    Computed from the integer remainder so a divisible amplitude gives exactly 0.0; a
    remainder of r µA (when amplitude_ua is not a multiple of asym_ratio) leaves r × width.
    Alternating pulses leave this residual with alternating sign.
    """
    if pulse.shape is Shape.MONOPHASIC:
        return phase_charge_uc(pulse)
    return (pulse.cathodic_ua % pulse.asym_ratio) * pulse.pulse_width_us * 1e-6


def _i2t(pulse: Pulse) -> float:
    """∫ i² dt over one pulse, A²·s: shared by r.m.s. current and energy."""
    lead = (pulse.cathodic_ua * 1e-6) ** 2 * pulse.pulse_width_us * 1e-6
    recovery = (pulse.recovery_ua * 1e-6) ** 2 * pulse.recovery_width_us * 1e-6
    return lead + recovery


def mean_pulse_rate_hz(frequency_hz: float, burst_pulses: int = 0, burst_rate_hz: float = 0.0) -> float:
    """Pulses per second averaged over time: bursts deliver burst_pulses per burst period."""
    if burst_pulses >= 2:
        return burst_pulses * burst_rate_hz
    return frequency_hz


def rms_current_ma(pulse: Pulse, pulse_rate_hz: float) -> float:
    """R.m.s. current of a train at `pulse_rate_hz` mean pulses per second, mA."""
    return float(np.sqrt(_i2t(pulse) * pulse_rate_hz)) * 1e3


def energy_per_pulse_j(pulse: Pulse, load_ohm: float) -> float:
    """Energy one pulse dissipates in a resistive load, J."""
    return _i2t(pulse) * load_ohm


def pulse_onsets_s(
    n_pulses: int, frequency_hz: float, burst_pulses: int = 0, burst_rate_hz: float = 0.0
) -> np.ndarray:
    """Start times of pulses 0..n_pulses-1: evenly at frequency_hz, or grouped into bursts."""
    j = np.arange(n_pulses)
    if burst_pulses >= 2:
        return (j // burst_pulses) / burst_rate_hz + (j % burst_pulses) / frequency_hz
    return j / frequency_hz


def render(
    pulse: Pulse,
    sample_rate_hz: float,
    n_pulses: int,
    frequency_hz: float,
    burst_pulses: int = 0,
    burst_rate_hz: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-sampled current (mA) of `n_pulses` pulses; returns (t_s, current_ma).

    The span is [0, onset of pulse n_pulses), so its integral is the train's charge. Each
    phase is half-open [start, end): with edges on the sample grid, sum × dt is exact.
    """
    if pulse.duration_us * 1e-6 > 1.0 / frequency_hz:
        raise ValueError(
            f"a {pulse.duration_us} µs pulse does not fit a {frequency_hz} Hz period"
        )
    if burst_pulses >= 2 and burst_pulses / frequency_hz > 1.0 / burst_rate_hz:
        raise ValueError(
            f"{burst_pulses} pulses at {frequency_hz} Hz do not fit a {burst_rate_hz} Hz burst period"
        )
    # Work in sample units so grid-aligned edges compare exactly.
    onsets = pulse_onsets_s(n_pulses + 1, frequency_hz, burst_pulses, burst_rate_hz) * sample_rate_hz
    n_samples = int(np.ceil(onsets[-1] - 1e-9))
    i = np.arange(n_samples, dtype=np.float64)
    k = np.searchsorted(onsets, i, side="right") - 1
    tau = i - onsets[k]
    us = sample_rate_hz * 1e-6
    lead_end = pulse.pulse_width_us * us
    rec_start = (pulse.pulse_width_us + pulse.interphase_us) * us
    rec_end = rec_start + pulse.recovery_width_us * us
    current = np.where(tau < lead_end, -pulse.cathodic_ua * 1e-3, 0.0)
    current = np.where((tau >= rec_start) & (tau < rec_end), pulse.recovery_ua * 1e-3, current)
    if pulse.shape is Shape.BIPHASIC_ALTERNATING:
        current = np.where(k % 2 == 1, -current, current)
    return i / sample_rate_hz, current
