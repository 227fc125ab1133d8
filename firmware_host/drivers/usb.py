"""USB transport: ICD over a vendor-specific interface's bulk endpoint pair (pyusb + libusb).

URL: `usb://VID:PID[/SERIAL]`, ids in hex, e.g. `usb://1209:0001/SN0042`. Without SERIAL
exactly one attached device may match: with two stimulators on one laptop the host refuses
to guess and lists their serials instead.

libusb comes from the `libusb-package` wheel, so a fresh laptop needs no system install;
without it pyusb's own backend search (a system libusb) is used.

Linux permissions: by default only root may open a USB device. Install the udev rule that
ships in `udev/60-needle-estim.rules` once per machine, then unplug and replug the device:

    sudo install -m 644 udev/60-needle-estim.rules /etc/udev/rules.d/
    sudo udevadm control --reload-rules && sudo udevadm trigger

`TAG+="uaccess"` gives the user logged in at the seat access; `GROUP="plugdev"` covers
service accounts that are members of that group. macOS needs nothing; Windows needs the
WinUSB driver bound to the interface (the firmware's MS OS descriptors or Zadig).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote

import usb.core
import usb.util
from usb.backend import IBackend

from ..errors import DeviceBusy, DeviceNotFound, TransportClosed, TransportError
from .base import Transport

# 1209:0001 is pid.codes' "Test PID": for private testing only and never to be shipped.
# It is a placeholder until the hardware team assigns this product its own VID:PID;
# change it here and in udev/60-needle-estim.rules together (a test checks they agree).
DEFAULT_VID = 0x1209
DEFAULT_PID = 0x0001
KNOWN_IDS: tuple[tuple[int, int], ...] = ((DEFAULT_VID, DEFAULT_PID),)

UDEV_RULE = (
    f'SUBSYSTEM=="usb", ATTRS{{idVendor}}=="{DEFAULT_VID:04x}", ATTRS{{idProduct}}=="{DEFAULT_PID:04x}", '
    'MODE="0660", GROUP="plugdev", TAG+="uaccess"'
)
UDEV_HELP = (
    "install the udev rule and replug the device:\n"
    f"  echo '{UDEV_RULE}' | sudo tee /etc/udev/rules.d/60-needle-estim.rules\n"
    "  sudo udevadm control --reload-rules && sudo udevadm trigger"
)

WRITE_TIMEOUT_MS = 1000  # as the serial transport: a device that stops reading is an error
_VENDOR_CLASS = 0xFF
_GONE = (errno.ENODEV, errno.ENOENT, errno.ESHUTDOWN)

_injected: IBackend | None = None


@contextmanager
def use_backend(backend: IBackend) -> Iterator[IBackend]:
    """Make every `usb://` open in this process use `backend` (a simulated bus in tests).

    The URL and the whole pyusb code path stay exactly those of real hardware; only the
    bus underneath changes. Restores the previous choice on exit.
    """
    global _injected
    previous, _injected = _injected, backend
    try:
        yield backend
    finally:
        _injected = previous


def find_backend() -> IBackend | None:
    """The injected backend, else libusb from `libusb-package`; None lets pyusb search itself."""
    if _injected is not None:
        return _injected
    try:
        import libusb_package
    except ImportError:
        return None
    return libusb_package.get_libusb1_backend()


def parse_url(url: str) -> tuple[int, int, str | None]:
    """`usb://VID:PID[/SERIAL]` -> (vid, pid, serial or None); ValueError names what is wrong."""
    if not url.startswith("usb://"):
        raise ValueError("expected usb://VID:PID[/SERIAL]")
    ids, _, serial = url[len("usb://"):].partition("/")
    vid_text, sep, pid_text = ids.partition(":")
    try:
        if not sep or not 1 <= len(vid_text) <= 4 or not 1 <= len(pid_text) <= 4:
            raise ValueError
        vid, pid = int(vid_text, 16), int(pid_text, 16)
    except ValueError:
        raise ValueError(f"{ids!r} is not VID:PID in hex (e.g. {DEFAULT_VID:04x}:{DEFAULT_PID:04x})") from None
    return vid, pid, unquote(serial) or None


def usb_url(vid: int, pid: int, serial: str | None = None) -> str:
    """The URL that opens exactly this device (with a serial) or the only one of its kind."""
    base = f"usb://{vid:04x}:{pid:04x}"
    return f"{base}/{quote(serial, safe='')}" if serial else base


def read_serial(device: usb.core.Device) -> str | None:
    """The serial string descriptor; raises USBError (EACCES without the udev rule).

    Unlike `device.serial_number`, which turns every failure into a vague ValueError,
    this keeps libusb's errno so access denied can be told apart from a missing string.
    """
    if not device.iSerialNumber:
        return None
    langids = usb.util.get_langids(device)
    if not langids:
        return None
    return usb.util.get_string(device, device.iSerialNumber, langids[0])


class UsbTransport(Transport):
    """The first vendor-class interface with a bulk IN/OUT pair, claimed for this process only.

    `backend` overrides `find_backend()` (tests pass a simulated bus). Reads run on the
    link's reader thread and writes on callers' threads: libusb allows one synchronous
    transfer per endpoint concurrently, which is exactly that.
    """

    def __init__(self, url: str, backend: IBackend | None = None) -> None:
        super().__init__(url)
        self._closed = True  # until open succeeds
        try:
            vid, pid, serial = parse_url(url)
        except ValueError as exc:
            raise TransportError(f"{url}: {exc}") from exc
        backend = backend if backend is not None else find_backend()
        try:
            self._device = _select(url, vid, pid, serial, backend)
            try:
                self._interface, self._in, self._out, self._packet = _claim(self._device)
            except BaseException:
                usb.util.dispose_resources(self._device)  # close the handle opened for the claim
                raise
        except usb.core.NoBackendError as exc:
            raise TransportError(f"{url}: no libusb found ({exc}); pip install libusb-package") from exc
        except usb.core.USBError as exc:
            raise _open_error(url, exc) from exc
        self._closed = False

    def read(self, timeout: float) -> bytes:
        if self._closed:
            raise TransportClosed(f"{self.url}: transport closed")
        try:
            # One max-size packet per transfer: a full packet completes it at once, so bytes never
            # wait for the timeout when the device does not end a burst with a short packet.
            data = self._device.read(self._in, self._packet, _timeout_ms(timeout))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise self._lost("read", exc) from exc
        return bytes(data)

    def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed(f"{self.url}: transport closed")
        try:
            written = self._device.write(self._out, data, WRITE_TIMEOUT_MS)
        except usb.core.USBTimeoutError as exc:
            raise TransportError(f"{self.url}: write timed out (device not reading)") from exc
        except usb.core.USBError as exc:
            raise self._lost("write", exc) from exc
        if written != len(data):
            raise TransportError(f"{self.url}: wrote {written} of {len(data)} bytes")

    def _close(self) -> None:
        try:
            usb.util.release_interface(self._device, self._interface)
        except usb.core.USBError:
            pass  # unplugged: the kernel released it already
        usb.util.dispose_resources(self._device)

    def _lost(self, what: str, exc: usb.core.USBError) -> TransportClosed:
        """Any failed transfer ends the session at once: the host's fault path takes over and
        the device's watchdog makes it safe; retrying a half-gone device helps nobody."""
        if exc.errno in _GONE:
            return TransportClosed(f"{self.url}: the device was unplugged ({what}: {exc})")
        return TransportClosed(f"{self.url}: {what} failed: {exc}")


