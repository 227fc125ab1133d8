"""A simulated USB bus: a pyusb backend whose devices are the project's simulated stimulator.

It lets the real `usb://` transport and pyusb's whole code path (enumeration, string
descriptors, configuration, claim, bulk transfers, timeouts, errno-carrying errors) run
without hardware:

    bus = SimUsbBackend([SimUsbDevice("SIM-USB-0001")])
    with use_backend(bus):
        stim = firmware_host.open("usb://1209:0001/SIM-USB-0001", ...)

Each SimUsbDevice is a `SimulatedDevice` on its own DeviceLoop thread (`start_in_process`)
behind a socketpair: bulk OUT bytes go to the device as they arrive, its replies wait in the
socket until a bulk IN read takes them. Like a self-powered device, it keeps running after
`unplug()`, so its watchdog makes it safe once the host falls silent.
"""

from __future__ import annotations

import array
import errno
import itertools
import select
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from types import SimpleNamespace

from usb.backend import IBackend
from usb.core import USBError, USBTimeoutError
from usb.util import DESC_TYPE_STRING, ENDPOINT_TYPE_BULK

from ..sim import SimConfig, SimulatedDevice, start_in_process
from .usb import DEFAULT_PID, DEFAULT_VID

EP_IN = 0x81
EP_OUT = 0x01
MAX_PACKET = 64  # full speed, as a small microcontroller would enumerate
_POLL_S = 0.02  # a blocked bulk read notices an unplug within this
_GET_DESCRIPTOR = 0x06
_STANDARD_DEVICE_IN = 0x80
_LANGID_EN_US = b"\x09\x04"

# libusb error codes, carried as backend_error_code like pyusb's libusb1 backend does
_ERRORS = {
    errno.EACCES: (-3, "Access denied (insufficient permissions)"),
    errno.ENODEV: (-4, "No such device (it may have been disconnected)"),
    errno.EBUSY: (-6, "Resource busy"),
    errno.EPIPE: (-9, "Pipe error"),
}


def _error(code: int) -> USBError:
    backend_code, text = _ERRORS[code]
    return USBError(text, backend_code, code)


class SimUsbDevice:
    """One simulated stimulator on the bus; its IDENTITY serial is its USB serial string."""

    def __init__(
        self,
        serial: str = "SIM-USB-0001",
        config: SimConfig | None = None,
        *,
        vid: int = DEFAULT_VID,
        pid: int = DEFAULT_PID,
        access_denied: bool = False,
    ) -> None:
        self.vid, self.pid, self.serial = vid, pid, serial
        self.access_denied = access_denied  # as without the udev rule: open() fails EACCES
        self.strings = {1: "Needle E-Stim (simulated)", 2: "Needle e-stim stimulator", 3: serial}
        self.address = 0  # assigned by the bus
        self.plugged = True
        self.configuration = 1  # the OS configures a device when it enumerates
        self.claimed_by: object | None = None
        self.device: SimulatedDevice  # the model itself, for assertions (outputs, latched faults)
        self._sock, self._stop, self.device = start_in_process(replace(config or SimConfig(), serial=serial))

    def unplug(self) -> None:
        """The cable is pulled: every transfer fails ENODEV from now on."""
        self.plugged = False

    def stop(self) -> None:
        self._stop()
        self._sock.close()

    def bulk_out(self, data: bytes) -> None:
        self._sock.sendall(data)

    def bulk_in(self, size: int, timeout_ms: int) -> bytes:
        """Up to `size` bytes; waits `timeout_ms` (0: forever, as libusb) in short slices so an
        unplug during the wait fails the transfer at once."""
        deadline = None if timeout_ms == 0 else time.monotonic() + timeout_ms / 1000
        while True:
            if not self.plugged:
                raise _error(errno.ENODEV)
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if wait < 0:
                raise USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT)
            ready, _, _ = select.select([self._sock], [], [], wait)
            if ready:
                return self._sock.recv(size)


class _Handle:
    """What open_device returns: one program's open handle on one device."""

    def __init__(self, device: SimUsbDevice) -> None:
        self.device = device


