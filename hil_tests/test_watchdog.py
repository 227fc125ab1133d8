"""The device makes itself safe when the host goes away: the controller process killed
outright, or the link lost entirely (blackout through the fault proxy)."""

from __future__ import annotations

import signal
import time

import pytest

from firmware_host import icd
from firmware_host.drivers import Transport, open_transport
from firmware_host.drivers.faulty import FaultyTransport
from firmware_host.link import Link
from firmware_host.sim.process import output_off
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import open_session, start_host_process

pytestmark = pytest.mark.timeout(30)

MARGIN_MS = 100  # scheduling slack on top of watchdog_ms for a simulator on a busy machine


def latched_after_reconnect(url: str) -> tuple[int, int]:
    """(latched_faults, output_mask) as the next host finds them."""
    link = Link(open_transport(url))
    identity = link.open(2.0)
    try:
        status = link.wait(link.query(icd.GetStatus()), "GET_STATUS")
        assert isinstance(status, icd.Status)
        return identity.latched_faults, status.output_mask
    finally:
        link.close()


def test_watchdog_after_host_process_killed(dut: DeviceUnderTest, measure: Measure) -> None:
    watchdog_ms = dut.identity.watchdog_ms
    host = start_host_process(dut.url)
    try:
        trace = dut.trace()
        time.sleep(2 * watchdog_ms / 1000)  # heartbeats must keep the session alive meanwhile
        if trace is not None:
            assert not trace.events_after(0), "the device stopped while its host was alive"
        host.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        host.wait(5)
        if trace is not None:
            fired = trace.wait_event(output_off("watchdog"), timeout=watchdog_ms / 1000 + 2)
            measure("watchdog_latency_after_kill", (fired["t"] - killed) * 1000, "ms",
                    high=watchdog_ms + MARGIN_MS)
        else:
            time.sleep((watchdog_ms + MARGIN_MS) / 1000)
    finally:
        host.kill()
        host.wait(5)
    latched, outputs = latched_after_reconnect(dut.url)
    assert latched & (1 << icd.FaultCode.WATCHDOG), "WATCHDOG not latched after the host vanished"
    assert outputs == 0


def test_blackout_leaves_the_device_safe_within_the_watchdog(dut: DeviceUnderTest, measure: Measure) -> None:
    watchdog_ms = dut.identity.watchdog_ms
    proxies: list[FaultyTransport] = []

    def wrap(transport: Transport) -> FaultyTransport:
        proxies.append(FaultyTransport(transport))
        return proxies[0]

    stim = open_session(dut.url, (1,), wrap=wrap)
    try:
        stim.configure(1, frequency_hz=50, pulse_width_us=200)
        stim.enable(1)
        stim.ramp(1, 1.0)
        trace = dut.trace()
        proxies[0].set_blackout(True)
        blackout = time.monotonic()
        if trace is not None:
            fired = trace.wait_event(output_off("watchdog"), timeout=watchdog_ms / 1000 + 2)
            measure("watchdog_latency_after_blackout", (fired["t"] - blackout) * 1000, "ms",
                    high=watchdog_ms + MARGIN_MS)
        else:
            time.sleep((watchdog_ms + MARGIN_MS) / 1000)
        deadline = time.monotonic() + 5
        while stim.tripped is None and time.monotonic() < deadline:
            time.sleep(0.01)
        measure("host_detects_loss", (time.monotonic() - blackout) * 1000, "ms", timing=True)
        assert stim.tripped is not None, "the host did not notice the link was gone"
        proxies[0].set_blackout(False)
    finally:
        stim.close()
    latched, outputs = latched_after_reconnect(dut.url)
    assert latched & (1 << icd.FaultCode.WATCHDOG) and outputs == 0
