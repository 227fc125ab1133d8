"""What reaches the patient: ramps within the device's step and slew, and delivered charge
that the device's own counter and the host's arithmetic agree on."""

from __future__ import annotations

import time

import pytest

from firmware_host.stimulator import Stimulator
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import observed

pytestmark = pytest.mark.timeout(30)


def test_ramp_stays_within_step_and_slew(stim: Stimulator, dut: DeviceUnderTest, measure: Measure) -> None:
    target_ma = 3.0
    stim.configure(1, frequency_hz=50, pulse_width_us=200)
    stim.enable(1)
    steps: list[tuple[float, float]] = [(time.monotonic(), 0.0)]
    with observed(stim) as seen:
        stim.ramp(1, target_ma, on_step=lambda ma: steps.append((time.monotonic(), ma)))
        seen.wait_for(lambda: any(abs(r.amplitude_ma - target_ma) < 1e-3 for _, r in seen.channel(1)), 2.0)
    deltas_ua = [round((b - a) * 1000) for (_, a), (_, b) in zip(steps, steps[1:])]
    duration_s = steps[-1][0] - steps[0][0]
    shown = [r.amplitude_ma for _, r in seen.channel(1)]
    measure("ramp_steps", len(deltas_ua), "")
    measure("ramp_max_step", max(deltas_ua), "uA", low=1, high=dut.identity.max_step_ua)
    measure("ramp_mean_rate", target_ma * 1000 / duration_s, "uA/s", high=dut.identity.max_slew_ua_per_s)
    measure("ramp_final_amplitude", stim.setting(1).amplitude_ma, "mA", low=target_ma, high=target_ma)
    measure("ramp_telemetry_max", max(shown), "mA", high=target_ma)
    assert shown == sorted(shown), "telemetry amplitude went down during an upward ramp"


def test_charge_counter_matches_host_estimate(stim: Stimulator, measure: Measure) -> None:
    amplitude_ma, pulse_width_us, rate_hz, hold_s = 3.0, 300.0, 100.0, 3.0
    stim.configure(1, frequency_hz=rate_hz, pulse_width_us=pulse_width_us)
    stim.enable(1)
    stim.ramp(1, amplitude_ma)
    with observed(stim) as seen:
        steady = lambda: [r for _, r in seen.channel(1) if r.enabled and abs(r.amplitude_ma - amplitude_ma) < 1e-3]  # noqa: E731
        assert seen.wait_for(lambda: len(steady()) >= 1, 2.0), "no telemetry at the set amplitude"
        host_start = time.monotonic()
        time.sleep(hold_s)
        assert seen.wait_for(lambda: steady()[-1].device_time_s - steady()[0].device_time_s >= hold_s, 2.0)
        host_elapsed = time.monotonic() - host_start
    first, last = steady()[0], steady()[-1]
    device_s = last.device_time_s - first.device_time_s
    uc_per_s = amplitude_ma * pulse_width_us * rate_hz / 1000  # mA x us = nC per pulse
    expected_uc = uc_per_s * device_s
    counted_uc = last.charge_total_uc - first.charge_total_uc
    measure("charge_interval_device_clock", device_s, "s")
    measure("charge_interval_host_clock", host_elapsed, "s")
    measure("charge_expected", expected_uc, "uC")
    measure("charge_counted", counted_uc, "uC")
    measure("charge_error", 100 * (counted_uc - expected_uc) / expected_uc, "%", low=-2.0, high=2.0)
