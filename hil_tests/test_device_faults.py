"""Load supervision and reboots, injected through SIM_CONTROL on the simulator; on real
hardware the open circuit is a person pulling a lead (--manual)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from firmware_host import errors, icd
from firmware_host.sim.process import output_off
from firmware_host.stimulator import Stimulator
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import Observed, observed, open_session

pytestmark = pytest.mark.timeout(30)

NORMAL_LOAD_OHM = 1000


@pytest.fixture
def stimulating(stim: Stimulator) -> Iterator[Stimulator]:
    """Channel 1 enabled at 1 mA, 50 Hz, 200 us."""
    stim.configure(1, frequency_hz=50, pulse_width_us=200)
    stim.enable(1)
    stim.ramp(1, 1.0)
    yield stim


def channel_fault(seen: Observed, code: str, timeout: float) -> float:
    """Host receipt time of FAULT `code` on channel 1."""
    assert seen.wait_for(lambda: any(f.code == code and f.channel == 1 for _, f in seen.faults), timeout), \
        f"no {code} fault on channel 1 within {timeout} s"
    return next(t for t, f in seen.faults if f.code == code)


@pytest.mark.needs_sim_control
@pytest.mark.parametrize(("code", "load_ohm"), [("OPEN_CIRCUIT", icd.OPEN_CIRCUIT_OHM), ("COMPLIANCE", 100_000)])
def test_load_trip(stimulating: Stimulator, dut: DeviceUnderTest, measure: Measure, code: str, load_ohm: int) -> None:
    stim = stimulating
    trace = dut.trace()
    try:
        with observed(stim) as seen:
            sent = time.monotonic()
            stim.sim_control(icd.SimOp.SET_LOAD, 1, load_ohm)
            received = channel_fault(seen, code, 2.0)
            seen.wait_for(lambda: not stim.enabled(), 1.0)
            # the next reading carries (and clears) the compliance-limited flag: let this
            # session's supervisor see it rather than the next session's
            assert seen.wait_for(lambda: bool(seen.channel(1, since=received)), 1.0)
        if trace is not None:
            off = trace.wait_event(output_off("fault"), timeout=3.0)
            measure(f"{code.lower()}_device_latency", (off["t"] - sent) * 1000, "ms", timing=True)
        measure(f"{code.lower()}_host_notified", (received - sent) * 1000, "ms", timing=True)
        status = stim.status()
        assert 1 not in status.enabled and not status.latched_faults, "a load fault must be per-channel, unlatched"
        assert stim.tripped is None and stim.setting(1).amplitude_ma == 0
        assert any("channel 1" in n.text for n in seen.notices), "the clinician was not told"
    finally:
        stim.sim_control(icd.SimOp.SET_LOAD, 1, NORMAL_LOAD_OHM)
    stim.enable(1)  # not latched: the channel starts again from zero
    assert 1 in stim.status().enabled


@pytest.mark.manual
@pytest.mark.timeout(90)
def test_pulled_lead_trips_open_circuit(stimulating: Stimulator, request: pytest.FixtureRequest) -> None:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with observed(stimulating) as seen:
        with capture.global_and_fixture_disabled():
            print("\n>>> Channel 1 is stimulating at 1 mA into the test load: pull its lead within 60 s.")
        channel_fault(seen, "OPEN_CIRCUIT", 60.0)
    assert 1 not in stimulating.status().enabled


@pytest.mark.needs_sim_control
def test_reboot_mid_session_is_detected(stimulating: Stimulator, dut: DeviceUnderTest, measure: Measure) -> None:
    stim = stimulating
    trace = dut.trace()
    with observed(stim) as seen:
        stim.sim_control(icd.SimOp.REBOOT)
        rebooted = time.monotonic()
        assert seen.wait_for(lambda: bool(seen.lost), 2.0), "the host did not notice the reboot"
        detected = time.monotonic()
    assert isinstance(seen.lost[0].reason, errors.DeviceRebooted)
    assert stim.tripped is not None, "the session must stop after a reboot"
    measure("reboot_detection", (detected - rebooted) * 1000, "ms", high=dut.identity.watchdog_ms, timing=True)
    if trace is not None:
        trace.wait_event(output_off("reboot"), timeout=3.0)
    stim.close()
    with open_session(dut.url) as fresh:  # the next session starts normally
        assert not fresh.status().enabled
