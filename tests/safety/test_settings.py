import math

import pytest

from safety import ChannelSetting, Refusal, Shape

from .conftest import setting

SAID = {  # the field as a person reads it in the refusal (the API has it as `detail`)
    "frequency_hz": "the frequency (Hz)", "pulse_width_us": "the phase width (µs)",
    "amplitude_ma": "the amplitude (mA)", "interphase_us": "the interphase gap (µs)",
    "burst_rate_hz": "the burst rate (Hz)",
}


@pytest.mark.parametrize("field", ["frequency_hz", "pulse_width_us", "amplitude_ma", "interphase_us",
                                   "burst_rate_hz"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1.0])
def test_non_finite_or_negative_is_refused_naming_the_field(field, bad):
    with pytest.raises(Refusal) as exc:
        setting(2, **{field: bad})
    assert exc.value.rule == "setting.invalid_number"
    assert exc.value.detail == field and SAID[field] in str(exc.value) and repr(bad) in str(exc.value)
    assert exc.value.channel == 2


@pytest.mark.parametrize("field,value", [("asym_ratio", 0), ("asym_ratio", 256), ("asym_ratio", 1.5),
                                         ("burst_pulses", -1), ("burst_pulses", 256)])
def test_integer_fields_are_bounded(field, value):
    with pytest.raises(Refusal) as exc:
        setting(1, **{field: value})
    assert exc.value.rule == "setting.invalid_number" and exc.value.detail == field


@pytest.mark.parametrize("field,value", [("amplitude_ma", 1.0005), ("frequency_hz", 10.0004),
                                         ("pulse_width_us", 200.5), ("interphase_us", 0.5)])
def test_values_off_the_device_grid_are_refused(field, value):
    with pytest.raises(Refusal) as exc:
        setting(1, **{field: value})
    assert exc.value.rule == "setting.resolution"


@pytest.mark.parametrize("channel", [0, -1, True, "1"])
def test_channel_must_be_a_one_based_int(channel):
    with pytest.raises(Refusal) as exc:
        ChannelSetting(channel, Shape.BIPHASIC, 10.0, 200.0, 1.0)
    assert exc.value.rule == "setting.channel"


def test_shape_must_be_a_shape():
    with pytest.raises(Refusal) as exc:
        ChannelSetting(1, 0, 10.0, 200.0, 1.0)
    assert exc.value.rule == "setting.shape"


def test_derived_quantities():
    s = setting(1, 5.0, pulse_width_us=600.0, frequency_hz=50.0)
    assert s.phase_charge_uc == pytest.approx(3.0)
    assert s.pulse_rate_hz == 50.0 and s.residual_charge_uc == 0
    burst = setting(1, 1.0, frequency_hz=100.0, burst_pulses=5, burst_rate_hz=2.0)
    assert burst.pulse_rate_hz == 10.0
    asym = setting(1, 1.001, asym_ratio=4, pulse_width_us=100.0)
    assert asym.recovery_amplitude_ma == pytest.approx(0.25)          # 1001 // 4 = 250 µA
    assert asym.residual_charge_uc == pytest.approx(1 * 100 / 1e6)    # 1001 - 250*4 = 1 µA for 100 µs
    mono = setting(1, 2.0, shape=Shape.MONOPHASIC)
    assert mono.recovery_amplitude_ma == 0 and mono.residual_charge_uc == pytest.approx(0.4)


def test_same_waveform_ignores_only_amplitude():
    assert setting(1, 1.0).same_waveform(setting(1, 3.0))
    assert not setting(1, 1.0).same_waveform(setting(1, 1.0, pulse_width_us=300.0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
def test_with_amplitude_refuses_non_finite_or_negative(bad):
    base = ChannelSetting(1, Shape.BIPHASIC, 100.0, 200.0, 1.0)
    with pytest.raises(Refusal) as exc:
        base.with_amplitude(bad)
    assert exc.value.rule == "setting.invalid_number" and exc.value.channel == 1


class _Doubling(float):
    """Passes a check as one number, multiplies as another."""

    def __mul__(self, other):
        return 2 * float(self) * other

    __rmul__ = __mul__

    def __round__(self, n=None):
        return round(2 * float(self), n) if n is not None else round(2 * float(self))


class _LyingInt(int):
    def __sub__(self, other):
        return 0

    def __lt__(self, other):
        return False


def test_the_wire_carries_exactly_what_was_checked():
    """A float subclass passed the checks as 0.9 mA and went out as 1.8 mA: every field is
    stored as a plain float/int copied from the value, so checks and encoder read the same."""
    s = ChannelSetting(_LyingInt(1), Shape.BIPHASIC, _Doubling(2.0), _Doubling(200.0), _Doubling(0.9),
                       _LyingInt(1), _Doubling(0.0), _LyingInt(0), _Doubling(0.0))
    for name in ("frequency_hz", "pulse_width_us", "amplitude_ma", "interphase_us", "burst_rate_hz"):
        assert type(getattr(s, name)) is float, name
    for name in ("channel", "asym_ratio", "burst_pulses"):
        assert type(getattr(s, name)) is int, name
    assert s.amplitude_ua == 900 and s.amplitude_ma * 1000 == 900.0


@pytest.mark.parametrize("field,value", [("frequency_hz", 1e306), ("amplitude_ma", 10 ** 400),
                                         ("pulse_width_us", 70_000.0), ("interphase_us", 70_000.0),
                                         ("burst_rate_hz", 5e6)])
def test_numbers_beyond_the_wire_are_refused_not_overflowed(field, value):
    """1e306 Hz and 10**400 mA raised OverflowError; 70000 µs interphase failed to encode and left
    a phantom command in flight. Each is now a refusal naming the field and the wire's limit."""
    kwargs = dict(channel=1, shape=Shape.BIPHASIC, frequency_hz=2.0, pulse_width_us=200.0, amplitude_ma=1.0)
    kwargs[field] = value
    with pytest.raises(Refusal) as exc:
        ChannelSetting(**kwargs)
    assert exc.value.rule == "setting.out_of_range" and exc.value.detail == field and SAID[field] in str(exc.value)
