"""Every static rule: a setting just inside passes it, just outside fails it."""


import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from safety import (RULES, DeviceLimits, Needle, Prescription, Sensitivity, SettingArrays, LimitArrays, Shape,
                    check_setting, effective_limits, evaluate_arrays)

from .conftest import PRESCRIPTION, SIM_DEVICE, setting

TYPICAL = effective_limits(SIM_DEVICE, PRESCRIPTION, 1)
WIDE_DEVICE = DeviceLimits(4, 1e6, 1e5, 0.01, 1e5, 1e9, 1e6, 1e6, 1e6)
WIDE_RX = Prescription(max_amplitude_ma=1e6, frequency_hz=(0.01, 1e5), pulse_width_us=(1.0, 1e5),
                       sensitivity=Sensitivity.HYPOSENSITIVE)
WIDE = effective_limits(WIDE_DEVICE, WIDE_RX, 1, Needle(0.6, 150.0))
WIDE_LIMITED = effective_limits(DeviceLimits(4, 1e6, 1000, 0.01, 1e5, 1e9, 1e6, 1e6, 1e6), WIDE_RX, 1,
                                Needle(0.6, 150.0))


def rules(s, lim=TYPICAL) -> set[str]:
    return {r.rule for r in check_setting(s, lim).refusals}


def amplitude_boundary(rule: str, lim, hi_ua: int, **kw) -> None:
    """Bisect on the 1 µA grid: the largest passing amplitude passes, 1 µA more fails."""
    lo, hi = 0, hi_ua
    assert rule in rules(setting(1, hi / 1000, **kw), lim)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if rule in rules(setting(1, mid / 1000, **kw), lim) else (mid, hi)
    assert rule not in rules(setting(1, lo / 1000, **kw), lim)
    assert rule in rules(setting(1, hi / 1000, **kw), lim)


def test_prescription_amplitude_cap_with_sensitivity():
    assert "prescription.amplitude_max" not in rules(setting(1, 8.5))
    assert "prescription.amplitude_max" in rules(setting(1, 8.501))


def test_device_amplitude_cap():
    loose = effective_limits(SIM_DEVICE, Prescription(max_amplitude_ma=100.0, frequency_hz=(1.0, 100.0),
                                                      pulse_width_us=(50.0, 500.0)), 1)
    assert "device.amplitude_max" not in rules(setting(1, 30.0, pulse_width_us=50.0), loose)
    assert "device.amplitude_max" in rules(setting(1, 30.001, pulse_width_us=50.0), loose)


@pytest.mark.parametrize("rule,inside,outside", [
    ("prescription.pulse_width_max", dict(pulse_width_us=500.0), dict(pulse_width_us=501.0)),
    ("prescription.pulse_width_min", dict(pulse_width_us=50.0), dict(pulse_width_us=49.0)),
    ("prescription.frequency_max", dict(frequency_hz=100.0), dict(frequency_hz=100.001)),
    ("prescription.frequency_min", dict(frequency_hz=1.0), dict(frequency_hz=0.999)),
    ("device.burst_rate_min", dict(burst_pulses=2, burst_rate_hz=0.5), dict(burst_pulses=2, burst_rate_hz=0.499)),
    ("setting.burst_fits_period", dict(frequency_hz=100.0, burst_pulses=10, burst_rate_hz=10.0),
     dict(frequency_hz=100.0, burst_pulses=10, burst_rate_hz=10.001)),
    ("setting.pulse_fits_period", dict(frequency_hz=100.0, pulse_width_us=500.0, interphase_us=9000.0),
     dict(frequency_hz=100.0, pulse_width_us=500.0, interphase_us=9001.0)),
])
def test_range_rules(rule, inside, outside):
    assert rule not in rules(setting(1, 1.0, **inside))
    assert rule in rules(setting(1, 1.0, **outside))


def test_device_pulse_width_and_frequency_limits():
    loose = effective_limits(SIM_DEVICE, Prescription(max_amplitude_ma=10.0, frequency_hz=(0.1, 300.0),
                                                      pulse_width_us=(10.0, 5000.0)), 1)
    assert "device.pulse_width_max" in rules(setting(1, 1.0, pulse_width_us=1001.0), loose)
    assert "device.pulse_width_max" not in rules(setting(1, 1.0, pulse_width_us=1000.0), loose)
    assert "device.frequency_max" in rules(setting(1, 1.0, frequency_hz=200.001), loose)
    assert "device.frequency_min" in rules(setting(1, 1.0, frequency_hz=0.499), loose)
    assert "device.frequency_min" not in rules(setting(1, 1.0, frequency_hz=0.5), loose)