class SimUsbBackend(IBackend):
    """The bus: the IBackend methods pyusb calls, answered from SimUsbDevice state."""

    def __init__(self, devices: Iterable[SimUsbDevice] = ()) -> None:
        super().__init__()
        self.devices: list[SimUsbDevice] = []
        self._addresses = itertools.count(1)
        self._lock = threading.Lock()  # claim state: two "programs" may race for a device
        for device in devices:
            self.plug(device)

    def plug(self, device: SimUsbDevice) -> SimUsbDevice:
        device.address = next(self._addresses)
        self.devices.append(device)
        return device

    def close(self) -> None:
        """Stop every simulated device's thread."""
        for device in self.devices:
            device.stop()

    # --- enumeration and descriptors ------------------------------------------------

    def enumerate_devices(self) -> Iterator[SimUsbDevice]:
        return iter([d for d in self.devices if d.plugged])

    def get_device_descriptor(self, dev: SimUsbDevice) -> SimpleNamespace:
        return SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0200, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=64, idVendor=dev.vid, idProduct=dev.pid, bcdDevice=0x0100,
            iManufacturer=1, iProduct=2, iSerialNumber=3, bNumConfigurations=1,
            address=dev.address, bus=1, port_number=dev.address, port_numbers=(dev.address,), speed=2,
        )

    def get_configuration_descriptor(self, dev: SimUsbDevice, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError(config)
        return SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=32, bNumInterfaces=1, bConfigurationValue=1,
            iConfiguration=0, bmAttributes=0x80, bMaxPower=50, extra_descriptors=[],
        )

    def get_interface_descriptor(self, dev: SimUsbDevice, intf: int, alt: int, config: int) -> SimpleNamespace:
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError((intf, alt, config))
        return SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0, bNumEndpoints=2,
            bInterfaceClass=0xFF, bInterfaceSubClass=0, bInterfaceProtocol=0, iInterface=0,
            extra_descriptors=[],
        )

    def get_endpoint_descriptor(self, dev: SimUsbDevice, ep: int, intf: int, alt: int, config: int) -> SimpleNamespace:
        if (intf, alt, config) != (0, 0, 0) or ep not in (0, 1):
            raise IndexError((ep, intf, alt, config))
        return SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=(EP_IN, EP_OUT)[ep], bmAttributes=ENDPOINT_TYPE_BULK,
            wMaxPacketSize=MAX_PACKET, bInterval=0, bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )

    # --- handles, configuration, interfaces -----------------------------------------

    def open_device(self, dev: SimUsbDevice) -> _Handle:
        self._present(dev)
        if dev.access_denied:
            raise _error(errno.EACCES)
        return _Handle(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        with self._lock:
            if dev_handle.device.claimed_by is dev_handle:
                dev_handle.device.claimed_by = None

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self._present(dev_handle.device).configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self._present(dev_handle.device).configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self._present(dev_handle.device)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False  # a vendor-class interface: no kernel driver binds to it

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        device = self._present(dev_handle.device)
        with self._lock:
            if device.claimed_by not in (None, dev_handle):
                raise _error(errno.EBUSY)
            device.claimed_by = dev_handle

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        device = self._present(dev_handle.device)
        with self._lock:
            if device.claimed_by is dev_handle:
                device.claimed_by = None

    # --- transfers ------------------------------------------------------------------

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: array.array, timeout: int) -> int:
        device = self._claimed(dev_handle)
        device.bulk_out(data.tobytes())
        return len(data)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: array.array, timeout: int) -> int:
        data = self._claimed(dev_handle).bulk_in(len(buff), timeout)
        buff[: len(data)] = array.array("B", data)
        return len(data)

    def ctrl_transfer(
        self, dev_handle: _Handle, bmRequestType: int, bRequest: int, wValue: int, wIndex: int,
        data: array.array, timeout: int,
    ) -> int:
        """GET_DESCRIPTOR(STRING) only, which is all pyusb asks for serials; else a stall."""
        device = self._present(dev_handle.device)
        index = wValue & 0xFF
        if (bmRequestType, bRequest, wValue >> 8) != (_STANDARD_DEVICE_IN, _GET_DESCRIPTOR, DESC_TYPE_STRING):
            raise _error(errno.EPIPE)
        if index == 0:
            payload = _LANGID_EN_US
        elif index in device.strings:
            payload = device.strings[index].encode("utf-16-le")
        else:
            raise _error(errno.EPIPE)
        descriptor = bytes([2 + len(payload), DESC_TYPE_STRING]) + payload
        count = min(len(descriptor), len(data))
        data[:count] = array.array("B", descriptor[:count])
        return count

    def _present(self, device: SimUsbDevice) -> SimUsbDevice:
        if not device.plugged:
            raise _error(errno.ENODEV)
        return device

    def _claimed(self, dev_handle: _Handle) -> SimUsbDevice:
        device = self._present(dev_handle.device)
        if device.claimed_by is not dev_handle:
            raise _error(errno.EBUSY)  # libusb refuses transfers on an interface not claimed
        return device
