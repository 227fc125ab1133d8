"""Patterns: exact switching times, counts, caps, laziness, and generator == array form."""

from __future__ import annotations

import dataclasses
import itertools
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_host.waveforms import (
    PARAMS, AmplitudeModulation, Continuous, DenseDisperse, FrequencySweep, Intermittent, Pulse,
    Ramp, Setting, Shape, Stepwise, TimedSetting, Waveform, burst, merge, render,
)

DISPERSE = Setting(Shape.BIPHASIC, 2.0, 600.0, 4.0)
DENSE = Setting(Shape.BIPHASIC, 100.0, 200.0, 4.0)
CHANNEL_SETTING_FIELDS = (  # safety.settings.ChannelSetting, as the brief defines it
    "channel", "shape", "frequency_hz", "pulse_width_us", "amplitude_ma",
    "asym_ratio", "interphase_us", "burst_pulses", "burst_rate_hz",
)


def test_field_names_map_onto_channel_setting() -> None:
    assert set(TimedSetting._fields) - {"t_s"} == set(CHANNEL_SETTING_FIELDS)
    assert {f.name for f in dataclasses.fields(Setting)} == set(CHANNEL_SETTING_FIELDS) - {"channel"}
    assert set(PARAMS) == set(CHANNEL_SETTING_FIELDS) - {"channel"}


@pytest.mark.parametrize(("first_s", "second_s"), [(3.0, 3.0), (2.5, 3.5), (0.1, 0.2)])
def test_dense_disperse_switches_exactly_at_programmed_boundaries(first_s: float, second_s: float) -> None:
    seg = DenseDisperse(DISPERSE, DENSE, first_s, second_s).to_arrays(60.0, 0.1)
    n_cycles = round(60.0 / (first_s + second_s))
    expected = np.sort(np.r_[np.arange(n_cycles) * (first_s + second_s), np.arange(n_cycles) * (first_s + second_s) + first_s])
    np.testing.assert_allclose(seg.t_s, expected, rtol=0, atol=1e-9)
    assert seg.frequency_hz.tolist() == [2.0, 100.0] * n_cycles
    assert seg.pulse_width_us.tolist() == [600.0, 200.0] * n_cycles
    np.testing.assert_allclose(seg.t_end_s[:-1], seg.t_s[1:])
    assert seg.t_end_s[-1] == 60.0


def test_dense_disperse_boundaries_survive_a_ramp_on_an_unrelated_update_grid() -> None:
    seg = Ramp(DenseDisperse(DISPERSE, DENSE, 3.0, 3.0), 10.0, 10.0, 60.0).to_arrays(60.0, 0.7)
    switches = seg.t_s[1:][np.diff(seg.frequency_hz) != 0]
    np.testing.assert_allclose(switches, np.arange(3.0, 60.0, 3.0), rtol=0, atol=1e-9)


