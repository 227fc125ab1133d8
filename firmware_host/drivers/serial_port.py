"""Serial transport over pyserial: device paths, /dev/pts/N, socket://, loop:// and friends."""

from __future__ import annotations

import errno
import socket

import serial

from ..errors import DeviceBusy, DeviceNotFound, TransportClosed, TransportError
from .base import Transport

DEFAULT_BAUD = 115200


class SerialTransport(Transport):
    """Any pyserial URL, opened exclusively so two controllers never drive one device."""

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUD) -> None:
        super().__init__(url)
        self._closed = True  # until open succeeds
        is_path = "://" not in url
        try:
            self._port = serial.serial_for_url(
                url,
                baudrate=baudrate,
                timeout=0,
                write_timeout=1.0,
                exclusive=True if is_path else None,
            )
        except serial.SerialException as exc:
            raise _translate_open_error(url, exc) from exc
        except ValueError as exc:
            if "not known" in str(exc):  # pyserial: "invalid URL, protocol 'foo' not known"
                raise DeviceNotFound(f"{url} is not a device address: use sim://, a serial port such as "
                                     "/dev/ttyUSB0, socket://HOST:PORT (or tcp://HOST:PORT) or usb://VID:PID") from exc
            raise TransportError(f"cannot open {url}: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"cannot open {url}: {exc}") from exc
        sock = getattr(self._port, "_socket", None)
        if isinstance(sock, socket.socket):
            # an ESTOP must not wait behind Nagle's algorithm for earlier segments' ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._closed = False

    def read(self, timeout: float) -> bytes:
        port = self._port
        try:
            port.timeout = max(timeout, 0.0)
            first = port.read(1)
            if not first:
                return b""
            waiting = port.in_waiting
            return first + port.read(waiting) if waiting else first
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's posix read after a concurrent close.
            raise TransportClosed(f"{self.url}: the connection closed (the device was unplugged, switched off "
                                  "or stopped)") from exc

    def write(self, data: bytes) -> None:
        try:
            written = self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise TransportError(f"{self.url}: write timed out (device not reading)") from exc
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise TransportClosed(f"{self.url}: write failed: {exc}") from exc
        if written is not None and written != len(data):
            raise TransportError(f"{self.url}: wrote {written} of {len(data)} bytes")

    def discard_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise TransportClosed(f"{self.url}: {exc}") from exc
        super().discard_input()

    def _close(self) -> None:
        try:
            self._port.close()
        except (serial.SerialException, OSError):
            pass


def _translate_open_error(url: str, exc: serial.SerialException) -> TransportError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return DeviceNotFound(f"no device at {url}")
    if "exclusively lock" in text or code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
        return DeviceBusy(f"{url} is in use by another program")
    if code == errno.ECONNREFUSED or "Connection refused" in text:
        return DeviceNotFound(f"nothing is listening at {url} (connection refused): is the device or simulator running?")
    if code == errno.EACCES:
        return TransportError(f"permission denied opening {url} (add your user to the dialout group)")
    return TransportError(f"cannot open {url}: {text}")
