"""Handshake and identity: the device answers HELLO with an IDENTITY the host accepts and
limits consistent with ICD v1."""

from __future__ import annotations

import time

import pytest

from firmware_host import icd
from firmware_host.drivers import open_transport
from firmware_host.link import Link
from hil_tests.conftest import DeviceUnderTest, Measure

pytestmark = pytest.mark.timeout(20)


def test_handshake_and_identity(dut: DeviceUnderTest, measure: Measure) -> None:
    link = Link(open_transport(dut.url))
    started = time.monotonic()
    identity = link.open(2.0)
    elapsed = time.monotonic() - started
    link.close()
    measure("handshake_time", elapsed * 1000, "ms", high=500, timing=True)
    measure("protocol_version", identity.protocol_version, "", low=icd.PROTOCOL_VERSION, high=icd.PROTOCOL_VERSION)
    measure("channels", identity.channels, "", low=1, high=8)
    measure("watchdog_ms", identity.watchdog_ms, "ms", low=1)
    measure("telemetry_hz", identity.telemetry_hz, "Hz", low=1)
    measure("max_phase_charge_nc", identity.max_phase_charge_nc, "nC", low=1)
    assert identity.serial, "IDENTITY carries no serial number"
    assert identity.min_frequency_mhz <= identity.max_frequency_mhz
    assert identity.serial == dut.identity.serial, "a different device answered"


def test_hello_puts_the_device_in_the_safe_state(dut: DeviceUnderTest, link: Link) -> None:
    status = link.wait(link.query(icd.GetStatus()), "GET_STATUS")
    assert isinstance(status, icd.Status) and status.output_mask == 0
