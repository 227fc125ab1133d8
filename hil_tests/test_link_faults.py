"""The link under faults, through the host-side fault proxy (drivers/faulty.py), so the
same test runs in front of real hardware: at 1 % frame corruption in both directions a
session must deliver exactly what was applied and raise no fault. (Total loss is in
test_watchdog.py: the device must make itself safe.)"""

from __future__ import annotations

import time

import pytest

from firmware_host.drivers import Transport
from firmware_host.drivers.faulty import FaultPlan, FaultyTransport
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import Scheduled, observed, open_session, timeline_mismatches

pytestmark = pytest.mark.timeout(40)

CORRUPTION = 0.01
SEED = 8
FREQUENCIES_HZ = (20.0, 50.0, 80.0, 100.0, 40.0, 10.0, 60.0, 30.0, 90.0, 70.0)


def test_session_survives_one_percent_corruption(dut: DeviceUnderTest, measure: Measure) -> None:
    proxies: list[FaultyTransport] = []

    def wrap(transport: Transport) -> FaultyTransport:
        # a few scripted corruptions besides the random ones, so every run exercises recovery
        proxies.append(FaultyTransport(
            transport,
            FaultPlan(corrupt=CORRUPTION, corrupt_frames=frozenset({6, 25})),
            FaultPlan(corrupt=CORRUPTION, corrupt_frames=frozenset({9, 60})),
            seed=SEED,
        ))
        return proxies[0]

    two = dut.identity.channels >= 2
    stim = open_session(dut.url, (1, 2) if two else (1,), wrap=wrap)
    schedule: dict[int, list[Scheduled]] = {1: []}

    def note(channel: int) -> None:
        setting = stim.setting(channel)
        assert setting is not None
        schedule[channel].append((time.monotonic(), setting))

    try:
        with observed(stim) as seen:
            stim.configure(1, frequency_hz=FREQUENCIES_HZ[0], pulse_width_us=200)
            if two:  # a second, idle-but-enabled channel shares the link
                stim.configure(2, frequency_hz=10, pulse_width_us=100)
            stim.enable(*stim.channels)
            note(1)
            stim.ramp(1, 2.0, on_step=lambda _: note(1))
            for frequency in FREQUENCIES_HZ:
                time.sleep(0.2)
                stim.configure(1, frequency_hz=frequency, pulse_width_us=200)
                note(1)
            time.sleep(0.3)
            stim.set_amplitude(1, 0.0)
            note(1)
            time.sleep(0.3)
            status = stim.status()
        readings = [(t, r) for t, r in seen.readings if r.channel == 1]
        window_s = 1 / dut.identity.telemetry_hz + stim._link.reply_timeout  # noqa: SLF001 - a retransmission's lag
        mismatches = timeline_mismatches(readings, schedule, window_s)
        proxy, link_stats = proxies[0], stim.link_stats
        measure("frames_corrupted_to_device", proxy.to_device.corrupted, "frames", low=1)
        measure("frames_corrupted_from_device", proxy.from_device.corrupted, "frames", low=1)
        measure("device_rx_bad_frames", status.rx_bad_frames, "frames")
        measure("host_bad_frames", link_stats.bad_frames, "frames")
        measure("retransmissions", link_stats.retransmissions, "frames")
        measure("telemetry_events_lost", link_stats.events_lost, "events")
        measure("readings_compared", len(readings), "", low=20)
        measure("timeline_mismatches", len(mismatches), "readings", high=0)
        assert not mismatches, "\n".join(mismatches[:10])
        assert not seen.faults, f"unexpected device faults: {seen.faults}"
        assert stim.tripped is None, f"the session stopped: {stim.tripped}"
        assert stim.setting(1).amplitude_ma == 0 and stim.setting(1).frequency_hz == FREQUENCIES_HZ[-1]
    finally:
        stim.close()