def test_burst_setting_renders_the_programmed_pulse_count() -> None:
    seg = burst(Setting(Shape.BIPHASIC, 100.0, 200.0, 3.0), 7, 2.0).to_arrays(10.0, 0.1)
    (row,) = seg.rows()
    assert (row.burst_pulses, row.burst_rate_hz) == (7, 2.0)
    s = row.setting
    _, i_ma = render(s.pulse, 1e6, 21, s.frequency_hz, s.burst_pulses, s.burst_rate_hz)
    onsets = np.flatnonzero((i_ma < 0) & (np.r_[0.0, i_ma[:-1]] >= 0))
    per_burst = np.bincount(onsets // 500_000)
    assert per_burst.tolist() == [7, 7, 7]


def test_stepwise_increase_is_capped() -> None:
    seg = Stepwise(Continuous(Setting(Shape.BIPHASIC, 2.0, 250.0, 2.0)), 1.0, 600.0, 5.0).to_arrays(3600.0, 1.0)
    assert seg.t_s.tolist() == [0.0, 600.0, 1200.0, 1800.0]
    assert seg.amplitude_ma.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert seg.t_end_s[-1] == 3600.0


@settings(max_examples=50, deadline=None)
# caps are prescribed on the device's 1 µA grid (safety refuses anything else)
@given(st.floats(0.0, 10.0), st.floats(0.1, 3.0), st.floats(10.0, 900.0), st.integers(500, 15_000).map(lambda ua: ua / 1000))
def test_stepwise_never_exceeds_cap_and_never_decreases(base: float, step: float, every: float, cap: float) -> None:
    seg = Stepwise(Continuous(dataclasses.replace(DISPERSE, amplitude_ma=base)), step, every, cap).to_arrays(7200.0, 1.0)
    assert seg.amplitude_ma.max() <= cap
    assert np.all(np.diff(seg.amplitude_ma) >= 0)


def test_intermittent_rests_at_zero_amplitude() -> None:
    seg = Intermittent(Continuous(DENSE), 10.0, 5.0).to_arrays(60.0, 0.1)
    assert seg.t_s.tolist() == [0.0, 10.0, 15.0, 25.0, 30.0, 40.0, 45.0, 55.0]
    assert seg.amplitude_ma.tolist() == [4.0, 0.0] * 4


@pytest.mark.parametrize("waveform", list(Waveform))
def test_amplitude_modulation_stays_between_floor_and_programmed_peak(waveform: Waveform) -> None:
    seg = AmplitudeModulation(Continuous(DENSE), 20.0, 0.25, waveform).to_arrays(60.0, 0.1)
    assert seg.amplitude_ma.max() <= 4.0 and seg.amplitude_ma.min() >= 3.0
    assert seg.amplitude_ma.max() == pytest.approx(4.0, abs=0.01)
    assert seg.amplitude_ma.min() == pytest.approx(3.0, abs=0.01)
    np.testing.assert_allclose(seg.t_s, np.round(seg.t_s / 0.1) * 0.1, atol=1e-9)  # on the update grid
    assert len(seg) > 500  # one update per period, bar equal neighbours merged at the peaks/troughs


def test_frequency_sweep_covers_its_range_as_a_triangle() -> None:
    seg = FrequencySweep(Continuous(DENSE), 2.0, 100.0, 30.0).to_arrays(60.0, 0.5)
    assert seg.frequency_hz.min() >= 2.0 and seg.frequency_hz.max() <= 100.0
    assert seg.frequency_hz[0] < 5.0 and seg.frequency_hz[30] > 95.0  # bottom at 0 s, top at 15 s
    # Periodic: the same frequency half a period step apart in both periods (equal
    # neighbours on the 1 mHz grid merge, so compare by time rather than by row).
    t = np.arange(0.25, 30.0, 0.5)
    at = lambda times: seg.frequency_hz[np.searchsorted(seg.t_s, times, side="right") - 1]  # noqa: E731
    np.testing.assert_allclose(at(t), at(t + 30.0))


def test_ramp_starts_and_ends_at_zero_and_never_exceeds_the_envelope() -> None:
    ramp = Ramp(Continuous(DENSE), 30.0, 20.0, 120.0)
    seg = ramp.to_arrays(120.0, 1.0)
    assert seg.amplitude_ma[0] == 0.0 and seg.amplitude_ma[-1] == 0.0
    rising = seg.amplitude_ma[seg.t_s < 30.0]
    assert np.all(np.diff(rising) > 0)
    t = np.linspace(0.0, 120.0, 12001)
    held = seg.amplitude_ma[np.searchsorted(seg.t_s, t, side="right") - 1]
    assert np.all(held <= 4.0 * ramp.envelope(t) + 1e-12)
    assert seg.t_s[(seg.t_s > 31.0) & (seg.t_s < 99.0)].size == 0  # no updates on the plateau


@settings(max_examples=30, deadline=None)
@given(
    duration=st.floats(1.0, 2000.0),
    update=st.sampled_from([0.05, 0.1, 0.25, 0.7, 1.0]),
    on=st.floats(0.5, 20.0),
    off=st.floats(0.5, 20.0),
)
def test_generator_yields_exactly_the_array_form(duration: float, update: float, on: float, off: float) -> None:
    pattern = Ramp(
        Intermittent(AmplitudeModulation(Stepwise(DenseDisperse(DISPERSE, DENSE, 3.0, 3.0), 0.5, 60.0, 6.0), 17.0, 0.2), on, off),
        5.0, 5.0, duration,
    )
    assert list(pattern.settings(3, duration, update)) == list(pattern.to_arrays(duration, update, channel=3).rows())


def test_generators_are_lazy_over_a_ten_hour_pattern() -> None:
    # Ten hours at 10 ms is 3.6 M updates per channel; a generator that built them first
    # would allocate hundreds of MB. Lazy, the first items need only a window's worth.
    pattern = AmplitudeModulation(DenseDisperse(DISPERSE, DENSE, 3.0, 3.0), 10.0, 0.3)
    tracemalloc.start()
    try:
        streams = [pattern.settings(ch, 10 * 3600.0, 0.01) for ch in (1, 2, 3, 4)]
        first = list(itertools.islice(merge(*streams), 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB"
    assert [s.t_s for s in first[:4]] == [0.0] * 4 and [s.channel for s in first[:4]] == [1, 2, 3, 4]


def test_merge_orders_channels_by_time() -> None:
    a = DenseDisperse(DISPERSE, DENSE, 3.0, 3.0).settings(2, 30.0, 0.1)
    b = Intermittent(Continuous(DENSE), 2.0, 2.0).settings(1, 30.0, 0.1, offset_s=1.0)
    merged = list(merge(a, b))
    keys = [(s.t_s, s.channel) for s in merged]
    assert keys == sorted(keys) and len(merged) == 10 + 15


def test_hour_of_four_channel_dense_disperse_arrays_hold_one_row_per_change() -> None:
    # Timing lives in bench/waveforms_bench.py; here: the array form is compact (one row per
    # change, not per update period) and a ramp only adds rows while it ramps.
    patterns = [Ramp(DenseDisperse(DISPERSE, DENSE, 3.0, 3.0), 60.0, 30.0, 3600.0) for _ in range(4)]
    tables = [p.to_arrays(3600.0, 0.1, ch) for ch, p in enumerate(patterns, 1)]
    for table in tables:
        assert 1200 <= len(table) <= 1200 + (60.0 + 30.0) / 0.1 + 2


def test_pulse_parameters_of_a_setting_feed_metrics() -> None:
    s = Setting(Shape.BIPHASIC, 2.0, 600.0, 4.0, asym_ratio=2, interphase_us=50.0)
    assert s.pulse == Pulse(Shape.BIPHASIC, 600.0, 4.0, 2, 50.0)
