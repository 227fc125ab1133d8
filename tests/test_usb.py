"""The USB transport: the host API tests that run over a serial pty also run over `usb://`
on a simulated USB bus (a pyusb backend, so pyusb's real code path runs), plus what only
USB has: enumeration by serial string, claim/release, libusb timeouts, permissions, discovery.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

import firmware_host as fh
from firmware_host import errors, icd
from firmware_host.drivers import discovery, open_transport
from firmware_host.drivers.usb import UDEV_RULE, UsbTransport, find_backend, use_backend
from firmware_host.drivers.usb_sim import SimUsbBackend, SimUsbDevice
from firmware_host.link import Link, LinkLost
from firmware_host.stimulator import Stimulator

from firmware_host.sim.process import spawn_sim
from hil_tests.harness import ask, wave
from support import BENCH, forearm_sites, prescription

pytestmark = pytest.mark.timeout(20)

REPO = Path(__file__).resolve().parents[1]
URL = "usb://1209:0001/SIM-USB-0001"


def wait_for(predicate: Callable[[], object], timeout: float = 3.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


@dataclass
class Rig:
    """A device behind one transport kind: its URL, a URL where nothing is, and its cable."""

    url: str
    missing_url: str
    unplug: Callable[[], None]


@pytest.fixture
def bus() -> Iterator[SimUsbBackend]:
    """Two stimulators on a simulated bus, used by every `usb://` open in the test."""
    backend = SimUsbBackend([SimUsbDevice("SIM-USB-0001"), SimUsbDevice("SIM-USB-0002")])
    with use_backend(backend):
        yield backend
    backend.close()


@pytest.fixture(params=["serial-pty", "usb-sim"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    if request.param == "usb-sim":
        backend = request.getfixturevalue("bus")
        yield Rig(URL, "usb://1209:0001/SIM-USB-0099", backend.devices[0].unplug)
        return
    sim = spawn_sim("pty", trace_path=tmp_path / "trace.jsonl")

    def pull_cable() -> None:  # the device end of the pty vanishes with its process
        sim.proc.send_signal(signal.SIGKILL)
        sim.proc.wait(5)

    with sim:
        yield Rig(sim.url, str(tmp_path / "no-such-port"), pull_cable)


def opened(url: str) -> Link:
    link = Link(open_transport(url))
    link.open()
    return link


def session(url: str) -> Stimulator:
    return fh.open(url, prescription=prescription(), placements=forearm_sites(1), envelope=BENCH)


def start(stim: Stimulator, amplitude_ma: float = 1.0) -> None:
    stim.configure(1, frequency_hz=100, pulse_width_us=200)
    stim.enable(1)
    stim.ramp(1, amplitude_ma)


def device_status(url: str) -> icd.Status:
    link = opened(url)
    try:
        return link.wait(link.query(icd.GetStatus()), "GET_STATUS")
    finally:
        link.close()


# --- the same host API over serial and USB ----------------------------------------------


def test_handshake_reports_identity(rig: Rig) -> None:
    link = opened(rig.url)
    try:
        assert link.identity.protocol_version == 2 and link.identity.channels == 4
        assert link.identity.serial == ("SIM-USB-0001" if rig.url.startswith("usb://") else "SIM-0001")
    finally:
        link.close()


def test_session_ramps_reports_and_closes_safely(rig: Rig) -> None:
    with session(rig.url) as stim:
        start(stim, 1.0)
        reading = wait_for(lambda: (r := stim.readings.get(1)) and r.amplitude_ma == 1.0 and r)
        assert reading.enabled and reading.frequency_hz == 100 and reading.pulse_width_us == 200
        assert stim.status().enabled == {1}
    status = device_status(rig.url)  # the interface was released: a new session opens it
    assert status.output_mask == 0 and status.latched_faults == 0


def test_nak_becomes_its_typed_exception(rig: Rig) -> None:
    link = opened(rig.url)

    try:
        with pytest.raises(errors.OutOfRange, match="OUT_OF_RANGE"):
            ask(link, wave(phase_us=5000))
        assert isinstance(ask(link, wave(amplitude_ua=500)), icd.Ack)  # disabled: allowed
        with pytest.raises(errors.NotZeroStart):
            ask(link, icd.Output(0b1))
        assert isinstance(ask(link, icd.GetStatus()), icd.Status)  # the link carries on after NAKs
    finally:
        link.close()


def test_estop_stops_the_output_and_latches(rig: Rig) -> None:
    with session(rig.url) as stim:
        start(stim, 0.5)
        assert stim.estop()
        assert stim.tripped is not None
        status = stim.status()
        assert status.enabled == frozenset() and "ESTOP" in status.latched_faults


def test_unplug_mid_session_loses_the_link_and_trips(rig: Rig) -> None:
    events: list[object] = []
    with session(rig.url) as stim:
        stim.subscribe(events.append)
        start(stim, 0.5)
        rig.unplug()
        lost = wait_for(lambda: next((e for e in events if isinstance(e, LinkLost)), None), timeout=2.0)
        assert isinstance(lost.reason, errors.LinkError)
        assert stim.tripped and "link to the device lost" in stim.tripped


def test_second_controller_gets_device_busy(rig: Rig) -> None:
    with open_transport(rig.url):
        with pytest.raises(errors.DeviceBusy):
            open_transport(rig.url)


def test_missing_device_is_device_not_found(rig: Rig) -> None:
    with pytest.raises(errors.DeviceNotFound):
        open_transport(rig.missing_url)


# --- USB only -----------------------------------------------------------------------


def test_unplugged_transport_fails_at_once_and_the_device_watchdog_acts(bus: SimUsbBackend) -> None:
    device = bus.devices[0]
    with session(URL) as stim:
        start(stim, 0.5)
        transport = stim._link._transport  # noqa: SLF001 - the byte path under the session
        device.unplug()
        began = time.monotonic()
        with pytest.raises(errors.TransportClosed, match="unplugged"):
            transport.write(b"\x00")
        with pytest.raises(errors.TransportClosed, match="unplugged"):
            transport.read(1.0)
        assert time.monotonic() - began < 0.2
    wait_for(lambda: device.device.latched_faults & (1 << icd.FaultCode.WATCHDOG), timeout=2.0)
    assert device.device.output_mask == 0


def test_serial_number_chooses_between_two_stimulators(bus: SimUsbBackend) -> None:
    link = opened("usb://1209:0001/SIM-USB-0002")
    try:
        assert link.identity.serial == "SIM-USB-0002"
    finally:
        link.close()
    with pytest.raises(errors.TransportError, match="2 devices match.*SIM-USB-0001.*SIM-USB-0002"):
        open_transport("usb://1209:0001")
    bus.devices[1].unplug()
    with open_transport("usb://1209:0001") as only:  # one attached: no serial needed
        assert isinstance(only, UsbTransport)


def test_access_denied_names_the_udev_rule() -> None:
    backend = SimUsbBackend([SimUsbDevice(access_denied=True)])
    try:
        with pytest.raises(errors.TransportError, match="permission denied") as denied:
            UsbTransport("usb://1209:0001", backend=backend)
        assert UDEV_RULE in str(denied.value) and "udevadm" in str(denied.value)
        assert not isinstance(denied.value, (errors.DeviceNotFound, errors.DeviceBusy))
    finally:
        backend.close()


def test_reads_time_out_and_close_releases(bus: SimUsbBackend) -> None:
    transport = open_transport(URL)
    began = time.monotonic()
    assert transport.read(0.0) == b""  # 0 must not become libusb's "wait forever"
    assert transport.read(0.1) == b""  # no session yet: the device is silent
    assert 0.1 <= time.monotonic() - began < 0.5
    transport.close()
    transport.close()
    with pytest.raises(errors.TransportClosed):
        transport.read(0.0)
    assert bus.devices[0].claimed_by is None
    open_transport(URL).close()


@pytest.mark.parametrize("url", ["usb://", "usb://1209", "usb://12345:0001", "usb://zz:0001/X"])
def test_malformed_url_is_a_transport_error(url: str) -> None:
    with pytest.raises(errors.TransportError, match="VID:PID"):
        open_transport(url)


def test_real_libusb_from_libusb_package_finds_no_such_device() -> None:
    assert find_backend() is not None  # bundled libusb: no system install needed
    with pytest.raises(errors.DeviceNotFound):
        open_transport("usb://0000:0000")


def test_udev_rule_file_matches_the_driver() -> None:
    rules = (REPO / "udev" / "60-needle-estim.rules").read_text().splitlines()
    assert [line for line in rules if line and not line.startswith("#")] == [UDEV_RULE]


def test_discovery_lists_usb_serial_and_sim(bus: SimUsbBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    port = ListPortInfo("/dev/ttyACM7", skip_link_detection=True)
    port.vid, port.pid, port.serial_number, port.description = 0x1209, 0x0001, "CDC-9", "stimulator (CDC)"
    monkeypatch.setattr(discovery, "comports", lambda: [port])
    found = discovery.list_devices()
    assert [d.url for d in found] == [
        "usb://1209:0001/SIM-USB-0001", "usb://1209:0001/SIM-USB-0002", "/dev/ttyACM7", "sim://",
    ]
    assert found[2].known and found[2].serial_number == "CDC-9"
    assert json.loads(json.dumps([d.as_dict() for d in found]))[0]["serial_number"] == "SIM-USB-0001"
    table = discovery.format_devices(found)
    assert "SIM-USB-0002" in table and "1209:0001" in table and "sim://" in table
    assert discovery.list_devices(known=[(0x1234, 0x5678)])[0].url == "/dev/ttyACM7"  # ours only by VID/PID
