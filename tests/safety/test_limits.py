import pytest
from pydantic import ValidationError

from safety import (SENSITIVITY_FACTORS, DeviceLimits, Needle, Prescription, Refusal, Sensitivity,
                    effective_limits)

from .conftest import PRESCRIPTION, SIM_DEVICE, SLOW_DEVICE


def rx(**kw) -> Prescription:
    base = dict(max_amplitude_ma=10.0, frequency_hz=(1.0, 100.0), pulse_width_us=(50.0, 500.0))
    base.update(kw)
    return Prescription(**base)


def test_needle_area_is_cylinder_side():
    assert Needle().area_cm2 == pytest.approx(3.14159265 * 0.025 * 1.5)
    with pytest.raises(Refusal):
        Needle(diameter_mm=0)


@pytest.mark.parametrize("diameter,length", [(0.25, 1e200), (1e200, 1e200), (0.05, 15), (0.25, 0.5),
                                             (float("nan"), 15), (0.25, float("inf")), (True, 15), ("0.25", 15)])
def test_needle_sizes_are_plausible(diameter, length):
    """A typing error in a needle size must not switch the charge-density rules off
    (1e200 x 1e200 made k = -inf) or let 10 µC/phase through (0.25 x 1e200)."""
    with pytest.raises(Refusal) as exc:
        Needle(diameter, length)
    assert exc.value.rule == "needle.invalid_size" and "mm" in str(exc.value)


def test_needle_sizes_are_stored_as_plain_floats():
    class Sneaky(float):
        def __mul__(self, other):
            return 1e9

    needle = Needle(Sneaky(0.25), 15)
    assert type(needle.diameter_mm) is float and needle.area_cm2 == pytest.approx(Needle().area_cm2)


def test_prescribed_ramp_rate_has_an_upper_bound():
    rx(ramp_ma_per_s=2.0)
    with pytest.raises(ValidationError):
        rx(ramp_ma_per_s=2.001)


@pytest.mark.parametrize("sensitivity,amp,ramp", [(Sensitivity.HYPERSENSITIVE, 6.0, 0.5),
                                                  (Sensitivity.TYPICAL, 8.5, 1.0),
                                                  (Sensitivity.HYPOSENSITIVE, 10.0, 1.0)])
def test_sensitivity_scales_amplitude_and_ramp(sensitivity, amp, ramp):
    lim = effective_limits(SIM_DEVICE, rx(sensitivity=sensitivity), 1)
    assert lim.max_amplitude_ma == pytest.approx(amp)
    assert lim.ramp_ma_per_s == pytest.approx(ramp)
    assert lim.sources["amplitude_max"] == "prescription"


def test_sensitivity_factors_never_loosen():
    assert all(f.amplitude <= 1 and f.ramp <= 1 for f in SENSITIVITY_FACTORS.values())


def test_device_binds_when_prescription_is_looser():
    lim = effective_limits(SLOW_DEVICE, rx(max_amplitude_ma=50.0, sensitivity=Sensitivity.HYPOSENSITIVE,
                                           ramp_ma_per_s=2.0, pulse_width_us=(50.0, 2000.0)), 1)
    assert (lim.max_amplitude_ma, lim.sources["amplitude_max"]) == (30.0, "device")
    assert (lim.ramp_ma_per_s, lim.sources["ramp"]) == (pytest.approx(1.6), "device")   # 0.8 x 2 mA/s
    assert (lim.max_pulse_width_us, lim.sources["pulse_width_max"]) == (1000, "device")


def test_standard_frequency_binds_above_400_hz():
    wide = DeviceLimits(4, 30.0, 1000, 0.5, 10000.0, 20.0, 1.0, 4.0, 60.0)
    lim = effective_limits(wide, rx(frequency_hz=(1.0, 5000.0)), 1)
    assert (lim.max_frequency_hz, lim.sources["frequency_max"]) == (400.0, "standard")


def test_per_channel_prescription_and_unprescribed_channel():
    p = rx(max_amplitude_ma={1: 4.0, 2: 6.0}, sensitivity=Sensitivity.HYPOSENSITIVE)
    assert effective_limits(SIM_DEVICE, p, 2).max_amplitude_ma == 6.0
    with pytest.raises(Refusal) as exc:
        effective_limits(SIM_DEVICE, p, 3)
    assert exc.value.rule == "prescription.channel"
    with pytest.raises(Refusal) as exc:
        effective_limits(SIM_DEVICE, p, 5)
    assert exc.value.rule == "device.channel"


def test_session_minutes_default_and_cap():
    assert PRESCRIPTION.max_session_minutes == 30
    assert effective_limits(SIM_DEVICE, rx(max_session_minutes=60), 1).session_s == 3600
    with pytest.raises(ValidationError):
        rx(max_session_minutes=60.5)


@pytest.mark.parametrize("bad", [dict(max_amplitude_ma=float("nan")), dict(max_amplitude_ma=-1.0),
                                 dict(ramp_ma_per_s=0.0), dict(frequency_hz=(100.0, 1.0)),
                                 dict(pulse_width_us=(50.0, float("inf"))), dict(max_amplitude_ma={}),
                                 dict(max_amplitude_ma={0: 1.0}), dict(unknown=1)])
def test_prescription_validation(bad):
    with pytest.raises(ValidationError):
        rx(**bad)


def test_device_limits_must_be_positive():
    with pytest.raises(Refusal) as exc:
        DeviceLimits(4, float("nan"), 1000, 0.5, 200.0, 20.0, 1.0, 4.0, 60.0)
    assert exc.value.rule == "device.invalid_limit"


def test_layers_that_leave_no_room_are_refused_at_setup():
    with pytest.raises(Refusal) as exc:
        effective_limits(SIM_DEVICE, rx(frequency_hz=(250.0, 300.0)), 1)
    assert exc.value.rule == "limits.empty_range"
