"""Handshake, identity and the end of a session: the device answers HELLO with an IDENTITY
the host accepts (ICD v1 or v2), and a v2 device ends a session with BYE latching nothing and
starts the next one with every register at zero, whatever the session before left."""

from __future__ import annotations

import threading
import time

import pytest

from firmware_host import icd
from firmware_host.drivers import open_transport
from firmware_host.link import Link
from hil_tests.conftest import DeviceUnderTest, Measure
from hil_tests.harness import ask, wave

pytestmark = pytest.mark.timeout(20)


def test_handshake_and_identity(dut: DeviceUnderTest, measure: Measure) -> None:
    link = Link(open_transport(dut.url))
    started = time.monotonic()
    identity = link.open(2.0)
    elapsed = time.monotonic() - started
    link.close()
    measure("handshake_time", elapsed * 1000, "ms", high=500, timing=True)
    measure("protocol_version", identity.protocol_version, "", low=min(icd.PROTOCOL_VERSIONS),
            high=max(icd.PROTOCOL_VERSIONS))
    measure("channels", identity.channels, "", low=1, high=8)
    measure("watchdog_ms", identity.watchdog_ms, "ms", low=1)
    measure("telemetry_hz", identity.telemetry_hz, "Hz", low=1)
    measure("max_phase_charge_nc", identity.max_phase_charge_nc, "nC", low=1)
    assert identity.serial, "IDENTITY carries no serial number"
    assert identity.min_frequency_mhz <= identity.max_frequency_mhz
    assert identity.serial == dut.identity.serial, "a different device answered"


def test_the_device_is_what_its_place_says(dut: DeviceUnderTest) -> None:
    """A job reserves a lab place by its tags (channels, firmware, icd): the stimulator on it
    must be what they say, or jobs land on the wrong rig."""
    if dut.place is None or not dut.place.tags:
        pytest.skip("not reached through a labgrid place with tags (--lg-env, --device lg://PLACE)")
    from firmware_host.lab import rig_tags

    actual = rig_tags(dut.identity)
    wrong = {tag: said for tag, said in dut.place.tags.items() if tag in actual and said != actual[tag]}
    assert not wrong, (f"place {dut.place.place} says {wrong} but {dut.identity.serial} reports "
                       f"{ {tag: actual[tag] for tag in wrong} }: fix the place's tags (labgrid-client set-tags)")


def test_hello_puts_the_device_in_the_safe_state(dut: DeviceUnderTest, link: Link) -> None:
    status = link.wait(link.query(icd.GetStatus()), "GET_STATUS")
    assert isinstance(status, icd.Status) and status.output_mask == 0


def _registers(link: Link, channel: int, timeout: float = 2.0) -> icd.Telemetry:
    """The next TELEMETRY of `channel` on a bare link."""
    seen: list[icd.Telemetry] = []
    done = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, icd.Telemetry) and event.channel == channel:
            seen.append(event)
            done.set()

    unsubscribe = link.subscribe(on_event)
    try:
        assert done.wait(timeout), f"no telemetry for channel {channel}"
        return seen[0]
    finally:
        unsubscribe()


def test_bye_ends_a_session_latching_nothing(dut: DeviceUnderTest) -> None:
    link = Link(open_transport(dut.url))
    identity = link.open(2.0)
    if identity.protocol_version < 2:
        link.close()
        pytest.skip("ICD v1 has no BYE: a clean close leaves WATCHDOG latched (tested in test_watchdog)")
    ask(link, icd.ClearFault())
    ask(link, wave(0, frequency_mhz=max(dut.identity.min_frequency_mhz, 10_000), phase_us=100))
    link.close()  # sends BYE
    time.sleep(2 * dut.identity.watchdog_ms / 1000)  # long past the watchdog: nothing may latch
    again = Link(open_transport(dut.url))
    try:
        assert again.open(2.0).latched_faults == 0, "BYE must latch nothing"
        after = _registers(again, 0)
        assert (after.amplitude_ua, after.frequency_mhz, after.phase_us) == (0, 0, 0), \
            "v2 HELLO returns every register to zero"
        assert (after.shape, after.asym_ratio, after.burst_pulses, after.interphase_us, after.burst_rate_mhz) == \
            (0, 0, 0, 0, 0), "v2 HELLO returns every register to zero (asym_ratio 0 reads as not set)"
    finally:
        again.close()
