"""Pulse metrics against independent integrals of rendered samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.waveforms import (
    Pulse, Shape, energy_per_pulse_j, mean_pulse_rate_hz, net_charge_uc, phase_charge_uc,
    recovery_charge_uc, render, rms_current_ma,
)

FS = 1e6  # 1 µs samples: integer-µs phases land on the grid, so sums are exact
RATES = [10.0, 20.0, 25.0, 40.0, 50.0, 100.0, 125.0, 200.0]  # integer-µs periods, short renders


def uc(samples_ma: np.ndarray, fs: float = FS) -> float:
    """Charge of point samples (mA) in µC: mA × s = 1000 µC."""
    return float(np.sum(samples_ma)) / fs * 1000.0


@st.composite
def pulses(draw, shapes=tuple(Shape), divisible: bool | None = None) -> tuple[Pulse, float]:
    shape = draw(st.sampled_from(shapes))
    ratio = draw(st.integers(1, 8)) if shape is not Shape.MONOPHASIC else 1
    amp_ua = draw(st.integers(0, 30000))
    if divisible is True:
        amp_ua -= amp_ua % ratio
    pw = draw(st.integers(10, 1000))
    gap = draw(st.integers(0, 100))
    pulse = Pulse(shape, float(pw), amp_ua / 1000.0, ratio, float(gap))
    rate = draw(st.sampled_from([r for r in RATES if pulse.duration_us <= 1e6 / r]))
    return pulse, rate


def per_pulse(pulse: Pulse, rate: float, n: int = 3) -> list[np.ndarray]:
    _, i_ma = render(pulse, FS, n, rate)
    return np.split(i_ma, n)  # equal periods of 1e6/rate samples


@settings(max_examples=150, deadline=None)
@given(pulses())
def test_phase_charges_equal_integral_of_samples(case: tuple[Pulse, float]) -> None:
    pulse, rate = case
    for k, samples in enumerate(per_pulse(pulse, rate)):
        sign = -1.0 if (pulse.shape is Shape.BIPHASIC_ALTERNATING and k % 2) else 1.0
        normal = sign * samples  # undo the alternation: leading phase negative
        lead = -uc(np.minimum(normal, 0.0))
        recovery = uc(np.maximum(normal, 0.0))
        expected_lead = round(pulse.amplitude_ma * 1000) * pulse.pulse_width_us * 1e-6
        assert lead == pytest.approx(expected_lead, rel=1e-12, abs=1e-12)
        assert phase_charge_uc(pulse) == pytest.approx(expected_lead, rel=1e-12, abs=1e-12)
        assert recovery == pytest.approx(recovery_charge_uc(pulse), rel=1e-12, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(pulses(shapes=(Shape.BIPHASIC, Shape.BIPHASIC_ALTERNATING), divisible=True))
def test_balanced_shapes_leave_zero_net_charge(case: tuple[Pulse, float]) -> None:
    pulse, rate = case
    assert net_charge_uc(pulse) == 0.0
    for samples in per_pulse(pulse, rate):
        assert abs(uc(samples)) <= 1e-12 * max(1.0, phase_charge_uc(pulse))


@settings(max_examples=100, deadline=None)
@given(pulses(shapes=(Shape.BIPHASIC,)))
def test_integer_recovery_amplitude_residual_is_reported(case: tuple[Pulse, float]) -> None:
    """The device computes the recovery amplitude as amplitude_ua // asym_ratio."""
    pulse, rate = case
    amp_ua = round(pulse.amplitude_ma * 1000)
    residual = (amp_ua - (amp_ua // pulse.asym_ratio) * pulse.asym_ratio) * pulse.pulse_width_us * 1e-6
    assert net_charge_uc(pulse) == pytest.approx(residual, abs=1e-12)
    assert -uc(per_pulse(pulse, rate, 1)[0]) == pytest.approx(residual, rel=1e-9, abs=1e-12)


def test_asymmetric_recovery_is_longer_and_lower() -> None:
    pulse = Pulse(Shape.BIPHASIC, 200.0, 6.0, asym_ratio=4, interphase_us=50.0)
    _, i_ma = render(pulse, FS, 1, 100.0)
    assert np.flatnonzero(i_ma < 0).tolist() == list(range(0, 200))
    assert np.flatnonzero(i_ma > 0).tolist() == list(range(250, 250 + 800))
    assert set(i_ma[i_ma > 0]) == {1.5}


def test_alternating_pulses_flip_polarity() -> None:
    pulse = Pulse(Shape.BIPHASIC_ALTERNATING, 100.0, 2.0)
    first, second, third = per_pulse(pulse, 10.0)
    assert first[0] == -2.0 and second[0] == 2.0 and third[0] == -2.0


def test_monophasic_net_charge_is_its_phase_charge() -> None:
    pulse = Pulse(Shape.MONOPHASIC, 300.0, 4.0)
    assert net_charge_uc(pulse) == phase_charge_uc(pulse) == pytest.approx(1.2)
    assert -uc(per_pulse(pulse, 50.0, 1)[0]) == pytest.approx(1.2)


@settings(max_examples=60, deadline=None)
@given(pulses(), st.floats(100.0, 5000.0))
def test_rms_and_energy_match_sample_integrals(case: tuple[Pulse, float], load_ohm: float) -> None:
    pulse, rate = case
    _, i_ma = render(pulse, FS, 2, rate)
    i_a = i_ma / 1000.0
    assert rms_current_ma(pulse, rate) == pytest.approx(np.sqrt(np.mean(i_a**2)) * 1000.0, rel=1e-9, abs=1e-12)
    energy = float(np.sum(i_a**2)) / FS * load_ohm / 2
    assert energy_per_pulse_j(pulse, load_ohm) == pytest.approx(energy, rel=1e-9, abs=1e-18)


def test_unaligned_sample_rate_integral_converges() -> None:
    pulse = Pulse(Shape.BIPHASIC, 333.3, 7.77, asym_ratio=3, interphase_us=17.3)
    fs = 3.3e5
    t, i_ma = render(pulse, fs, 4, 7.0)
    lead = -np.trapezoid(np.minimum(i_ma, 0.0), t) / 4 * 1000.0
    assert lead == pytest.approx(phase_charge_uc(pulse), abs=2 * 7.77 / fs * 1000.0)


def test_burst_render_has_the_programmed_pulse_count() -> None:
    pulse = Pulse(Shape.BIPHASIC, 200.0, 3.0)
    t, i_ma = render(pulse, FS, 14, 100.0, burst_pulses=7, burst_rate_hz=2.0)
    onsets = np.flatnonzero((i_ma < 0) & (np.r_[0.0, i_ma[:-1]] >= 0))
    assert len(onsets) == 14
    assert len(t) == 1_000_000  # two burst periods of 0.5 s
    first_burst = onsets[onsets < FS / 2]
    assert len(first_burst) == 7 and np.all(np.diff(first_burst) == 10_000)
    assert onsets[7] == 500_000
    assert rms_current_ma(pulse, mean_pulse_rate_hz(100.0, 7, 2.0)) == pytest.approx(
        np.sqrt(np.mean(i_ma**2)), rel=1e-9
    )


def test_pulse_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        render(Pulse(Shape.BIPHASIC, 1000.0, 1.0, asym_ratio=8), FS, 1, 200.0)
    with pytest.raises(ValueError, match="burst period"):
        render(Pulse(Shape.BIPHASIC, 100.0, 1.0), FS, 10, 10.0, burst_pulses=10, burst_rate_hz=2.0)


@pytest.mark.parametrize("kwargs", [{"pulse_width_us": 0.0}, {"amplitude_ma": float("nan")}, {"asym_ratio": 0}])
def test_invalid_pulse_parameters_are_refused(kwargs: dict) -> None:
    base = {"shape": Shape.BIPHASIC, "pulse_width_us": 100.0, "amplitude_ma": 1.0}
    with pytest.raises(ValueError):
        Pulse(**{**base, **kwargs})