def _timeout_ms(timeout: float) -> int:
    # libusb reads 0 as "wait forever": the shortest real wait is 1 ms
    return max(1, math.ceil(timeout * 1000))


def _select(url: str, vid: int, pid: int, serial: str | None, backend: IBackend | None) -> usb.core.Device:
    candidates = list(usb.core.find(find_all=True, idVendor=vid, idProduct=pid, backend=backend))
    if serial is None:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise DeviceNotFound(f"no USB device {vid:04x}:{pid:04x} is attached ({url})")
    serials: dict[str, usb.core.Device] = {}
    for device in candidates:
        try:
            found = read_serial(device)
        finally:
            usb.util.dispose_resources(device)
        if found is not None:
            serials[found] = device
    if serial is None:
        urls = ", ".join(usb_url(vid, pid, s) for s in sorted(serials))
        raise TransportError(f"{url}: {len(candidates)} devices match; choose one by serial: {urls}")
    if serial not in serials:
        others = f" (attached: {', '.join(sorted(serials))})" if serials else ""
        raise DeviceNotFound(f"no USB device {vid:04x}:{pid:04x} with serial {serial!r}{others}")
    return serials[serial]


def _claim(device: usb.core.Device) -> tuple[int, int, int, int]:
    """Claim the vendor interface; (interface, IN address, OUT address, max packet size)."""
    try:
        config = device.get_active_configuration()
    except usb.core.USBError:
        device.set_configuration()  # unconfigured (rare: the OS normally configures it)
        config = device.get_active_configuration()
    for interface in config:
        if interface.bInterfaceClass != _VENDOR_CLASS:
            continue
        endpoints = {_direction(ep): ep for ep in interface if _is_bulk(ep)}
        if usb.util.ENDPOINT_IN in endpoints and usb.util.ENDPOINT_OUT in endpoints:
            number = interface.bInterfaceNumber
            _detach_kernel_driver(device, number)
            usb.util.claim_interface(device, number)
            ep_in, ep_out = endpoints[usb.util.ENDPOINT_IN], endpoints[usb.util.ENDPOINT_OUT]
            return number, ep_in.bEndpointAddress, ep_out.bEndpointAddress, ep_in.wMaxPacketSize
    raise TransportError(f"USB device {device.idVendor:04x}:{device.idProduct:04x} has no vendor "
                         "interface with a bulk IN/OUT pair: not an ICD stimulator")


def _direction(endpoint: Any) -> int:
    return usb.util.endpoint_direction(endpoint.bEndpointAddress)


def _is_bulk(endpoint: Any) -> bool:
    return usb.util.endpoint_type(endpoint.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK


def _detach_kernel_driver(device: usb.core.Device, interface: int) -> None:
    """A kernel driver bound to our interface would make the claim fail as "busy"."""
    try:
        if device.is_kernel_driver_active(interface):
            device.detach_kernel_driver(interface)
    except (NotImplementedError, usb.core.USBError):
        pass  # not supported on this platform/backend: the claim reports any real conflict


def _open_error(url: str, exc: usb.core.USBError) -> TransportError:
    if exc.errno == errno.EACCES:
        return TransportError(f"permission denied opening {url}; {UDEV_HELP}")
    if exc.errno == errno.EBUSY:
        return DeviceBusy(f"{url} is in use by another program (its interface is claimed)")
    if exc.errno in _GONE:
        return DeviceNotFound(f"{url} disappeared while opening: {exc}")
    return TransportError(f"cannot open {url}: {exc}")