def test_standard_frequency_400_hz():
    assert "standard.frequency_max" not in rules(setting(1, 1.0, frequency_hz=400.0), WIDE)
    assert "standard.frequency_max" in rules(setting(1, 1.0, frequency_hz=400.001), WIDE)


def test_device_phase_charge():
    loose = effective_limits(SIM_DEVICE, Prescription(max_amplitude_ma=100.0, frequency_hz=(1.0, 100.0),
                                                      pulse_width_us=(50.0, 1000.0)), 1, Needle(0.6, 150.0))
    amplitude_boundary("device.phase_charge_max", loose, 30000, pulse_width_us=1000.0)


def test_device_interphase():
    """ICD 4: interphase at most max_phase_us (1001 µs was approved, then NAKed)."""
    ok = setting(1, 1.0, frequency_hz=2.0, pulse_width_us=100.0, interphase_us=1000.0)
    assert "device.interphase_max" not in rules(ok, WIDE_LIMITED)
    assert "device.interphase_max" in rules(setting(1, 1.0, frequency_hz=2.0, pulse_width_us=100.0,
                                                    interphase_us=1001.0), WIDE_LIMITED)


def test_bursts_are_judged_over_their_densest_second():
    """200 pulses at 200 Hz every 2 s average 100 pulses/s, but every burst puts 200 pulses into
    one second: r.m.s. current over 1 s is judged there (it passed at half the limit)."""
    burst = setting(1, 1.0, frequency_hz=200.0, pulse_width_us=500.0, burst_pulses=200, burst_rate_hz=0.5)
    continuous = setting(1, 1.0, frequency_hz=200.0, pulse_width_us=500.0)
    m_burst = evaluate_arrays(SettingArrays.from_settings([burst]), LimitArrays.for_rows([WIDE])).metrics
    m_cont = evaluate_arrays(SettingArrays.from_settings([continuous]), LimitArrays.for_rows([WIDE])).metrics
    assert m_burst.pulse_rate_hz[0] == pytest.approx(100.0) and m_burst.densest_rate_hz[0] == 200
    assert m_burst.rms_current_ma[0] == pytest.approx(m_cont.rms_current_ma[0])
    assert m_burst.power_density_w_cm2[0] == pytest.approx(m_cont.power_density_w_cm2[0])
    amplitude_boundary("standard.rms_current", WIDE, 100_000, pulse_width_us=1000.0, frequency_hz=400.0,
                       burst_pulses=250, burst_rate_hz=0.5)


def test_standard_rms_current():
    amplitude_boundary("standard.rms_current", WIDE, 100_000, pulse_width_us=1000.0, frequency_hz=400.0)


def test_standard_pulse_energy():
    amplitude_boundary("standard.pulse_energy", WIDE, 30_000_000, pulse_width_us=1000.0, frequency_hz=1.0)


def test_standard_power_density():
    at_needle = effective_limits(WIDE_DEVICE, WIDE_RX, 1)
    amplitude_boundary("standard.power_density", at_needle, 100_000, pulse_width_us=100.0, frequency_hz=100.0)


def test_needle_shannon_k_and_message():
    amplitude_boundary("needle.shannon_k", TYPICAL, 8500, pulse_width_us=500.0)
    refusal = next(r for r in check_setting(setting(2, 5.0, pulse_width_us=600.0),
                                            effective_limits(SIM_DEVICE, Prescription(
                                                max_amplitude_ma=10.0, frequency_hz=(1.0, 100.0),
                                                pulse_width_us=(50.0, 1000.0)), 2)).refusals
                   if r.rule == "needle.shannon_k")
    assert str(refusal) == ("charge density k=1.88 exceeds 1.85 on channel 2 "
                            "(needle 0.25 mm x 15 mm, 5.0 mA, 600 µs); the charge per phase is too concentrated on "
                            "the needle: use a shorter phase, a lower current, or a larger conducting surface: "
                            "insert the needle deeper (--inserted MM) or use a thicker one (--needle DIAMETERxLENGTH)")
    assert (refusal.channel, refusal.limit) == (2, 1.85) and refusal.value == pytest.approx(1.8831, abs=1e-4)


def test_shannon_warning_between_1_5_and_1_85():
    q_warn = setting(1, 2.5, pulse_width_us=400.0)      # 1 µC -> k = log10(1/0.1178) = 0.93
    assert not check_setting(q_warn, TYPICAL).warnings
    warn = setting(1, 4.0, pulse_width_us=500.0)        # 2 µC -> k = 0.30 + 1.23 = 1.53
    verdict = check_setting(warn, TYPICAL)
    assert verdict.ok and len(verdict.warnings) == 1 and "k=1.53" in verdict.warnings[0]


def test_needle_residual_current_from_integer_recovery():
    # asym 101, amplitude 10.1 mA + 100 µA -> 100 µA left over for 1000 µs = 0.1 µC per pulse
    amp = (101 * 100 + 100) / 1000
    ok = setting(1, amp, asym_ratio=101, pulse_width_us=1000.0, frequency_hz=100.0)
    bad = setting(1, amp, asym_ratio=101, pulse_width_us=1000.0, frequency_hz=100.001)
    assert "needle.residual_current" not in rules(ok, WIDE)     # 10 µA exactly
    assert "needle.residual_current" in rules(bad, WIDE)
    balanced = setting(1, 10.1, asym_ratio=101, pulse_width_us=1000.0, frequency_hz=100.001)
    assert "needle.residual_current" not in rules(balanced, WIDE)


def test_monophasic_refused_as_dc_and_at_the_needle():
    got = rules(setting(1, 1.0, shape=Shape.MONOPHASIC))
    assert {"standard.no_dc", "needle.charge_balanced"} <= got
    assert not {"standard.no_dc", "needle.charge_balanced"} & rules(setting(1, 1.0, shape=Shape.BIPHASIC_ALTERNATING))


def test_typical_setting_passes():
    verdict = check_setting(setting(1, 3.0, pulse_width_us=200.0, frequency_hz=2.0), TYPICAL)
    assert verdict.ok and not verdict.warnings


def test_every_rule_is_exercised_by_this_file():
    source = open(__file__, encoding="utf-8").read()
    for rule in RULES:
        assert f".{rule.key}" in source, rule.key


settings_strategy = st.builds(
    setting, channel=st.just(1), amplitude_ma=st.integers(0, 40_000).map(lambda u: u / 1000),
    frequency_hz=st.integers(1, 500_000).map(lambda m: m / 1000), pulse_width_us=st.integers(0, 1200).map(float),
    shape=st.sampled_from(list(Shape)), asym_ratio=st.integers(1, 8), interphase_us=st.integers(0, 200).map(float),
    burst_pulses=st.integers(0, 12), burst_rate_hz=st.integers(0, 20_000).map(lambda m: m / 1000))


@hsettings(max_examples=60, deadline=None)
@given(st.lists(settings_strategy, min_size=1, max_size=20))
def test_array_path_agrees_with_scalar_path(batch):
    verdict = evaluate_arrays(SettingArrays.from_settings(batch), LimitArrays.for_rows([TYPICAL] * len(batch)))
    for i, s in enumerate(batch):
        scalar = check_setting(s, TYPICAL)
        keys = {r.rule.split(".", 1)[1] for r in scalar.refusals}
        assert keys == {k for k, mask in verdict.violations.items() if mask[i]}
        assert bool(verdict.refused[i]) == (not scalar.ok)


def test_sixty_minute_program_checks_in_under_100_ms():
    n = 36_000   # one setting per 100 ms for an hour
    rng = np.random.default_rng(1)
    arrays = SettingArrays(
        channel=np.ones(n, np.int64), shape=np.zeros(n, np.int64), frequency_hz=rng.integers(1, 100, n) * 1.0,
        pulse_width_us=rng.integers(50, 500, n) * 1.0, amplitude_ma=rng.integers(0, 8500, n) / 1000,
        asym_ratio=rng.integers(1, 4, n), interphase_us=np.zeros(n), burst_pulses=np.zeros(n, np.int64),
        burst_rate_hz=np.zeros(n))
    limits = LimitArrays.for_rows([TYPICAL])       # broadcast over every row
    verdict = evaluate_arrays(arrays, limits)  # its speed is measured in bench/, not here
    assert verdict.refused.shape == (n,)
